"""Helpers of the reliability tests (crash, concurrency, ownership, secrets, server faults).

    run = fork_cli(["apply", "env.yaml", "--yes"], url=..., ledger=..., cwd=..., crash_after=7)
    run.code == 137                    # the crash hook killed the child after 7 executor statements

`fork_cli` runs `moenv.cli.main.main(args)` in a forked copy of the test process: the same code
path as `python -m moenv`, without paying ~1 s of interpreter start and imports per run, which
is what makes a crash at *every* statement affordable. The child always ends with `os._exit`
(no atexit handlers: the test servers must not be stopped by a child), and the crash hook ends
it with `os._exit(137)` as a killed process would end: no `finally`, no rollback, no lock release
by moenv; the server notices the closed sockets. `run_cli` is the real thing, a new interpreter.

Probes read the servers through a lasting PyMySQL connection (`Probe`), never through moenv.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import yaml
from tests.support.dialect import for_engine, rows_digest
from tests.support.mariadb import Sandbox, connect

from moenv.engines.mysql import lock_name
from moenv.models.ledger import holding_database, staging_database

REPO = Path(__file__).resolve().parents[1]
CRASH_EXIT = 137


def q(name: str) -> str:
    """A MySQL identifier, quoted (independently of moenv's quote_ident)."""
    return "`" + name.replace("`", "``") + "`"


@dataclass(frozen=True)
class Run:
    """The outcome of one CLI run."""

    code: int
    stdout: str
    stderr: str
    statements: list[str] | None = None  # executor statements (counted by the crash hook), when recorded

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def cli_env(url: str | None, ledger: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOENV_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    env["COLUMNS"] = "200"
    if url is not None:
        env["MOENV_URL"] = url
    if ledger is not None:
        env["MOENV_LEDGER"] = ledger
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    url: str | None,
    ledger: str | None,
    cwd: Path,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> Run:
    """`python -m moenv ARGS` in a new interpreter; stdin is not a TTY."""
    done = subprocess.run(
        [sys.executable, "-m", "moenv", *args],
        cwd=cwd,
        env=cli_env(url, ledger, extra_env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def start_cli(
    *args: str, url: str | None, ledger: str | None, cwd: Path, extra_env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """`python -m moenv ARGS` started in the background (collect it with `finish`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "moenv", *args],
        cwd=cwd,
        env=cli_env(url, ledger, extra_env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 120) -> Run:
    stdout, stderr = process.communicate(timeout=timeout)
    return Run(process.returncode, stdout, stderr)


def _child(args: Sequence[str], env: Mapping[str, str], cwd: Path, out: int, err: int, record: int | None) -> int:
    """Body of the forked child: the CLI's main() with this environment; returns the exit code."""
    from moenv.cli.main import main
    from moenv.live import connection

    os.chdir(cwd)
    for key in [k for k in os.environ if k.startswith("MOENV_")]:
        del os.environ[key]
    os.environ.update(env)
    connection.CRASH_HOOK = connection._CrashHook()  # reads MOENV_TEST_CRASH_AFTER, as at import
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", line_buffering=True)
    sys.stdin = io.TextIOWrapper(io.BytesIO(b""), encoding="utf-8")
    if record is not None:
        executed: list[str] = []
        original = connection.Connection.execute

        def recording(self: Any, sql: str, *a: Any, **kw: Any) -> int:
            affected = original(self, sql, *a, **kw)
            if self.counted:
                executed.append(" ".join(sql.split())[:160])
            return affected

        connection.Connection.execute = recording  # type: ignore[method-assign]
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if record is not None:
        os.write(record, "\n".join(executed).encode())
    return code


class ForkedRun:
    """A forked child running moenv's CLI main(); `wait()` collects it as a Run."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        url: str | None,
        ledger: str | None,
        cwd: Path,
        crash_after: int | None = None,
        record: bool = False,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        env: dict[str, str] = {}
        if url is not None:
            env["MOENV_URL"] = url
        if ledger is not None:
            env["MOENV_LEDGER"] = ledger
        if crash_after is not None:
            env["MOENV_TEST_CRASH_AFTER"] = str(crash_after)
        env.update(extra_env or {})
        self.args = list(args)
        self.record = record
        self._files = [tempfile.TemporaryFile() for _ in range(3)]  # noqa: SIM115 - closed by wait()
        out, err, rec = self._files
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 99
            try:
                code = _child(args, env, cwd, out.fileno(), err.fileno(), rec.fileno() if record else None)
            except BaseException:  # noqa: BLE001 - the child must never return into pytest
                with contextlib.suppress(BaseException):
                    os.write(err.fileno(), traceback.format_exc().encode())
            finally:
                with contextlib.suppress(BaseException):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        self.pid = pid
        self._status: int | None = None

    def poll(self) -> int | None:
        if self._status is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self._status = os.waitstatus_to_exitcode(status)
        return self._status

    def wait(self, timeout: float = 60) -> Run:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
                raise TimeoutError(f"moenv {' '.join(self.args)} did not finish within {timeout} s")
            time.sleep(0.005)
        out, err, rec = self._files
        try:
            out.seek(0)
            err.seek(0)
            rec.seek(0)
            statements = rec.read().decode().split("\n") if self.record else None
            assert self._status is not None
            return Run(
                self._status, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"), statements
            )
        finally:
            for handle in self._files:
                handle.close()


def fork_cli(
    args: Sequence[str],
    *,
    url: str | None,
    ledger: str | None,
    cwd: Path,
    crash_after: int | None = None,
    record: bool = False,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> Run:
    """moenv's CLI main() in a forked child; `crash_after=k` arms the crash hook (exit 137 after k statements).

    `record=True` also returns the executor statements the run sent (the ones the hook counts).
    Fork only while no other thread of the test runs (a child inherits locks held by other threads).
    """
    child = ForkedRun(
        args, url=url, ledger=ledger, cwd=cwd, crash_after=crash_after, record=record, extra_env=extra_env
    )
    return child.wait(timeout)


def manifest_text(name: str, source: str, target: str, **spec: Any) -> str:
    document = {
        "apiVersion": "moenv/v1",
        "kind": "Environment",
        "metadata": {"name": name},
        "spec": {"source": {"database": source}, "target": {"database": target}, **spec},
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def tiny_source(db: str) -> list[str]:
    """A tiny source: a self-referencing table, two FK-linked tables, tens of rows."""
    d = q(db)
    return [
        f"CREATE DATABASE {d}",
        f"""CREATE TABLE {d}.categories (id INT PRIMARY KEY, parent_id INT NULL, name VARCHAR(40) NOT NULL,
            CONSTRAINT fk_cat_parent FOREIGN KEY (parent_id) REFERENCES {d}.categories (id)) ENGINE=InnoDB""",
        f"""CREATE TABLE {d}.users (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, email VARCHAR(80) NULL,
            KEY ix_users_email (email)) ENGINE=InnoDB""",
        f"""CREATE TABLE {d}.orders (id INT PRIMARY KEY, user_id INT NOT NULL, category_id INT NULL,
            total DECIMAL(10,2) NOT NULL,
            CONSTRAINT fk_orders_user FOREIGN KEY (user_id) REFERENCES {d}.users (id),
            CONSTRAINT fk_orders_cat FOREIGN KEY (category_id) REFERENCES {d}.categories (id)) ENGINE=InnoDB""",
        f"INSERT INTO {d}.categories SELECT seq, IF(seq > 3, 1 + seq % 3, NULL), CONCAT('cat ', seq)"
        f" FROM {d}.seq_1_to_12",
        f"INSERT INTO {d}.users SELECT seq, CONCAT('user ', seq), CONCAT('u', seq, '@example.com')"
        f" FROM {d}.seq_1_to_30",
        f"INSERT INTO {d}.orders SELECT seq, 1 + seq % 30, IF(seq % 5 = 0, NULL, 1 + seq % 12), seq * 1.25"
        f" FROM {d}.seq_1_to_60",
    ]


# -- probes ----------------------------------------------------------------------------------------


class Probe:
    """One lasting connection for reading (and preparing) a server: probes in tight loops stay cheap.

    Reconnects when the server went away (a restart in the middle of a test).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: Any = None

    def _cursor(self) -> Any:
        if self._connection is not None:
            try:
                self._connection.ping(reconnect=False)
            except pymysql.MySQLError:
                self.close()
        if self._connection is None:
            self._connection = connect(self.url)
        return self._connection.cursor()

    def query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        with self._cursor() as cursor:
            cursor.execute(sql, args)
            return [tuple(row) for row in cursor.fetchall()]

    def execute(self, sql: str, args: Any = None) -> int:
        with self._cursor() as cursor:
            return int(cursor.execute(sql, args))

    def dicts(self, sql: str, args: Any = None) -> list[dict[str, Any]]:
        with self._cursor() as cursor:
            cursor.execute(sql, args)
            names = [c[0] for c in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None


def base_tables(box: Probe, db: str) -> list[str]:
    rows = box.query(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'",
        (db,),
    )
    return sorted(str(name) for (name,) in rows)


def views(box: Probe, db: str) -> list[str]:
    rows = box.query(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'VIEW'", (db,)
    )
    return sorted(str(name) for (name,) in rows)


def database_exists(box: Probe, db: str) -> bool:
    return bool(box.query("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (db,)))


def checksums(box: Probe, db: str, engine: str = "mariadb") -> dict[str, int | str | None]:
    """CHECKSUM TABLE of every base table of `db` (tables without generated columns: deterministic).

    MatrixOne has no CHECKSUM TABLE: there each table's rows are read back and digested.
    """
    tables = base_tables(box, db)
    if not tables:
        return {}
    if engine == "matrixone":
        return {t: rows_digest(box.query(f"SELECT * FROM {q(db)}.{q(t)}")) for t in tables}
    rows = box.query("CHECKSUM TABLE " + ", ".join(f"{q(db)}.{q(t)}" for t in tables))
    return {str(name).split(".", 1)[1]: (int(value) if value is not None else None) for name, value in rows}


def content(box: Probe, db: str, engine: str = "mariadb") -> dict[str, Any]:
    """What a reader of `db` sees: its base tables with checksums and row counts, and its views."""
    sums = checksums(box, db, engine)
    counts = {t: int(box.query(f"SELECT COUNT(*) FROM {q(db)}.{q(t)}")[0][0]) for t in sums}
    return {"tables": {t: (sums[t], counts[t]) for t in sums}, "views": views(box, db)}


def work_databases(box: Probe, environments: Iterable[str]) -> list[str]:
    """moenv's staging and holding databases of these environments that exist now."""
    names = {staging_database(e) for e in environments} | {holding_database(e) for e in environments}
    present = {str(n) for (n,) in box.query("SHOW DATABASES")}
    return sorted(names & present)


def drop_work_databases(box: Probe, environments: Iterable[str]) -> None:
    for name in work_databases(box, environments):
        box.execute(f"DROP DATABASE IF EXISTS {q(name)}")


def locks_held(box: Probe, environments: Iterable[str]) -> list[str]:
    names = list(environments)
    if not names:
        return []
    row = box.query("SELECT " + ", ".join(["IS_USED_LOCK(%s)"] * len(names)), [lock_name(e) for e in names])[0]
    return [e for e, holder in zip(names, row, strict=True) if holder is not None]


def wait_locks_free(box: Probe, environments: Iterable[str], timeout: float = 10) -> list[str]:
    """The locks still held after waiting up to `timeout` (a killed client's session ends asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        held = locks_held(box, environments)
        if not held or time.monotonic() > deadline:
            return held
        time.sleep(0.02)


def ledger_rows(box: Probe, ledger: str, table: str = "environments") -> list[dict[str, Any]]:
    """Every row of one ledger table as dicts; no ledger (yet) reads as no rows."""
    if not box.query(
        "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s", (ledger, table)
    ):
        return []
    return box.dicts(f"SELECT * FROM {q(ledger)}.{q(table)}")


def ledger_status(box: Probe, ledger: str) -> dict[str, str]:
    return {str(r["name"]): str(r["status"]) for r in ledger_rows(box, ledger)}


def events(box: Probe, ledger: str, environment: str | None = None) -> list[tuple[str, str, str]]:
    """(environment, action, result) of the event log, oldest first."""
    rows = ledger_rows(box, ledger, "events")
    rows.sort(key=lambda r: int(r["id"]))
    return [
        (str(r["environment"]), str(r["action"]), str(r["result"]))
        for r in rows
        if environment is None or r["environment"] == environment
    ]


def no_traceback(run: Run) -> None:
    assert "Traceback" not in run.output, str(run)


# -- a test's bench --------------------------------------------------------------------------------


@dataclass
class Bench:
    """One test's corner of a server: a source, manifests, forked CLI runs, probes; cleans moenv's work up."""

    box: Sandbox
    probe: Probe
    directory: Path
    url: str
    environments: set[str] = field(default_factory=set)

    @classmethod
    @contextlib.contextmanager
    def open(cls, box: Sandbox, directory: Path, *, url: str | None = None) -> Iterator[Bench]:
        bench = cls(box, Probe(box.url), directory, url or box.url)
        try:
            yield bench
        finally:
            with contextlib.suppress(pymysql.MySQLError):
                drop_work_databases(bench.probe, bench.environments)
            bench.probe.close()

    @property
    def source(self) -> str:
        return self.box.prefix + "src"

    @property
    def ledger(self) -> str:
        return self.box.ledger

    def database(self, short: str) -> str:
        return self.box.prefix + short

    def env(self, short: str) -> str:
        name = f"{self.box.token}-{short}"
        self.environments.add(name)
        return name

    def build_source(self) -> str:
        for statement in tiny_source(self.source):
            self.probe.execute(for_engine(statement, self.box.engine))
        return self.source

    def manifest(
        self, short: str, *, source: str | None = None, target: str | None = None, file: str | None = None,
        **spec: Any,
    ) -> Path:
        """Write the manifest of environment `<token>-<short>`: source (default: the tiny one) → `<prefix><short>`."""
        path = self.directory / (file or f"{short}.yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        text = manifest_text(self.env(short), source or self.source, target or self.database(short), **spec)
        path.write_text(text, encoding="utf-8")
        return path

    def cli(self, *args: str, url: str | None = None, extra_env: Mapping[str, str] | None = None) -> Run:
        return fork_cli(args, url=url or self.url, ledger=self.ledger, cwd=self.directory, extra_env=extra_env)

    def content(self, db: str) -> dict[str, Any]:
        return content(self.probe, db, self.box.engine)

    def exists(self, db: str) -> bool:
        return database_exists(self.probe, db)
