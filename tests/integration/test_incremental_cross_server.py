"""Incremental refresh across servers: only what changed crosses the network, and the result equals
a fresh full copy made at the same moment (rows, masks, filters, strict integrity).

The shop of test_lifecycle.py (watermarks, a virtual FK, a declared FK, a table without a
watermark, a table without a key) lives on the session's server; the environments are on a
second server. The refresh streams, per table with a known watermark, the rows changed since it
and the keys of the source's rows (tables without a watermark or key: whole) into staging, then
applies them in place in one transaction, like a same-server incremental refresh.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.integration.helpers import World, q
from tests.integration.test_lifecycle import (
    EDGE_CASES,
    NEW,
    SOURCE_CHANGES,
    T0,
    at,
    incremental_spec,
    shop_statements,
)
from tests.reliability_support import CRASH_EXIT, Probe, Run, content, fork_cli, ledger_status, work_databases
from tests.support.mariadb import Sandbox

from moenv import api
from moenv.models.config import Config, Server
from moenv.models.ledger import LedgerRecord
from moenv.models.plan import Create, Plan, Refresh

pytestmark = pytest.mark.mariadb_only("streams between two MariaDB servers (the cross-server transport is MySQL's)")


@dataclass
class Pair:
    here: World  # the source's server
    there: World  # the environments' server

    @property
    def source(self) -> str:
        return self.here.prefix + "shop"

    @property
    def config(self) -> Config:
        return Config(
            servers={
                "src": Server.from_url("src", self.here.sandbox.url),
                "dst": Server.from_url("dst", self.there.sandbox.url),
            },
            ledger_database=self.here.sandbox.ledger,
            salt="s1",
        )

    def db(self, short: str) -> str:
        return self.here.prefix + short

    def manifest(self, short: str, *, target_server: str = "dst", **spec: Any) -> Path:
        document = {
            "apiVersion": "moenv/v1",
            "kind": "Environment",
            "metadata": {"name": self.here.env(short)},
            "spec": {
                "source": {"server": "src", "database": self.source},
                "target": {"server": target_server, "database": self.db(short)},
                **spec,
            },
        }
        path = self.here.directory / f"{short}.yaml"
        path.write_text(json.dumps(document), encoding="utf-8")
        return path

    def plan(self, paths: Sequence[Path], moment: datetime) -> Plan:
        return api.plan(list(paths), config=self.config, now=moment)

    def apply(self, plan: Plan, moment: datetime) -> None:
        result = api.apply(plan, config=self.config, clock=lambda: moment)
        assert result.ok, result.failed

    def converge(self, paths: Sequence[Path], moment: datetime) -> Plan:
        plan = self.plan(paths, moment)
        self.apply(plan, moment)
        return plan

    def change(self, statements: Sequence[str]) -> None:
        for statement in statements:
            self.here.execute(statement.format(s=q(self.source), new=NEW))

    def content(self, db: str) -> dict[str, list[tuple[Any, ...]]]:
        return {
            table: sorted(self.there.query(f"SELECT * FROM {q(db)}.{q(table)}"), key=repr)
            for table in self.there.base_tables(db)
        }

    def record(self, short: str) -> LedgerRecord:
        [found] = [r for r in api.status(self.config).records if r.name == self.here.env(short)]
        return found

    def fresh_copy(self, short: str, moment: datetime) -> str:
        """The same spec, copied whole (created now) into another target on the same server."""
        assert isinstance(self.converge([self.manifest(short, **incremental_spec())], moment).actions[0], Create)
        return self.db(short)


@pytest.fixture
def pair(sandbox: Sandbox, second_sandbox: Sandbox, tmp_path: Path) -> Iterator[Pair]:
    with World.open(sandbox, tmp_path) as here, World.open(second_sandbox, tmp_path) as there:
        there.environments = here.environments  # staging lives on the target's server
        try:
            for statement in shop_statements(here.prefix + "shop"):
                here.execute(statement)
            yield Pair(here, there)
        finally:  # the ledger is on the target server, under the first sandbox's name
            second_sandbox.execute(f"DROP DATABASE IF EXISTS {q(sandbox.ledger)}")


def refresh_across(pair: Pair, changes: Sequence[str]) -> Refresh:
    """Create `inc` at T0, change the source, apply the refresh planned a day later."""
    path = pair.manifest("inc", **incremental_spec())
    pair.converge([path], T0)
    pair.change(changes)
    plan = pair.plan([path], at(hours=24))
    [refresh] = plan.actions
    assert isinstance(refresh, Refresh)
    pair.apply(plan, at(hours=24))
    return refresh


def test_a_refresh_across_servers_streams_the_changes_and_equals_a_fresh_copy(pair: Pair) -> None:
    path = pair.manifest("inc", **incremental_spec())
    pair.converge([path], T0)
    first = pair.record("inc")
    assert set(first.watermarks) == {"customers", "orders", "items"}  # recorded by the streamed create
    target = pair.db("inc")
    [(first_email,)] = pair.there.query(f"SELECT email FROM {q(target)}.customers WHERE id = 5")

    table_ids = pair.there.table_ids(target)
    pair.change(SOURCE_CHANGES)
    plan = pair.plan([path], at(hours=24))
    [refresh] = plan.actions
    assert isinstance(refresh, Refresh)
    assert [s.kind for s in refresh.steps] == ["ledger_begin", "refresh_incremental", "ledger_commit"]
    assert "streamed from server src" in refresh.steps[1].detail
    pair.apply(plan, at(hours=24))

    expected = pair.content(pair.fresh_copy("full", at(hours=24)))
    assert pair.content(target) == expected
    assert {t: len(rows) for t, rows in expected.items()} == {  # the same figures as the same-server test
        "customers": 180 - 1 - 1 + 1,
        "orders": 540 - 3 - 3 - 1 + 2,
        "items": 1080 - 6 - 6 - 2 - 1 + 3 + 1,
        "notes": 20,
        "events": 30,
    }
    [(email,)] = pair.there.query(f"SELECT email FROM {q(target)}.customers WHERE id = 5")
    assert email != first_email and email.endswith("@example.invalid")  # the masked column of a changed row

    assert pair.there.table_ids(target) == table_ids  # in place: the same tables, changed
    record = pair.record("inc")
    streamed = {s.table: (s.rows, s.method) for s in record.stats}
    # what crossed the network for the watermarked tables: the changed rows, not the tables. `>=`
    # the stored watermark also brings the rows that carry it again (order 600 and its 2 items;
    # customer 200, the last one, is banned: kept out by `where`)
    assert streamed["customers"] == (2, "incremental (streamed)")  # 1001 added, 5 changed (9 left `where`)
    assert streamed["orders"] == (4, "incremental (streamed)")  # 1001, 1002, 10, 600 (1003: its parent left)
    assert streamed["items"] == (7, "incremental (streamed)")  # 4 new, (11, 1) changed, the 2 items of order 600
    assert streamed["notes"] == (20, "full (streamed)")  # no watermark: copied whole
    assert record.watermarks == {"customers": NEW, "orders": NEW, "items": NEW}
    assert pair.plan([path], at(hours=24)).actions == ()  # converged
    assert pair.there.work_databases() == []


@pytest.mark.parametrize(
    "changes",
    [
        *EDGE_CASES,
        pytest.param(
            ["DELETE FROM {s}.items WHERE order_id < 100", "DELETE FROM {s}.orders WHERE id < 100"],
            id="many-rows-deleted-without-a-watermark-to-show-it",
        ),
    ],
)
def test_a_refresh_across_servers_equals_a_fresh_copy_in_edge_cases(pair: Pair, changes: list[str]) -> None:
    refresh_across(pair, changes)
    assert pair.content(pair.db("inc")) == pair.content(pair.fresh_copy("full", at(hours=24)))


def test_children_that_qualify_again_are_fetched_by_key(pair: Pair) -> None:
    """Customer 10 is banned: its orders and their items are kept out. Unbanning it (its own
    watermark moves, its orders' do not) brings them back: fetched by key, not the whole table."""
    refresh_across(pair, ["UPDATE {s}.customers SET tier = 'gold', updated_at = '{new}' WHERE id = 10"])
    target = pair.db("inc")
    [(orders,)] = pair.there.query(f"SELECT COUNT(*) FROM {q(target)}.orders WHERE customer_id = 10")
    [(source_orders,)] = pair.here.query(f"SELECT COUNT(*) FROM {q(pair.source)}.orders WHERE customer_id = 10")
    assert orders == source_orders == 3
    stats = {s.table: s.rows for s in pair.record("inc").stats}
    # the one customer; its three orders and their six items (they qualify again), plus the rows
    # carrying the stored watermark, fetched again by `>=` (order 600 and its two items)
    assert (stats["customers"], stats["orders"], stats["items"]) == (1, 3 + 1, 6 + 2)


@pytest.mark.parametrize("where", ["across", "same"])
def test_a_crash_at_any_statement_of_an_incremental_refresh_leaves_the_old_or_the_new_environment(
    pair: Pair, where: str
) -> None:
    """The refresh process is killed after its k-th statement on the target, for every k: readers
    see the old environment (or, after the COMMIT, the new one), and the next apply converges
    with nothing left over (staging, locks, unfinished ledger rows). `same`: the environment on
    the source's server (staging filled by INSERT … SELECT instead of a stream)."""
    folder = pair.here.directory
    (folder / "moenv.yaml").write_text(
        json.dumps(
            {
                "servers": {"src": {"url": pair.here.sandbox.url}, "dst": {"url": pair.there.sandbox.url}},
                "ledger": pair.here.sandbox.ledger,
                "salt": "s1",
            }
        ),
        encoding="utf-8",
    )
    path = pair.manifest("inc", target_server="dst" if where == "across" else "src", **incremental_spec())
    env, target = pair.here.env("inc"), pair.db("inc")
    probe = Probe((pair.there if where == "across" else pair.here).sandbox.url)

    def cli(*args: str, crash_after: int | None = None, record: bool = False) -> Run:
        return fork_cli(args, url=None, ledger=None, cwd=folder, crash_after=crash_after, record=record)

    def touch(k: int) -> None:  # a change the refresh must bring: a customer renamed, its watermark moved
        pair.here.execute(
            f"UPDATE {q(pair.source)}.customers SET name = 'crash {k}', updated_at = NOW() WHERE id = {k % 150 + 1}"
        )

    assert cli("apply", str(path), "--yes").code == 0
    refresh = ("refresh", env, str(path), "--yes")
    touch(0)
    recorded = cli(*refresh, crash_after=10**9, record=True)
    assert recorded.code == 0, recorded
    statements = recorded.statements
    begin = statements.index("SET SESSION unique_checks = 1")  # the merge's transaction follows
    commit = statements.index("COMMIT", begin)
    assert any("NOT EXISTS" in s for s in statements[begin:commit])  # the streamed merge ran inside it

    failures: list[str] = []
    for k in range(1, len(statements) + 1):
        label = f"crash after statement {k}/{len(statements)} ({statements[k - 1][:60]})"
        old = content(probe, target)
        touch(k)
        run = cli(*refresh, crash_after=k)
        seen = content(probe, target)
        if run.code != CRASH_EXIT:
            failures.append(f"{label}: not killed:\n{run}")
        if k <= commit and seen != old:
            failures.append(f"{label}: the target changed before the COMMIT")
        recovery = cli("apply", str(path), "--yes")
        if recovery.code != 0 or "Traceback" in recovery.output:
            failures.append(f"{label}: the next apply failed:\n{recovery}")
        if cli("plan", str(path), "--detailed-exitcode").code != 0:
            failures.append(f"{label}: not converged after the next apply")
        if leftovers := work_databases(probe, [env]):
            failures.append(f"{label}: left {leftovers}")
        unfinished = {n: s for n, s in ledger_status(probe, pair.here.sandbox.ledger).items() if s != "ready"}
        if unfinished:
            failures.append(f"{label}: ledger rows {unfinished}")
    assert failures == [], "\n".join(failures)
    if where == "across":
        assert pair.content(target) == pair.content(pair.fresh_copy("full", datetime.now(UTC)))
