"""Concurrent runs: several `moenv apply` processes on the same manifests at once.

Each environment is built exactly once (one `succeeded` create event per environment), every
other process waits and then does nothing, or fails with a clear message (never a traceback);
the ledger stays consistent (one revision bump per event, no row left `building`); and
`moenv status` run meanwhile never errors.

The first test makes the race certain instead of likely: the test holds both environment locks
while the processes start, waits until every one of them is queued on GET_LOCK with a plan made
against the empty server, and only then lets them go.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.reliability_support import (
    ForkedRun,
    Probe,
    Run,
    checksums,
    events,
    ledger_status,
    manifest_text,
    no_traceback,
    q,
    run_cli,
    wait_locks_free,
    work_databases,
)
from tests.support.mariadb import Sandbox

from moenv import api
from moenv.engines.mysql import lock_name
from moenv.models.config import Config, Server

pytestmark = pytest.mark.mariadb_only(
    "waits on GET_LOCK through MariaDB's PROCESSLIST; the race is made certain with MariaDB's locks"
)

ROWS = 20_000
# What a process that lost the race may say (exit 1); anything else is a failure.
CLEAR_LOSER_MESSAGES = ("is locked by", "was changed by another moenv run")

RUNS: dict[str, int] = {}


@dataclass
class Fleet:
    box: Sandbox
    probe: Probe
    directory: Path
    source: str
    environments: dict[str, str] = field(default_factory=dict)  # name → target database

    @property
    def config(self) -> Config:
        return Config(servers={"default": Server.from_url("default", self.box.url)}, ledger_database=self.box.ledger)

    def write(self, short: str, **spec: object) -> None:
        name = f"{self.box.token}-{short}"
        target = self.box.prefix + short
        self.environments[name] = target
        (self.directory / f"{short}.yaml").write_text(manifest_text(name, self.source, target, **spec), "utf-8")

    def fork(self, *args: str) -> ForkedRun:
        return ForkedRun(args, url=self.box.url, ledger=self.box.ledger, cwd=self.directory)

    def run(self, *args: str) -> Run:
        return run_cli(*args, url=self.box.url, ledger=self.box.ledger, cwd=self.directory)


@pytest.fixture
def fleet(sandbox: Sandbox, tmp_path: Path) -> Iterator[Fleet]:
    probe = Probe(sandbox.url)
    source = sandbox.prefix + "src"
    s = q(source)
    for statement in (
        f"CREATE DATABASE {s}",
        f"CREATE TABLE {s}.users (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL)",
        f"CREATE TABLE {s}.events (id INT PRIMARY KEY, user_id INT NOT NULL, payload VARCHAR(200),"
        f" CONSTRAINT fk_events_user FOREIGN KEY (user_id) REFERENCES {s}.users (id))",
        f"CREATE TABLE {s}.notes (id INT PRIMARY KEY, body TEXT)",
        f"INSERT INTO {s}.users SELECT seq, CONCAT('user ', seq) FROM {s}.seq_1_to_500",
        f"INSERT INTO {s}.events SELECT seq, 1 + seq % 500, REPEAT('x', 150) FROM {s}.seq_1_to_{ROWS}",
        f"INSERT INTO {s}.notes SELECT seq, CONCAT('note ', seq) FROM {s}.seq_1_to_50",
    ):
        probe.execute(statement)
    (tmp_path / "envs").mkdir()
    fleet = Fleet(sandbox, probe, tmp_path / "envs", source)
    fleet.write("dev")
    fleet.write("qa", tables={"exclude": ["notes"]})
    try:
        yield fleet
    finally:
        for name in work_databases(probe, fleet.environments):
            probe.execute(f"DROP DATABASE IF EXISTS {q(name)}")
        probe.close()


class StatusWatcher:
    """`moenv status` (CLI, text and JSON) and api.status, over and over, until stopped."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.stop = threading.Event()
        self.cli_runs: list[Run] = []
        self.api_calls = 0
        self.problems: list[str] = []
        self.threads = [threading.Thread(target=self._cli), threading.Thread(target=self._api)]

    def __enter__(self) -> StatusWatcher:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def _cli(self) -> None:
        as_json = False
        while not self.stop.is_set():
            run = self.fleet.run("status", *(["--json"] if as_json else []))
            self.cli_runs.append(run)
            if run.code != 0 or "Traceback" in run.output or "warning: server" in run.output:
                self.problems.append(str(run))
            elif as_json:
                try:
                    if json.loads(run.stdout)["unreachable"]:
                        self.problems.append(str(run))
                except (ValueError, KeyError) as exc:
                    self.problems.append(f"status --json: {exc!r}\n{run}")
            as_json = not as_json

    def _api(self) -> None:
        while not self.stop.is_set():
            try:
                status = api.status(self.fleet.config)
            except Exception as exc:  # noqa: BLE001 - any failure is the finding; the thread must go on
                self.problems.append(f"api.status raised {exc!r}")
                continue
            if status.unreachable:
                self.problems.append(f"api.status: {status.unreachable}")
            self.api_calls += 1
            time.sleep(0.02)


def waiting_for_lock(probe: Probe) -> int:
    rows = probe.query(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
        " WHERE INFO LIKE 'SELECT GET_LOCK(%' AND ID <> CONNECTION_ID()"
    )
    return int(rows[0][0])


def assert_outcomes(runs: list[Run]) -> None:
    for run in runs:
        no_traceback(run)
        if run.code == 0:
            continue
        assert run.code == 1, run
        errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
        assert errors, run
        for line in errors:
            assert any(m in line for m in CLEAR_LOSER_MESSAGES), run


