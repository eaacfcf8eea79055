"""The exact SQL of cross-server streaming (engines/mysql.py, the section used by executor/stream.py)."""

from __future__ import annotations

import pytest

from moenv.engines import mysql
from moenv.engines.mysql import LoadColumn
from moenv.models.desired import TableCopy

ESC = "REPLACE(REPLACE(REPLACE({}, X'5C', X'5C5C'), X'09', X'5C74'), X'0A', X'5C6E')"

COPY = TableCopy(
    source="users",
    target="people",
    columns=("id", "email", "score", "flags", "seen", "bio"),
    select=("`id`", "CONCAT('u', `id`)", "`score`", "`flags`", "`seen`", "`bio`"),
    where="`s`.`id` > 5",
)
COLUMNS = [
    LoadColumn("id", "int"),
    LoadColumn("email", "varchar", "utf8mb4"),
    LoadColumn("score", "float"),
    LoadColumn("flags", "bit"),
    LoadColumn("seen", "timestamp"),
    LoadColumn("bio", "blob"),
]
MASKED = "CAST(CONVERT(CONCAT('u', `id`) USING utf8mb4) AS BINARY)"
LINE = (
    "CONCAT_WS(X'09', IFNULL(`id`, X'5C4E'), "
    f"IFNULL({ESC.format(MASKED)}, X'5C4E'), "
    "IFNULL(CAST(`score` AS DOUBLE), X'5C4E'), IFNULL(CAST(`flags` AS UNSIGNED), X'5C4E'), "
    "IFNULL(UNIX_TIMESTAMP(`seen`), X'5C4E'), "
    f"IFNULL({ESC.format('CAST(`bio` AS BINARY)')}, X'5C4E'))"
)


@pytest.mark.parametrize(
    ("column", "plain", "expected"),
    [
        (LoadColumn("n", "bigint"), True, "IFNULL(`n`, X'5C4E')"),
        (LoadColumn("d", "decimal"), True, "IFNULL(`d`, X'5C4E')"),
        (LoadColumn("at", "datetime"), True, "IFNULL(`at`, X'5C4E')"),
        (LoadColumn("f", "float"), True, "IFNULL(CAST(`f` AS DOUBLE), X'5C4E')"),
        (LoadColumn("f", "double"), True, "IFNULL(CAST(`f` AS DOUBLE), X'5C4E')"),
        (LoadColumn("b", "bit"), True, "IFNULL(CAST(`b` AS UNSIGNED), X'5C4E')"),
        (LoadColumn("t", "timestamp"), True, "IFNULL(UNIX_TIMESTAMP(`t`), X'5C4E')"),
        (LoadColumn("s", "varchar", "latin1"), True, f"IFNULL({ESC.format('CAST(`s` AS BINARY)')}, X'5C4E')"),
        (LoadColumn("u", "uuid"), True, f"IFNULL({ESC.format('CAST(`u` AS BINARY)')}, X'5C4E')"),
        (
            LoadColumn("s", "varchar", "latin1"),
            False,
            f"IFNULL({ESC.format('CAST(CONVERT(`s` USING latin1) AS BINARY)')}, X'5C4E')",
        ),
        (LoadColumn("n", "int"), False, f"IFNULL({ESC.format('CAST(`n` AS BINARY)')}, X'5C4E')"),
    ],
)
def test_each_type_travels_as_exact_text(column: LoadColumn, plain: bool, expected: str) -> None:
    assert mysql.stream_value(column, f"`{column.name}`", plain=plain) == expected


def test_a_character_set_name_is_never_spliced_in_unchecked() -> None:
    with pytest.raises(ValueError, match="character set"):
        mysql.stream_value(LoadColumn("s", "varchar", "utf8; DROP"), "x", plain=False)


def test_the_line_of_a_row_applies_masks_and_tab_separates_values() -> None:
    assert mysql.stream_line(COPY, COLUMNS) == LINE


def test_the_line_needs_one_column_per_select_expression() -> None:
    with pytest.raises(ValueError, match="6 select expressions"):
        mysql.stream_line(COPY, COLUMNS[:2])


