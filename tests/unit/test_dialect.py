"""tests/support/dialect.py: the fixture SQL each engine is given, as exact text (MatrixOne's never runs here)."""

from __future__ import annotations

import pytest
from tests.support.dialect import engine_of, for_engine, rows_digest


def mo(statement: str) -> str:
    return for_engine(statement, "matrixone")


def test_mariadb_gets_the_statement_unchanged() -> None:
    statement = "INSERT INTO d.t SELECT seq, IF(seq > 1, 'a', 'b') FROM d.seq_1_to_10"
    assert for_engine(statement, "mariadb") is statement


@pytest.mark.parametrize(
    ("version", "engine"),
    [("8.0.30-MatrixOne-v4.1.2", "matrixone"), ("10.11.6-MariaDB-0+deb12u1", "mariadb"), ("8.0.36", "mariadb")],
)
def test_the_engine_is_read_from_the_version(version: str, engine: str) -> None:
    assert engine_of(version) == engine


def test_sequence_tables_become_generate_series_with_their_alias() -> None:
    assert mo("SELECT seq FROM `d`.seq_1_to_30") == (
        "SELECT seq FROM (SELECT result AS seq FROM generate_series(1, 30) g) seq_30"
    )
    assert mo("SELECT o.seq FROM d.seq_1_to_5 o JOIN d.seq_1_to_2 l ON l.seq <= o.seq") == (
        "SELECT o.seq FROM (SELECT result AS seq FROM generate_series(1, 5) g) o"
        " JOIN (SELECT result AS seq FROM generate_series(1, 2) g) l ON l.seq <= o.seq"
    )
    assert mo("SELECT seq FROM d.seq_1_to_3 ORDER BY seq") == (
        "SELECT seq FROM (SELECT result AS seq FROM generate_series(1, 3) g) seq_3 ORDER BY seq"
    )


def test_if_and_elt_become_case_and_nest() -> None:
    assert mo("SELECT IF(a = 1, ELT(b, 'x', 'y,z'), IF(c, 'p', NULL))") == (
        "SELECT (CASE WHEN a = 1 THEN (CASE b WHEN 1 THEN 'x' WHEN 2 THEN 'y,z' END)"
        " ELSE (CASE WHEN c THEN 'p' ELSE NULL END) END)"
    )
    assert mo("SELECT IFNULL(a, 1) FROM t WHERE x IN (SELECT 1)") == "SELECT IFNULL(a, 1) FROM t WHERE x IN (SELECT 1)"
    assert mo("CREATE DATABASE IF NOT EXISTS x") == "CREATE DATABASE IF NOT EXISTS x"


def test_a_date_literal_plus_an_interval_is_cast_first() -> None:
    assert mo("SELECT '2024-01-01' + INTERVAL seq HOUR, '2024-01-01 10:00:00' + INTERVAL 1 DAY") == (
        "SELECT CAST('2024-01-01' AS DATETIME) + INTERVAL seq HOUR,"
        " CAST('2024-01-01 10:00:00' AS DATETIME) + INTERVAL 1 DAY"
    )


def test_generated_columns_checks_and_table_options_are_dropped() -> None:
    ddl = (
        "CREATE TABLE d.t (id INT PRIMARY KEY, price DECIMAL(10,2) NOT NULL,"
        " tax DECIMAL(12,2) AS (ROUND(price * 1.2, 2)) STORED,"
        " n INT GENERATED ALWAYS AS (CHAR_LENGTH(`select`)) VIRTUAL,"
        " CONSTRAINT chk_price CHECK (price > 0)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
    )
    assert mo(ddl) == (
        "CREATE TABLE d.t (id INT PRIMARY KEY, price DECIMAL(10,2) NOT NULL,"
        " tax DECIMAL(12,2) NULL,"
        " n INT NULL) DEFAULT CHARSET=utf8mb4"
    )
    assert mo("ALTER TABLE d.p ADD COLUMN tax DECIMAL(12,2) AS (ROUND(price * 1.2, 2)) STORED AFTER weight") == (
        "ALTER TABLE d.p ADD COLUMN tax DECIMAL(12,2) NULL AFTER weight"
    )
    assert mo("CREATE DATABASE d CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci") == (
        "CREATE DATABASE d CHARACTER SET utf8mb4"
    )
    assert mo("ANALYZE TABLE d.a, d.b") == "SELECT 1"


