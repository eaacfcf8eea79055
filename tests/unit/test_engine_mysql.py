"""moenv.engines.mysql and moenv.engines.ledger: the exact SQL text moenv sends to MySQL/MariaDB.

The SHOW CREATE TABLE texts are copied from MariaDB 10.11 (the demo `production_db`).
"""

from __future__ import annotations

import re

import pytest
import sqlglot
from sqlglot import exp

from moenv.engines import ledger, mysql
from moenv.engines.base import qualified, quote_ident
from moenv.models.desired import ParentFilter, TableCopy, ViewCopy

ORDER_ITEMS = """\
CREATE TABLE `order_items` (
  `order_id` int(10) unsigned NOT NULL,
  `line_no` smallint(5) unsigned NOT NULL,
  `product_id` int(10) unsigned NOT NULL,
  `quantity` int(10) unsigned NOT NULL DEFAULT 1,
  `unit_price` decimal(10,2) NOT NULL,
  PRIMARY KEY (`order_id`,`line_no`),
  KEY `idx_order_items_product` (`product_id`),
  CONSTRAINT `fk_order_items_order` FOREIGN KEY (`order_id`) REFERENCES `orders` (`id`),
  CONSTRAINT `fk_order_items_product` FOREIGN KEY (`product_id`) REFERENCES `products` (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"""

ORDERS = """\
CREATE TABLE `orders` (
  `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `user_id` int(10) unsigned NOT NULL,
  `status` enum('pending','completed','cancelled','refunded') NOT NULL DEFAULT 'pending',
  `total` decimal(12,2) NOT NULL DEFAULT 0.00,
  `created_at` datetime NOT NULL DEFAULT current_timestamp(),
  `updated_at` datetime NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  PRIMARY KEY (`id`),
  KEY `idx_orders_user_created` (`user_id`,`created_at`),
  CONSTRAINT `fk_orders_user` FOREIGN KEY (`user_id`) REFERENCES `users` (`id`)
) ENGINE=InnoDB AUTO_INCREMENT=40001 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"""

USERS = """\
CREATE TABLE `users` (
  `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `username` varchar(64) NOT NULL,
  `email` varchar(255) NOT NULL,
  `phone` varchar(32) DEFAULT NULL,
  `address` varchar(255) DEFAULT NULL,
  `birth_date` date DEFAULT NULL,
  `created_at` datetime NOT NULL DEFAULT current_timestamp(),
  `updated_at` datetime NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  PRIMARY KEY (`id`),
  UNIQUE KEY `uq_users_username` (`username`),
  UNIQUE KEY `uq_users_email` (`email`)
) ENGINE=InnoDB AUTO_INCREMENT=20001 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"""

# MariaDB 10.11 prints a column-level CHECK inline and a table-level one as a CONSTRAINT line.
LINES = """\
CREATE TABLE `lines` (
  `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `qty` int(11) NOT NULL CHECK (`qty` > 0),
  `price` decimal(10,2) NOT NULL,
  `total` decimal(12,2) GENERATED ALWAYS AS (`qty` * `price`) VIRTUAL,
  `note` varchar(20) DEFAULT 'a,b',
  `account_id` int(10) unsigned DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `uq_note` (`note`),
  KEY `ix_account` (`account_id`),
  CONSTRAINT `fk_lines_account` FOREIGN KEY (`account_id`) REFERENCES `crm`.`accounts` (`id`) ON DELETE CASCADE,
  CONSTRAINT `chk_price` CHECK (`price` >= 0)
) ENGINE=InnoDB AUTO_INCREMENT=7 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"""

ORDER_TOTALS = (
    "select `u`.`id` AS `user_id`,`u`.`username` AS `username`,count(`o`.`id`) AS `order_count`,"
    "sum(`o`.`total`) AS `total_spent` from (`production_db`.`orders` `o` join `production_db`.`users` `u` "
    "on(`u`.`id` = `o`.`user_id`)) group by `u`.`id`,`u`.`username`"
)

