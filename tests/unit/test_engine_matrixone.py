"""moenv.engines.matrixone and moenv.engines.plan_methods: the exact SQL moenv sends to MatrixOne,
per capability version (3.0, 4.0, 4.1, 4.2), the version gates, and the copy method per table.

SHOW CREATE TABLE texts are copied from MatrixOne's BVT results (clone_reference.result,
clone_fk_after_alter.result), the only real server output available here.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from tests.unit.builders import catalog, create_action, demo_catalog, record, spec, table, view

from moenv.engines import ledger as ledger_sql
from moenv.engines import matrixone as mo
from moenv.engines.plan_methods import choose_copy_methods, engine_problems
from moenv.errors import ManifestError
from moenv.live.connection import EngineInfo
from moenv.models.catalog import Catalog
from moenv.models.desired import Desired, ParentFilter, TableCopy, ViewCopy
from moenv.models.ledger import staging_database
from moenv.planner.build import build_steps, refresh_steps
from moenv.planner.render import render_action
from moenv.resolve import resolve_environment

V30 = "8.0.30-MatrixOne-v3.0.0"
V40 = "8.0.30-MatrixOne-v4.0.0"
V40_RC = "8.0.30-MatrixOne-v4.0.0-rc2"
V41 = "8.0.30-MatrixOne-v4.1.0"
V412 = "8.0.30-MatrixOne-v4.1.2"
V42 = "8.0.30-MatrixOne-v4.2.0"
DEV = "8.0.30-MatrixOne-v"
V22 = "8.0.30-MatrixOne-v2.2.2"
MARIADB = "10.11.6-MariaDB-0+deb12u1"

SP = "moenv_0123abcd_0123456789abcdef01234567"


def caps(text: str) -> mo.Capabilities:
    return mo.Capabilities.from_text(text)


def mo_source(version: str = V42, source: Catalog | None = None) -> Catalog:
    return dataclasses.replace(source if source is not None else demo_catalog(), engine=version)


def mo_desired(version: str = V42, *, of: Catalog | None = None, **fields: Any) -> Desired:
    """`spec(**fields)` resolved against `of` (default: the demo catalog) read from MatrixOne `version`."""
    return resolve_environment(spec(**fields), mo_source(version, of))


def methods(want: Desired) -> dict[str, str]:
    return {t.target: t.method for t in want.tables}


def reason(want: Desired, table: str) -> str:
    (copy,) = [t for t in want.tables if t.target == table]
    (note,) = [n for n in copy.notes if n.startswith(copy.method + ":")]
    return note


# -- versions ------------------------------------------------------------------------------------------


def test_version_texts_parse_release_prerelease_and_dev_builds() -> None:
    assert mo.parse_version(V30) == mo.MatrixOneVersion((3, 0, 0))
    assert mo.parse_version(V40_RC) == mo.MatrixOneVersion((4, 0, 0), "rc2")
    assert mo.parse_version(DEV) == mo.MatrixOneVersion((0, 0, 0), dev_build=True)
    assert mo.parse_version(MARIADB) is None
    assert str(mo.parse_version(V40_RC)) == "4.0.0-rc2"
    assert str(mo.parse_version(DEV)) == "a development build"


@pytest.mark.parametrize("text", [V30, V40_RC, DEV])
def test_the_connection_seam_sees_matrixone_in_every_version_text(text: str) -> None:
    assert EngineInfo.from_version(text).kind == "matrixone"


@pytest.mark.parametrize(
    ("text", "clone", "get_lock", "kind", "rename", "grants", "supported"),
    [
        (V22, False, False, False, False, False, False),
        (V30, True, False, False, False, False, True),
        (V40_RC, True, True, True, False, False, True),  # rc counts: GET_LOCK and `kind` are in rc1
        (V40, True, True, True, False, False, True),
        (V41, True, True, True, True, False, True),
        (V412, True, True, True, True, True, True),
        (V42, True, True, True, True, True, True),
        (DEV, True, True, True, True, True, True),  # built from main: every released feature
    ],
)
def test_capabilities_per_version(
    text: str, clone: bool, get_lock: bool, kind: bool, rename: bool, grants: bool, supported: bool
) -> None:
    got = caps(text)
    assert (got.clone, got.get_lock, got.snapshot_kind, got.chained_rename, got.copy_grants, got.supported) == (
        clone,
        get_lock,
        kind,
        rename,
        grants,
        supported,
    )
    assert got.snapshot_for_database is (got.version >= (2, 1, 0) or got.dev_build)
    assert got.swap_strategy() == ("rename" if rename else "transaction")


def test_capabilities_from_a_version_tuple() -> None:
    assert mo.Capabilities.from_version((4, 1, 2)).copy_grants
    assert not mo.Capabilities.from_version((4, 1, 1)).copy_grants
    assert mo.Capabilities.from_version((0, 0, 0), dev_build=True).copy_grants
    assert mo.Capabilities.from_version((3, 0, 18)).describe() == "3.0.18"
    with pytest.raises(ValueError, match="not a MatrixOne version"):
        mo.Capabilities.from_text(MARIADB)


# -- names ---------------------------------------------------------------------------------------------


def test_snapshot_names_are_deterministic_short_and_scoped_by_ledger() -> None:
    name = mo.snapshot_name("moenv", "dev-alice")
    assert name == mo.snapshot_name("moenv", "dev-alice")
    assert name != mo.snapshot_name("moenv", "dev-bob")
    assert name != mo.snapshot_name("other_ledger", "dev-alice")
    assert re.fullmatch(r"moenv_[0-9a-f]{8}_[0-9a-f]{24}", name)
    assert len(name) == 39
    assert name.startswith(mo.snapshot_prefix("moenv"))
    assert mo.check_snapshot_name(name) == name


@pytest.mark.parametrize("bad", ["", "x" * 65, "my snap", "it's", 'a"b', "a`b", "a{b}"])
def test_snapshot_names_matrixone_would_refuse_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a MatrixOne snapshot name"):
        mo.check_snapshot_name(bad)


def test_temporary_table_names_are_short_and_marked() -> None:
    name = mo.temporary_table(mo.NEW_PREFIX, "x" * 64)
    assert name.startswith("_moenv_n_") and len(name) == 25
    assert mo.temporary_table(mo.OLD_PREFIX, "users").startswith("_moenv_o_")


# -- snapshots -----------------------------------------------------------------------------------------


def test_snapshot_create_and_drop() -> None:
    assert mo.create_snapshot(SP, "production_db") == f"CREATE SNAPSHOT {SP} FOR DATABASE `production_db`"
    assert mo.drop_snapshot(SP) == f"DROP SNAPSHOT IF EXISTS {SP}"
    with pytest.raises(ValueError):
        mo.create_snapshot("x y", "db")


@pytest.mark.parametrize(("version", "kind"), [(V30, False), (V40, True), (V41, True), (V42, True)])
def test_snapshot_reads_filter_hidden_branch_snapshots_from_4_0(version: str, kind: bool) -> None:
    filter_ = " AND `kind` = 'user'" if kind else ""
    assert mo.select_snapshot(caps(version)) == (
        "SELECT `level`, `account_name`, `database_name`, `table_name`, current_account_name()"
        " FROM `mo_catalog`.`mo_snapshots` WHERE `sname` = %s" + filter_
    )
    assert mo.list_snapshots(caps(version)) == (
        "SELECT `sname` FROM `mo_catalog`.`mo_snapshots` WHERE `sname` LIKE %s" + filter_
    )


@pytest.mark.parametrize(
    ("row", "tables", "whole", "problem"),
    [
        (None, ["users"], False, "does not exist"),
        (("cluster", "", "", "", "acc1"), ["users", "orders"], True, None),
        (("account", "acc1", "", "", "acc1"), ["users"], True, None),
        (("account", "acc2", "", "", "acc1"), ["users"], False, "belongs to account acc2"),
        (("database", "acc1", "src", "", "acc1"), ["users", "orders"], True, None),
        (("database", "acc1", "other", "", "acc1"), ["users"], False, "covers database other, not the source src"),
        (("table", "acc1", "src", "users", "acc1"), ["users"], False, None),
        (("table", "acc1", "src", "users", "acc1"), ["users"], True, "cannot clone a database"),
        (("table", "acc1", "src", "users", "acc1"), ["users", "orders"], False, "covers only the table src.users"),
        (("pitr", "acc1", "src", "", "acc1"), ["users"], False, "level moenv does not know"),
    ],
)
def test_a_snapshot_must_cover_what_is_cloned(
    row: tuple[str, ...] | None, tables: list[str], whole: bool, problem: str | None
) -> None:
    found = mo.snapshot_problem(row, name="sp", database="src", tables=tables, whole_database=whole)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_stale_snapshots_are_moenv_s_own_and_not_held_by_a_running_apply() -> None:
    mine = mo.snapshot_name("moenv", "dev")
    busy = mo.snapshot_name("moenv", "ci")
    orphan = mo.snapshot_prefix("moenv") + "f" * 24
    names = [mine, busy, orphan, mo.snapshot_name("other", "dev"), "nightly_backup", mo.snapshot_prefix("moenv") + "x"]
    assert mo.stale_snapshots(names, ledger="moenv", environments=["dev", "ci"], busy={"ci"}) == sorted(
        [(mine, "dev"), (orphan, None)]
    )


# -- catalog reads ---------------------------------------------------------------------------------------


def test_existence_checks_read_mo_catalog_for_this_account_only() -> None:
    assert mo.database_exists() == (
        "SELECT COUNT(*) FROM `mo_catalog`.`mo_database` WHERE `account_id` = current_account_id() AND `datname` = %s"
    )
    assert mo.list_databases() == (
        "SELECT `datname` FROM `mo_catalog`.`mo_database` WHERE `account_id` = current_account_id()"
    )
    assert mo.list_tables() == (
        "SELECT `relname`, `relkind` FROM `mo_catalog`.`mo_tables` WHERE `account_id` = current_account_id()"
        " AND `reldatabase` = %s AND `relkind` IN ('r', 'v') AND `relname` NOT LIKE '__mo_index_%%'"
    )
    assert mo.table_rows() == "SELECT mo_table_rows(%s, %s)"


def test_bulk_catalog_reads_are_one_query_each_for_many_databases() -> None:
    assert mo.catalog_tables(2) == (
        "SELECT `reldatabase`, `relname`, `relkind`, `rel_createsql` FROM `mo_catalog`.`mo_tables`"
        " WHERE `account_id` = current_account_id() AND `reldatabase` IN (%s, %s) AND `relkind` IN ('r', 'v')"
        " AND `relname` NOT LIKE '__mo_index_%%'"
    )
    assert mo.catalog_sizes(1) == (
        "SELECT `reldatabase`, `relname`, mo_table_rows(`reldatabase`, `relname`),"
        " mo_table_size(`reldatabase`, `relname`) FROM `mo_catalog`.`mo_tables`"
        " WHERE `account_id` = current_account_id() AND `reldatabase` IN (%s) AND `relkind` = 'r'"
        " AND `relname` NOT LIKE '__mo_index_%%'"
    )
    assert mo.catalog_columns(1) == (
        "SELECT `TABLE_SCHEMA`, `TABLE_NAME`, `COLUMN_NAME`, `COLUMN_TYPE`, `IS_NULLABLE`, `COLUMN_DEFAULT`,"
        " `EXTRA` FROM `information_schema`.`COLUMNS` WHERE `TABLE_SCHEMA` IN (%s)"
        " ORDER BY `TABLE_SCHEMA`, `TABLE_NAME`, `ORDINAL_POSITION`"
    )
    assert mo.catalog_indexes(1) == (
        "SELECT DISTINCT `t`.`reldatabase`, `t`.`relname`, `i`.`name`, `i`.`type`, `i`.`column_name`,"
        " `i`.`ordinal_position` FROM `mo_catalog`.`mo_indexes` AS `i`"
        " JOIN `mo_catalog`.`mo_tables` AS `t` ON `t`.`rel_id` = `i`.`table_id`"
        " WHERE `t`.`account_id` = current_account_id() AND `t`.`reldatabase` IN (%s)"
    )
    assert mo.catalog_foreign_keys(1) == (
        "SELECT `fk`.`db_name`, `fk`.`table_name`, `fk`.`constraint_name`, `fk`.`column_name`,"
        " `fk`.`refer_db_name`, `fk`.`refer_table_name`, `fk`.`refer_column_name`, `fk`.`on_delete`,"
        " `fk`.`on_update` FROM `mo_catalog`.`mo_foreign_keys` AS `fk`"
        " WHERE `fk`.`db_name` IN (%s) AND EXISTS (SELECT 1 FROM `mo_catalog`.`mo_tables` AS `t`"
        " WHERE `t`.`account_id` = current_account_id() AND `t`.`reldatabase` = `fk`.`db_name`"
        " AND `t`.`relname` = `fk`.`table_name`)"
        " ORDER BY `fk`.`db_name`, `fk`.`table_name`, `fk`.`constraint_name`, `fk`.`column_id`"
    )
    with pytest.raises(ValueError):
        mo.catalog_tables(0)


def test_no_catalog_read_uses_information_schema_row_counts_or_key_column_usage() -> None:
    statements = [mo.catalog_tables(1), mo.catalog_sizes(1), mo.catalog_indexes(1), mo.catalog_foreign_keys(1)]
    assert not any("TABLE_ROWS" in s or "KEY_COLUMN_USAGE" in s for s in statements)


@pytest.mark.parametrize(
    ("create", "select"),
    [
        ("create view v as select a, b from t1", "SELECT a, b FROM t1"),
        ("CREATE VIEW `v1` AS SELECT * FROM `db1`.`t1` WHERE a > 1", "SELECT * FROM `db1`.`t1` WHERE a > 1"),
    ],
)
def test_the_select_of_a_view_is_taken_from_its_create_text(create: str, select: str) -> None:
    assert mo.view_select(create) == select


# -- copies ----------------------------------------------------------------------------------------------


def test_database_clone_never_uses_if_not_exists() -> None:
    assert mo.clone_database("dev_db", "production_db", SP) == (
        f"CREATE DATABASE `dev_db` CLONE `production_db` {{snapshot = '{SP}'}}"
    )
    assert mo.clone_database("dev_db", "_moenv_s_abc") == "CREATE DATABASE `dev_db` CLONE `_moenv_s_abc`"
    assert mo.create_database("dev_db") == "CREATE DATABASE `dev_db`"
    assert mo.drop_database("dev_db") == "DROP DATABASE IF EXISTS `dev_db`"


def test_table_clone_is_qualified_and_puts_the_snapshot_before_copy_grants() -> None:
    assert mo.clone_table("stage", "users", source_database="production_db", source_table="users", snapshot=SP) == (
        f"CREATE TABLE `stage`.`users` CLONE `production_db`.`users` {{snapshot = '{SP}'}}"
    )
    assert mo.clone_table(
        "dev_db", "accounts", source_database="prod", source_table="users", snapshot=SP, copy_grants=True
    ) == (f"CREATE TABLE `dev_db`.`accounts` CLONE `prod`.`users` {{snapshot = '{SP}'}} COPY GRANTS")
    assert mo.clone_table("dev_db", "_moenv_n_1", source_database="stage", source_table="users") == (
        "CREATE TABLE `dev_db`.`_moenv_n_1` CLONE `stage`.`users`"
    )
    assert "IF NOT EXISTS" not in mo.clone_table("a", "b", source_database="c", source_table="d", snapshot=SP)


def _users_copy(**fields: Any) -> TableCopy:
    values: dict[str, Any] = {
        "source": "users",
        "target": "users",
        "columns": ("id", "email"),
        "select": ("`id`", "CONCAT('user_', `id`, '@example.com')"),
        "where": "`created_at` > '2024-01-01'",
        "masked": ("email",),
    }
    values.update(fields)
    return TableCopy(**values)


def test_insert_select_reads_the_source_at_the_snapshot_with_masks_and_filters() -> None:
    orders = TableCopy(
        source="orders",
        target="orders",
        columns=("id", "user_id"),
        select=("`id`", "`user_id`"),
        where="`status` = 'completed'",
        filters=(ParentFilter(name="fk_orders_user", columns=("user_id",), parent="users", ref_columns=("id",)),),
    )
    assert mo.insert_select(orders, source_database="prod", into_database="stage", snapshot=SP) == (
        "INSERT INTO `stage`.`orders` (`id`, `user_id`) SELECT `id`, `user_id` FROM `prod`.`orders`"
        f" {{snapshot = '{SP}'}} AS `s` WHERE `status` = 'completed' AND (`s`.`user_id` IS NULL OR EXISTS"
        " (SELECT 1 FROM `stage`.`users` AS `p` WHERE `p`.`id` = `s`.`user_id`))"
    )
    assert mo.insert_select(_users_copy(where=None), source_database="prod", into_database="stage", snapshot=SP) == (
        "INSERT INTO `stage`.`users` (`id`, `email`) SELECT `id`, CONCAT('user_', `id`, '@example.com')"
        f" FROM `prod`.`users` {{snapshot = '{SP}'}} AS `s`"
    )


def test_the_leak_check_compares_with_the_source_at_the_snapshot() -> None:
    assert mo.count_leaks(_users_copy(), "email", source_database="prod", database="stage", snapshot=SP) == (
        "SELECT COUNT(*) FROM `stage`.`users` AS `t` WHERE `t`.`email` IS NOT NULL AND `t`.`email` IN"
        f" (SELECT `s`.`email` FROM `prod`.`users` {{snapshot = '{SP}'}} AS `s` WHERE `s`.`email` IS NOT NULL)"
    )


# Real MatrixOne output (BVT clone_fk_after_alter.result), with the literal \n turned into newlines.
MO_CHILD = (
    "CREATE TABLE `child` (\n  `id` int NOT NULL,\n  `parent_id` int DEFAULT NULL,\n"
    "  `payload` varchar(64) DEFAULT NULL,\n  PRIMARY KEY (`id`),\n"
    "  CONSTRAINT `fk_child_parent` FOREIGN KEY (`parent_id`) REFERENCES `parent` (`id`)"
    " ON DELETE RESTRICT ON UPDATE RESTRICT\n)"
)


def test_show_create_table_output_of_matrixone_becomes_the_copy_s_ddl() -> None:
    child = TableCopy(
        source="child",
        target="child",
        columns=("id", "parent_id"),
        select=("`id`", "`parent_id`"),
        excluded_columns=("payload",),
    )
    assert mo.show_create_table("prod", "child") == "SHOW CREATE TABLE `prod`.`child`"
    assert mo.adapt_create_table(MO_CHILD, child, database="stage", renames={"parent": "parents"}) == (
        "CREATE TABLE `stage`.`child` (\n  `id` int NOT NULL,\n  `parent_id` int DEFAULT NULL,\n"
        "  PRIMARY KEY (`id`),\n"
        "  CONSTRAINT `fk_child_parent` FOREIGN KEY (`parent_id`) REFERENCES `stage`.`parents` (`id`)"
        " ON DELETE RESTRICT ON UPDATE RESTRICT\n)"
    )
    no_fks = mo.adapt_create_table(MO_CHILD, child, database="stage", renames={}, constraints=False)
    assert "FOREIGN KEY" not in no_fks


def test_the_copy_session_turns_foreign_key_checks_off() -> None:
    assert mo.COPY_SESSION == ("SET foreign_key_checks = 0",)


# -- foreign keys ------------------------------------------------------------------------------------------


def _fk(table: str, name: str, ref_db: str, ref_table: str, **fields: Any) -> mo.ForeignKeyRow:
    values: dict[str, Any] = {"columns": ("user_id",), "ref_columns": ("id",)}
    values.update(fields)
    return mo.ForeignKeyRow(table=table, name=name, ref_database=ref_db, ref_table=ref_table, **values)


def test_add_and_drop_foreign_key() -> None:
    fk_ = _fk("orders", "fk_orders_user", "prod", "users", on_delete="CASCADE", on_update="bogus")
    assert mo.drop_foreign_key("dev_db", "orders", "fk_orders_user") == (
        "ALTER TABLE `dev_db`.`orders` DROP FOREIGN KEY `fk_orders_user`"
    )
    assert mo.add_foreign_key("dev_db", fk_, parent="accounts") == (
        "ALTER TABLE `dev_db`.`orders` ADD CONSTRAINT `fk_orders_user` FOREIGN KEY (`user_id`)"
        " REFERENCES `dev_db`.`accounts` (`id`) ON DELETE CASCADE"
    )


def test_a_table_clone_s_foreign_keys_are_re_pointed_into_the_copy_or_dropped() -> None:
    fks = [
        _fk("orders", "fk_orders_user", "prod", "users", on_delete="RESTRICT", on_update="RESTRICT"),  # cloned
        _fk("items", "fk_items_order", "_moenv_s_1", "orders"),  # cloned from staging
        _fk("items", "fk_items_product", "dev_db", "products"),  # already inside
        _fk("lines", "fk_lines_account", "prod", "accounts"),  # parent not copied
        _fk("lines", "fk_lines_x", "dev_db", "x"),  # dropped by the manifest
    ]
    statements = mo.foreign_key_fixups(
        fks,
        database="dev_db",
        source_database="prod",
        renames={"users": "people"},
        dropped={"fk_lines_x"},
        constraints=True,
        copied={"people", "orders", "items", "products", "lines", "x"},
    )
    assert statements == [
        "ALTER TABLE `dev_db`.`items` DROP FOREIGN KEY `fk_items_order`",
        "ALTER TABLE `dev_db`.`items` ADD CONSTRAINT `fk_items_order` FOREIGN KEY (`user_id`)"
        " REFERENCES `dev_db`.`orders` (`id`)",
        "ALTER TABLE `dev_db`.`lines` DROP FOREIGN KEY `fk_lines_account`",
        "ALTER TABLE `dev_db`.`lines` DROP FOREIGN KEY `fk_lines_x`",
        "ALTER TABLE `dev_db`.`orders` DROP FOREIGN KEY `fk_orders_user`",
        "ALTER TABLE `dev_db`.`orders` ADD CONSTRAINT `fk_orders_user` FOREIGN KEY (`user_id`)"
        " REFERENCES `dev_db`.`people` (`id`) ON DELETE RESTRICT ON UPDATE RESTRICT",
    ]
    off = mo.foreign_key_fixups(
        fks[:1], database="dev_db", source_database="prod", renames={}, dropped=(), constraints=False, copied={"users"}
    )
    assert off == ["ALTER TABLE `dev_db`.`orders` DROP FOREIGN KEY `fk_orders_user`"]


# -- publishing ------------------------------------------------------------------------------------------


def test_the_swap_is_one_chained_rename_inside_the_target_database() -> None:
    statement = mo.swap_tables("dev_db", ["users", "orders"], ["users", "old_table"])
    new_users, new_orders = (mo.temporary_table(mo.NEW_PREFIX, t) for t in ("users", "orders"))
    old_users, old_old = (mo.temporary_table(mo.OLD_PREFIX, t) for t in ("users", "old_table"))
    assert statement == (
        f"RENAME TABLE `dev_db`.`users` TO `dev_db`.`{old_users}`, `dev_db`.`old_table` TO `dev_db`.`{old_old}`,"
        f" `dev_db`.`{new_users}` TO `dev_db`.`users`, `dev_db`.`{new_orders}` TO `dev_db`.`orders`"
    )
    databases = set(re.findall(r"`([^`]+)`\.", statement))
    assert databases == {"dev_db"}  # never across databases (#26856)
    with pytest.raises(ValueError):
        mo.swap_tables("dev_db", [], [])


def test_drop_table() -> None:  # the transaction around a < 4.1 swap: live/connection.py transaction()
    assert mo.drop_table("dev_db", "users") == "DROP TABLE IF EXISTS `dev_db`.`users`"


def test_views_are_pointed_at_the_copy_whether_their_tables_are_qualified_or_not() -> None:
    unqualified = ViewCopy(
        name="v",
        definition="SELECT u.id, COUNT(*) AS n FROM users AS u JOIN orders AS o ON o.user_id = u.id GROUP BY u.id",
    )
    assert mo.create_view(unqualified, source_database="prod", target="dev_db", renames={"users": "people"}) == (
        "CREATE OR REPLACE VIEW `dev_db`.`v` AS SELECT `u`.`id`, COUNT(*) AS `n` FROM `dev_db`.`people` AS `u`"
        " JOIN `dev_db`.`orders` AS `o` ON `o`.`user_id` = `u`.`id` GROUP BY `u`.`id`"
    )
    qualified = ViewCopy(name="w", definition="select * from prod.users where id > 1")
    assert mo.create_view(qualified, source_database="prod", target="dev_db", renames={}) == (
        "CREATE OR REPLACE VIEW `dev_db`.`w` AS SELECT * FROM `dev_db`.`users` WHERE `id` > 1"
    )


# -- locks ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "server_lock"), [(V30, False), (V40, True), (V41, True), (V42, True)])
def test_get_lock_from_4_0_and_a_lease_row_before(version: str, server_lock: bool) -> None:
    assert caps(version).get_lock is server_lock
    assert mo.lock_name("dev") == mo.lock_name("dev") and len(mo.lock_name("dev")) <= 64


def test_get_lock_statements() -> None:
    assert mo.get_lock() == "SELECT GET_LOCK(%s, %s)"
    assert mo.release_lock() == "SELECT RELEASE_LOCK(%s)"
    assert mo.lock_holder() == "SELECT IS_USED_LOCK(%s)"
    assert mo.used_locks(2) == "SELECT IS_USED_LOCK(%s), IS_USED_LOCK(%s)"


def test_lease_statements_for_servers_without_get_lock() -> None:
    assert mo.create_lease_table("moenv") == (
        "CREATE TABLE IF NOT EXISTS `moenv`.`leases` (\n  `name` VARCHAR(64) NOT NULL PRIMARY KEY,\n"
        "  `token` VARCHAR(64) NOT NULL,\n  `holder` VARCHAR(255) NOT NULL,\n  `acquired_at` DATETIME(6) NOT NULL,\n"
        "  `expires_at` DATETIME(6) NOT NULL\n)"
    )
    assert mo.take_lease("moenv") == (
        "INSERT IGNORE INTO `moenv`.`leases` (`name`, `token`, `holder`, `acquired_at`, `expires_at`)"
        " VALUES (%s, %s, %s, UTC_TIMESTAMP(), DATE_ADD(UTC_TIMESTAMP(), INTERVAL %s SECOND))"
    )
    assert mo.take_expired_lease("moenv") == (
        "UPDATE `moenv`.`leases` SET `token` = %s, `holder` = %s, `acquired_at` = UTC_TIMESTAMP(),"
        " `expires_at` = DATE_ADD(UTC_TIMESTAMP(), INTERVAL %s SECOND)"
        " WHERE `name` = %s AND `expires_at` < UTC_TIMESTAMP()"
    )
    assert mo.renew_lease("moenv") == (
        "UPDATE `moenv`.`leases` SET `expires_at` = DATE_ADD(UTC_TIMESTAMP(), INTERVAL %s SECOND)"
        " WHERE `name` = %s AND `token` = %s"
    )
    assert mo.release_lease("moenv") == "DELETE FROM `moenv`.`leases` WHERE `name` = %s AND `token` = %s"
    assert mo.lease_holder("moenv") == (
        "SELECT `holder`, `acquired_at`, `expires_at` FROM `moenv`.`leases` WHERE `name` = %s"
    )
    assert mo.held_leases("moenv", 2) == (
        "SELECT `name` FROM `moenv`.`leases` WHERE `name` IN (%s, %s) AND `expires_at` >= UTC_TIMESTAMP()"
    )
    assert mo.RENEW_SECONDS * 3 < mo.LEASE_SECONDS


# -- the ledger on MatrixOne -----------------------------------------------------------------------------------


def test_ledger_records_are_replaced_not_upserted_on_matrixone() -> None:
    columns = ", ".join(f"`{c}`" for c in ledger_sql.RECORD_COLUMNS)
    marks = ", ".join(["%s"] * len(ledger_sql.RECORD_COLUMNS))
    assert mo.insert_record("moenv") == f"INSERT INTO `moenv`.`environments` ({columns}) VALUES ({marks})"
    assert mo.record_statements("moenv") == (
        "DELETE FROM `moenv`.`environments` WHERE `name` = %s",
        mo.insert_record("moenv"),
    )
    # why: the shared upsert assigns the UNIQUE target_database column, which MatrixOne's ODKU refuses
    assert "`target_database` = VALUES(`target_database`)" in ledger_sql.upsert_record("moenv")
    assert "UNIQUE KEY `uq_target` (`target_database`)" in ledger_sql.MIGRATIONS[0][1]


# -- copy methods ----------------------------------------------------------------------------------------------


def test_a_whole_database_copied_unchanged_is_one_database_clone() -> None:
    want = mo_desired()
    assert set(methods(want).values()) == {"clone_database"}
    assert reason(want, "users") == (
        "clone_database: the whole database is copied unchanged: one zero-copy CREATE DATABASE … CLONE"
        " at the apply's snapshot"
    )


def test_unchanged_tables_of_a_subset_are_table_clones_with_their_foreign_keys_re_pointed() -> None:
    want = mo_desired(tables={"exclude": ["order_items"]})
    assert methods(want) == {"users": "clone_table", "orders": "clone_table", "products": "clone_table"}
    assert reason(want, "users") == "clone_table: unchanged: zero-copy CREATE TABLE … CLONE at the apply's snapshot"
    assert reason(want, "orders").endswith(
        "its foreign keys are re-pointed at the copy's parents or dropped afterwards"
        " (a table clone keeps them on the source's)"
    )


def test_a_filter_makes_its_table_and_under_strict_integrity_its_children_insert_select() -> None:
    want = mo_desired(rules={"users": {"where": "id > 10"}})
    assert methods(want) == {
        "users": "insert_select",
        "orders": "insert_select",
        "products": "clone_table",
        "order_items": "insert_select",
    }
    assert reason(want, "users") == (
        "insert_select: rows filtered (where): created from SHOW CREATE TABLE and filled by INSERT … SELECT"
        " at the apply's snapshot"
    )
    assert "keeps only rows whose parent was copied (users is not copied whole)" in reason(want, "orders")
    assert "(orders is not copied whole)" in reason(want, "order_items")


def test_loose_integrity_leaves_children_of_a_filtered_table_cloned() -> None:
    want = mo_desired(integrity="loose", rules={"users": {"where": "id > 10"}})
    assert methods(want)["orders"] == "clone_table"
    (orders,) = [t for t in want.tables if t.target == "orders"]
    assert orders.dropped_foreign_keys == ("fk_orders_user",)


def test_masks_trimmed_columns_and_indexes_off_copy_rows() -> None:
    masked = mo_desired(rules={"users": {"mask": {"email": "CONCAT('u', id)"}}})
    assert methods(masked)["users"] == "insert_select"
    assert "columns masked: email" in reason(masked, "users")
    trimmed = mo_desired(rules={"users": {"exclude_columns": ["email"]}})
    assert "columns left out: email" in reason(trimmed, "users")
    no_indexes = mo_desired(indexes=False)
    assert set(methods(no_indexes).values()) == {"insert_select"}
    assert "indexes: false" in reason(no_indexes, "products")


def test_a_virtual_relation_under_strict_integrity_filters_the_child() -> None:
    source = catalog("src", table("users", ("id",)), table("events", ("id", "user_id")))
    want = mo_desired(of=source, relations=[{"from": "events(user_id)", "to": "users(id)"}])
    assert methods(want) == {"users": "clone_table", "events": "insert_select"}
    assert "virtual relation" in reason(want, "events")


def test_a_renamed_table_is_cloned_under_its_new_name_not_by_a_database_clone() -> None:
    want = mo_desired(rules={"users": {"rename": "people"}})
    assert methods(want)["people"] == "clone_table"
    assert methods(want)["products"] == "clone_table"


def test_schema_only_copies_no_rows() -> None:
    want = mo_desired(data="schema")
    assert set(methods(want).values()) == {"schema_only"}
    assert reason(want, "users").startswith("schema_only: data: schema")


def test_another_server_streams() -> None:
    want = mo_desired()
    moved = want.model_copy(update={"target": want.target.model_copy(update={"server": "dev"})})
    assert set(methods(choose_copy_methods(moved, mo_source())).values()) == {"stream"}


def test_mysql_and_mariadb_sources_keep_insert_select() -> None:
    want = resolve_environment(spec(), demo_catalog())
    assert set(methods(want).values()) == {"insert_select"}
    assert all(not n.startswith("insert_select:") for t in want.tables for n in t.notes)


def test_a_server_without_clone_copies_rows_and_is_refused_at_plan_time() -> None:
    with pytest.raises(
        ManifestError, match=r"moenv needs MatrixOne ≥ 3\.0\.0 \(CREATE … CLONE\); server default runs 2\.2\.2"
    ):
        mo_desired(V22)


def test_views_skipped_or_left_out_prevent_a_database_clone() -> None:
    source = catalog(
        "src",
        table("users", ("id",)),
        view("v_users", "select `src`.`users`.`id` AS `id` from `src`.`users`"),
    )
    assert set(methods(mo_desired(of=source)).values()) == {"clone_database"}
    assert set(methods(mo_desired(of=source, tables={"include": ["users"]})).values()) == {"clone_table"}


def test_the_plan_shows_each_table_s_method_and_why() -> None:
    want = mo_desired(rules={"users": {"where": "id > 10"}})
    action = create_action(want)
    text = "\n".join(render_action(action))
    assert re.search(r"products\s+\S+\s+clone_table", text)
    assert re.search(r"users\s+\S+\s+insert_select", text)
    assert "note: clone_table: unchanged: zero-copy CREATE TABLE … CLONE at the apply's snapshot" in text
    assert "note: insert_select: rows filtered (where)" in text


def _step_details(want: Desired, *, rebuild: bool = False) -> dict[str, str]:
    return {f"{s.kind}:{s.table or ''}": s.detail for s in build_steps(want, rebuild=rebuild)}


def test_the_plan_steps_say_what_matrixone_does_not_what_mariadb_would() -> None:
    subset = mo_desired(rules={"users": {"where": "id > 10"}})
    src, staging, dst = subset.source.database, staging_database("dev"), subset.target.database
    steps = _step_details(subset)
    assert steps["prepare_staging:"] == f"take a snapshot of {src}; create {staging}"
    assert steps["create_table:products"] == "CREATE TABLE … CLONE products at the snapshot (zero-copy)"
    assert steps["copy_rows:products"] == "rows come with the clone"
    assert steps["copy_rows:users"] == "INSERT … SELECT from users at the snapshot"
    publish = f"CREATE DATABASE {dst} CLONE {staging} (zero-copy, atomic); foreign keys re-pointed into {dst}"
    assert steps["swap:"] == publish
    assert not any("RENAME" in detail for detail in steps.values())  # no cross-database rename on MatrixOne

    whole = _step_details(mo_desired())
    assert whole["swap:"].startswith(f"CREATE DATABASE {dst} CLONE {src} at the snapshot (zero-copy, atomic)")
    assert whole["create_table:users"] == "cloned from the source at publication (zero-copy)"

    assert "one chained RENAME TABLE" in _step_details(mo_desired(V41), rebuild=True)["swap:"]
    assert "in one transaction" in _step_details(mo_desired(V40), rebuild=True)["swap:"]
    # the kinds are MySQL's, in the same order: the MatrixOne executor runs the same plan
    on_mysql = resolve_environment(spec(rules={"users": {"where": "id > 10"}}), demo_catalog())
    mysql_kinds = [s.kind for s in build_steps(on_mysql, rebuild=False)]
    assert [s.kind for s in build_steps(subset, rebuild=False)] == mysql_kinds


def test_an_incremental_refresh_on_matrixone_is_planned_as_a_re_clone() -> None:
    """In-place upserts are MySQL/MariaDB's; the MatrixOne executor has no refresh_incremental step."""
    fields: dict[str, Any] = {"refresh": {"every": "1h", "mode": "incremental", "fallback": "full"}}
    want = mo_desired(**fields)
    rec = record(applied=want).model_copy(update={"watermarks": {t.source: "1" for t in want.tables}})

    assert refresh_steps(want, rec) == build_steps(want, rebuild=True)
    assert "refresh_incremental" not in [s.kind for s in refresh_steps(want, rec)]


