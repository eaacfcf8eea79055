"""plan + apply against a real server through the Python API: faithful copies, the reconciler
invariant, schema-only copies, spec changes, drift, prune and destroy. Runs once per engine
(MariaDB; MatrixOne when MOENV_TEST_MATRIXONE_URL is set)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from tests.integration.helpers import BASE_TABLES, VIEWS, World, q
from tests.support.mariadb import Sandbox

from moenv import api
from moenv.errors import ConflictError
from moenv.models.plan import Create, Delete, PlanOptions, Rebuild


@pytest.fixture
def world(sandbox: Sandbox, tmp_path: Path) -> Iterator[World]:
    with World.open(sandbox, tmp_path) as opened:
        opened.build_source()
        yield opened


def apply_manifests(world: World, *paths: Path, options: PlanOptions | None = None) -> None:
    plan = api.plan(list(paths), config=world.config, options=options)
    result = api.apply(plan, config=world.config)
    assert result.ok, result.failed


def assert_same_content(world: World, target: str, *, without: tuple[str, ...] = ()) -> None:
    expected = {t: s for t, s in world.checksums(world.source).items() if t not in without}
    assert world.row_counts(target) == {t: n for t, n in world.row_counts(world.source).items() if t not in without}
    assert world.checksums(target) == expected


def assert_views_read_target(world: World, target: str, *, rows: bool = True) -> None:
    for view in VIEWS:
        definition = world.view_definition(target, view)
        assert q(target) in definition, definition
        assert q(world.source) not in definition, definition
        [(copied,)] = world.query(f"SELECT COUNT(*) FROM {q(target)}.{q(view)}")
        [(original,)] = world.query(f"SELECT COUNT(*) FROM {q(world.source)}.{q(view)}")
        assert copied == (original if rows else 0)


# -- 1. a faithful copy --------------------------------------------------------------------------


def test_apply_creates_a_faithful_copy_of_the_source(world: World) -> None:
    env = world.env("dev")
    plan = api.plan([world.manifest("dev")], config=world.config)
    [action] = plan.actions
    assert isinstance(action, Create)
    assert action.environment == env

    result = api.apply(plan, config=world.config)

    assert result.ok, result.failed
    assert world.tables(world.target) == world.tables(world.source)
    assert sorted(world.base_tables(world.target)) == sorted(BASE_TABLES)
    assert_same_content(world, world.target)
    # utf8mb4 survived byte for byte (CHECKSUM covers it; this says so readably)
    [(name,)] = world.query(f"SELECT name FROM {q(world.target)}.categories WHERE id = 3")
    assert name == "Café ☕ & Bücher 📚"
    collations = dict(
        world.query(
            "SELECT SCHEMA_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN (%s, %s)",
            (world.source, world.target),
        )
    )
    assert collations[world.target] == collations[world.source]
    if world.engine == "mariadb":  # the source database's, not the server default
        assert collations[world.target] == "utf8mb4_unicode_ci"

    # every foreign key of the copy points into the copy
    source_fks = {(t, c, rt) for t, c, _, rt in world.foreign_keys(world.source)}
    target_fks = world.foreign_keys(world.target)
    assert {(t, c, rt) for t, c, _, rt in target_fks} == source_fks
    assert len(source_fks) == 5
    assert {schema for _, _, schema, _ in target_fks} == {world.target}
    assert world.indexes(world.target) == world.indexes(world.source)

    assert_views_read_target(world, world.target)
    assert world.work_databases() == []

    record = world.ledger_row(env)
    assert record is not None
    assert record["status"] == "ready"
    assert record["target_database"] == world.target
    assert record["source_database"] == world.source
    assert record["rows_copied"] == sum(world.row_counts(world.source).values())
    assert record["tables_done"] == record["tables_total"] == len(BASE_TABLES)
    assert record["staging_database"] is None
    assert world.events(env) == [("create", "started"), ("create", "succeeded")]


def test_copied_tables_keep_their_auto_increment_counters(world: World) -> None:
    apply_manifests(world, world.manifest("dev"))
    world.execute(f"INSERT INTO {q(world.target)}.users (username, email, created_at) VALUES ('new', 'n@x', NOW())")
    [(new_id,)] = world.query(f"SELECT id FROM {q(world.target)}.users WHERE username = 'new'")
    assert new_id > 1000  # not 1: the copy would otherwise hand out ids its rows already use


# -- 2. the reconciler invariant --------------------------------------------------------------------


def test_after_apply_a_fresh_plan_is_empty_and_a_second_apply_changes_nothing(world: World) -> None:
    env = world.env("dev")
    path = world.manifest("dev")
    apply_manifests(world, path)
    revision = world.revision()
    table_ids = world.table_ids(world.target)
    create_times = world.create_times(world.target)
    record = world.ledger_row(env)
    assert len(table_ids) == len(BASE_TABLES)

    again = api.plan([path], config=world.config)

    assert again.actions == ()
    assert again.unchanged == (env,)
    assert not again.has_changes
    result = api.apply(again, config=world.config)
    assert result.ok
    assert result.results == []
    assert world.revision() == revision
    assert world.table_ids(world.target) == table_ids
    assert world.create_times(world.target) == create_times
    assert world.ledger_row(env) == record
    assert world.events(env) == [("create", "started"), ("create", "succeeded")]


# -- 3. structure only ------------------------------------------------------------------------------


def test_schema_only_copies_structure_without_rows(world: World) -> None:
    env = world.env("dev")
    path = world.manifest("dev", data="schema")
    apply_manifests(world, path)

    assert world.tables(world.target) == world.tables(world.source)
    assert set(world.row_counts(world.target).values()) == {0}
    assert world.indexes(world.target) == world.indexes(world.source)
    source_fks = {(t, c, rt) for t, c, _, rt in world.foreign_keys(world.source)}
    target_fks = world.foreign_keys(world.target)
    assert {(t, c, rt) for t, c, _, rt in target_fks} == source_fks
    assert {schema for _, _, schema, _ in target_fks} == {world.target}
    assert_views_read_target(world, world.target, rows=False)
    [(auto_increment,)] = world.query(
        "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'users'",
        (world.target,),
    )
    # an empty copy starts its counters afresh (MatrixOne's information_schema says 0 for "none yet")
    assert auto_increment in ((None, 1) if world.engine == "mariadb" else (None, 0, 1))
    record = world.ledger_row(env)
    assert record is not None
    assert (record["status"], record["rows_copied"]) == ("ready", 0)
    assert api.plan([path], config=world.config).actions == ()


# -- 4. a changed spec ------------------------------------------------------------------------------


class Reader(threading.Thread):
    """Reads the target's view and a table while an apply runs; records every failure."""

    def __init__(self, world: World) -> None:
        super().__init__(daemon=True)
        self.world = world
        self.stop = threading.Event()
        self.reads = 0
        self.failures: list[str] = []

    def run(self) -> None:
        connection = self.world.sandbox.connect()
        target = q(self.world.target)
        try:
            while not self.stop.is_set():
                with connection.cursor() as cursor:
                    try:
                        cursor.execute(f"SELECT COUNT(*) FROM {target}.order_totals")
                        (totals,) = cursor.fetchone()
                        cursor.execute(f"SELECT COUNT(*) FROM {target}.orders")
                        (orders,) = cursor.fetchone()
                    except pymysql.MySQLError as exc:
                        self.failures.append(str(exc))
                        continue
                if (totals, orders) != (2000, 2000):
                    self.failures.append(f"read {totals} totals and {orders} orders")
                self.reads += 1
        finally:
            connection.close()