def test_keyset_conditions_spell_out_composite_keys() -> None:
    assert mysql.key_after(("a",), ["@x"]) == "`s`.`a` > @x"
    assert mysql.key_up_to(("a",), ["@x"]) == "`s`.`a` <= @x"
    assert mysql.key_after(("a", "b", "c"), ["@1", "@2", "@3"]) == (
        "((`s`.`a` > @1) OR (`s`.`a` = @1 AND `s`.`b` > @2) OR (`s`.`a` = @1 AND `s`.`b` = @2 AND `s`.`c` > @3))"
    )
    assert mysql.key_up_to(("a", "b"), ["@1", "@2"]) == "((`s`.`a` < @1) OR (`s`.`a` = @1 AND `s`.`b` <= @2))"
    with pytest.raises(ValueError):
        mysql.key_after(("a", "b"), ["@1"])


def test_a_chunk_bound_stays_in_server_variables() -> None:
    first = mysql.stream_bound(COPY, ("id",), source_database="src", after=None, into=["@b0"], rows=1000)
    assert first == "SELECT `s`.`id` INTO @b0 FROM `src`.`users` AS `s` ORDER BY `s`.`id` LIMIT 1 OFFSET 999"
    later = mysql.stream_bound(
        COPY, ("a", "b"), source_database="src", after=["@x0", "@x1"], into=["@y0", "@y1"], rows=5000
    )
    assert later == (
        "SELECT `s`.`a`, `s`.`b` INTO @y0, @y1 FROM `src`.`users` AS `s`"
        " WHERE ((`s`.`a` > @x0) OR (`s`.`a` = @x0 AND `s`.`b` > @x1)) ORDER BY `s`.`a`, `s`.`b` LIMIT 1 OFFSET 4999"
    )


def test_a_chunk_is_one_group_concat_over_a_key_range_with_the_where_on_the_source() -> None:
    chunk = mysql.stream_chunk(COPY, COLUMNS, ("id",), source_database="src", after=["@a"], up_to=["@b"])
    assert chunk == (
        f"SELECT COUNT(*), GROUP_CONCAT({LINE} SEPARATOR X'0A') FROM `src`.`users` AS `s`"
        " WHERE `s`.`id` > @a AND `s`.`id` <= @b AND `s`.`id` > 5"
    )
    first_and_last = mysql.stream_chunk(COPY, COLUMNS, ("id",), source_database="src", after=None, up_to=None)
    assert first_and_last.endswith("FROM `src`.`users` AS `s` WHERE `s`.`id` > 5")


def test_integrity_filters_are_not_evaluated_on_the_source() -> None:
    from moenv.models.desired import ParentFilter

    child = COPY.model_copy(
        update={"filters": (ParentFilter(name="fk", columns=("id",), parent="x", ref_columns=("id",)),)}
    )
    chunk = mysql.stream_chunk(child, COLUMNS, ("id",), source_database="src", after=None, up_to=None)
    assert "EXISTS" not in chunk and "`x`" not in chunk


def test_tables_without_a_key_stream_row_by_row() -> None:
    assert mysql.stream_rows(COPY, COLUMNS, source_database="src") == (
        f"SELECT {LINE} FROM `src`.`users` AS `s` WHERE `s`.`id` > 5"
    )


def test_load_data_reads_bytes_unconverted_and_sets_bit_and_timestamp_columns() -> None:
    assert mysql.load_data(COPY, COLUMNS, database="_stg", path="/run/moenv-x/rows") == (
        "LOAD DATA LOCAL INFILE '/run/moenv-x/rows' INTO TABLE `_stg`.`people` CHARACTER SET binary"
        " FIELDS TERMINATED BY X'09' ESCAPED BY X'5C' LINES TERMINATED BY X'0A'"
        " (`id`, `email`, `score`, @moenv_v3, @moenv_v4, `bio`)"
        " SET `flags` = CAST(@moenv_v3 AS UNSIGNED),"
        " `seen` = IF(@moenv_v4 = 0, '0000-00-00 00:00:00', FROM_UNIXTIME(CAST(@moenv_v4 AS DECIMAL(20,6))))"
    )


@pytest.mark.parametrize("path", ["/run/it's", "C:\\tmp", "/run/\x00"])
def test_load_data_refuses_a_path_it_would_have_to_escape(path: str) -> None:
    with pytest.raises(ValueError, match="unusable path"):
        mysql.load_data(COPY, COLUMNS, database="_stg", path=path)


def test_sessions() -> None:
    assert mysql.STREAM_SOURCE_SESSION == (
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "SET SESSION group_concat_max_len = 4294967295",
        "SET SESSION character_set_results = binary",
        "SET SESSION net_write_timeout = 3600",
    )
    assert mysql.START_SNAPSHOT == "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"
    assert (
        *mysql.COPY_SESSION,
        "SET SESSION unique_checks = 1",
        "SET SESSION time_zone = '+00:00'",
        "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'NO_AUTO_VALUE_ON_ZERO')",
        "SET SESSION net_read_timeout = 3600",
    ) == mysql.STREAM_TARGET_SESSION


