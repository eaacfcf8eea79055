"""Server faults: the target server restarted (cleanly, or killed) in the middle of a copy, a
"table is full" error, and a source table dropped between plan and apply or during the copy.

Each ends with a clear error (exit 1, an `error:` line, no traceback), nothing half-built visible
(the old environment complete, or none), and convergence on the next run with no leftovers.

The restarts and the full table happen on a private MariaDB started by this module (its own
directory and port), so the server the other tests share is never disturbed.

The "disk full" fault: ER_RECORD_FILE_FULL (1114, "The table … is full") is what MariaDB reports
when a table cannot grow: InnoDB on a full disk or at a tablespace's size limit, MEMORY at
max_heap_table_size. The last one can be provoked reliably without a tiny file system: the source
has a MEMORY table, and the global max_heap_table_size (which a table created by a new session
inherits) is lowered below its size, so the copy's INSERT … SELECT into the staging table fails
exactly as a full disk would make it fail.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.reliability_support import (
    Bench,
    ForkedRun,
    Probe,
    Run,
    content,
    ledger_status,
    no_traceback,
    q,
    wait_locks_free,
    work_databases,
)
from tests.support.mariadb import PrivateMariaDB, Sandbox, open_sandbox

from moenv.models.ledger import staging_database

pytestmark = pytest.mark.mariadb_only(
    "restarts, kills and misconfigures a private MariaDB server"
)

BIG_ROWS = 300_000


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariaDB]:
    """A private server this module may restart, kill and misconfigure."""
    server = PrivateMariaDB.start(tmp_path_factory.mktemp("faulty", numbered=True))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def faulty(faulty_server: PrivateMariaDB, tmp_path: Path) -> Iterator[Bench]:
    if not faulty_server.running:
        faulty_server.restart()
    box = open_sandbox(faulty_server.url)
    try:
        with Bench.open(box, tmp_path) as bench:
            yield bench
    finally:
        box.drop_all()


@pytest.fixture
def bench(sandbox: Sandbox, tmp_path: Path) -> Iterator[Bench]:
    with Bench.open(sandbox, tmp_path) as opened:
        opened.build_source()
        yield opened


def big_source(bench: Bench) -> None:
    """A table big enough to be caught in the middle of its copy, and a small one copied after it."""
    s = q(bench.source)
    bench.probe.execute(f"CREATE DATABASE {s}")
    bench.probe.execute(f"CREATE TABLE {s}.a_big (id INT PRIMARY KEY, payload VARCHAR(120) NOT NULL)")
    bench.probe.execute(f"INSERT INTO {s}.a_big SELECT seq, REPEAT('p', 100) FROM {s}.seq_1_to_{BIG_ROWS}")
    bench.probe.execute(f"CREATE TABLE {s}.z_small (id INT PRIMARY KEY, note VARCHAR(40))")
    bench.probe.execute(f"INSERT INTO {s}.z_small SELECT seq, CONCAT('note ', seq) FROM {s}.seq_1_to_20")


def copying(probe: Probe, table: str) -> bool:
    rows = probe.query(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE %s",
        (f"INSERT INTO `{staging_database('%')[:9]}%`.`{table}`%",),
    )
    return int(rows[0][0]) > 0


def during_copy(bench: Bench, args: tuple[str, ...], table: str, fault: Any) -> Run:
    """Start a CLI run, call `fault()` while it copies `table`, and return how the run ended."""
    child = ForkedRun(args, url=bench.url, ledger=bench.ledger, cwd=bench.directory)
    deadline = time.monotonic() + 60
    while not copying(bench.probe, table):
        if child.poll() is not None:
            pytest.fail(f"the run ended before its copy of {table} could be interrupted:\n{child.wait()}")
        assert time.monotonic() < deadline
        time.sleep(0.005)
    fault()
    return child.wait(120)


def assert_clear_failure(run: Run, *causes: str, naming: str | None = None) -> None:
    """Exit 1, no traceback, an `error:` line giving one of `causes` (and naming what failed)."""
    assert run.code == 1, run
    no_traceback(run)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors, run
    assert any(cause in line for line in errors for cause in causes), run
    if naming is not None:
        assert any(naming in line for line in errors), f"the error does not say what failed ({naming}):\n{run}"


def view_of(bench: Bench, short: str) -> dict[str, Any] | None:
    db = bench.database(short)
    return content(bench.probe, db) if bench.exists(db) else None


def assert_converges(bench: Bench, path: Path) -> None:
    run = bench.cli("apply", str(path), "--yes")
    assert run.code == 0, run
    no_traceback(run)
    plan = bench.cli("plan", str(path), "--detailed-exitcode")
    assert plan.code == 0, plan
    assert not work_databases(bench.probe, bench.environments)
    assert not wait_locks_free(bench.probe, bench.environments)
    statuses = ledger_status(bench.probe, bench.ledger)
    assert all(s == "ready" for s in statuses.values()), statuses


def test_target_server_restarted_during_a_refresh(faulty: Bench, faulty_server: PrivateMariaDB) -> None:
    big_source(faulty)
    path = faulty.manifest("dev")
    assert faulty.cli("apply", str(path), "--yes").code == 0
    old = view_of(faulty, "dev")
    faulty.probe.execute(f"UPDATE {q(faulty.source)}.z_small SET note = 'changed' WHERE id = 1")
    source = content(faulty.probe, faulty.source)

    run = during_copy(faulty, ("refresh", faulty.env("dev"), str(path), "--yes"), "a_big", faulty_server.restart)

    # The error is the copy's (not a follow-up failure of the cleanup on the dead connection).
    assert_clear_failure(
        run, "Lost connection", "server has gone away", "shutdown", "Connection was killed", naming="a_big"
    )
    assert view_of(faulty, "dev") == old  # the old environment, complete
    assert content(faulty.probe, faulty.source) == source
    assert_converges(faulty, path)
    seen = view_of(faulty, "dev")
    assert seen is not None and seen["tables"] == source["tables"]


def test_target_server_killed_during_a_create(faulty: Bench, faulty_server: PrivateMariaDB) -> None:
    big_source(faulty)
    path = faulty.manifest("dev")
    source = content(faulty.probe, faulty.source)

    def crash_and_recover() -> None:
        faulty_server.kill()  # SIGKILL: InnoDB crash recovery on the way back
        faulty_server.restart()

    run = during_copy(faulty, ("apply", str(path), "--yes"), "a_big", crash_and_recover)

    assert_clear_failure(run, "Lost connection", "server has gone away", "Can't connect", naming="a_big")
    assert view_of(faulty, "dev") is None  # nothing half-built visible
    assert content(faulty.probe, faulty.source) == source
    assert_converges(faulty, path)
    seen = view_of(faulty, "dev")
    assert seen is not None and seen["tables"] == source["tables"]


def test_a_table_full_error_keeps_the_old_environment(faulty: Bench) -> None:
    s = q(faulty.source)
    faulty.probe.execute(f"CREATE DATABASE {s}")
    faulty.probe.execute(f"CREATE TABLE {s}.accounts (id INT PRIMARY KEY, name VARCHAR(40)) ENGINE=InnoDB")
    faulty.probe.execute(f"INSERT INTO {s}.accounts SELECT seq, CONCAT('a', seq) FROM {s}.seq_1_to_50")
    faulty.probe.execute(f"CREATE TABLE {s}.sessions (id INT PRIMARY KEY, token CHAR(200) NOT NULL) ENGINE=MEMORY")
    faulty.probe.execute(f"INSERT INTO {s}.sessions SELECT seq, SHA2(seq, 256) FROM {s}.seq_1_to_20000")
    path = faulty.manifest("dev")
    assert faulty.cli("apply", str(path), "--yes").code == 0
    old = view_of(faulty, "dev")
    assert old is not None and old["tables"]["sessions"][1] == 20000
    faulty.probe.execute(f"UPDATE {s}.accounts SET name = 'changed' WHERE id = 1")
    [(limit,)] = faulty.probe.query("SELECT @@global.max_heap_table_size")
    faulty.probe.execute("SET GLOBAL max_heap_table_size = 262144")  # 256 KiB: the 20,000 rows need ~5 MB
    try:
        run = faulty.cli("refresh", faulty.env("dev"), str(path), "--yes")
    finally:
        faulty.probe.execute("SET GLOBAL max_heap_table_size = %s", (int(limit),))

    assert_clear_failure(run, "is full", naming="sessions")
    assert view_of(faulty, "dev") == old
    assert ledger_status(faulty.probe, faulty.ledger) == {faulty.env("dev"): "failed"}
    assert not work_databases(faulty.probe, faulty.environments)
    assert_converges(faulty, path)
    seen = view_of(faulty, "dev")
    assert seen is not None and seen["tables"] == content(faulty.probe, faulty.source)["tables"]


def test_a_source_table_dropped_between_plan_and_apply(bench: Bench) -> None:
    path = bench.manifest("dev")
    assert bench.cli("plan", str(path), "-o", "plan.json").code == 0
    bench.probe.execute(f"DROP TABLE {q(bench.source)}.orders")

    run = bench.cli("apply", "plan.json", "--yes")

    assert_clear_failure(run, "doesn't exist", naming="orders")
    assert "doesn't exist" in run.stderr, run
    assert view_of(bench, "dev") is None
    assert ledger_status(bench.probe, bench.ledger) == {bench.env("dev"): "failed"}
    assert not work_databases(bench.probe, bench.environments)
    assert_converges(bench, path)
    seen = view_of(bench, "dev")
    assert seen is not None and sorted(seen["tables"]) == ["categories", "users"]


def test_a_source_table_dropped_during_a_refresh(faulty: Bench) -> None:
    big_source(faulty)
    path = faulty.manifest("dev")
    assert faulty.cli("apply", str(path), "--yes").code == 0
    old = view_of(faulty, "dev")

    def drop() -> None:
        faulty.probe.execute(f"DROP TABLE {q(faulty.source)}.z_small")  # copied after a_big

    run = during_copy(faulty, ("refresh", faulty.env("dev"), str(path), "--yes"), "a_big", drop)

    assert_clear_failure(run, "doesn't exist", naming="z_small")
    assert view_of(faulty, "dev") == old
    assert ledger_status(faulty.probe, faulty.ledger) == {faulty.env("dev"): "failed"}
    assert not work_databases(faulty.probe, faulty.environments)
    assert_converges(faulty, path)
    seen = view_of(faulty, "dev")
    assert seen is not None and sorted(seen["tables"]) == ["a_big"]
