"""What moenv must never do, on a real server (once per engine): touch a database it does not own, write to or lock
a source, or leave a half-built environment visible after a failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from tests.integration.helpers import BASE_TABLES, VIEWS, World, q
from tests.support.mariadb import Sandbox

from moenv import api
from moenv.engines import mysql
from moenv.errors import ConflictError
from moenv.models.desired import TableCopy
from moenv.models.plan import PlanOptions, Rebuild

LOCK_WAIT_TIMEOUT = 1205


@pytest.fixture
def world(sandbox: Sandbox, tmp_path: Path) -> Iterator[World]:
    with World.open(sandbox, tmp_path) as opened:
        opened.build_source()
        yield opened


def apply_ok(world: World, path: Path, options: PlanOptions | None = None) -> None:
    result = api.apply(api.plan([path], config=world.config, options=options), config=world.config)
    assert result.ok, result.failed


def status(world: World, environment: str) -> str | None:
    record = world.ledger_row(environment)
    return None if record is None else str(record["status"])


def assert_converged(world: World, path: Path, *, without: tuple[str, ...] = ()) -> None:
    source = {t: s for t, s in world.checksums(world.source).items() if t not in without}
    assert world.checksums(world.target) == source
    assert api.plan([path], config=world.config).actions == ()
    assert world.work_databases() == []


# -- 6. a target moenv does not own -----------------------------------------------------------------


def test_an_unmanaged_target_is_never_touched(world: World) -> None:
    world.execute(f"CREATE DATABASE {q(world.target)}")
    world.execute(f"CREATE TABLE {q(world.target)}.handmade (id INT PRIMARY KEY, note VARCHAR(20))")
    world.execute(f"INSERT INTO {q(world.target)}.handmade VALUES (1, 'keep me')")
    path = world.manifest("dev")

    with pytest.raises(ConflictError, match="not managed by moenv") as caught:
        api.plan([path], config=world.config)

    assert caught.value.hint is not None
    assert "--adopt" in caught.value.hint
    assert world.tables(world.target) == {"handmade": "BASE TABLE"}
    assert world.query(f"SELECT id, note FROM {q(world.target)}.handmade") == [(1, "keep me")]
    assert world.ledger_names() == []
    assert world.work_databases() == []


def test_adopt_replaces_an_unmanaged_target(world: World) -> None:
    env = world.env("dev")
    world.execute(f"CREATE DATABASE {q(world.target)}")
    world.execute(f"CREATE TABLE {q(world.target)}.handmade (id INT PRIMARY KEY)")
    world.execute(f"INSERT INTO {q(world.target)}.handmade VALUES (1)")
    path = world.manifest("dev")

    plan = api.plan([path], config=world.config, options=PlanOptions(adopt=True))

    [action] = plan.actions
    assert isinstance(action, Rebuild)
    assert action.adopt
    assert any("--adopt" in r for r in action.reasons)
    result = api.apply(plan, config=world.config)
    assert result.ok, result.failed
    assert world.tables(world.target) == world.tables(world.source)
    assert world.ledger_names() == [env]
    assert_converged(world, path)


# -- 7. a target that is a source -------------------------------------------------------------------


@pytest.mark.parametrize("which", ["source", "ledger"])
def test_a_target_that_is_the_source_or_the_ledger_is_refused(world: World, which: str) -> None:
    target = world.source if which == "source" else world.sandbox.ledger
    path = world.manifest("dev", target=target)
    before = world.checksums(world.source)

    with pytest.raises(ConflictError, match="never writes to a source" if which == "source" else "ledger"):
        api.plan([path], config=world.config)

    assert world.checksums(world.source) == before
    assert world.tables(world.source) == {
        **dict.fromkeys(BASE_TABLES, "BASE TABLE"),
        **dict.fromkeys(VIEWS, "VIEW"),
    }
    assert not world.exists(world.sandbox.ledger)
    assert world.work_databases() == []


def test_a_target_that_is_another_environments_source_is_refused(world: World) -> None:
    first = world.manifest("first", target=world.prefix + "copy")
    second = world.manifest("second", source=world.prefix + "copy", target=world.prefix + "copy2")
    world.execute(f"CREATE DATABASE {q(world.prefix + 'copy')}")
    world.execute(f"CREATE TABLE {q(world.prefix + 'copy')}.t (id INT PRIMARY KEY)")

    with pytest.raises(ConflictError, match="never writes to a source"):
        api.plan([first, second], config=world.config)

    assert world.tables(world.prefix + "copy") == {"t": "BASE TABLE"}
    assert world.ledger_names() == []


# -- 10. the source is only read, and never locked --------------------------------------------------


def test_the_source_is_not_written_by_create_rebuild_and_delete(world: World) -> None:
    before = world.checksums(world.source)
    tables = world.tables(world.source)
    ids = world.table_ids(world.source)
    env = world.env("dev")
    apply_ok(world, world.manifest("dev"))
    apply_ok(world, world.manifest("dev", tables={"exclude": ["page_views"]}))
    result = api.apply(api.destroy_plan(world.config, env), config=world.config)
    assert result.ok, result.failed

    assert world.checksums(world.source) == before
    assert world.tables(world.source) == tables
    assert world.table_ids(world.source) == ids


def _copy_of(world: World, table: str) -> TableCopy:
    desired = api.resolve(api.load([world.manifest("dev")]), world.config)
    [want] = desired.values()
    return next(t for t in want.tables if t.source == table)


def _scratch(world: World) -> str:
    scratch = world.prefix + "scratch"
    world.execute(f"CREATE DATABASE {q(scratch)}")
    for table in BASE_TABLES:
        world.execute(f"CREATE TABLE {q(scratch)}.{q(table)} LIKE {q(world.source)}.{q(table)}")
    return scratch


def _update_while_copying(world: World, session: tuple[str, ...]) -> int | None:
    """Run moenv's INSERT … SELECT of `users` uncommitted in `session`; UPDATE a row it read from another.

    Returns None when the UPDATE went through, or the server's error code.
    """
    copy = _copy_of(world, "users")
    statement = mysql.insert_select(copy, source_database=world.source, into_database=_scratch(world))
    copier = world.sandbox.connect()
    writer = world.sandbox.connect()
    try:
        with copier.cursor() as cursor:
            for setting in session:
                cursor.execute(setting)
            cursor.execute("START TRANSACTION")
            assert cursor.execute(statement) == 1000
        with writer.cursor() as cursor:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
            try:
                updated = cursor.execute(f"UPDATE {q(world.source)}.users SET display_name = 'changed' WHERE id = 5")
            except pymysql.MySQLError as exc:
                return int(exc.args[0])
            assert updated == 1
            return None
    finally:
        copier.rollback()
        copier.close()
        writer.close()


@pytest.mark.mariadb_only("InnoDB's row locks under READ COMMITTED; MatrixOne reads at a snapshot")
def test_the_copy_reads_the_source_without_locking_it(world: World) -> None:
    assert _update_while_copying(world, mysql.COPY_SESSION) is None
    [(name,)] = world.query(f"SELECT display_name FROM {q(world.source)}.users WHERE id = 5")
    assert name == "changed"


@pytest.mark.mariadb_only("InnoDB's row locks under REPEATABLE READ; MatrixOne reads at a snapshot")
def test_the_same_copy_under_repeatable_read_would_lock_the_source(world: World) -> None:
    """The control experiment: without moenv's isolation level the same statement blocks writers."""
    locking = tuple(s for s in mysql.COPY_SESSION if "ISOLATION" not in s.upper())
    assert len(locking) == len(mysql.COPY_SESSION) - 1
    session = ("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ", *locking)
    assert _update_while_copying(world, session) == LOCK_WAIT_TIMEOUT