def test_the_global_lock_that_synchronizes_snapshots() -> None:
    assert mysql.global_read_lock("mariadb") == ("BACKUP STAGE START", "BACKUP STAGE BLOCK_COMMIT")
    assert mysql.global_read_unlock("mariadb") == ("BACKUP STAGE END",)
    assert mysql.global_read_lock("mysql") == ("FLUSH TABLES WITH READ LOCK",)
    assert mysql.global_read_unlock("mysql") == ("UNLOCK TABLES",)


def test_staging_shape_queries() -> None:
    assert mysql.staging_columns() == (
        "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_SET_NAME FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION"
    )
    assert mysql.primary_key_columns() == (
        "SELECT COLUMN_NAME FROM information_schema.STATISTICS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX"
    )
    assert mysql.sessions_alive(2) == "SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN (%s, %s)"
    assert mysql.truncate_table("_stg", "people") == "TRUNCATE TABLE `_stg`.`people`"


def test_multi_row_insert_alternative() -> None:
    chunk = mysql.insert_chunk(COPY, COLUMNS, ("id",), source_database="src", after=None, up_to=["@b"])
    assert chunk == (
        "SELECT COUNT(*), GROUP_CONCAT(CONCAT('(', CONCAT_WS(',', QUOTE(`id`),"
        " QUOTE(CAST(CONVERT(CONCAT('u', `id`) USING utf8mb4) AS BINARY)),"
        " IFNULL(CAST(`score` AS DOUBLE), 'NULL'), IFNULL(CAST(`flags` AS UNSIGNED), 'NULL'),"
        " IFNULL(IF(UNIX_TIMESTAMP(`seen`) = 0, '''0000-00-00 00:00:00''',"
        " CONCAT('FROM_UNIXTIME(', UNIX_TIMESTAMP(`seen`), ')')), 'NULL'),"
        " QUOTE(CAST(`bio` AS BINARY))), ')') SEPARATOR ',')"
        " FROM `src`.`users` AS `s` WHERE `s`.`id` <= @b AND `s`.`id` > 5"
    )
    assert mysql.insert_head(COPY, COLUMNS, database="_stg") == (
        "INSERT INTO `_stg`.`people` (`id`, `email`, `score`, `flags`, `seen`, `bio`) VALUES "
    )


def test_the_leak_check_loads_source_values_next_to_the_copy() -> None:
    email = LoadColumn("email", "varchar", "utf8mb4")
    assert mysql.create_leak_table("_stg", "people", "email") == (
        "CREATE TEMPORARY TABLE `_stg`.`_moenv_leak_values` SELECT `email` FROM `_stg`.`people` WHERE 1 = 0"
    )
    assert mysql.leak_chunk(COPY, email, ("id",), source_database="src", after=["@a"], up_to=None) == (
        f"SELECT COUNT(*), GROUP_CONCAT(IFNULL({ESC.format('CAST(`s`.`email` AS BINARY)')}, X'5C4E')"
        " SEPARATOR X'0A') FROM `src`.`users` AS `s` WHERE `s`.`id` > @a AND `s`.`email` IS NOT NULL"
    )
    assert mysql.leak_rows(COPY, email, source_database="src") == (
        f"SELECT IFNULL({ESC.format('CAST(`s`.`email` AS BINARY)')}, X'5C4E')"
        " FROM `src`.`users` AS `s` WHERE `s`.`email` IS NOT NULL"
    )
    assert mysql.load_leak_values(email, database="_stg", path="/run/p") == (
        "LOAD DATA LOCAL INFILE '/run/p' INTO TABLE `_stg`.`_moenv_leak_values` CHARACTER SET binary"
        " FIELDS TERMINATED BY X'09' ESCAPED BY X'5C' LINES TERMINATED BY X'0A' (`email`)"
    )
    assert mysql.count_leaks_loaded(COPY, "email", database="_stg") == (
        "SELECT COUNT(*) FROM `_stg`.`people` AS `t` WHERE `t`.`email` IS NOT NULL"
        " AND `t`.`email` IN (SELECT `l`.`email` FROM `_stg`.`_moenv_leak_values` AS `l`)"
    )
    assert mysql.drop_leak_table("_stg") == "DROP TEMPORARY TABLE IF EXISTS `_stg`.`_moenv_leak_values`"


