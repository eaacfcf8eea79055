"""Shared pieces of the integration tests: a realistic source schema, manifests, the CLI, server probes.

    world = World.open(sandbox, tmp_path)    # config, manifest writer, cleanup of moenv's work databases
    world.build_source()                     # {prefix}src: FKs (self-referencing too), composite PK,
                                             # no-PK table, a view, generated columns, `order`, utf8mb4
    path = world.manifest("dev")             # environment "<token>-dev": {prefix}src → {prefix}dev
    result = moenv.api.apply(moenv.api.plan([path], config=world.config), config=world.config)

Everything is read back through fresh connections (the sandbox's helpers), never through moenv.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import yaml
from tests.support.dialect import for_engine, rows_digest
from tests.support.mariadb import Sandbox

from moenv.models.config import Config, Server
from moenv.models.ledger import holding_database, staging_database

REPO = Path(__file__).resolve().parents[2]

# Row counts of the source built by World.build_source (order_items: 1 to 3 lines per order).
USERS = 1000
CATEGORIES = 30
PRODUCTS = 500
ORDERS = 2000
PAGE_VIEWS = 1200
ORDER_KEYWORD_ROWS = 40
BASE_TABLES = ("categories", "order", "order_items", "orders", "page_views", "products", "users")
VIEWS = ("order_totals", "product_prices")


def q(name: str) -> str:
    """A MySQL identifier, quoted."""
    return "`" + name.replace("`", "``") + "`"


def source_statements(db: str) -> list[str]:
    """DDL and server-side generated data of the test source (a few thousand rows, deterministic)."""
    d = q(db)
    return [
        f"CREATE DATABASE {d} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        f"""CREATE TABLE {d}.users (
            id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            username VARCHAR(64) NOT NULL,
            email VARCHAR(255) NOT NULL,
            display_name VARCHAR(100) NULL,
            created_at DATETIME NOT NULL,
            UNIQUE KEY uq_users_username (username),
            KEY ix_users_email (email)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
        f"""CREATE TABLE {d}.categories (
            id INT UNSIGNED NOT NULL PRIMARY KEY,
            parent_id INT UNSIGNED NULL,
            name VARCHAR(100) NOT NULL,
            CONSTRAINT fk_categories_parent FOREIGN KEY (parent_id) REFERENCES categories (id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        f"""CREATE TABLE {d}.products (
            id INT UNSIGNED NOT NULL PRIMARY KEY,
            category_id INT UNSIGNED NOT NULL,
            sku VARCHAR(32) NOT NULL,
            name VARCHAR(200) NOT NULL,
            price DECIMAL(10,2) NOT NULL,
            weight FLOAT NULL,
            price_with_tax DECIMAL(12,2) AS (ROUND(price * 1.2, 2)) STORED,
            UNIQUE KEY uq_products_sku (sku),
            CONSTRAINT fk_products_category FOREIGN KEY (category_id) REFERENCES categories (id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        f"""CREATE TABLE {d}.orders (
            id INT UNSIGNED NOT NULL PRIMARY KEY,
            user_id INT UNSIGNED NOT NULL,
            status ENUM('new','paid','shipped','cancelled') NOT NULL DEFAULT 'new',
            total DECIMAL(12,2) NOT NULL DEFAULT 0,
            placed_at DATETIME NOT NULL,
            note VARCHAR(255) NULL,
            KEY ix_orders_user_status (user_id, status),
            CONSTRAINT fk_orders_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        f"""CREATE TABLE {d}.order_items (
            order_id INT UNSIGNED NOT NULL,
            line_no SMALLINT UNSIGNED NOT NULL,
            product_id INT UNSIGNED NOT NULL,
            qty INT NOT NULL,
            unit_price DECIMAL(10,2) NOT NULL,
            PRIMARY KEY (order_id, line_no),
            KEY ix_items_product (product_id),
            CONSTRAINT fk_items_order FOREIGN KEY (order_id) REFERENCES orders (id),
            CONSTRAINT fk_items_product FOREIGN KEY (product_id) REFERENCES products (id),
            CONSTRAINT chk_items_qty CHECK (qty > 0)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        f"""CREATE TABLE {d}.page_views (
            user_id INT UNSIGNED NULL,
            url VARCHAR(255) NOT NULL,
            viewed_at DATETIME NOT NULL,
            KEY ix_page_views_user (user_id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        f"""CREATE TABLE {d}.`order` (
            `key` INT NOT NULL PRIMARY KEY,
            `select` VARCHAR(50) NOT NULL,
            `desc` TEXT NULL,
            `select_length` INT AS (CHAR_LENGTH(`select`)) VIRTUAL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        f"""INSERT INTO {d}.users (id, username, email, display_name, created_at)
            SELECT seq,
                   CONCAT(ELT(1 + seq % 4, 'jürgen', 'zoë', 'søren', '李'), '_', seq),
                   CONCAT('user', seq, '@example.com'),
                   CASE WHEN seq % 7 = 0 THEN NULL
                        WHEN seq % 5 = 0 THEN CONCAT('Ünïcødé ', seq, ' 🐬')
                        ELSE CONCAT('User ', seq) END,
                   '2024-01-01' + INTERVAL seq HOUR
            FROM {d}.seq_1_to_{USERS}""",
        f"""INSERT INTO {d}.categories (id, parent_id, name)
            SELECT seq, IF(seq <= 10, NULL, 1 + seq % 10),
                   IF(seq = 3, 'Café ☕ & Bücher 📚', CONCAT('Category ', seq))
            FROM {d}.seq_1_to_{CATEGORIES}""",
        f"""INSERT INTO {d}.products (id, category_id, sku, name, price, weight)
            SELECT seq, 1 + seq % {CATEGORIES}, CONCAT('SKU-', LPAD(seq, 6, '0')),
                   CONCAT(IF(seq % 9 = 0, 'Crème brûlée 🍮 ', 'Product '), seq),
                   (seq % 997) + 0.99, IF(seq % 11 = 0, NULL, seq / 7)
            FROM {d}.seq_1_to_{PRODUCTS}""",
        f"""INSERT INTO {d}.orders (id, user_id, status, total, placed_at, note)
            SELECT seq, 1 + seq % {USERS}, ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'),
                   (seq % 500) * 1.25, '2024-02-01' + INTERVAL seq MINUTE,
                   IF(seq % 13 = 0, 'bitte klingeln 🔔', NULL)
            FROM {d}.seq_1_to_{ORDERS}""",
        f"""INSERT INTO {d}.order_items (order_id, line_no, product_id, qty, unit_price)
            SELECT o.seq, l.seq, 1 + (o.seq * 7 + l.seq) % {PRODUCTS}, 1 + (o.seq + l.seq) % 5,
                   ((o.seq * 7 + l.seq) % 997) + 0.99
            FROM {d}.seq_1_to_{ORDERS} o JOIN {d}.seq_1_to_3 l ON l.seq <= 1 + o.seq % 3""",
        f"""INSERT INTO {d}.page_views (user_id, url, viewed_at)
            SELECT IF(seq % 4 = 0, NULL, 1 + seq % {USERS}), CONCAT('/p/', seq % 50, '?q=ü'),
                   '2024-03-01' + INTERVAL seq SECOND
            FROM {d}.seq_1_to_{PAGE_VIEWS}""",
        f"""INSERT INTO {d}.page_views (user_id, url, viewed_at)
            SELECT user_id, url, viewed_at FROM {d}.page_views WHERE user_id = 2""",
        # `seq % 2 = 1`, not a bare integer as the condition: MatrixOne 3.0 neither casts nor coerces
        # INTEGER to BOOLEAN (docs.matrixorigin.cn/en/v26.3.0.9/MatrixOne/Reference/Data-Types/data-type-conversion/)
        f"""INSERT INTO {d}.`order` (`key`, `select`, `desc`)
            SELECT seq, CONCAT('k', seq), IF(seq % 2 = 1, 'naïve “quotes” 🚀', NULL)
            FROM {d}.seq_1_to_{ORDER_KEYWORD_ROWS}""",
        f"""CREATE VIEW {d}.order_totals AS
            SELECT o.id AS order_id, u.username, o.status, o.total
            FROM {d}.orders o JOIN {d}.users u ON u.id = o.user_id""",
        f"""CREATE VIEW {d}.product_prices AS
            SELECT p.id, p.sku, p.price_with_tax, c.name AS category
            FROM {d}.products p JOIN {d}.categories c ON c.id = p.category_id""",
    ]


def _as_text(column: str, data_type: str) -> str:
    """A column's value as exact text for a digest; NULL is spelled out (CONCAT_WS would skip it)."""
    if data_type in {"float", "double"}:
        value = f"CAST({q(column)} AS DOUBLE)"
    elif data_type in {
        "char",
        "varchar",
        "tinytext",
        "text",
        "mediumtext",
        "longtext",
        "binary",
        "varbinary",
        "tinyblob",
        "blob",
        "mediumblob",
        "longblob",
        "enum",
        "set",
        "json",
    }:
        value = f"HEX({q(column)})"
    else:
        value = q(column)
    return f"IFNULL({value}, 'NULL')"


def manifest_text(
    name: str,
    source: str,
    target: str,
    *,
    extra: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    document = {
        "apiVersion": "moenv/v1",
        "kind": "Environment",
        "metadata": {"name": name, **(metadata or {})},
        "spec": {"source": {"database": source}, "target": {"database": target}, **(extra or {})},
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


@dataclass
class World:
    """One test's view of its sandbox: config, manifests, probes; cleans moenv's work databases up."""

    sandbox: Sandbox
    directory: Path
    environments: set[str] = field(default_factory=set)
    _connection: Any = field(default=None, repr=False)

    @classmethod
    @contextmanager
    def open(cls, sandbox: Sandbox, directory: Path) -> Iterator[World]:
        world = cls(sandbox, directory)
        try:
            yield world
        finally:
            try:
                world.drop_work_databases()
            finally:
                world.close()

    # -- one autocommit session for the probes (a PyMySQL connect costs ~40 ms of TLS setup) ------

    def _cursor(self) -> Any:
        if self._connection is None or not self._connection.open:
            self._connection = self.sandbox.connect()
        return self._connection.cursor()

    def query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        with self._cursor() as cursor:
            cursor.execute(sql, args)
            return [tuple(row) for row in cursor.fetchall()]

    def execute(self, sql: str, args: Any = None) -> int:
        with self._cursor() as cursor:
            return int(cursor.execute(sql, args))

    def run(self, statement: str) -> int:
        """A fixture statement written in MariaDB's SQL, rewritten for this sandbox's engine and run."""
        return self.execute(for_engine(statement, self.engine))

    def close(self) -> None:
        if self._connection is not None and self._connection.open:
            self._connection.close()
        self._connection = None

    # -- names and configuration ---------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return self.sandbox.prefix

    @property
    def engine(self) -> str:
        """`mariadb` or `matrixone`: which server this world's sandbox is on."""
        return self.sandbox.engine

    @property
    def source(self) -> str:
        return self.prefix + "src"

    @property
    def target(self) -> str:
        return self.prefix + "dev"

    def env(self, short: str) -> str:
        """A per-sandbox environment name (lock and staging names derive from it, so they never collide)."""
        name = f"{self.sandbox.token}-{short}"
        self.environments.add(name)
        return name

    @property
    def config(self) -> Config:
        return self.config_for(self.sandbox.url)

    def config_for(self, url: str) -> Config:
        return Config(servers={"default": Server.from_url("default", url)}, ledger_database=self.sandbox.ledger)

    # -- building ------------------------------------------------------------------------------

    def build_source(self, database: str | None = None) -> str:
        db = database or self.source
        for statement in source_statements(db):
            self.run(statement)
        if self.engine == "mariadb":
            self.execute(f"ANALYZE TABLE {', '.join(f'{q(db)}.{q(t)}' for t in BASE_TABLES)}")
        return db

    def manifest(
        self,
        short: str = "dev",
        *,
        target: str | None = None,
        source: str | None = None,
        file: str | None = None,
        **extra: Any,
    ) -> Path:
        """Write the manifest of environment `<token>-<short>` (source → target) and return its path."""
        path = self.directory / (file or f"{short}.yaml")
        metadata = extra.pop("metadata", None)
        path.write_text(
            manifest_text(
                self.env(short), source or self.source, target or self.target, extra=extra, metadata=metadata
            ),
            encoding="utf-8",
        )
        return path

    # -- probes --------------------------------------------------------------------------------

    def tables(self, db: str) -> dict[str, str]:
        """name → 'BASE TABLE' | 'VIEW'."""
        rows = self.query("SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (db,))
        return {str(name): str(kind) for name, kind in rows}

    def base_tables(self, db: str) -> list[str]:
        return sorted(name for name, kind in self.tables(db).items() if kind == "BASE TABLE")

    def checksums(self, db: str) -> dict[str, str]:
        """`CHECKSUM TABLE` of every base table; a digest of every value for tables with generated columns.

        MariaDB 10.11's CHECKSUM TABLE is not deterministic for tables with generated columns
        (VIRTUAL or STORED, next to a nullable column): the same unchanged table gives another
        value after FLUSH TABLES, and two identical copies differ. Those tables are compared by a
        digest of their values instead (strings as bytes, floats widened to DOUBLE: bit-exact).
        MatrixOne has no CHECKSUM TABLE: there every table gets a digest of its rows read back here.
        """
        tables = self.base_tables(db)
        if not tables:
            return {}
        if self.engine == "matrixone":
            return {table: self.row_digest(db, table) for table in tables}
        columns: dict[str, list[str]] = {}
        generated: set[str] = set()
        for table, column, data_type, extra in self.query(
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, EXTRA FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (db,),
        ):
            columns.setdefault(str(table), []).append(_as_text(str(column), str(data_type)))
            if "VIRTUAL" in str(extra).upper() or "STORED" in str(extra).upper():
                generated.add(str(table))
        plain = [t for t in tables if t not in generated]
        found: dict[str, str] = {}
        if plain:
            rows = self.query("CHECKSUM TABLE " + ", ".join(f"{q(db)}.{q(t)}" for t in plain))
            found.update({str(name).split(".", 1)[1]: str(value) for name, value in rows})
        for table in sorted(generated & set(tables)):
            line = "CONCAT_WS(0x1f, " + ", ".join(columns[table]) + ")"
            [(count, digest)] = self.query(
                f"SELECT COUNT(*), SHA2(GROUP_CONCAT({line} ORDER BY {line} SEPARATOR 0x1e), 256)"
                f" FROM {q(db)}.{q(table)}"
            )
            found[table] = f"{count}:{digest}"
        return found

    def row_digest(self, db: str, table: str) -> str:
        """`count:sha256` of every row of a table, read back in a canonical order (any engine)."""
        return rows_digest(self.query(f"SELECT * FROM {q(db)}.{q(table)}"))

    def row_counts(self, db: str) -> dict[str, int]:
        return {t: int(self.query(f"SELECT COUNT(*) FROM {q(db)}.{q(t)}")[0][0]) for t in self.base_tables(db)}

    def create_times(self, db: str) -> dict[str, Any]:
        rows = self.query(
            "SELECT TABLE_NAME, CREATE_TIME FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'",
            (db,),
        )
        return dict(rows)

    def table_ids(self, db: str) -> dict[str, int]:
        """The server's internal id of every table: it changes whenever a table is re-created (or swapped).

        MariaDB: InnoDB's table id; MatrixOne: mo_tables.rel_id of the account's tables.
        """
        if self.engine == "matrixone":
            found = self.query(
                "SELECT relname, rel_id FROM mo_catalog.mo_tables WHERE reldatabase = %s AND relkind = 'r'"
                " AND account_id = current_account_id() AND relname NOT LIKE '\\_\\_mo\\_%%'",
                (db,),
            )
            return {str(name): int(table_id) for name, table_id in found}
        rows = self.query(
            "SELECT NAME, TABLE_ID FROM information_schema.INNODB_SYS_TABLES WHERE NAME LIKE %s", (db + "/%",)
        )
        return {str(name).split("/", 1)[1]: int(table_id) for name, table_id in rows}

    def foreign_keys(self, db: str) -> set[tuple[str, str, str, str]]:
        """(table, constraint, referenced schema, referenced table) of every foreign key in `db`.

        MatrixOne's KEY_COLUMN_USAGE is an empty stub on released versions: mo_foreign_keys there.
        """
        if self.engine == "matrixone":
            found = self.query(
                "SELECT DISTINCT table_name, constraint_name, refer_db_name, refer_table_name"
                " FROM mo_catalog.mo_foreign_keys WHERE db_name = %s",
                (db,),
            )
            return {(str(a), str(b), str(c), str(d)) for a, b, c, d in found}
        rows = self.query(
            "SELECT DISTINCT TABLE_NAME, CONSTRAINT_NAME, REFERENCED_TABLE_SCHEMA, REFERENCED_TABLE_NAME"
            " FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s AND REFERENCED_TABLE_NAME IS NOT NULL",
            (db,),
        )
        return {(str(a), str(b), str(c), str(d)) for a, b, c, d in rows}

    def indexes(self, db: str) -> set[tuple[str, str, int, str, int]]:
        """(table, index, position, column, non_unique) of every index in `db`."""
        rows = self.query(
            "SELECT TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, NON_UNIQUE"
            " FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s",
            (db,),
        )
        return {(str(a), str(b), int(c), str(d), int(e)) for a, b, c, d, e in rows}

    def view_definition(self, db: str, view: str) -> str:
        rows = self.query(
            "SELECT VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (db, view),
        )
        return str(rows[0][0]) if rows else ""

    def exists(self, db: str) -> bool:
        return bool(self.query("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (db,)))

    def work_databases(self) -> list[str]:
        """moenv's staging/holding databases of this test's environments (and any `_moenv_` one naming the token)."""
        names = {staging_database(e) for e in self.environments} | {holding_database(e) for e in self.environments}
        present = {str(n) for (n,) in self.query("SHOW DATABASES")}
        found = {n for n in present if n in names or (n.startswith("_moenv_") and self.sandbox.token in n)}
        return sorted(found)

    def drop_work_databases(self) -> None:
        for name in self.work_databases():
            self.execute(f"DROP DATABASE IF EXISTS {q(name)}")

    # -- ledger --------------------------------------------------------------------------------

    def ledger_row(self, environment: str) -> dict[str, Any] | None:
        with self._cursor() as cursor:
            try:
                cursor.execute(f"SELECT * FROM {q(self.sandbox.ledger)}.environments WHERE name = %s", (environment,))
            except pymysql.MySQLError as exc:  # no ledger yet reads as no row
                if exc.args and exc.args[0] in (1049, 1146):
                    return None
                raise
            row = cursor.fetchone()
            if row is None:
                return None
            return dict(zip([c[0] for c in cursor.description], row, strict=True))

    def ledger_names(self) -> list[str]:
        if not self.exists(self.sandbox.ledger):
            return []
        return sorted(str(n) for (n,) in self.query(f"SELECT name FROM {q(self.sandbox.ledger)}.environments"))

    def revision(self) -> int:
        rows = self.query(f"SELECT v FROM {q(self.sandbox.ledger)}.meta WHERE k = 'revision'")
        return int(rows[0][0])

    def events(self, environment: str) -> list[tuple[str, str]]:
        """(action, result) of the environment's events, oldest first."""
        if not self.exists(self.sandbox.ledger):
            return []
        rows = self.query(
            f"SELECT action, result FROM {q(self.sandbox.ledger)}.events WHERE environment = %s ORDER BY id",
            (environment,),
        )
        return [(str(a), str(r)) for a, r in rows]

    # -- the command line ----------------------------------------------------------------------

    def cli(
        self, *args: str, url: str | None = None, cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """`python -m moenv ARGS` with MOENV_URL / MOENV_LEDGER for this sandbox; stdin is not a TTY."""
        return run_cli(
            *args, url=url or self.sandbox.url, ledger=self.sandbox.ledger, cwd=cwd or self.directory, timeout=timeout
        )


def run_cli(
    *args: str, url: str | None, ledger: str | None, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOENV_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    env["COLUMNS"] = "200"
    if url is not None:
        env["MOENV_URL"] = url
    if ledger is not None:
        env["MOENV_LEDGER"] = ledger
    return subprocess.run(
        [sys.executable, "-m", "moenv", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
