"""Private, throw-away MariaDB servers for the integration tests.

    server = PrivateMariaDB.start(tmp_path)     # init a datadir, launch, wait
    server.url                                  # "mysql://root@127.0.0.1:PORT/"
    server.restart()                            # SIGTERM, then again on the same datadir and port
    server.kill()                               # SIGKILL; restart() then does crash recovery
    server.stop()

Everything a server owns lives under its base_dir: data/ (the datadir),
error.log, install.log, mysqld.pid and mysqld.sock (the socket moves to a
short temporary directory when base_dir is too deep for a Unix socket path).
The first datadir a process initialises with mariadb-install-db is kept as a
template, and later servers copy it (about 0.4 s instead of 1.5-2 s).
root logs in over TCP with no password; the server listens on 127.0.0.1 only.

Sandbox / open_sandbox(url) back the `sandbox` fixtures of tests/conftest.py: a per-test
name token whose databases are dropped at teardown.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar
from urllib.parse import unquote, urlsplit

import pymysql
from tests.support.dialect import engine_of

from moenv.engines import matrixone as mo

__all__ = [
    "MariaDBStartError",
    "PrivateMariaDB",
    "Sandbox",
    "connect",
    "find_binary",
    "free_port",
    "open_sandbox",
    "start_private_mariadb",
]

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0

_SEARCH_DIRS = ("/usr/sbin", "/usr/libexec", "/usr/local/sbin", "/usr/local/libexec", "/usr/bin")
_SERVER_NAMES = ("mariadbd", "mysqld")
_INSTALL_NAMES = ("mariadb-install-db", "mysql_install_db")
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, less on some other systems
_PORT_ATTEMPTS = 5

# Speed over durability: these servers hold nothing worth keeping.
# The character set matches Debian's packaged server, so a test behaves the same
# whether it runs on a private server or on MOENV_TEST_URL.
SERVER_OPTIONS: tuple[str, ...] = (
    "--innodb-buffer-pool-size=256M",
    "--innodb-flush-log-at-trx-commit=2",
    "--skip-log-bin",
    "--innodb-doublewrite=0",
    "--skip-name-resolve",
    "--max-connections=500",
    "--local-infile=1",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
)


class MariaDBStartError(RuntimeError):
    """A private server could not be initialised or did not come up."""


class _PortTakenError(MariaDBStartError):
    """The free port was taken by someone else before mariadbd could bind it."""


def find_binary(names: tuple[str, ...]) -> str:
    """The first of names found on PATH or in the usual sbin/libexec directories."""
    extra = os.pathsep.join(_SEARCH_DIRS)
    for name in names:
        found = shutil.which(name) or shutil.which(name, path=extra)
        if found:
            return found
    raise MariaDBStartError(
        f"none of {', '.join(names)} found on PATH or in {', '.join(_SEARCH_DIRS)}: "
        "install mariadb-server, or point MOENV_TEST_URL at a running server"
    )


def connect(url: str, database: str | None = None) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    """A pymysql connection (autocommit, utf8mb4) to the server a mysql:// URL names."""
    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username) if parts.username else "root",
        password=unquote(parts.password) if parts.password else "",
        database=database,
        charset="utf8mb4",
        autocommit=True,
        local_infile=True,
        connect_timeout=10,
    )


def free_port() -> int:
    """A local TCP port nothing listens on now (bound, read, released): for a new server, or as
    the address of a server that does not answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 30, start: int = 0) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return f"({path} could not be read)"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


_template_lock = threading.Lock()
_template_dir: Path | None = None


def _init_datadir(datadir: Path, log: Path) -> None:
    """Make datadir a fresh, initialised datadir: a copy of this process's template, or a new one."""
    global _template_dir
    with _template_lock:
        if _template_dir is None:
            holder = Path(tempfile.mkdtemp(prefix="moenv-mariadb-template-"))
            atexit.register(shutil.rmtree, holder, True)
            template = holder / "data"
            _install_db(template, log)
            _template_dir = template
        shutil.copytree(_template_dir, datadir)