def test_changed_spec_rebuilds_and_the_target_stays_readable(world: World) -> None:
    env = world.env("dev")
    apply_manifests(world, world.manifest("dev"))

    path = world.manifest("dev", tables={"exclude": ["page_views"]})
    plan = api.plan([path], config=world.config)

    [action] = plan.actions
    assert isinstance(action, Rebuild)
    assert any("tables.exclude" in reason and "page_views" in reason for reason in action.reasons), action.reasons
    reader = Reader(world)
    reader.start()
    try:
        time.sleep(0.05)
        result = api.apply(plan, config=world.config)
    finally:
        reader.stop.set()
        reader.join(10)
    assert result.ok, result.failed
    assert reader.reads > 0
    assert reader.failures == []

    assert "page_views" not in world.tables(world.target)
    assert_same_content(world, world.target, without=("page_views",))
    assert_views_read_target(world, world.target)
    assert world.work_databases() == []
    record = world.ledger_row(env)
    assert record is not None
    assert (record["status"], record["tables_total"]) == ("ready", len(BASE_TABLES) - 1)
    assert world.events(env)[-2:] == [("rebuild", "started"), ("rebuild", "succeeded")]
    assert api.plan([path], config=world.config).actions == ()


def test_changed_spec_is_explained_by_the_change_alone(world: World) -> None:
    """Excluding a table is a spec change: it is not drift "by hand", nor a change of the source schema."""
    apply_manifests(world, world.manifest("dev"))

    plan = api.plan([world.manifest("dev", tables={"exclude": ["page_views"]})], config=world.config)

    [action] = plan.actions
    assert isinstance(action, Rebuild)
    assert action.reasons == ('spec.tables.exclude: [] → ["page_views"]',)