STAGING = "_moenv_s_0123"


def copy(source: str, *, target: str | None = None, **fields: object) -> TableCopy:
    values: dict[str, object] = {"source": source, "target": target or source, "columns": ("id",), "select": ("`id`",)}
    values.update(fields)
    return TableCopy.model_validate(values)


# --- adapt_create_table ----------------------------------------------------------------------


def test_foreign_keys_are_repointed_into_the_staging_database_under_renamed_parents() -> None:
    ddl = mysql.adapt_create_table(
        ORDER_ITEMS, copy("order_items"), database=STAGING, renames={"orders": "orders_2024", "products": "products"}
    )

    assert ddl == (
        "CREATE TABLE `_moenv_s_0123`.`order_items` (\n"
        "  `order_id` int(10) unsigned NOT NULL,\n"
        "  `line_no` smallint(5) unsigned NOT NULL,\n"
        "  `product_id` int(10) unsigned NOT NULL,\n"
        "  `quantity` int(10) unsigned NOT NULL DEFAULT 1,\n"
        "  `unit_price` decimal(10,2) NOT NULL,\n"
        "  PRIMARY KEY (`order_id`,`line_no`),\n"
        "  KEY `idx_order_items_product` (`product_id`),\n"
        "  CONSTRAINT `fk_order_items_order` FOREIGN KEY (`order_id`)"
        " REFERENCES `_moenv_s_0123`.`orders_2024` (`id`),\n"
        "  CONSTRAINT `fk_order_items_product` FOREIGN KEY (`product_id`)"
        " REFERENCES `_moenv_s_0123`.`products` (`id`)\n"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
    )


def test_the_table_itself_takes_its_target_name() -> None:
    ddl = mysql.adapt_create_table(USERS, copy("users", target="users_essential"), database="dev_db", renames={})

    assert ddl.split("\n")[0] == "CREATE TABLE `dev_db`.`users_essential` ("
    assert ddl.split("\n")[1:] == USERS.split("\n")[1:]  # nothing else changes


def test_a_dropped_last_foreign_key_leaves_no_trailing_comma() -> None:
    ddl = mysql.adapt_create_table(
        ORDER_ITEMS,
        copy("order_items", dropped_foreign_keys=("fk_order_items_product",)),
        database=STAGING,
        renames={},
    )

    assert ddl.endswith(
        "  KEY `idx_order_items_product` (`product_id`),\n"
        "  CONSTRAINT `fk_order_items_order` FOREIGN KEY (`order_id`) REFERENCES `_moenv_s_0123`.`orders` (`id`)\n"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
    )
    assert "fk_order_items_product" not in ddl


def test_every_dropped_foreign_key_is_removed() -> None:
    ddl = mysql.adapt_create_table(
        ORDERS, copy("orders", dropped_foreign_keys=("fk_orders_user",)), database=STAGING, renames={}
    )

    assert ddl == (
        "CREATE TABLE `_moenv_s_0123`.`orders` (\n"
        "  `id` int(10) unsigned NOT NULL AUTO_INCREMENT,\n"
        "  `user_id` int(10) unsigned NOT NULL,\n"
        "  `status` enum('pending','completed','cancelled','refunded') NOT NULL DEFAULT 'pending',\n"
        "  `total` decimal(12,2) NOT NULL DEFAULT 0.00,\n"
        "  `created_at` datetime NOT NULL DEFAULT current_timestamp(),\n"
        "  `updated_at` datetime NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),\n"
        "  PRIMARY KEY (`id`),\n"
        "  KEY `idx_orders_user_created` (`user_id`,`created_at`)\n"
        ") ENGINE=InnoDB AUTO_INCREMENT=40001 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
    )