def assert_ledger_consistent(fleet: Fleet) -> None:
    statuses = ledger_status(fleet.probe, fleet.box.ledger)
    assert statuses == dict.fromkeys(fleet.environments, "ready")
    [(revision,)] = fleet.probe.query(f"SELECT v FROM {q(fleet.box.ledger)}.meta WHERE k = 'revision'")
    # Every ledger write is one transaction: the record, one event, one revision bump.
    assert int(revision) == len(events(fleet.probe, fleet.box.ledger))
    assert not work_databases(fleet.probe, fleet.environments)
    assert not wait_locks_free(fleet.probe, fleet.environments)
    source = checksums(fleet.probe, fleet.source)
    assert checksums(fleet.probe, fleet.box.prefix + "dev") == source
    assert checksums(fleet.probe, fleet.box.prefix + "qa") == {t: s for t, s in source.items() if t != "notes"}
    converged = fleet.run("plan", ".", "--detailed-exitcode")
    assert converged.code == 0, converged


def test_eight_applies_released_at_once_build_each_environment_once(fleet: Fleet) -> None:
    processes = 8
    for name in fleet.environments:
        assert fleet.probe.query("SELECT GET_LOCK(%s, 0)", (lock_name(name),)) == [(1,)]
    started = [fleet.fork("apply", ".", "--yes", "--lock-timeout", "120") for _ in range(processes)]
    with StatusWatcher(fleet) as watcher:  # threads start after the forks
        deadline = time.monotonic() + 90
        while waiting_for_lock(fleet.probe) < processes:  # every one planned a create and queued on the lock
            assert time.monotonic() < deadline, "the applies did not all reach the environment lock"
            assert all(p.poll() is None for p in started), [p.wait() for p in started if p.poll() is not None]
            time.sleep(0.05)
        for name in fleet.environments:
            fleet.probe.query("SELECT RELEASE_LOCK(%s)", (lock_name(name),))
        runs = [p.wait(120) for p in started]
    assert_outcomes(runs)
    for name in fleet.environments:
        succeeded = [e for e in events(fleet.probe, fleet.box.ledger, name) if e[2] == "succeeded"]
        assert succeeded == [(name, "create", "succeeded")], events(fleet.probe, fleet.box.ledger)
    applied = [int(m) for r in runs for m in re.findall(r"^Applied (\d+) of 2 action", r.stdout, re.MULTILINE)]
    assert sum(applied) == len(fleet.environments), [str(r) for r in runs]
    assert not watcher.problems, watcher.problems[:3]
    assert watcher.cli_runs and watcher.api_calls
    assert_ledger_consistent(fleet)
    RUNS["released at once"] = processes


def test_applies_racing_freely_rebuild_each_environment_once(fleet: Fleet) -> None:
    first = fleet.run("apply", ".", "--yes")
    assert first.code == 0, first
    fleet.write("dev", tables={"exclude": ["notes"]}, ttl="30d")  # a content change: rebuild
    fleet.write("qa", tables={"exclude": ["notes"]}, indexes=False)
    processes = 4
    started = [fleet.fork("apply", ".", "--yes") for _ in range(processes)]
    with StatusWatcher(fleet) as watcher:
        runs = [p.wait(120) for p in started]
    assert_outcomes(runs)
    for name in fleet.environments:
        rebuilt = [e for e in events(fleet.probe, fleet.box.ledger, name) if e[1] == "rebuild"]
        assert rebuilt == [(name, "rebuild", "started"), (name, "rebuild", "succeeded")], rebuilt
    assert not watcher.problems, watcher.problems[:3]
    statuses = ledger_status(fleet.probe, fleet.box.ledger)
    assert statuses == dict.fromkeys(fleet.environments, "ready")
    source = checksums(fleet.probe, fleet.source)
    expected = {t: s for t, s in source.items() if t != "notes"}
    assert checksums(fleet.probe, fleet.box.prefix + "dev") == expected
    assert checksums(fleet.probe, fleet.box.prefix + "qa") == expected
    assert not work_databases(fleet.probe, fleet.environments)
    assert not wait_locks_free(fleet.probe, fleet.environments)
    assert fleet.run("plan", ".", "--detailed-exitcode").code == 0
    RUNS["racing freely"] = processes + 1


def test_a_held_lock_fails_within_the_lock_timeout_naming_its_holder(fleet: Fleet) -> None:
    dev = f"{fleet.box.token}-dev"
    [(holder,)] = fleet.probe.query("SELECT CONNECTION_ID()")
    assert fleet.probe.query("SELECT GET_LOCK(%s, 0)", (lock_name(dev),)) == [(1,)]
    started = time.monotonic()
    run = fleet.run("apply", "dev.yaml", "--yes", "--lock-timeout", "1")
    took = time.monotonic() - started
    assert run.code == 1, run
    no_traceback(run)
    assert "is locked by root@127.0.0.1" in run.stderr and f"(connection {holder})" in run.stderr, run
    assert "--lock-timeout" in run.stderr  # the hint
    assert took < 20, took
    assert not fleet.probe.query("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                                 (fleet.environments[dev],))

    # A waiter within its timeout gets the environment once the holder lets go.
    releaser = threading.Timer(1.0, lambda: fleet.probe.query("SELECT RELEASE_LOCK(%s)", (lock_name(dev),)))
    releaser.start()
    waited = fleet.run("apply", "dev.yaml", "--yes", "--lock-timeout", "60")
    releaser.join()
    assert waited.code == 0, waited
    assert events(fleet.probe, fleet.box.ledger, dev)[-1] == (dev, "create", "succeeded")
    RUNS["lock timeout"] = 2


def test_concurrent_runs_were_counted() -> None:
    if len(RUNS) < 3:
        pytest.skip("the concurrency tests did not all run in this session")
    print(f"\nconcurrent apply processes: {RUNS} = {sum(RUNS.values())}")