# -- 5. drift in the target -------------------------------------------------------------------------


def test_a_table_dropped_from_the_target_is_rebuilt(world: World) -> None:
    path = world.manifest("dev")
    apply_manifests(world, path)
    world.execute(f"DROP TABLE {q(world.target)}.page_views")

    plan = api.plan([path], config=world.config)

    [action] = plan.actions
    assert isinstance(action, Rebuild)
    assert any("page_views" in r and "dropped" in r for r in action.reasons), action.reasons
    apply_manifests(world, path)
    assert world.tables(world.target) == world.tables(world.source)
    assert_same_content(world, world.target)
    assert api.plan([path], config=world.config).actions == ()


def test_a_column_altered_by_hand_is_rebuilt(world: World) -> None:
    path = world.manifest("dev")
    apply_manifests(world, path)
    world.execute(f"ALTER TABLE {q(world.target)}.users MODIFY display_name VARCHAR(150) NULL")

    plan = api.plan([path], config=world.config)

    [action] = plan.actions
    assert isinstance(action, Rebuild)
    assert any("altered by hand" in r for r in action.reasons), action.reasons
    apply_manifests(world, path)
    [(column_type,)] = world.query(
        "SELECT COLUMN_TYPE FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'users' AND COLUMN_NAME = 'display_name'",
        (world.target,),
    )
    assert str(column_type).lower() == "varchar(100)"
    assert_same_content(world, world.target)
    assert api.plan([path], config=world.config).actions == ()


def test_a_table_added_to_the_target_by_hand_is_reported(world: World) -> None:
    path = world.manifest("dev")
    apply_manifests(world, path)
    world.execute(f"CREATE TABLE {q(world.target)}.scratch (id INT PRIMARY KEY)")

    plan = api.plan([path], config=world.config)

    [action] = plan.actions
    assert isinstance(action, Rebuild)
    assert any("scratch" in r and "by hand" in r for r in action.reasons), action.reasons
    apply_manifests(world, path)
    assert world.tables(world.target) == world.tables(world.source)
    assert api.plan([path], config=world.config).actions == ()


# -- 8. prune ---------------------------------------------------------------------------------------