def test_a_foreign_key_to_another_database_is_repointed_unless_dropped() -> None:
    kept = mysql.adapt_create_table(LINES, copy("lines"), database=STAGING, renames={})
    dropped = mysql.adapt_create_table(
        LINES, copy("lines", dropped_foreign_keys=("fk_lines_account",)), database=STAGING, renames={}
    )

    assert (
        "  CONSTRAINT `fk_lines_account` FOREIGN KEY (`account_id`) REFERENCES `_moenv_s_0123`.`accounts` (`id`)"
        " ON DELETE CASCADE,\n" in kept
    )
    assert "fk_lines_account" not in dropped
    assert "  KEY `ix_account` (`account_id`),\n  CONSTRAINT `chk_price` CHECK (`price` >= 0)\n)" in dropped


def test_without_constraints_foreign_keys_and_check_lines_go() -> None:
    ddl = mysql.adapt_create_table(LINES, copy("lines"), database=STAGING, renames={}, constraints=False)

    assert "CONSTRAINT" not in ddl
    assert ddl.endswith(
        "  PRIMARY KEY (`id`),\n"
        "  UNIQUE KEY `uq_note` (`note`),\n"
        "  KEY `ix_account` (`account_id`)\n"
        ") ENGINE=InnoDB AUTO_INCREMENT=7 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
    )


def test_without_constraints_an_inline_column_check_goes_too() -> None:
    """`constraints: false` means no checks in the target, including MariaDB's inline column CHECK."""
    ddl = mysql.adapt_create_table(LINES, copy("lines"), database=STAGING, renames={}, constraints=False)

    assert "  `qty` int(11) NOT NULL,\n" in ddl
    assert "CHECK" not in ddl


def test_without_indexes_secondary_keys_go_and_the_primary_key_stays() -> None:
    ddl = mysql.adapt_create_table(USERS, copy("users"), database="dev_db", renames={}, indexes=False)

    assert ddl.endswith(
        "  `updated_at` datetime NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),\n"
        "  PRIMARY KEY (`id`)\n"
        ") ENGINE=InnoDB AUTO_INCREMENT=20001 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
    )
    assert "UNIQUE" not in ddl


def test_without_indexes_foreign_keys_stay() -> None:
    ddl = mysql.adapt_create_table(ORDER_ITEMS, copy("order_items"), database=STAGING, renames={}, indexes=False)

    assert "idx_order_items_product" not in ddl
    assert "  PRIMARY KEY (`order_id`,`line_no`),\n  CONSTRAINT `fk_order_items_order`" in ddl
    assert ddl.count("FOREIGN KEY") == 2


def test_auto_increment_is_kept_or_removed() -> None:
    kept = mysql.adapt_create_table(ORDERS, copy("orders"), database=STAGING, renames={})
    removed = mysql.adapt_create_table(ORDERS, copy("orders"), database=STAGING, renames={}, keep_auto_increment=False)

    assert kept.endswith(") ENGINE=InnoDB AUTO_INCREMENT=40001 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci")
    assert removed.endswith(") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci")
    assert "  `id` int(10) unsigned NOT NULL AUTO_INCREMENT,\n" in removed  # the column attribute stays


def test_excluded_columns_and_their_indexes_go() -> None:
    ddl = mysql.adapt_create_table(
        USERS, copy("users", excluded_columns=("email", "phone")), database="dev_db", renames={}
    )

    assert ddl == (
        "CREATE TABLE `dev_db`.`users` (\n"
        "  `id` int(10) unsigned NOT NULL AUTO_INCREMENT,\n"
        "  `username` varchar(64) NOT NULL,\n"
        "  `address` varchar(255) DEFAULT NULL,\n"
        "  `birth_date` date DEFAULT NULL,\n"
        "  `created_at` datetime NOT NULL DEFAULT current_timestamp(),\n"
        "  `updated_at` datetime NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),\n"
        "  PRIMARY KEY (`id`),\n"
        "  UNIQUE KEY `uq_users_username` (`username`)\n"
        ") ENGINE=InnoDB AUTO_INCREMENT=20001 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
    )