# -- what an engine cannot do --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V41, V40, V30])
def test_grants_before_4_1_2_are_refused_with_the_version(version: str) -> None:
    with pytest.raises(ManifestError, match=r"grants: true needs MatrixOne ≥ 4\.1\.2") as info:
        mo_desired(version, grants=True)
    assert info.value.problems[0].field == "spec.grants"
    assert caps(version).describe() in info.value.message


@pytest.mark.parametrize("version", [V412, V42, DEV])
def test_grants_from_4_1_2_clone_every_table_with_copy_grants(version: str) -> None:
    want = mo_desired(version, grants=True)
    assert set(methods(want).values()) == {"clone_table"}
    assert "CLONE COPY GRANTS" in reason(want, "users")


def test_grants_on_a_filtered_table_are_refused() -> None:
    with pytest.raises(ManifestError, match="users, orders, order_items cannot be cloned"):
        mo_desired(grants=True, rules={"users": {"where": "id > 10"}})


def test_grants_snapshots_and_snapshot_consistency_on_mysql_are_refused_at_plan_time() -> None:
    problems = engine_problems(
        spec(grants=True, consistency="snapshot", source={"server": "default", "database": "src", "snapshot": "sp1"}),
        demo_catalog(),
    )
    assert [loc for loc, _ in problems] == [("spec", "source", "snapshot"), ("spec", "consistency"), ("spec", "grants")]
    with pytest.raises(ManifestError, match="copying grants is not supported yet on MySQL/MariaDB"):
        resolve_environment(spec(grants=True), demo_catalog())


def test_a_named_snapshot_and_snapshot_consistency_are_fine_on_matrixone() -> None:
    want = mo_desired(consistency="snapshot", source={"server": "default", "database": "src", "snapshot": "nightly"})
    assert want.manifest.spec.source.snapshot == "nightly"
    with pytest.raises(ManifestError, match="not a MatrixOne snapshot name"):
        mo_desired(source={"server": "default", "database": "src", "snapshot": "night ly"})