def test_prune_deletes_environments_missing_from_the_manifests(world: World) -> None:
    dev, qa = world.env("dev"), world.env("qa")
    dev_path = world.manifest("dev")
    qa_target = world.prefix + "qa"
    qa_path = world.manifest("qa", target=qa_target)
    apply_manifests(world, dev_path, qa_path)
    assert world.ledger_names() == sorted([dev, qa])

    assert api.plan([dev_path], config=world.config).actions == ()  # without --prune, qa is left alone
    with pytest.raises(ConflictError, match="max-deletes"):
        api.plan([dev_path], config=world.config, options=PlanOptions(prune=True, max_deletes=0))
    plan = api.plan([dev_path], config=world.config, options=PlanOptions(prune=True))

    [action] = plan.actions
    assert isinstance(action, Delete)
    assert (action.environment, action.target_database) == (qa, qa_target)
    assert plan.unchanged == (dev,)
    result = api.apply(plan, config=world.config)
    assert result.ok, result.failed
    assert not world.exists(qa_target)
    assert world.ledger_names() == [dev]
    assert world.events(qa)[-2:] == [("delete", "started"), ("delete", "succeeded")]
    assert_same_content(world, world.target)  # the other environment is untouched


def test_prune_with_no_manifests_is_refused(world: World) -> None:
    dev = world.env("dev")
    apply_manifests(world, world.manifest("dev"))
    empty = world.directory / "empty"
    empty.mkdir()
    revision = world.revision()

    with pytest.raises(ConflictError, match="--prune with no environments"):
        api.plan([empty], config=world.config, options=PlanOptions(prune=True))

    assert world.ledger_names() == [dev]
    assert world.revision() == revision
    assert world.exists(world.target)


# -- 9. destroy -------------------------------------------------------------------------------------


def test_destroy_drops_the_target_and_forgets_the_environment(world: World) -> None:
    env = world.env("dev")
    apply_manifests(world, world.manifest("dev"))

    plan = api.destroy_plan(world.config, env)
    [action] = plan.actions
    assert isinstance(action, Delete)
    result = api.apply(plan, config=world.config)

    assert result.ok, result.failed
    assert not world.exists(world.target)
    assert world.ledger_row(env) is None
    assert world.work_databases() == []
    assert world.events(env)[-2:] == [("delete", "started"), ("delete", "succeeded")]
    events = api.history(world.config, env)
    assert [(e.action, e.result) for e in events][:2] == [("delete", "succeeded"), ("delete", "started")]
    assert world.exists(world.source)
    assert world.checksums(world.source)  # the source is still whole
    with pytest.raises(ConflictError, match="no environment named"):
        api.destroy_plan(world.config, env)


def test_a_protected_environment_is_destroyed_only_with_force(world: World) -> None:
    env = world.env("dev")
    apply_manifests(world, world.manifest("dev", protect=True))

    with pytest.raises(ConflictError, match="protected"):
        api.destroy_plan(world.config, env)
    assert world.exists(world.target)

    result = api.apply(api.destroy_plan(world.config, env, force=True), config=world.config)
    assert result.ok, result.failed
    assert not world.exists(world.target)


@pytest.mark.mariadb_only("MariaDB's CREATE FUNCTION syntax; MatrixOne's SQL UDFs take another form")
def test_a_view_calling_a_stored_function_is_copied_or_skipped_never_fatal(world: World) -> None:
    """Routines are not copied; a view that calls one must not make every apply fail.

    Either it is recreated and works, or the plan lists it as skipped with its reason.
    """
    s = q(world.source)
    world.execute(f"CREATE FUNCTION {s}.twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2")
    world.execute(f"CREATE VIEW {s}.doubled AS SELECT id, {s}.twice(id) AS d FROM {s}.users")
    path = world.manifest("dev")

    plan = api.plan([path], config=world.config)
    result = api.apply(plan, config=world.config)

    assert result.ok, result.failed
    [action] = plan.actions
    assert isinstance(action, Create)
    skipped = {name for name, _ in action.desired.skipped_views}
    if "doubled" in skipped:
        assert "doubled" not in world.tables(world.target)
    else:
        [(total,)] = world.query(f"SELECT SUM(d) FROM {q(world.target)}.doubled")
        assert total == 1000 * 1001
    assert_views_read_target(world, world.target)
    assert api.plan([path], config=world.config).actions == ()
