"""executor/matrixone.py without a server: the statements an apply sends to MatrixOne, per version.

`FakeMatrixOne` stands in at moenv's own seam (the methods of live.connection.Connection): it
answers moenv's catalog and ledger queries from a small model of databases and tables, applies
the DDL moenv sends to that model, and records every statement. Whether MatrixOne accepts the
statements is what the exact-SQL tests and the integration suite check; here the order, the
version gates and the failure paths are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.unit.builders import NOW, record
from tests.unit.test_engine_matrixone import MO_CHILD, V30, V40, V41, V42, mo_desired

from moenv.engines import ledger as ledger_sql
from moenv.engines import matrixone as mo
from moenv.errors import CloneError, ConflictError, DatabaseError
from moenv.executor.ledger import record_values
from moenv.executor.matrixone import apply_matrixone_action
from moenv.executor.report import RecordingReporter
from moenv.live.connection import EngineInfo
from moenv.models.config import Config, Server
from moenv.models.desired import Desired
from moenv.models.ledger import LedgerRecord, LedgerState, staging_database
from moenv.models.plan import Action, Cleanup, Create, Live, Plan, PlanOptions, Refresh, ServerLive
from moenv.planner.build import build_steps
from moenv.planner.gc import build_gc_plan

SERVER = Server(name="default", host="mo.example", port=6001, user="root")
CONFIG = Config(servers={"default": SERVER}, lock_timeout=0)
STAGING = staging_database("dev")
SP = mo.snapshot_name("moenv", "dev")


class FakeMatrixOne:
    """A scripted MatrixOne session: a model of databases/tables, DDL applied to it, a statement log."""

    def __init__(
        self,
        version: str,
        *,
        tables: dict[str, list[str]] | None = None,
        records: Sequence[LedgerRecord] = (),
        fks: dict[str, list[tuple[Any, ...]]] | None = None,
        snapshots: dict[str, tuple[Any, ...]] | None = None,
        lease_held: bool = False,
        fail_on: str | None = None,
    ) -> None:
        self.engine = EngineInfo.from_version(version)
        self.server = SERVER
        self.tables: dict[str, list[str]] = {"moenv": ["meta", "environments", "events"]}
        self.tables.update(tables if tables is not None else {"src": ["users", "orders", "products", "order_items"]})
        self.records = list(records)
        self.fks = fks or {}
        self.snapshots = dict(snapshots or {})
        self.lease_held = lease_held
        self.fail_on = fail_on
        self.log: list[str] = []
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    # -- the Connection methods moenv uses ----------------------------------------------------------

    def execute(self, sql: str, args: Sequence[Any] | None = None, *, doing: str | None = None) -> int:
        self.log.append(sql)
        self.calls.append((sql, tuple(args or ())))
        if self.fail_on and sql.startswith(self.fail_on):
            raise DatabaseError(f"{doing or sql}: injected failure", code=20101)
        return self._apply(sql, args)

    def query(self, sql: str, args: Sequence[Any] | None = None, *, doing: str | None = None) -> list[tuple[Any, ...]]:
        self.log.append(sql)
        return self._answer(sql, list(args or ()))

    def scalar(self, sql: str, args: Sequence[Any] | None = None) -> Any:
        rows = self.query(sql, args)
        return rows[0][0] if rows else None

    # -- the model -----------------------------------------------------------------------------------

    def _apply(self, sql: str, args: Sequence[Any] | None) -> int:
        if m := re.fullmatch(r"CREATE DATABASE `([^`]+)`(?: CLONE `([^`]+)`.*)?", sql):
            self.tables[m[1]] = list(self.tables.get(m[2], [])) if m[2] else []
        elif m := re.fullmatch(r"DROP DATABASE IF EXISTS `([^`]+)`", sql):
            self.tables.pop(m[1], None)
        elif m := re.match(r"CREATE TABLE `([^`]+)`\.`([^`]+)`", sql):
            self.tables.setdefault(m[1], []).append(m[2])
        elif m := re.fullmatch(r"DROP TABLE IF EXISTS `([^`]+)`\.`([^`]+)`", sql):
            if m[2] in self.tables.get(m[1], []):
                self.tables[m[1]].remove(m[2])
        elif sql.startswith("RENAME TABLE "):
            for old_db, old, new_db, new in re.findall(r"`([^`]+)`\.`([^`]+)` TO `([^`]+)`\.`([^`]+)`", sql):
                assert old_db == new_db, "never a RENAME across databases"
                self.tables[old_db][self.tables[old_db].index(old)] = new
        elif sql.startswith("CREATE SNAPSHOT "):
            self.snapshots[sql.split()[2]] = ("database", "acc", sql.split("`")[1], "", "acc")
        elif sql.startswith("DROP SNAPSHOT IF EXISTS "):
            self.snapshots.pop(sql.rsplit(maxsplit=1)[-1], None)
        elif sql == mo.take_lease("moenv"):
            return 0 if self.lease_held else 1
        elif sql == mo.take_expired_lease("moenv"):
            return 0
        elif sql.startswith("INSERT INTO `_moenv_s_"):
            return 7
        return 1

    def _answer(self, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
        if "`k` = 'schema_version'" in sql:
            return [(str(ledger_sql.SCHEMA_VERSION),)]
        if sql.startswith("SELECT `k`, `v` FROM"):
            return [("revision", "3"), ("schema_version", str(ledger_sql.SCHEMA_VERSION))]
        if sql.startswith("SELECT `name`, `target_database`"):
            return [record_values(r) for r in self.records]
        if sql == mo.database_exists():
            return [(1 if args[0] in self.tables else 0,)]
        if sql == mo.list_databases():
            return [(db,) for db in self.tables]
        if sql == mo.list_tables():
            return [(t, "r") for t in self.tables.get(args[0], [])]
        if sql.startswith("SELECT `reldatabase`, `relname`, `relkind`"):
            return [(db, t, "r", "") for db in args for t in self.tables.get(db, [])]
        if sql.startswith("SELECT `reldatabase`, `relname`, mo_table_rows"):
            return [(db, t, 10, 1000) for db in args for t in self.tables.get(db, [])]
        if sql.startswith("SELECT `fk`.`db_name`"):
            return [row for db in args for row in self.fks.get(db, [])]
        if sql.startswith(("SELECT `TABLE_SCHEMA`", "SELECT DISTINCT `t`")):
            return []
        if sql.startswith("SHOW CREATE TABLE"):
            return [("t", MO_CHILD.replace("`child`", f"`{sql.split('`')[3]}`"))]
        if sql.startswith(("SELECT GET_LOCK", "SELECT RELEASE_LOCK")):
            return [(1,)]
        if sql.startswith("SELECT `level`"):
            row = self.snapshots.get(args[0])
            return [row] if row else []
        if sql.startswith("SELECT `holder`"):
            return [("ci@runner", datetime(2026, 11, 1, 10, 0), datetime(2026, 11, 1, 10, 2))]
        if sql.startswith("SELECT COUNT(*) FROM `_moenv_s_"):
            return [(0,)]
        raise AssertionError(f"unexpected query: {sql}")

    # -- what the tests look at ------------------------------------------------------------------------

    def ddl(self) -> list[str]:
        """Statements that change data or structure outside the ledger, in order (the ledger's own
        transactions left out)."""
        keep = ("CREATE", "DROP", "RENAME", "ALTER", "INSERT INTO `_", "START", "COMMIT", "ROLLBACK", "SET f")
        found: list[str] = []
        skipping = False
        for index, sql in enumerate(self.log):
            if sql == "START TRANSACTION":
                skipping = "`moenv`." in self.log[index + 1]
            if not skipping and sql.startswith(keep):
                found.append(sql)
            if sql in {"COMMIT", "ROLLBACK"}:
                skipping = False
        return found

    def statuses(self) -> list[str]:
        """The status of every ledger record written, in order."""
        return [str(args[4]) for sql, args in self.calls if sql == mo.insert_record("moenv")]

    def ledger_writes(self) -> list[str]:
        return [s for s in self.log if "`moenv`.`environments`" in s and not s.startswith("SELECT")]


def plan_of(action: Action) -> Plan:
    return Plan(created_at=NOW, actions=(action,), ledger_database="moenv")


def create(want: Desired) -> Create:
    return Create(
        environment=want.environment,
        target_server="default",
        target_database=want.target.database,
        desired=want,
        steps=build_steps(want, rebuild=False),
    )


def refresh(want: Desired, current: LedgerRecord) -> Refresh:
    return Refresh(
        environment=want.environment,
        target_server="default",
        target_database=want.target.database,
        desired=want,
        ledger_stamp=current.updated_at.isoformat(),
        steps=build_steps(want, rebuild=True),
    )


def run(action: Action, conn: FakeMatrixOne, lock: FakeMatrixOne | None = None) -> RecordingReporter:
    out = RecordingReporter()
    apply_matrixone_action(
        action,
        plan_of(action),
        CONFIG,
        out,
        lambda: datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
        conn=conn,  # type: ignore[arg-type]
        lock_conn=lock or FakeMatrixOne(conn.engine.text),  # type: ignore[arg-type]
    )
    return out


def hint() -> str:
    return f"{{snapshot = '{SP}'}}"


# -- creating ----------------------------------------------------------------------------------------------------


def test_a_whole_database_is_created_by_one_clone_at_a_snapshot_that_is_dropped_after() -> None:
    conn = FakeMatrixOne(V42)
    run(create(mo_desired()), conn)
    assert conn.ddl() == [
        f"DROP SNAPSHOT IF EXISTS {SP}",
        f"CREATE SNAPSHOT {SP} FOR DATABASE `src`",
        f"DROP DATABASE IF EXISTS `{STAGING}`",
        f"DROP DATABASE IF EXISTS `{STAGING.replace('_s_', '_o_')}`",
        "SET foreign_key_checks = 0",
        f"CREATE DATABASE `dev_db` CLONE `src` {hint()}",
        f"DROP DATABASE IF EXISTS `{STAGING}`",
        f"DROP DATABASE IF EXISTS `{STAGING.replace('_s_', '_o_')}`",
        f"DROP SNAPSHOT IF EXISTS {SP}",
    ]
    assert SP not in conn.snapshots
    assert sorted(conn.tables["dev_db"]) == ["order_items", "orders", "products", "users"]


def test_the_source_is_checked_before_any_clone() -> None:
    conn = FakeMatrixOne(V42, tables={})
    with pytest.raises(CloneError, match="the source database src does not exist on server default"):
        run(create(mo_desired()), conn)
    assert not any("CLONE" in s or s.startswith("CREATE SNAPSHOT") for s in conn.log)
    assert "dev_db" not in conn.tables


def test_a_subset_is_built_in_staging_and_published_by_one_database_clone() -> None:
    conn = FakeMatrixOne(
        V42, fks={"dev_db": [("dev_db", "products", "fk_x", "category_id", "src", "categories", "id", "", "")]}
    )
    want = mo_desired(tables={"exclude": ["order_items"]}, rules={"users": {"where": "id > 10"}})
    run(create(want), conn)
    ddl = conn.ddl()
    assert f"CREATE TABLE `{STAGING}`.`products` CLONE `src`.`products` {hint()}" in ddl
    insert = next(s for s in ddl if s.startswith(f"INSERT INTO `{STAGING}`.`users`"))
    assert insert.endswith(f"FROM `src`.`users` {hint()} AS `s` WHERE (`id` > 10)")
    publish = ddl.index(f"CREATE DATABASE `dev_db` CLONE `{STAGING}`")
    assert ddl.index(f"CREATE DATABASE `{STAGING}`") < ddl.index(insert) < publish
    # a table clone keeps its FKs on the source's parents: re-pointed, or dropped when the parent is not copied
    assert ddl[publish + 1] == "ALTER TABLE `dev_db`.`products` DROP FOREIGN KEY `fk_x`"
    assert ddl[-1] == f"DROP SNAPSHOT IF EXISTS {SP}"


def test_a_failure_leaves_nothing_visible_drops_the_snapshot_and_says_failed() -> None:
    conn = FakeMatrixOne(V42, fail_on=f"INSERT INTO `{STAGING}`.`orders`")
    want = mo_desired(rules={"users": {"where": "id > 10"}})
    with pytest.raises(CloneError, match="injected failure"):
        run(create(want), conn)
    assert "dev_db" not in conn.tables
    assert STAGING not in conn.tables
    assert conn.log[-1] == f"DROP SNAPSHOT IF EXISTS {SP}" and SP not in conn.snapshots
    assert conn.statuses() == ["building", "failed"]


def test_ledger_records_are_written_as_delete_and_insert() -> None:
    conn = FakeMatrixOne(V42)
    run(create(mo_desired()), conn)
    assert conn.ledger_writes() == list(mo.record_statements("moenv")) * 2
    assert conn.statuses() == ["building", "ready"]


# -- refreshing ----------------------------------------------------------------------------------------------------


def _existing(version: str, want: Desired, **fields: Any) -> tuple[FakeMatrixOne, Refresh]:
    current = record(applied=want)
    conn = FakeMatrixOne(
        version,
        tables={"src": ["users", "orders", "products", "order_items"], "dev_db": ["users", "orders", "old_table"]},
        records=[current],
        **fields,
    )
    return conn, refresh(want, current)


@pytest.mark.parametrize("version", [V41, V42])
def test_a_refresh_from_4_1_swaps_the_tables_with_one_chained_rename(version: str) -> None:
    want = mo_desired(rules={"users": {"where": "id > 10"}})
    conn, action = _existing(version, want)
    run(action, conn)
    ddl = conn.ddl()
    order = [t.target for t in want.tables]
    clones = [s for s in ddl if s.startswith("CREATE TABLE `dev_db`.`_moenv_n_")]
    assert clones == [
        f"CREATE TABLE `dev_db`.`{mo.temporary_table(mo.NEW_PREFIX, t)}` CLONE `{STAGING}`.`{t}`" for t in order
    ]
    swap = mo.swap_tables("dev_db", order, ["old_table", "orders", "users"])  # as listed: sorted
    assert swap in ddl
    assert not any(s.startswith("START TRANSACTION") for s in ddl)
    assert (
        ddl.index(clones[-1])
        < ddl.index(swap)
        < ddl.index(f"DROP TABLE IF EXISTS `dev_db`.`{mo.temporary_table(mo.OLD_PREFIX, 'old_table')}`")
    )
    assert sorted(conn.tables["dev_db"]) == ["order_items", "orders", "products", "users"]


@pytest.mark.parametrize("version", [V30, V40])
def test_a_refresh_before_4_1_replaces_the_tables_in_one_transaction(version: str) -> None:
    want = mo_desired(rules={"users": {"where": "id > 10"}})
    conn, action = _existing(version, want)
    run(action, conn)
    ddl = conn.ddl()
    start = ddl.index("START TRANSACTION")
    assert ddl[start : start + 9] == [
        "START TRANSACTION",
        "DROP TABLE IF EXISTS `dev_db`.`old_table`",
        "DROP TABLE IF EXISTS `dev_db`.`orders`",
        "DROP TABLE IF EXISTS `dev_db`.`users`",
        *(f"CREATE TABLE `dev_db`.`{t.target}` CLONE `{STAGING}`.`{t.target}`" for t in want.tables),
        "COMMIT",
    ]
    assert not any(s.startswith("RENAME") for s in ddl)


def test_a_failed_transaction_is_rolled_back_and_the_old_tables_stay() -> None:
    want = mo_desired(rules={"users": {"where": "id > 10"}})
    conn, action = _existing(V40, want, fail_on="CREATE TABLE `dev_db`.`orders`")
    with pytest.raises(CloneError):
        run(action, conn)
    assert "ROLLBACK" in conn.ddl() and "COMMIT" not in conn.ddl()


def test_a_whole_database_refresh_clones_straight_from_the_source_at_the_snapshot() -> None:
    want = mo_desired()
    conn, action = _existing(V42, want)
    run(action, conn)
    ddl = conn.ddl()
    assert f"CREATE TABLE `dev_db`.`{mo.temporary_table(mo.NEW_PREFIX, 'users')}` CLONE `src`.`users` {hint()}" in ddl
    assert not any(s.startswith(f"CREATE DATABASE `{STAGING}`") for s in ddl)


# -- grants, snapshots, locks ---------------------------------------------------------------------------------


def test_grants_clone_every_table_from_the_source_with_copy_grants_in_one_transaction() -> None:
    conn = FakeMatrixOne(V42)
    run(create(mo_desired(grants=True)), conn)
    ddl = conn.ddl()
    start = ddl.index("START TRANSACTION")
    assert ddl[start - 1] == "CREATE DATABASE `dev_db`"
    first = mo_desired(grants=True).tables[0].target
    assert ddl[start + 1] == f"CREATE TABLE `dev_db`.`{first}` CLONE `src`.`{first}` {hint()} COPY GRANTS"


def test_a_named_snapshot_is_checked_used_and_never_dropped() -> None:
    conn = FakeMatrixOne(V42, snapshots={"nightly": ("database", "acc", "src", "", "acc")})
    run(create(mo_desired(source={"server": "default", "database": "src", "snapshot": "nightly"})), conn)
    assert "CREATE DATABASE `dev_db` CLONE `src` {snapshot = 'nightly'}" in conn.ddl()
    assert "nightly" in conn.snapshots
    assert not any(s.startswith("CREATE SNAPSHOT") for s in conn.log)


def test_a_named_snapshot_that_does_not_cover_the_source_is_refused_before_cloning() -> None:
    conn = FakeMatrixOne(V42, snapshots={"nightly": ("database", "acc", "other_db", "", "acc")})
    with pytest.raises(CloneError, match="covers database other_db, not the source src"):
        run(create(mo_desired(source={"server": "default", "database": "src", "snapshot": "nightly"})), conn)
    assert not any("CLONE" in s for s in conn.log) and "nightly" in conn.snapshots


def test_without_get_lock_a_lease_row_is_taken_renewed_and_released() -> None:
    lock = FakeMatrixOne(V30)
    run(create(mo_desired(V30)), FakeMatrixOne(V30), lock)
    assert lock.log[:2] == [mo.create_lease_table("moenv"), mo.take_lease("moenv")]
    assert lock.log[-1] == mo.release_lease("moenv")
    assert not any("GET_LOCK" in s for s in lock.log)


def test_a_held_lease_is_reported_with_its_holder() -> None:
    conn = FakeMatrixOne(V30)
    with pytest.raises(ConflictError, match=r"locked by ci@runner \(since 2026-11-01 10:00:00"):
        run(create(mo_desired(V30)), conn, FakeMatrixOne(V30, lease_held=True))
    assert not any("CLONE" in s for s in conn.log)


def test_from_4_0_the_server_lock_is_used() -> None:
    lock = FakeMatrixOne(V40)
    run(create(mo_desired(V40)), FakeMatrixOne(V40), lock)
    assert lock.log == [mo.get_lock(), mo.release_lock()]


# -- gc of snapshots ---------------------------------------------------------------------------------------------


def test_gc_drops_moenv_s_stale_snapshots_and_keeps_those_of_running_applies() -> None:
    ready = record("dev", target_database="dev_db")
    running = record("ci", target_database="ci_db", status="building")
    state = LedgerState("default", records={"dev": ready, "ci": running}, revision=3, version=1)
    live = Live(servers={"default": ServerLive("default", state, busy=frozenset({"ci"}))}, ledger_database="moenv")
    forgotten = mo.snapshot_prefix("moenv") + "a" * 24
    names = [mo.snapshot_name("moenv", "dev"), mo.snapshot_name("moenv", "ci"), forgotten, "someone_elses"]
    plan = build_gc_plan(live, now=NOW, options=PlanOptions(), snapshots={"default": names})
    cleanups = [a for a in plan.actions if isinstance(a, Cleanup)]
    assert sorted((c.environment, c.steps[0].table) for c in cleanups) == sorted(
        [("dev", mo.snapshot_name("moenv", "dev")), (forgotten, forgotten)]
    )
    (orphan,) = [c for c in cleanups if c.environment == forgotten]
    assert "no longer in the ledger" in orphan.reasons[0]

    conn = FakeMatrixOne(V42, records=[ready])
    conn.snapshots[forgotten] = ("database", "acc", "src", "", "acc")
    run(orphan, conn)
    assert f"DROP SNAPSHOT IF EXISTS {forgotten}" in conn.log and forgotten not in conn.snapshots


def test_a_target_that_appeared_after_the_plan_is_never_touched() -> None:
    conn = FakeMatrixOne(V42, tables={"src": ["users"], "dev_db": ["precious"]})
    with pytest.raises(CloneError, match="appeared after this plan was made"):
        run(create(mo_desired(rules={"users": {"where": "id > 10"}})), conn)
    assert conn.tables["dev_db"] == ["precious"]
    assert not any("`dev_db`" in s for s in conn.ddl())