ORDERS_DDL = """CREATE TABLE `stg`.`orders` (
  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `customer_id` int(10) unsigned NOT NULL,
  `note` varchar(255) DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `uq_note` (`note`),
  KEY `ix_customer` (`customer_id`),
  FULLTEXT KEY `ft_note` (`note`),
  CONSTRAINT `fk_orders_customer` FOREIGN KEY (`customer_id`) REFERENCES `stg`.`customers` (`id`) ON DELETE CASCADE,
  CONSTRAINT `chk_customer` CHECK (`customer_id` > 0)
) ENGINE=InnoDB AUTO_INCREMENT=1000001 DEFAULT CHARSET=utf8mb4"""


def test_secondary_indexes_and_foreign_keys_are_added_after_the_load() -> None:
    create, later = mysql.defer_indexes(ORDERS_DDL)
    assert create == (
        "CREATE TABLE `stg`.`orders` (\n"
        "  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,\n"
        "  `customer_id` int(10) unsigned NOT NULL,\n"
        "  `note` varchar(255) DEFAULT NULL,\n"
        "  PRIMARY KEY (`id`),\n"
        "  FULLTEXT KEY `ft_note` (`note`),\n"
        "  CONSTRAINT `chk_customer` CHECK (`customer_id` > 0)\n"
        ") ENGINE=InnoDB AUTO_INCREMENT=1000001 DEFAULT CHARSET=utf8mb4"
    )
    assert later.names == ("uq_note", "ix_customer", "fk_orders_customer")
    assert mysql.add_deferred_indexes("stg", "orders", later.clauses) == (
        "ALTER TABLE `stg`.`orders` ADD UNIQUE KEY `uq_note` (`note`), ADD KEY `ix_customer` (`customer_id`),"
        " ADD CONSTRAINT `fk_orders_customer` FOREIGN KEY (`customer_id`) REFERENCES `stg`.`customers` (`id`)"
        " ON DELETE CASCADE"
    )


def test_the_key_an_auto_increment_column_needs_stays() -> None:
    ddl = (
        "CREATE TABLE `stg`.`t` (\n  `a` int(11) NOT NULL,\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n"
        "  PRIMARY KEY (`a`,`id`),\n  KEY `by_id` (`id`),\n  KEY `by_a` (`a`)\n) ENGINE=InnoDB"
    )
    create, later = mysql.defer_indexes(ddl)
    assert "KEY `by_id` (`id`)" in create
    assert later.names == ("by_a",)


def test_a_table_without_secondary_indexes_defers_nothing() -> None:
    ddl = "CREATE TABLE `stg`.`t` (\n  `id` int(11) NOT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB"
    assert mysql.defer_indexes(ddl) == (ddl, mysql.DeferredIndexes((), ()))


def test_the_orphan_probe_reads_one_row_at_most() -> None:
    from moenv.models.desired import ParentFilter

    fk = ParentFilter(name="fk", columns=("a", "b"), parent="p", ref_columns=("x", "y"))
    assert mysql.find_orphan(COPY, fk, database="stg") == (
        "SELECT 1 FROM `stg`.`people` AS `c` WHERE `c`.`a` IS NOT NULL AND `c`.`b` IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM `stg`.`p` AS `p` WHERE `p`.`x` = `c`.`a` AND `p`.`y` = `c`.`b`) LIMIT 1"
    )
    assert mysql.index_and_constraint_names() == (
        "SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
        " UNION SELECT CONSTRAINT_NAME FROM information_schema.TABLE_CONSTRAINTS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
    )


def test_the_leak_check_falls_back_to_inserts_where_load_data_local_is_refused() -> None:
    email = LoadColumn("email", "varchar", "utf8mb4")
    assert mysql.leak_chunk(COPY, email, ("id",), source_database="src", after=None, up_to=["@b"], insert=True) == (
        "SELECT COUNT(*), GROUP_CONCAT(CONCAT('(', QUOTE(CAST(`s`.`email` AS BINARY)), ')') SEPARATOR ',')"
        " FROM `src`.`users` AS `s` WHERE `s`.`id` <= @b AND `s`.`email` IS NOT NULL"
    )
    assert mysql.insert_leak_values(email, database="_stg") == (
        "INSERT INTO `_stg`.`_moenv_leak_values` (`email`) VALUES "
    )