@pytest.mark.parametrize(
    "ddl",
    [
        "",
        "garbage",
        "CREATE VIEW `v` AS select 1",
        "CREATE TABLE `t` (\n  `id` int(11) NOT NULL",  # no closing line
    ],
)
def test_unexpected_show_create_table_output_is_a_value_error(ddl: str) -> None:
    with pytest.raises(ValueError, match="unexpected SHOW CREATE TABLE output for t"):
        mysql.adapt_create_table(ddl, copy("t"), database=STAGING, renames={})


# --- copying and swapping --------------------------------------------------------------------


def test_insert_select_of_a_whole_table() -> None:
    users = copy("users", columns=("id", "username", "email"), select=("`id`", "`username`", "`email`"))

    assert mysql.insert_select(users, source_database="production_db", into_database=STAGING) == (
        "INSERT INTO `_moenv_s_0123`.`users` (`id`, `username`, `email`)"
        " SELECT `id`, `username`, `email` FROM `production_db`.`users` AS `s`"
    )


def test_insert_select_with_a_mask_a_filter_and_a_renamed_target() -> None:
    users = copy(
        "users",
        target="users_essential",
        columns=("id", "email"),
        select=("`id`", "CONCAT('user_', `id`, '@example.com')"),
        where="(`created_at` > '2024-01-01')",
    )

    assert mysql.insert_select(users, source_database="production_db", into_database=STAGING) == (
        "INSERT INTO `_moenv_s_0123`.`users_essential` (`id`, `email`)"
        " SELECT `id`, CONCAT('user_', `id`, '@example.com') FROM `production_db`.`users` AS `s`"
        " WHERE (`created_at` > '2024-01-01')"
    )


def test_insert_select_keeps_only_rows_whose_parents_were_copied() -> None:
    items = copy(
        "order_items",
        columns=("order_id", "line_no"),
        select=("`order_id`", "`line_no`"),
        where="(`quantity` > 1)",
        filters=(
            ParentFilter(name="fk_order_items_order", columns=("order_id",), parent="orders_2024", ref_columns=("id",)),
            ParentFilter(
                name="fk_self", columns=("line_no",), parent="order_items", ref_columns=("id",), deferred=True
            ),
        ),
    )

    assert mysql.insert_select(items, source_database="production_db", into_database=STAGING) == (
        "INSERT INTO `_moenv_s_0123`.`order_items` (`order_id`, `line_no`)"
        " SELECT `order_id`, `line_no` FROM `production_db`.`order_items` AS `s`"
        " WHERE (`quantity` > 1) AND (`s`.`order_id` IS NULL OR EXISTS"
        " (SELECT 1 FROM `_moenv_s_0123`.`orders_2024` AS `p` WHERE `p`.`id` = `s`.`order_id`))"
    )


def test_rename_into_moves_every_table_in_one_statement() -> None:
    assert mysql.rename_into(["users", "orders"], staging=STAGING, target="dev_db") == (
        "RENAME TABLE `_moenv_s_0123`.`users` TO `dev_db`.`users`, `_moenv_s_0123`.`orders` TO `dev_db`.`orders`"
    )


def test_swap_tables_moves_old_out_and_new_in_in_one_statement() -> None:
    sql = mysql.swap_tables(
        ["users", "orders"], ["users", "legacy"], staging=STAGING, target="dev_db", holding="_moenv_o_9"
    )

    assert sql == (
        "RENAME TABLE `dev_db`.`users` TO `_moenv_o_9`.`users`, `dev_db`.`legacy` TO `_moenv_o_9`.`legacy`,"
        " `_moenv_s_0123`.`users` TO `dev_db`.`users`, `_moenv_s_0123`.`orders` TO `dev_db`.`orders`"
    )