def test_secondary_indexes_lose_their_enum_columns() -> None:
    ddl = (
        "CREATE TABLE d.o (id INT UNSIGNED NOT NULL PRIMARY KEY, user_id INT UNSIGNED NOT NULL,"
        " `status` ENUM('new','paid') NOT NULL DEFAULT 'new', kind enum('a','b') NULL,"
        " KEY ix_user_status (user_id, `status`), UNIQUE KEY (kind), INDEX ix_user (user_id),"
        " CONSTRAINT fk_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE) ENGINE=InnoDB"
    )
    assert mo(ddl) == (
        "CREATE TABLE d.o (id INT UNSIGNED NOT NULL PRIMARY KEY, user_id INT UNSIGNED NOT NULL,"
        " `status` ENUM('new','paid') NOT NULL DEFAULT 'new', kind enum('a','b') NULL,"
        " KEY ix_user_status (user_id), INDEX ix_user (user_id),"
        " CONSTRAINT fk_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE)"
    )
    without_enum = "CREATE TABLE d.p (id INT PRIMARY KEY, a INT, b INT, KEY ix_ab (a, b))"
    assert mo(without_enum) == without_enum


def test_the_fixture_shapes_matrixone_is_given() -> None:
    """Forms the integration fixtures use, pinned: a JOIN of two series without ON (MatrixOne's
    grammar makes the join condition optional: `join_table: table_reference inner_join table_factor
    join_condition_opt`, pkg/sql/parsers/dialect/mysql/mysql_sql.y), interval arithmetic on
    expressions, a self-referencing INSERT … SELECT, an ALTER TABLE … ADD CONSTRAINT … FOREIGN KEY."""
    assert mo("INSERT INTO d.i SELECT o.seq, l.seq FROM d.seq_1_to_600 o JOIN d.seq_1_to_2 l") == (
        "INSERT INTO d.i SELECT o.seq, l.seq FROM (SELECT result AS seq FROM generate_series(1, 600) g) o"
        " JOIN (SELECT result AS seq FROM generate_series(1, 2) g) l"
    )
    assert mo("SELECT '2023-07-01' + INTERVAL seq * 12 HOUR + INTERVAL seq % 30 DAY FROM d.seq_1_to_4") == (
        "SELECT CAST('2023-07-01' AS DATETIME) + INTERVAL seq * 12 HOUR + INTERVAL seq % 30 DAY"
        " FROM (SELECT result AS seq FROM generate_series(1, 4) g) seq_4"
    )
    assert mo("SELECT '2024-04-01' + INTERVAL (seq % 20) MINUTE FROM d.seq_1_to_60") == (
        "SELECT CAST('2024-04-01' AS DATETIME) + INTERVAL (seq % 20) MINUTE"
        " FROM (SELECT result AS seq FROM generate_series(1, 60) g) seq_60"
    )
    for unchanged in (
        "INSERT INTO d.a SELECT * FROM d.a WHERE at < '2024-04-01 00:05:00'",
        "ALTER TABLE d.departments ADD CONSTRAINT fk_head FOREIGN KEY (head_id) REFERENCES employees (id)",
        "CREATE DATABASE d",
    ):
        assert mo(unchanged) == unchanged


def test_rows_digest_ignores_order_and_sees_every_value() -> None:
    assert rows_digest([(1, "a"), (2, None)]) == rows_digest([(2, None), (1, "a")])
    assert rows_digest([(1, "a")]) != rows_digest([(1, "b")])
    assert rows_digest([]).startswith("0:")