def _install_db(datadir: Path, log: Path) -> None:
    command = [
        find_binary(_INSTALL_NAMES),
        "--no-defaults",
        f"--datadir={datadir}",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        "--skip-name-resolve",
    ]
    if _is_root():
        command.append("--user=root")
    with log.open("wb") as out:
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    if result.returncode != 0:
        raise MariaDBStartError(
            f"{command[0]} exited with {result.returncode}; the end of {log}:\n{_tail(log)}"
        )


class PrivateMariaDB:
    """One mariadbd process on 127.0.0.1 with its own datadir under base_dir."""

    _running: ClassVar[set[PrivateMariaDB]] = set()

    def __init__(self, base_dir: Path, port: int) -> None:
        self.base_dir = base_dir
        self.datadir = base_dir / "data"
        self.error_log = base_dir / "error.log"
        self.pid_file = base_dir / "mysqld.pid"
        self.socket = base_dir / "mysqld.sock"
        if len(str(self.socket)) > _MAX_SOCKET_PATH:
            short = Path(tempfile.mkdtemp(prefix="moenv-sock-"))
            atexit.register(shutil.rmtree, short, True)
            self.socket = short / "mysqld.sock"
        self.port = port
        self.url = f"mysql://root@127.0.0.1:{port}/"
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"PrivateMariaDB(url={self.url!r}, datadir={str(self.datadir)!r}, pid={self.pid})"

    def __enter__(self) -> PrivateMariaDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @classmethod
    def start(cls, base_dir: Path) -> PrivateMariaDB:
        """Initialise base_dir/data (unless it is a datadir already), launch on a free port, wait for it."""
        base_dir.mkdir(parents=True, exist_ok=True)
        if not (base_dir / "data" / "mysql").is_dir():
            shutil.rmtree(base_dir / "data", ignore_errors=True)
            _init_datadir(base_dir / "data", base_dir / "install.log")
        last_error: MariaDBStartError | None = None
        for _ in range(_PORT_ATTEMPTS):
            server = cls(base_dir, free_port())
            try:
                server._launch()
            except _PortTakenError as error:  # another process took the port between probe and bind
                last_error = error
                continue
            return server
        assert last_error is not None
        raise last_error

    @property
    def pid(self) -> int | None:
        """The server's process id, or None when it is not running."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM), SIGKILL after STOP_TIMEOUT seconds; a stopped server is left alone."""
        with self._lock:
            process = self._process
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            self._forget()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; restart() then runs crash recovery."""
        with self._lock:
            process = self._process
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
            self._forget()

    def restart(self) -> None:
        """Stop (if running) and start again on the same datadir and port."""
        with self._lock:
            self.stop()
            self._launch()

    def _forget(self) -> None:
        self._process = None
        PrivateMariaDB._running.discard(self)

    def _command(self) -> list[str]:
        command = [
            find_binary(_SERVER_NAMES),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={self.pid_file}",
            f"--log-error={self.error_log}",
        ]
        if _is_root():
            command.append("--user=root")
        command.extend(SERVER_OPTIONS)
        return command

    def _launch(self) -> None:
        with self._lock:
            if self.running:
                raise MariaDBStartError(f"{self!r} is already running")
            self.socket.unlink(missing_ok=True)  # a killed server leaves its socket behind
            log_start = self.error_log.stat().st_size if self.error_log.exists() else 0
            with self.error_log.open("ab") as log:
                self._process = self._spawn(log)
            PrivateMariaDB._running.add(self)
            self._wait_until_ready(log_start)

    def _spawn(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        # A session of its own, so a Ctrl-C meant for pytest does not reach the server first.
        return subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )

    def _wait_until_ready(self, log_start: int) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + START_TIMEOUT
        last_error = "no attempt yet"
        while True:
            code = process.poll()
            if code is not None:
                self._forget()
                log = _tail(self.error_log, start=log_start)
                error_type = _PortTakenError if "Address already in use" in log else MariaDBStartError
                raise error_type(
                    f"mariadbd exited with {code} while starting; the end of {self.error_log}:\n{log}"
                )
            try:
                connection = connect(self.url)
            except pymysql.MySQLError as error:
                last_error = str(error)
            else:
                try:
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT @@datadir")
                        row = cursor.fetchone()
                finally:
                    connection.close()
                served = Path(str(row[0] if row else "")).resolve()
                if served != self.datadir.resolve():  # another server holds the port
                    last_error = f"port {self.port} is served from {served}, not {self.datadir}"
                else:
                    return
            if time.monotonic() > deadline:
                self.kill()
                raise MariaDBStartError(
                    f"mariadbd on port {self.port} did not accept a connection within {START_TIMEOUT:.0f} s "
                    f"(last error: {last_error}); the end of {self.error_log}:\n"
                    f"{_tail(self.error_log, start=log_start)}"
                )
            time.sleep(0.05)


def start_private_mariadb(base_dir: Path) -> PrivateMariaDB:
    """Same as PrivateMariaDB.start(base_dir)."""
    return PrivateMariaDB.start(base_dir)


@atexit.register
def _stop_leftovers() -> None:
    """Never leave a server running after the interpreter that started it."""
    for server in list(PrivateMariaDB._running):
        server.kill()


@dataclass(frozen=True)
class Sandbox:
    """One test's corner of a server: every database whose name contains `token` is dropped afterwards.

    prefix: for the test's databases, e.g. "t3f9a1c_" (staging copies such as "_moenv_t3f9a1c_app"
    are covered too); ledger: a ledger database name, e.g. "moenv_t3f9a1c".
    Each connect/query/execute uses a new connection (autocommit, utf8mb4), so a server restart
    in the middle of a test does not leave the helpers with a dead connection.
    """

    url: str
    token: str
    engine: str = "mariadb"

    @property
    def prefix(self) -> str:
        return f"{self.token}_"

    @property
    def ledger(self) -> str:
        return f"moenv_{self.token}"

    def connect(self, database: str | None = None) -> pymysql.connections.Connection[Any]:
        return connect(self.url, database)

    def query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, args)
                return [tuple(row) for row in cursor.fetchall()]
        finally:
            connection.close()

    def execute(self, sql: str, args: Any = None) -> int:
        """Run one statement; returns the affected row count."""
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                return int(cursor.execute(sql, args))
        finally:
            connection.close()

    def databases(self) -> list[str]:
        """This sandbox's databases now on the server (every name containing the token)."""
        return sorted(name for (name,) in self.query("SHOW DATABASES") if self.token in name)

    def drop_all(self) -> None:
        """Drop the sandbox's databases (and, on MatrixOne, the snapshots of its ledger)."""
        if self.engine == "matrixone":
            prefix = mo.snapshot_prefix(self.ledger)
            for (name,) in self.query("SELECT sname FROM mo_catalog.mo_snapshots"):
                if str(name).startswith(prefix):
                    self.execute(f"DROP SNAPSHOT IF EXISTS {name}")
        for name in self.databases():
            self.execute(f"DROP DATABASE IF EXISTS `{name.replace('`', '``')}`")


_tokens_used: set[str] = set()


def open_sandbox(url: str) -> Sandbox:
    """A Sandbox on url whose token is in no database name there yet (nor in an earlier sandbox's)."""
    connection = connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW DATABASES")
            existing = [str(name) for (name,) in cursor.fetchall()]
            cursor.execute("SELECT version()")
            (version,) = cursor.fetchone() or ("",)
    finally:
        connection.close()
    while True:
        token = "t" + secrets.token_hex(3)
        if token not in _tokens_used and not any(token in name for name in existing):
            _tokens_used.add(token)
            return Sandbox(url, token, engine_of(str(version)))