def test_copy_session_reads_without_locking_and_fills_without_checks() -> None:
    assert mysql.COPY_SESSION == (
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "SET SESSION foreign_key_checks = 0",
        "SET SESSION unique_checks = 0",
    )


def test_database_statements() -> None:
    assert mysql.create_database("dev`db") == "CREATE DATABASE `dev``db`"
    assert mysql.create_database("dev_db", "utf8mb4", "utf8mb4_unicode_ci") == (
        "CREATE DATABASE `dev_db` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    )
    assert mysql.drop_database("dev_db") == "DROP DATABASE IF EXISTS `dev_db`"
    assert mysql.show_create_table("production_db", "order_items") == "SHOW CREATE TABLE `production_db`.`order_items`"


# --- views -----------------------------------------------------------------------------------


def test_create_view_points_the_source_qualifiers_at_the_copies() -> None:
    view = ViewCopy(name="order_totals", definition=ORDER_TOTALS, security="INVOKER")

    sql = mysql.create_view(
        view, source_database="production_db", target="dev_db", renames={"users": "users_essential"}
    )

    assert sql == (
        "CREATE OR REPLACE SQL SECURITY INVOKER VIEW `dev_db`.`order_totals` AS "
        "select `u`.`id` AS `user_id`,`u`.`username` AS `username`,count(`o`.`id`) AS `order_count`,"
        "sum(`o`.`total`) AS `total_spent` from (`dev_db`.`orders` `o` join `dev_db`.`users_essential` `u` "
        "on(`u`.`id` = `o`.`user_id`)) group by `u`.`id`,`u`.`username`"
    )


def test_create_view_rewrites_fully_qualified_columns_and_keeps_definer_security() -> None:
    view = ViewCopy(
        name="active_users",
        definition="select `production_db`.`users`.`id` AS `id` from `production_db`.`users`"
        " where `production_db`.`users`.`id` in (select `production_db2`.`banned`.`id` from `production_db2`.`banned`)",
    )

    sql = mysql.create_view(view, source_database="production_db", target="dev_db", renames={})

    assert sql == (
        "CREATE OR REPLACE SQL SECURITY DEFINER VIEW `dev_db`.`active_users` AS "
        "select `dev_db`.`users`.`id` AS `id` from `dev_db`.`users`"
        " where `dev_db`.`users`.`id` in (select `production_db2`.`banned`.`id` from `production_db2`.`banned`)"
    )


def test_create_view_never_carries_a_definer_clause() -> None:
    view = ViewCopy(name="v", definition="select 1 AS `one`", security="invoker")

    assert mysql.create_view(view, source_database="s", target="t", renames={}) == (
        "CREATE OR REPLACE SQL SECURITY INVOKER VIEW `t`.`v` AS select 1 AS `one`"
    )


# --- identifiers and locks -------------------------------------------------------------------


def test_quote_ident_doubles_backticks() -> None:
    assert quote_ident("users") == "`users`"
    assert quote_ident("we`ird") == "`we``ird`"
    assert quote_ident("``") == "``````"
    assert qualified("a`b", "c") == "`a``b`.`c`"


@pytest.mark.parametrize("name", ["", "a\x00b"])
def test_quote_ident_refuses_unusable_names(name: str) -> None:
    with pytest.raises(ValueError, match="not a usable identifier"):
        quote_ident(name)


def test_lock_name_is_short_and_stable() -> None:
    assert mysql.lock_name("dev") == "moenv:ef260e9aa3c673af240d17a2660480361a8e081d"
    assert len(mysql.lock_name("x" * 128)) <= 64
    assert mysql.lock_name("x" * 128) != mysql.lock_name("x" * 127 + "y")
    assert mysql.lock_name("dev") != mysql.lock_name("Dev")


# --- ledger ----------------------------------------------------------------------------------


def test_ledger_migrations_quote_a_ledger_name_with_a_backtick() -> None:
    statements = ledger.migration_statements("mo`env", 0)

    assert [version for version, _ in statements] == [1, 1, 1, 1, 2]
    tables = []
    for _, sql in statements:
        assert "{db}" not in sql
        assert "`mo``env`." in sql
        tree = sqlglot.parse_one(sql, read="mysql")
        (table,) = tree.find_all(exp.Table)
        assert table.db == "mo`env"
        tables.append(table.name)
    assert tables == ["meta", "environments", "events", "meta", "environments"]


def test_an_up_to_date_ledger_needs_no_migration() -> None:
    assert ledger.migration_statements("moenv", ledger.SCHEMA_VERSION) == []


def test_upsert_record_has_one_placeholder_per_column() -> None:
    sql = ledger.upsert_record("mo`env")

    assert sql.startswith("INSERT INTO `mo``env`.`environments` (`name`, `target_database`, ")
    assert sql.count("%s") == len(ledger.RECORD_COLUMNS)
    (listed,) = re.findall(r"\(([^()]*)\) VALUES", sql)
    assert [c.strip().strip("`") for c in listed.split(",")] == list(ledger.RECORD_COLUMNS)
    updates = sql.split("ON DUPLICATE KEY UPDATE ", 1)[1]
    assert "`name` = VALUES(`name`)" not in updates
    assert updates.count("= VALUES(") == len(ledger.RECORD_COLUMNS) - 1


def test_insert_event_has_one_placeholder_per_column_but_the_id() -> None:
    sql = ledger.insert_event("moenv")

    assert sql == (
        "INSERT INTO `moenv`.`events` (`at`, `environment`, `action`, `result`, `actor`, `rows_copied`,"
        " `duration_ms`, `message`) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    )


def test_ledger_queries_are_qualified_with_the_ledger() -> None:
    assert ledger.select_events("moenv", environment=True, limit=20) == (
        "SELECT `id`, `at`, `environment`, `action`, `result`, `actor`, `rows_copied`, `duration_ms`, `message`"
        " FROM `moenv`.`events` WHERE `environment` = %s ORDER BY `id` DESC LIMIT 20"
    )
    assert ledger.delete_record("x`y") == "DELETE FROM `x``y`.`environments` WHERE `name` = %s"
    assert ledger.bump_revision("moenv") == (
        "UPDATE `moenv`.`meta` SET `v` = CAST(`v` AS UNSIGNED) + 1 WHERE `k` = 'revision'"
    )


def test_an_excluded_column_is_never_mentioned_in_the_ddl() -> None:
    """A generated column or an inline CHECK over an excluded column would make CREATE TABLE fail."""
    ddl = mysql.adapt_create_table(
        LINES, copy("lines", excluded_columns=("price", "qty")), database=STAGING, renames={}
    )

    assert "`price`" not in ddl
    assert "`qty`" not in ddl
    assert "  `note` varchar(20) DEFAULT 'a,b',\n" in ddl


# -- incremental refresh across servers ---------------------------------------------------------------


def _orders() -> TableCopy:
    return TableCopy(
        source="orders",
        target="orders",
        columns=("id", "customer_id", "amount", "updated_at"),
        select=("`s`.`id`", "`s`.`customer_id`", "`s`.`amount`", "`s`.`updated_at`"),
        where="`s`.`amount` > 0",
        filters=(ParentFilter(name="fk_c", columns=("customer_id",), parent="customers", ref_columns=("id",)),),
        key=("id",),
        watermark="updated_at",
    )


def test_values_read_back_become_literals_that_need_no_escaping() -> None:
    assert mysql.value_literal(42) == "42"
    assert mysql.value_literal(None) == "NULL"
    assert mysql.value_literal(b"\x00'") == "X'0027'"
    assert mysql.value_literal("it's") == "CONVERT(X'69742773' USING utf8mb4)"
    assert mysql.value_literal("") == "''"


def test_the_changed_rows_are_those_at_or_after_the_stored_watermark_through_where() -> None:
    changed = mysql.changed_rows(_orders(), "2024-06-01 00:10:00", into="_moenv_d0")
    assert changed.target == "_moenv_d0" and changed.filters == ()
    assert changed.where == (
        "(`s`.`amount` > 0) AND `s`.`updated_at` >= "
        "CONVERT(X'323032342d30362d30312030303a31303a3030' USING utf8mb4)"
    )


def test_the_keys_stream_carries_the_key_and_the_columns_the_filters_read() -> None:
    keys = mysql.source_keys(_orders(), into="_moenv_k0")
    assert (keys.columns, keys.select, keys.where) == (("id", "customer_id"), ("`s`.`id`", "`s`.`customer_id`"),
                                                       "`s`.`amount` > 0")
    assert mysql.create_keys_table(_orders(), "stg", "_moenv_k0", like_database="dst") == [
        "CREATE TABLE `stg`.`_moenv_k0` AS SELECT `id`, `customer_id` FROM `dst`.`orders` WHERE FALSE",
        "ALTER TABLE `stg`.`_moenv_k0` ADD PRIMARY KEY (`id`)",
    ]
    indexing = "ALTER TABLE `stg`.`_moenv_k0` ADD KEY (`customer_id`)"
    assert mysql.index_keys_table(_orders(), "stg", "_moenv_k0") == indexing


def test_the_merge_statements_match_rows_by_key() -> None:
    copy = _orders()
    assert mysql.delete_matching(copy, database="dst", keys_database="stg", keys_table="_moenv_d0") == (
        "DELETE `dst`.`orders` FROM `stg`.`_moenv_d0` JOIN `dst`.`orders`"
        " ON `stg`.`_moenv_d0`.`id` = `dst`.`orders`.`id`"
    )
    assert mysql.delete_unmatched(copy, database="dst", keys_database="stg", keys_table="_moenv_k0") == (
        "DELETE FROM `dst`.`orders` WHERE NOT EXISTS (SELECT 1 FROM `stg`.`_moenv_k0` AS `k`"
        " WHERE `k`.`id` = `dst`.`orders`.`id`)"
    )
    missing = mysql.missing_keys(copy, database="dst", keys_database="stg", keys_table="_moenv_k0")
    assert missing.startswith(
        "SELECT `s`.`id` FROM `stg`.`_moenv_k0` AS `s` WHERE NOT EXISTS (SELECT 1 FROM `dst`.`orders` AS `x`"
        " WHERE `x`.`id` = `s`.`id`) AND "
    )
    assert "EXISTS (SELECT 1 FROM `dst`.`customers` AS `p`" in missing  # the live integrity filter, in the copy
    [filter_] = copy.filters
    narrowed = mysql.missing_keys(
        copy, database="dst", keys_database="stg", keys_table="_moenv_k0", via=(filter_, "_moenv_d1")
    )
    assert narrowed.startswith(  # only the children of the parent's new rows, through the reference index
        "SELECT DISTINCT `s`.`id` FROM `stg`.`_moenv_d1` AS `n` STRAIGHT_JOIN `stg`.`_moenv_k0` AS `s`"
        " ON `n`.`id` = `s`.`customer_id` WHERE NOT EXISTS"
    )


def test_rows_are_fetched_by_key_lists_single_and_composite() -> None:
    single = mysql.rows_with_keys(_orders(), [(1,), (2,)], into="_moenv_m0_0")
    assert single.where == "(`s`.`amount` > 0) AND `s`.`id` IN (1, 2)"
    composite = _orders().model_copy(update={"key": ("id", "customer_id"), "where": None})
    assert mysql.rows_with_keys(composite, [(1, 3), (2, "x")], into="m").where == (
        "(`s`.`id`, `s`.`customer_id`) IN ((1, 3), (2, CONVERT(X'78' USING utf8mb4)))"
    )
