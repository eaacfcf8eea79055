"""The PyMySQL seam: connections, engine detection, and driver errors turned into DatabaseError.

Nothing above this module imports pymysql. Every statement moenv sends goes through
`Connection.execute`/`query`, which also counts statements (the crash-test hook uses it).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import pymysql
import pymysql.cursors

from moenv.errors import DatabaseError, MoenvError
from moenv.models.config import Server

# Server error codes moenv treats as transient (retry) or explains.
TRANSIENT = {1205, 1213, 2006, 2013}
HINTS = {
    1044: "the user lacks privileges on that database",
    1045: "check the user and password in the server URL",
    1049: "the database does not exist",
    1142: "the user lacks a privilege for this statement",
    1205: "a lock wait timed out; it is retried when transient",
    1213: "a deadlock; it is retried when transient",
    1792: "this session is read-only (source sessions always are)",
    2003: "is the server running, and are host and port right?",
    2013: "the connection was lost during the query",
}
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_MATRIXONE = re.compile(r"MatrixOne-v(\d+)\.(\d+)\.(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class EngineInfo:
    """What `SELECT VERSION()` says: which engine and which version (for feature gates)."""

    kind: str  # "mariadb" | "mysql" | "matrixone"
    version: tuple[int, int, int]
    text: str

    @classmethod
    def from_version(cls, text: str) -> EngineInfo:
        if match := _MATRIXONE.search(text):
            return cls("matrixone", (int(match[1]), int(match[2]), int(match[3])), text)
        plain = _VERSION.search(text)
        version = (int(plain[1]), int(plain[2]), int(plain[3])) if plain else (0, 0, 0)
        if "matrixone" in text.lower():
            return cls("matrixone", (0, 0, 0), text)
        return cls("mariadb" if "mariadb" in text.lower() else "mysql", version, text)


def _scrub(text: str, server: Server) -> str:
    return text.replace(server.password, "***") if server.password else text


@contextmanager
def db_errors(doing: str, server: Server | None = None) -> Iterator[None]:
    """Re-raise driver failures as DatabaseError, keeping the original as __cause__."""
    try:
        yield
    except pymysql.MySQLError as exc:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        detail = str(exc.args[-1]) if exc.args else type(exc).__name__
        if server is not None:
            detail = _scrub(detail, server)
            doing = f"{doing} on server {server.name}"
        raise DatabaseError(f"{doing}: {detail}", code=code, hint=HINTS.get(code or 0)) from exc
    except OSError as exc:
        raise DatabaseError(f"{doing}: {exc}", code=2003, hint=HINTS[2003]) from exc


class _CrashHook:
    """Test hook: `MOENV_TEST_CRASH_AFTER=k` kills the process (no cleanup) after k executor statements."""

    def __init__(self) -> None:
        value = os.environ.get("MOENV_TEST_CRASH_AFTER")
        self.limit = int(value) if value and value.isdigit() else None
        self.count = 0

    def tick(self) -> None:
        if self.limit is None:
            return
        self.count += 1
        if self.count >= self.limit:
            os._exit(137)


CRASH_HOOK = _CrashHook()


class _Counter:
    """Statements sent by this process, for benchmarks and tests of round-trip counts."""

    def __init__(self) -> None:
        self.value = 0


STATEMENTS = _Counter()


def statement_count() -> int:
    return STATEMENTS.value


class Connection:
    """One session to one server; statements go through here and nowhere else."""

    def __init__(self, server: Server, raw: Any, *, engine: EngineInfo, counted: bool) -> None:
        self.server = server
        self._raw = raw
        self.engine = engine
        self.counted = counted
        self.statements = 0

    @property
    def thread_id(self) -> int:
        return int(self._raw.thread_id())

    def execute(self, sql: str, args: Sequence[Any] | None = None, *, doing: str | None = None) -> int:
        """Run one statement; return the affected row count."""
        with db_errors(doing or _summary(sql), self.server), self._raw.cursor() as cursor:
            affected = int(cursor.execute(sql, args))
        self.statements += 1
        STATEMENTS.value += 1
        if self.counted:
            CRASH_HOOK.tick()
        return affected

    def query(self, sql: str, args: Sequence[Any] | None = None, *, doing: str | None = None) -> list[tuple[Any, ...]]:
        with db_errors(doing or _summary(sql), self.server), self._raw.cursor() as cursor:
            cursor.execute(sql, args)
            rows = [tuple(row) for row in cursor.fetchall()]
        self.statements += 1
        STATEMENTS.value += 1
        return rows

    def scalar(self, sql: str, args: Sequence[Any] | None = None) -> Any:
        rows = self.query(sql, args)
        return rows[0][0] if rows else None

    def stream(self, sql: str, *, doing: str | None = None) -> Iterator[tuple[Any, ...]]:
        """The rows of one query as they arrive (unbuffered: constant memory; the session is busy
        until the last row is read or the iterator is closed)."""
        with db_errors(doing or _summary(sql), self.server), self._raw.cursor(pymysql.cursors.SSCursor) as cursor:
            cursor.execute(sql)
            self.statements += 1
            STATEMENTS.value += 1
            while (row := cursor.fetchone()) is not None:
                yield tuple(row)

    def execute_bytes(self, sql: bytes, *, doing: str) -> int:
        """Run one statement given as bytes (values formatted by another server, sent untouched)."""
        with db_errors(doing, self.server), self._raw.cursor() as cursor:
            affected = int(cursor.execute(sql))
        self.statements += 1
        STATEMENTS.value += 1
        return affected

    def load_local(self, sql: str, *, doing: str) -> int:
        """Run LOAD DATA LOCAL INFILE (the session must be opened with `local_infile=True`).

        PyMySQL 1.2 sends the end-of-file packet in a `finally` after a lost connection has
        closed the socket, which raises AttributeError over the real error: reported as 2013.
        """
        try:
            return self.execute(sql, doing=doing)
        except AttributeError as exc:
            if getattr(self._raw, "_sock", True) is not None:
                raise
            raise DatabaseError(
                f"{doing} on server {self.server.name}: lost connection to the server during the load",
                code=2013,
                hint=HINTS[2013],
            ) from exc

    def abort(self) -> None:
        """Shut the socket down, from any thread: a statement blocked on it fails at once as a lost
        connection. (A KILLed LOAD DATA LOCAL session stops reading without closing its socket.)"""
        sock = getattr(self._raw, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(pymysql.MySQLError):  # already gone: nothing to release
            self._raw.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _summary(sql: str) -> str:
    first = " ".join(sql.split())
    return first if len(first) <= 120 else first[:117] + "..."


class Executes(Protocol):
    def execute(self, sql: str, args: Sequence[Any] | None = None, *, doing: str | None = None) -> int: ...


@contextmanager
def transaction(conn: Executes) -> Iterator[None]:
    """START TRANSACTION … COMMIT around the block; on any exception a ROLLBACK (whose own failure,
    say on a dead session the server already rolled back, never hides the real error)."""
    conn.execute("START TRANSACTION")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(MoenvError):
            conn.execute("ROLLBACK")
        raise


def connect(
    server: Server,
    *,
    read_only: bool = False,
    counted: bool = False,
    database: str | None = None,
    connect_timeout: float = 10,
    local_infile: bool = False,
) -> Connection:
    """Open a session; `read_only` makes the server refuse writes in it (source sessions).

    `local_infile` lets the server read client files named in LOAD DATA LOCAL: only for the
    target sessions of a cross-server copy, which load nothing else.
    """
    params = dict(server.params)
    kwargs: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "charset": params.get("charset", "utf8mb4"),
        "autocommit": True,
        "connect_timeout": connect_timeout,
        "local_infile": local_infile,
        "database": database,
    }
    if server.socket:
        kwargs["unix_socket"] = server.socket
    if "ssl_ca" in params:
        kwargs["ssl"] = {"ca": params["ssl_ca"]}
    else:
        kwargs["ssl_disabled"] = True  # PyMySQL builds an SSL context per connection otherwise (~40 ms)
    with db_errors("connecting", server):
        raw = pymysql.connect(**kwargs)
    with db_errors("reading the server version", server), raw.cursor() as cursor:
        cursor.execute("SELECT VERSION()")
        row = cursor.fetchone()
    engine = EngineInfo.from_version(str(row[0]) if row else "")
    connection = Connection(server, raw, engine=engine, counted=counted)
    if read_only and engine.kind != "matrixone":
        connection.execute("SET SESSION TRANSACTION READ ONLY")
    return connection