# -- 11. failures leave nothing half-built visible --------------------------------------------------


def test_a_create_that_fails_midway_leaves_nothing_and_the_next_apply_converges(world: World) -> None:
    env = world.env("dev")
    path = world.manifest("dev")
    plan = api.plan([path], config=world.config)
    world.execute(f"DROP TABLE {q(world.source)}.page_views")  # gone between plan and apply

    result = api.apply(plan, config=world.config)

    assert not result.ok
    [failure] = result.failed
    assert failure.environment == env
    assert failure.error is not None
    assert "page_views" in failure.error
    assert world.work_databases() == []
    record = world.ledger_row(env)
    assert not world.exists(world.target) or (record is not None and record["status"] == "failed")
    assert record is not None  # the ledger says what happened
    assert record["status"] == "failed"
    assert "page_views" in (record["message"] or "")
    assert world.events(env) == [("create", "started"), ("create", "failed")]

    retry = api.plan([path], config=world.config)
    [action] = retry.actions
    assert isinstance(action, Rebuild)
    [reason] = action.reasons  # only the interruption: no spec or source change is invented
    assert "did not finish" in reason or "failed" in reason
    result = api.apply(retry, config=world.config)
    assert result.ok, result.failed
    assert status(world, env) == "ready"
    assert_converged(world, path)


def _break_product_prices(world: World) -> None:
    """Drop the generated column the view product_prices reads: tables still copy, the view cannot be made."""
    world.execute(f"ALTER TABLE {q(world.source)}.products DROP COLUMN price_with_tax")


def _mend_product_prices(world: World) -> None:
    world.run(  # on MatrixOne (no generated columns) a plain nullable column
        f"ALTER TABLE {q(world.source)}.products"
        " ADD COLUMN price_with_tax DECIMAL(12,2) AS (ROUND(price * 1.2, 2)) STORED AFTER weight"
    )


def test_a_create_whose_view_fails_is_marked_failed_and_converges(world: World) -> None:
    env = world.env("dev")
    path = world.manifest("dev")
    plan = api.plan([path], config=world.config)
    _break_product_prices(world)

    result = api.apply(plan, config=world.config)

    assert not result.ok
    [failure] = result.failed
    assert failure.environment == env
    assert "product_prices" in (failure.error or "")
    assert world.work_databases() == []
    record = world.ledger_row(env)
    assert record is not None
    assert record["status"] == "failed"
    _mend_product_prices(world)
    retry = api.plan([path], config=world.config)
    [action] = retry.actions
    assert isinstance(action, Rebuild)
    assert api.apply(retry, config=world.config).ok
    assert_converged(world, path)


def _readable_views(world: World, database: str) -> dict[str, str | None]:
    """view → None when it can be read, or the server's error."""
    found: dict[str, str | None] = {}
    for name, kind in world.tables(database).items():
        if kind != "VIEW":
            continue
        try:
            world.query(f"SELECT * FROM {q(database)}.{q(name)} LIMIT 1")
            found[name] = None
        except pymysql.MySQLError as exc:
            found[name] = str(exc)
    return found


def test_a_rebuild_that_fails_keeps_a_whole_environment_visible(world: World) -> None:
    """Readers see the old environment or the new one: every table and every view of one of them, working."""
    env = world.env("dev")
    apply_ok(world, world.manifest("dev"))
    old_tables = world.tables(world.target)
    old_sums = world.checksums(world.target)
    path = world.manifest("dev", tables={"exclude": ["page_views"]})
    plan = api.plan([path], config=world.config)
    _break_product_prices(world)

    result = api.apply(plan, config=world.config)

    assert not result.ok
    assert status(world, env) == "failed"
    assert world.work_databases() == []
    assert world.tables(world.target) == old_tables
    assert world.checksums(world.target) == old_sums
    assert _readable_views(world, world.target) == dict.fromkeys(VIEWS)

    _mend_product_prices(world)
    retry = api.plan([path], config=world.config)
    assert [type(a) for a in retry.actions] == [Rebuild]
    assert api.apply(retry, config=world.config).ok
    assert_converged(world, path, without=("page_views",))
