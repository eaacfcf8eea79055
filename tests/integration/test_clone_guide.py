"""The clone guide's examples (shared/reference/clone-guide.rst), run against a real server through `moenv.connect`,
once per engine (MariaDB; MatrixOne when MOENV_TEST_MATRIXONE_URL is set).

The guide's code is kept as written except for the connection setup (`moenv.connect(url)` instead of
`Client(*get_connection_params())`) and names (the sandbox's prefix before every database name;
sections that reuse `test_db` as independent snippets get a database each). Where the guide cannot
run as written on MySQL/MariaDB (ALTER DATABASE … RENAME does not exist) or leaves a stub, the
adaptation is marked `# adapted:` and says why. Outcomes are read back over plain connections.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.integration.helpers import output, q, run_cli
from tests.support.dialect import for_engine
from tests.support.mariadb import Sandbox

import moenv
from moenv.clone import CloneProgress, CloneResult
from moenv.engines import matrixone as mo
from moenv.engines.mysql import lock_name
from moenv.models.config import Config
from moenv.models.ledger import holding_database, staging_database

USERS = 1200
CATEGORIES = 10
PRODUCTS = 200
ORDERS = 3000
TEMP_ROWS = 50
TABLES = {"categories", "order_items", "orders", "products", "temp_data", "users"}


def production_statements(db: str) -> list[str]:
    """A small production database shaped like the guide's: users with personal data, orders, a temp table."""
    d = q(db)
    return [
        f"CREATE DATABASE {d} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        f"CREATE TABLE {d}.categories (id INT UNSIGNED PRIMARY KEY, name VARCHAR(100) NOT NULL) ENGINE=InnoDB",
        f"""CREATE TABLE {d}.users (
            id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            username VARCHAR(64) NOT NULL,
            email VARCHAR(255) NOT NULL,
            phone VARCHAR(32) NULL,
            address VARCHAR(255) NULL,
            created_at DATETIME NOT NULL,
            updated_at DATETIME NOT NULL,
            UNIQUE KEY uq_users_username (username),
            KEY ix_users_email (email)
        ) ENGINE=InnoDB""",
        f"""CREATE TABLE {d}.products (
            id INT UNSIGNED NOT NULL PRIMARY KEY,
            category_id INT UNSIGNED NOT NULL,
            name VARCHAR(200) NOT NULL,
            price DECIMAL(10,2) NOT NULL,
            CONSTRAINT fk_products_category FOREIGN KEY (category_id) REFERENCES categories (id)
        ) ENGINE=InnoDB""",
        f"""CREATE TABLE {d}.orders (
            id INT UNSIGNED NOT NULL PRIMARY KEY,
            user_id INT UNSIGNED NOT NULL,
            product_id INT UNSIGNED NOT NULL,
            status VARCHAR(20) NOT NULL,
            created_at DATETIME NOT NULL,
            updated_at DATETIME NOT NULL,
            KEY ix_orders_status (status),
            CONSTRAINT fk_orders_user FOREIGN KEY (user_id) REFERENCES users (id),
            CONSTRAINT fk_orders_product FOREIGN KEY (product_id) REFERENCES products (id)
        ) ENGINE=InnoDB""",
        f"""CREATE TABLE {d}.order_items (
            order_id INT UNSIGNED NOT NULL,
            line_no SMALLINT UNSIGNED NOT NULL,
            qty INT NOT NULL,
            PRIMARY KEY (order_id, line_no),
            CONSTRAINT fk_items_order FOREIGN KEY (order_id) REFERENCES orders (id)
        ) ENGINE=InnoDB""",
        f"CREATE TABLE {d}.temp_data (id INT UNSIGNED PRIMARY KEY, payload VARCHAR(100) NOT NULL) ENGINE=InnoDB",
        f"INSERT INTO {d}.categories SELECT seq, CONCAT('Category ', seq) FROM {d}.seq_1_to_{CATEGORIES}",
        f"""INSERT INTO {d}.users (id, username, email, phone, address, created_at, updated_at)
            SELECT seq, CONCAT('person', seq), CONCAT('person', seq, '@corp.test'),
                   CONCAT('+49 30 ', 1000000 + seq), CONCAT(seq, ' Main Street'),
                   '2023-07-01' + INTERVAL seq * 12 HOUR,
                   '2023-07-01' + INTERVAL seq * 12 HOUR + INTERVAL seq % 30 DAY
            FROM {d}.seq_1_to_{USERS}""",
        f"""INSERT INTO {d}.products SELECT seq, 1 + seq % {CATEGORIES}, CONCAT('Product ', seq), (seq % 97) + 0.99
            FROM {d}.seq_1_to_{PRODUCTS}""",
        f"""INSERT INTO {d}.orders
            SELECT seq, 1 + seq % {USERS}, 1 + seq % {PRODUCTS},
                   ELT(1 + seq % 4, 'pending', 'completed', 'shipped', 'cancelled'),
                   '2023-10-01' + INTERVAL seq * 4 HOUR,
                   '2023-10-01' + INTERVAL seq * 4 HOUR + INTERVAL seq % 10 DAY
            FROM {d}.seq_1_to_{ORDERS}""",
        f"""INSERT INTO {d}.order_items SELECT o.seq, l.seq, 1 + (o.seq + l.seq) % 5
            FROM {d}.seq_1_to_{ORDERS} o JOIN {d}.seq_1_to_2 l ON l.seq <= 1 + o.seq % 2""",
        f"INSERT INTO {d}.temp_data SELECT seq, CONCAT('scratch ', seq) FROM {d}.seq_1_to_{TEMP_ROWS}",
    ]


@dataclass
class Guide:
    """One test's world: the sandbox, its production database, and how to connect like the guide does."""

    sandbox: Sandbox
    config: Config

    def db(self, name: str) -> str:
        return self.sandbox.prefix + name

    @property
    def production(self) -> str:
        return self.db("production_db")

    def connect(self, **options: Any) -> moenv.Client:
        """The guide's `Client(*get_connection_params()); client.connect(...)`."""
        return moenv.connect(self.sandbox.url, config=self.config, **options)

    def scalar(self, sql: str, args: Any = None) -> Any:
        return self.sandbox.query(sql, args)[0][0]

    def count(self, db: str, table: str, where: str = "TRUE") -> int:
        return int(self.scalar(f"SELECT COUNT(*) FROM {q(db)}.{q(table)} WHERE {where}"))

    def tables(self, db: str) -> set[str]:
        rows = self.sandbox.query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (db,))
        return {str(name) for (name,) in rows}

    def counts(self, db: str) -> dict[str, int]:
        return {t: self.count(db, t) for t in sorted(self.tables(db))}

    def exists(self, db: str) -> bool:
        return bool(self.sandbox.query("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (db,)))

    def surviving_source_emails(self, db: str) -> int:
        """Rows of db.users whose email is an email of the production database."""
        source = f"{q(self.production)}.users"
        return int(self.scalar(f"SELECT COUNT(*) FROM {q(db)}.users c WHERE c.email IN (SELECT email FROM {source})"))

    def environments(self) -> list[str]:
        if not self.exists(self.sandbox.ledger):
            return []
        return [str(n) for (n,) in self.sandbox.query(f"SELECT name FROM {q(self.sandbox.ledger)}.environments")]


@pytest.fixture
def guide(sandbox: Sandbox) -> Iterator[Guide]:
    world = Guide(sandbox, Config(ledger_database=sandbox.ledger, lock_timeout=1.0))
    for statement in production_statements(world.production):
        sandbox.execute(for_engine(statement, sandbox.engine))
    try:
        yield world
    finally:  # staging databases are named after environments, not the sandbox: drop any a failure left
        for name in world.environments():
            for work in (staging_database(name), holding_database(name)):
                sandbox.execute(f"DROP DATABASE IF EXISTS {q(work)}")


# -- Development Environment Setup --------------------------------------------------------------


class DevelopmentEnvironmentManager:
    def __init__(self, connect: Callable[[], moenv.Client], prefix: str) -> None:
        self.client = connect()  # adapted: connection setup
        self.clone_manager = self.client.clone
        self.prefix = prefix  # adapted: names

    def setup_dev_environment(self, developer_name: str) -> str | None:
        """Set up development environment for a developer"""
        dev_db_name = f"{self.prefix}dev_{developer_name}_db"

        # Clone production database for development
        clone_result = self.clone_manager.clone_database(
            source_database=f"{self.prefix}production_db",
            target_database=dev_db_name,
            include_data=True,
            description=f"Development environment for {developer_name}",
        )

        if clone_result.success:
            print(f"Development environment created: {dev_db_name}")

            # Anonymize sensitive data
            self.anonymize_sensitive_data(dev_db_name)

            return dev_db_name
        else:  # noqa: RET505 - the guide's code
            print(f"Failed to create development environment: {clone_result.error}")
            return None

    def anonymize_sensitive_data(self, database_name: str) -> None:
        """Anonymize sensitive data in development database"""
        # Anonymize user emails
        self.client.execute(f"""
            UPDATE {database_name}.users
            SET email = CONCAT('dev_user_', id, '@example.com')
        """)

        # Anonymize phone numbers
        self.client.execute(f"""
            UPDATE {database_name}.users
            SET phone = NULL
        """)

        # Anonymize addresses
        self.client.execute(f"""
            UPDATE {database_name}.users
            SET address = 'Anonymized Address'
        """)

        print(f"Sensitive data anonymized in {database_name}")

    def cleanup_dev_environment(self, developer_name: str) -> None:
        """Clean up development environment"""
        dev_db_name = f"{self.prefix}dev_{developer_name}_db"
        delete_result = self.clone_manager.delete_clone(dev_db_name)

        if delete_result.success:
            print(f"Development environment cleaned up: {dev_db_name}")
        else:
            print(f"Failed to clean up development environment: {delete_result.error}")


def test_development_environment_as_in_the_guide(guide: Guide, capsys: pytest.CaptureFixture[str]) -> None:
    dev_manager = DevelopmentEnvironmentManager(guide.connect, guide.sandbox.prefix)
    dev_db = dev_manager.setup_dev_environment("john_doe")

    assert dev_db == guide.db("dev_john_doe_db")
    assert guide.counts(dev_db) == guide.counts(guide.production)
    assert guide.surviving_source_emails(dev_db) == 0
    assert guide.count(dev_db, "users", "email LIKE 'dev\\_user\\_%@example.com'") == USERS
    assert guide.count(dev_db, "users", "phone IS NULL") == USERS
    assert guide.count(dev_db, "users", "address = 'Anonymized Address'") == USERS
    info = dev_manager.clone_manager.get_clone(dev_db)
    assert info is not None
    assert info.description == "Development environment for john_doe"
    assert info.status == "completed" and info.created_by_python
    assert "Sensitive data anonymized" in capsys.readouterr().out

    dev_manager.cleanup_dev_environment("john_doe")

    assert not guide.exists(dev_db)
    assert dev_manager.clone_manager.get_clone(dev_db) is None
    assert "Development environment cleaned up" in capsys.readouterr().out


def test_development_environment_the_moenv_way_never_copies_a_real_email(guide: Guide) -> None:
    """data_transformations mask inside the copy (the guide's UPDATEs run after real data was copied)."""
    clone_manager = guide.connect().clone
    dev_db = guide.db("dev_jane_db")

    clone_manager.clone_table(
        source_database=guide.production,
        source_table="users",
        target_database=dev_db,
        data_transformations={
            "email": "CONCAT('user_', id, '@example.com')",
            "phone": "NULL",
            "address": "NULL",
        },
        include_data=True,
    )
    assert guide.surviving_source_emails(dev_db) == 0
    rest = [t for t in clone_manager.get_database_tables(guide.production) if t != "users"]
    clone_manager.clone_tables(source_database=guide.production, target_database=dev_db, tables=rest)
    clone_manager.clone_related_tables(source_database=guide.production, target_database=dev_db, root_table="orders")

    assert guide.counts(dev_db) == guide.counts(guide.production)
    assert guide.surviving_source_emails(dev_db) == 0  # the later calls kept the masks of users
    assert guide.count(dev_db, "users", "email = CONCAT('user_', id, '@example.com')") == USERS
    assert guide.count(dev_db, "users", "phone IS NULL AND address IS NULL") == USERS


# -- Testing Environment Management -------------------------------------------------------------


class TestingEnvironmentManager:
    __test__ = False  # not a pytest class

    def __init__(self, connect: Callable[[], moenv.Client], prefix: str) -> None:
        self.client = connect()  # adapted: connection setup
        self.clone_manager = self.client.clone
        self.prefix = prefix  # adapted: names

    def create_test_environment(self, test_type: str = "integration") -> str | None:
        """Create test environment based on test type"""
        test_db_name = f"{self.prefix}test_{test_type}_{int(time.time())}"
        production_db = f"{self.prefix}production_db"

        if test_type == "unit":
            # Unit tests - schema only
            clone_result = self.clone_manager.clone_database_schema(
                source_database=production_db, target_database=test_db_name, include_indexes=True
            )
        elif test_type == "integration":
            # Integration tests - limited data
            clone_result = self.clone_manager.clone_database(
                source_database=production_db,
                target_database=test_db_name,
                include_data=True,
                data_filters={"users": "id <= 1000", "orders": "created_at > '2024-01-01'"},
            )
        elif test_type == "performance":
            # Performance tests - full data
            clone_result = self.clone_manager.clone_database(
                source_database=production_db, target_database=test_db_name, include_data=True
            )

        if clone_result.success:
            print(f"Test environment created: {test_db_name}")
            return test_db_name
        else:  # noqa: RET505 - the guide's code
            print(f"Failed to create test environment: {clone_result.error}")
            return None

    def cleanup_test_environment(self, test_db_name: str) -> None:
        """Clean up test environment"""
        delete_result = self.clone_manager.delete_clone(test_db_name)

        if delete_result.success:
            print(f"Test environment cleaned up: {test_db_name}")
        else:
            print(f"Failed to clean up test environment: {delete_result.error}")

    def run_test_suite(self, test_db_name: str, test_scripts: list[str]) -> None:
        """Run test suite against test environment"""
        print(f"Running tests against {test_db_name}")

        for script in test_scripts:
            try:
                self.client.execute(script)
                print(f"Test passed: {script[:50]}...")
            except Exception as e:  # noqa: BLE001 - the guide's code
                print(f"Test failed: {script[:50]}... Error: {e}")


def test_testing_environments_of_three_kinds(guide: Guide, capsys: pytest.CaptureFixture[str]) -> None:
    test_manager = TestingEnvironmentManager(guide.connect, guide.sandbox.prefix)
    source = guide.production

    unit = test_manager.create_test_environment("unit")
    integration = test_manager.create_test_environment("integration")
    performance = test_manager.create_test_environment("performance")
    assert unit and integration and performance

    assert guide.counts(unit) == dict.fromkeys(sorted(TABLES), 0)
    index_sql = (
        "SELECT TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME FROM information_schema.STATISTICS"
        " WHERE TABLE_SCHEMA = %s"
    )
    assert set(guide.sandbox.query(index_sql, (unit,))) == set(guide.sandbox.query(index_sql, (source,)))

    kept_orders = "o.created_at > '2024-01-01' AND o.user_id <= 1000"
    assert guide.counts(integration) == {
        "categories": CATEGORIES,
        "order_items": int(
            guide.scalar(
                f"SELECT COUNT(*) FROM {q(source)}.order_items i JOIN {q(source)}.orders o ON o.id = i.order_id"
                f" WHERE {kept_orders}"
            )
        ),
        "orders": int(guide.scalar(f"SELECT COUNT(*) FROM {q(source)}.orders o WHERE {kept_orders}")),
        "products": PRODUCTS,
        "temp_data": TEMP_ROWS,
        "users": 1000,
    }
    assert guide.count(integration, "orders", "created_at <= '2024-01-01'") == 0

    assert guide.counts(performance) == guide.counts(source)

    test_scripts = [  # adapted: names (the guide's client has a current database)
        f"SELECT COUNT(*) FROM {integration}.users",
        f"SELECT COUNT(*) FROM {integration}.orders",
        f"SELECT * FROM {integration}.users LIMIT 5",
    ]
    test_manager.run_test_suite(integration, test_scripts)
    assert capsys.readouterr().out.count("Test passed") == 3

    for test_db in (unit, integration, performance):
        test_manager.cleanup_test_environment(test_db)
        assert not guide.exists(test_db)
    assert test_manager.clone_manager.list_clones() == []


# -- Data Migration System ----------------------------------------------------------------------


class DataMigrationSystem:
    def __init__(self, connect: Callable[[], moenv.Client]) -> None:
        self.client = connect()  # adapted: connection setup
        self.clone_manager = self.client.clone

    def migrate_database(self, source_db: str, target_db: str, migration_plan: list[dict[str, Any]]) -> None:
        """Migrate database according to migration plan"""
        print(f"Starting migration: {source_db} -> {target_db}")

        # Create target database
        self.client.execute(f"CREATE DATABASE IF NOT EXISTS {target_db}")

        # Clone tables according to plan
        for table_plan in migration_plan:
            if table_plan["action"] == "clone":
                self.clone_table_with_plan(source_db, target_db, table_plan)
            elif table_plan["action"] == "transform":
                self.transform_table_during_clone(source_db, target_db, table_plan)
            elif table_plan["action"] == "skip":
                print(f"Skipping table: {table_plan['table']}")

        print(f"Migration completed: {source_db} -> {target_db}")

    def clone_table_with_plan(self, source_db: str, target_db: str, table_plan: dict[str, Any]) -> None:
        """Clone table according to migration plan"""
        table_name = table_plan["table"]

        clone_result = self.clone_manager.clone_table(
            source_database=source_db,
            source_table=table_name,
            target_database=target_db,
            target_table=table_plan.get("target_table", table_name),
            columns=table_plan.get("columns"),
            where_condition=table_plan.get("where_condition"),
            include_data=table_plan.get("include_data", True),
        )

        if clone_result.success:
            print(f"Cloned table: {table_name}")
        else:
            print(f"Failed to clone table {table_name}: {clone_result.error}")

    def transform_table_during_clone(self, source_db: str, target_db: str, table_plan: dict[str, Any]) -> None:
        """Transform table during clone process"""
        table_name = table_plan["table"]
        transformations = table_plan.get("transformations", {})

        # Clone table structure first
        self.clone_manager.clone_table_schema(
            source_database=source_db, source_table=table_name, target_database=target_db, target_table=table_name
        )

        # Apply transformations during data copy
        if transformations:
            self.apply_data_transformations(source_db, target_db, table_name, transformations)

    def apply_data_transformations(
        self, source_db: str, target_db: str, table_name: str, transformations: dict[str, str]
    ) -> None:
        """Apply data transformations during clone"""
        # adapted: the guide leaves "custom SQL to transform data during copy" as a stub; this is that SQL.
        columns = [
            str(name)
            for (name,) in self.client.execute(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
                " ORDER BY ORDINAL_POSITION",
                (source_db, table_name),
            )
        ]
        select = ", ".join(transformations.get(c, q(c)) for c in columns)
        self.client.execute(
            f"INSERT INTO {q(target_db)}.{q(table_name)} ({', '.join(map(q, columns))})"
            f" SELECT {select} FROM {q(source_db)}.{q(table_name)}"
        )
        print(f"Applying transformations to {table_name}")


MIGRATION_PLAN: list[dict[str, Any]] = [
    {"action": "clone", "table": "users", "include_data": True},
    {
        "action": "transform",
        "table": "orders",
        "transformations": {"status": "CASE WHEN status = 'pending' THEN 'new' ELSE status END"},
    },
    {"action": "skip", "table": "temp_data"},
]


def test_migration_plan_with_clone_transform_and_skip(guide: Guide, capsys: pytest.CaptureFixture[str]) -> None:
    migration_system = DataMigrationSystem(guide.connect)
    old_production, new_production = guide.production, guide.db("new_production")

    migration_system.migrate_database(old_production, new_production, MIGRATION_PLAN)

    assert guide.tables(new_production) == {"users", "orders"}  # temp_data skipped
    assert guide.count(new_production, "users") == USERS
    assert guide.count(new_production, "orders") == ORDERS
    pending = guide.count(old_production, "orders", "status = 'pending'")
    assert pending > 0
    assert guide.count(new_production, "orders", "status = 'pending'") == 0
    assert guide.count(new_production, "orders", "status = 'new'") == pending
    assert guide.count(new_production, "orders", "status = 'completed'") == guide.count(
        old_production, "orders", "status = 'completed'"
    )
    # the empty database the guide creates first was taken over by the first clone (nothing in it to lose)
    info = migration_system.clone_manager.get_clone(new_production)
    assert info is not None and info.created_by_python
    out = capsys.readouterr().out
    assert "Skipping table: temp_data" in out and "Cloned table: users" in out


def test_migration_transformation_the_moenv_way(guide: Guide) -> None:
    """data_transformations map to rules.<t>.mask (SPEC §2). The leak check refuses a mask that
    keeps source values, which a business transformation (CASE … ELSE status) does by design:
    it is refused by default, and done with leak_check=False."""
    clone_manager = guide.connect().clone
    target = guide.db("new_production_2")
    clone_manager.clone_table(guide.production, "users", target)
    with pytest.raises(moenv.CloneError, match="leak check failed"):
        clone_manager.clone_table(
            source_database=guide.production,
            source_table="orders",
            target_database=target,
            data_transformations=MIGRATION_PLAN[1]["transformations"],
        )
    clone_manager.clone_table(
        source_database=guide.production,
        source_table="orders",
        target_database=target,
        data_transformations=MIGRATION_PLAN[1]["transformations"],
        leak_check=False,
    )
    assert guide.count(target, "orders", "status = 'new'") == guide.count(
        guide.production, "orders", "status = 'pending'"
    )


def test_a_clone_into_an_existing_database_that_holds_data_is_refused(guide: Guide) -> None:
    """Only an empty database is taken over; one with tables is never touched."""
    target = guide.db("precious_db")
    guide.sandbox.execute(f"CREATE DATABASE {q(target)}")
    guide.sandbox.execute(f"CREATE TABLE {q(target)}.keep (id INT PRIMARY KEY)")
    guide.sandbox.execute(f"INSERT INTO {q(target)}.keep VALUES (1)")

    with pytest.raises(moenv.CloneError, match="not managed by moenv") as info:
        guide.connect().clone.clone_table(guide.production, "users", target)

    assert info.value.hint and "--adopt" in info.value.hint
    assert guide.counts(target) == {"keep": 1}


# -- Backup and Recovery System -----------------------------------------------------------------


class BackupRecoverySystem:
    def __init__(self, connect: Callable[[], moenv.Client]) -> None:
        self.client = connect()  # adapted: connection setup
        self.clone_manager = self.client.clone

    def create_backup_clone(self, database_name: str, backup_type: str = "full") -> str | None:
        """Create backup clone of database"""
        timestamp = datetime.now().strftime("%Y%m%d_%H%M%S")
        backup_name = f"{database_name}_backup_{backup_type}_{timestamp}"

        if backup_type == "full":
            clone_result = self.clone_manager.clone_database(
                source_database=database_name, target_database=backup_name, include_data=True
            )
        elif backup_type == "incremental":
            # Get last backup timestamp
            last_backup = self.get_last_backup_timestamp(database_name)
            clone_result = self.clone_manager.clone_database_incremental(
                source_database=database_name, target_database=backup_name, last_clone_timestamp=last_backup
            )

        if clone_result.success:
            print(f"Backup created: {backup_name}")
            return backup_name
        else:  # noqa: RET505 - the guide's code
            print(f"Backup failed: {clone_result.error}")
            return None

    def restore_from_backup(self, backup_name: str, target_database: str) -> None:
        """Restore database from backup clone"""
        print(f"Restoring {target_database} from backup {backup_name}")

        # adapted: MySQL and MariaDB have no ALTER DATABASE … RENAME (see the test), so the backup is
        # cloned back under the target's name. A target moenv made is replaced atomically (readers
        # never see it empty); any other database is dropped first, as the guide does.
        if self.clone_manager.get_clone(target_database) is None:
            self.client.execute(f"DROP DATABASE IF EXISTS {target_database}")
        self.clone_manager.clone_database(
            source_database=backup_name, target_database=target_database, include_data=True
        )

        print(f"Restore completed: {target_database}")

    def get_last_backup_timestamp(self, database_name: str) -> str:
        """Get timestamp of last backup for incremental backup"""
        # This would query backup metadata
        return "2024-01-15 10:00:00"  # Placeholder

    def cleanup_old_backups(self, database_name: str, keep_days: int = 30) -> None:
        """Clean up old backup clones"""
        cutoff_date = datetime.now() - timedelta(days=keep_days)
        clones = self.clone_manager.list_clones(database=database_name)

        deleted_count = 0
        for clone in clones:
            if "backup" in clone.name and clone.created_at < cutoff_date:
                delete_result = self.clone_manager.delete_clone(clone.name)
                if delete_result.success:
                    deleted_count += 1

        print(f"Cleaned up {deleted_count} old backups")


def test_backup_then_restore(guide: Guide, capsys: pytest.CaptureFixture[str]) -> None:
    backup_system = BackupRecoverySystem(guide.connect)
    source = guide.production
    before = guide.counts(source)

    backup_name = backup_system.create_backup_clone(source, "full")
    assert backup_name is not None
    assert guide.counts(backup_name) == before

    # a disaster in production after the backup
    guide.sandbox.execute(f"DELETE FROM {q(source)}.order_items WHERE order_id > 100")
    guide.sandbox.execute(f"UPDATE {q(source)}.users SET email = 'oops@corp.test' WHERE id <= 10")

    restored = guide.db("restored_production_db")
    backup_system.restore_from_backup(backup_name, restored)

    assert guide.counts(restored) == before
    assert guide.count(restored, "users", "email = 'oops@corp.test'") == 0
    # restoring again over the restored database replaces what was done to it since
    guide.sandbox.execute(f"DELETE FROM {q(restored)}.order_items")
    backup_system.restore_from_backup(backup_name, restored)
    assert guide.counts(restored) == before
    assert "Restore completed" in capsys.readouterr().out

    # the guide's own restore statement does not exist on MariaDB (nor on MatrixOne, notes §4.4)
    with pytest.raises(moenv.DatabaseError) as info:
        backup_system.client.execute(f"ALTER DATABASE {backup_name} RENAME TO {guide.db('renamed')}")
    if guide.sandbox.engine == "mariadb":
        assert info.value.code == 1064  # syntax error


def test_incremental_backup_keeps_the_rows_changed_since_the_last_one(guide: Guide) -> None:
    backup_system = BackupRecoverySystem(guide.connect)
    source = guide.production

    backup_name = backup_system.create_backup_clone(source, "incremental")

    assert backup_name is not None and "_backup_incremental_" in backup_name
    since = "updated_at >= '2024-01-15 10:00:00'"
    counts = guide.counts(backup_name)
    assert counts["users"] == guide.count(source, "users", since) < USERS
    assert counts["orders"] == guide.count(source, "orders", since) < ORDERS
    # tables without a change column are copied whole
    assert (counts["categories"], counts["products"], counts["temp_data"]) == (CATEGORIES, PRODUCTS, TEMP_ROWS)
    assert counts["order_items"] == guide.count(source, "order_items")


def test_change_tracking_refreshes_the_clone_incrementally(guide: Guide) -> None:
    clone_manager = guide.connect().clone
    source, target = guide.production, guide.db("tracked_backup")

    def tracked() -> CloneResult:
        return clone_manager.clone_database_incremental(
            source_database=source, target_database=target, track_changes=True, change_window_hours=24
        )

    first = tracked()
    assert (first.action, first.incremental) == ("create", False)
    assert guide.counts(target) == guide.counts(source)
    # production moves on: a changed user, a new order, a deleted order, scratch rows gone
    guide.sandbox.execute(f"UPDATE {q(source)}.users SET email = 'changed@corp.test', updated_at = NOW() WHERE id = 7")
    guide.sandbox.execute(
        f"INSERT INTO {q(source)}.orders VALUES ({ORDERS + 1}, 1, 1, 'pending', NOW(), NOW())"
    )
    guide.sandbox.execute(f"DELETE FROM {q(source)}.order_items WHERE order_id = 5")
    guide.sandbox.execute(f"DELETE FROM {q(source)}.orders WHERE id = 5")
    guide.sandbox.execute(f"DELETE FROM {q(source)}.temp_data WHERE id <= 5")

    again = tracked()

    assert (again.action, again.incremental) == ("refresh", True)
    assert guide.counts(target) == guide.counts(source)
    assert guide.scalar(f"SELECT email FROM {q(target)}.users WHERE id = 7") == "changed@corp.test"
    assert guide.count(target, "orders", "id = 5") == 0
    refresh = clone_manager.get_clone(target)
    assert refresh is not None and refresh.status == "completed"


def test_cleanup_of_old_backups_with_a_clock(guide: Guide, tmp_path: Path) -> None:
    """Clones are dated by the manager's clock, so "40 days ago" needs no waiting."""
    source = guide.production
    forty_days_ago = datetime.now(UTC) - timedelta(days=40)
    past = BackupRecoverySystem(lambda: guide.connect(clock=lambda: forty_days_ago))
    old_backup = f"{source}_backup_full_old"
    past.clone_manager.clone_database(source_database=source, target_database=old_backup)
    old_clone = guide.db("old_scratch")
    past.clone_manager.clone_table(source, "temp_data", old_clone)
    old_manifest = make_manifest_environment(guide, tmp_path, at=forty_days_ago)

    backup_system = BackupRecoverySystem(guide.connect)
    recent_backup = backup_system.create_backup_clone(source, "full")
    assert recent_backup is not None
    backup_system.cleanup_old_backups(source, keep_days=30)

    assert not guide.exists(old_backup)
    assert guide.exists(recent_backup) and guide.exists(old_clone)

    # cleanup_old_clones: clones made from Python only; a manifest's environment is left to its ttl
    manager = guide.connect().clone
    result = manager.cleanup_old_clones(older_than_days=30, database=source)
    assert (result.success, result.deleted_count) == (True, 1)
    assert result.deleted == (manager.environment_name(old_clone),)
    assert not guide.exists(old_clone) and guide.exists(recent_backup)
    assert guide.exists(old_manifest)
    # with a clock 31 days ahead, the recent backup is old too
    later = guide.connect(clock=lambda: datetime.now(UTC) + timedelta(days=31)).clone
    assert later.cleanup_old_clones(older_than_days=30).deleted == (later.environment_name(recent_backup),)
    assert [c.target_database for c in later.list_clones()] == [old_manifest]


def make_manifest_environment(guide: Guide, directory: Path, *, at: datetime) -> str:
    """An environment applied from a manifest file (no created-by label), created at `at`."""
    target = guide.db("manifest_dev")
    path = directory / "dev.yaml"
    document = {
        "apiVersion": "moenv/v1",
        "kind": "Environment",
        "metadata": {"name": f"{guide.sandbox.token}-dev"},
        "spec": {"source": {"database": guide.production}, "target": {"database": target}, "data": "schema"},
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    config = guide.connect().config
    plan = moenv.api.plan([path], config=config, now=at)
    assert moenv.api.apply(plan, config=config, clock=lambda: at).ok
    return target


# -- Error Handling: retry with backoff ---------------------------------------------------------


def clone_with_retry(
    clone_manager: moenv.CloneManager, source_db: str, target_db: str, max_retries: int = 3
) -> CloneResult | None:
    for attempt in range(max_retries):
        try:
            return clone_manager.clone_database(source_database=source_db, target_database=target_db, include_data=True)
        except Exception as e:
            print(f"Clone attempt {attempt + 1} failed: {e}")
            if attempt == max_retries - 1:
                raise
            time.sleep(2**attempt)  # Exponential backoff
    return None


def test_retry_with_backoff_gets_through_a_transient_failure(guide: Guide, capsys: pytest.CaptureFixture[str]) -> None:
    version = str(guide.scalar("SELECT version()"))
    if guide.sandbox.engine == "matrixone" and not mo.Capabilities.from_text(version).get_lock:
        pytest.skip(f"holds the environment's GET_LOCK, which MatrixOne has from 4.0; this server runs {version}")
    holder = guide.sandbox.connect()
    failures: list[str] = []

    def release_after_the_first_failure(report: CloneProgress) -> None:
        if report.event == "finished" and report.error is not None:
            failures.append(report.error)
            holder.close()  # the other session ends: its lock is released

    clone_manager = guide.connect(progress=release_after_the_first_failure).clone
    target = guide.db("retry_db")
    # another session holds the environment's lock; moenv waits lock_timeout (1 s), then fails
    with holder.cursor() as cursor:
        cursor.execute("SELECT GET_LOCK(%s, 0)", (lock_name(clone_manager.environment_name(target)),))
        assert cursor.fetchone() == (1,)

    result = clone_with_retry(clone_manager, guide.production, target)

    assert result is not None and result.success
    assert len(failures) == 1 and "is locked by" in failures[0]
    assert guide.counts(target) == guide.counts(guide.production)
    out = capsys.readouterr().out
    assert "Clone attempt 1 failed" in out and "is locked by" in out
    assert "Clone attempt 2 failed" not in out


def test_the_errors_the_guide_catches(guide: Guide) -> None:
    clone_manager = guide.connect().clone
    with pytest.raises(moenv.CloneError, match="does not exist"):
        clone_manager.clone_database(source_database=guide.db("no_such_db"), target_database=guide.db("x"))
    with pytest.raises(moenv.CloneError, match="no column 'nope'"):
        clone_manager.clone_table(guide.production, "users", guide.db("x"), columns=["id", "nope"])
    with pytest.raises(moenv.CloneError, match="never writes to a source"):
        clone_manager.clone_table(guide.production, "users", guide.production)
    with pytest.raises(moenv.DatabaseError):
        moenv.connect("mysql://root@127.0.0.1:1/", config=guide.config)
    assert guide.environments() == []


# -- Performance Optimization: batch and parallel cloning ---------------------------------------


def batch_clone_tables(
    clone_manager: moenv.CloneManager, source_db: str, target_db: str, tables: list[str]
) -> list[tuple[str, Any]]:
    results: list[tuple[str, Any]] = []
    for table in tables:
        try:
            result = clone_manager.clone_table(
                source_database=source_db, source_table=table, target_database=target_db, include_data=True
            )
            results.append((table, result))
        except Exception as e:  # noqa: BLE001 - the guide's code
            results.append((table, f"Error: {e}"))
    return results


def efficient_large_db_clone(clone_manager: moenv.CloneManager, source_db: str, target_db: str) -> None:
    # Clone schema first
    clone_manager.clone_database_schema(source_database=source_db, target_database=target_db)

    # Clone tables in parallel (if supported)
    tables = clone_manager.get_database_tables(source_db)
    batch_clone_tables(clone_manager, source_db, target_db, tables)


class CloneService:
    def __init__(self, connect: Callable[[], moenv.Client]) -> None:
        self.client = connect()  # adapted: connection setup
        self.clone_manager = self.client.clone
        self.lock = threading.Lock()

    def thread_safe_clone(self, source_db: str, target_db: str) -> CloneResult:
        with self.lock:
            return self.clone_manager.clone_database(
                source_database=source_db, target_database=target_db, include_data=True
            )


def test_batch_cloning(guide: Guide) -> None:
    clone_manager = guide.connect().clone
    target = guide.db("batch_db")

    results = batch_clone_tables(clone_manager, guide.production, target, ["categories", "products", "users"])

    assert [(t, isinstance(r, CloneResult) and r.success) for t, r in results] == [
        ("categories", True),
        ("products", True),
        ("users", True),
    ]
    assert guide.counts(target) == {"categories": CATEGORIES, "products": PRODUCTS, "users": USERS}

    large = guide.db("large_db")
    efficient_large_db_clone(clone_manager, guide.production, large)
    assert guide.counts(large) == guide.counts(guide.production)
    assert len(clone_manager.list_clones(database=guide.production)) == 2


def test_parallel_cloning_from_threads(guide: Guide) -> None:
    client = guide.connect()
    tables = ["categories", "products", "users", "orders"]
    shared = guide.db("parallel_db")
    targets = [guide.db(f"parallel_{i}") for i in range(3)]
    service = CloneService(guide.connect)

    with ThreadPoolExecutor(max_workers=8) as pool:
        into_one = [pool.submit(client.clone.clone_table, guide.production, t, shared) for t in tables]
        apart = [pool.submit(client.clone.clone_database, guide.production, t) for t in targets]
        locked = pool.submit(service.thread_safe_clone, guide.production, guide.db("service_db"))
        results = [f.result() for f in [*into_one, *apart, locked]]

    assert all(r.success for r in results)
    assert guide.counts(shared) == {t: guide.count(guide.production, t) for t in sorted(tables)}
    for target in [*targets, guide.db("service_db")]:
        assert guide.counts(target) == guide.counts(guide.production)
    assert sorted(c.target_database for c in client.clone.list_clones()) == sorted(
        [shared, *targets, guide.db("service_db")]
    )


# -- Table cloning sections ---------------------------------------------------------------------


def test_table_cloning_sections(guide: Guide) -> None:
    clone_manager = guide.connect().clone
    production_db = guide.production
    test_db = guide.db("test_db")

    # Single Table Cloning
    clone_result = clone_manager.clone_table(
        source_database=production_db,
        source_table="users",
        target_database=test_db,
        target_table="users_copy",
        include_data=True,
    )
    assert clone_result.success and clone_result.tables == ("users_copy",)
    assert guide.counts(test_db) == {"users_copy": USERS}
    # moenv copies each source table once per target database (one environment per target)
    with pytest.raises(moenv.CloneError, match=r"already holds .*users as users_copy") as info:
        clone_manager.clone_table(
            source_database=production_db,
            source_table="users",
            target_database=test_db,
            target_table="users_essential",
            columns=["id", "username", "email", "created_at"],
            include_data=True,
        )
    assert info.value.hint and "another target_database" in info.value.hint
    essential_db = guide.db("essential_db")  # adapted: its own database
    clone_manager.clone_table(
        source_database=production_db,
        source_table="users",
        target_database=essential_db,
        target_table="users_essential",
        columns=["id", "username", "email", "created_at"],
        include_data=True,
    )
    assert [c for (c,) in guide.sandbox.query(f"SELECT * FROM {q(essential_db)}.users_essential LIMIT 0")] == []
    columns = guide.sandbox.query(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s ORDER BY ORDINAL_POSITION",
        (essential_db,),
    )
    assert [c for (c,) in columns] == ["id", "username", "email", "created_at"]
    template_db = guide.db("template_db")  # adapted: its own database
    clone_manager.clone_table_schema(
        source_database=production_db,
        source_table="users",
        target_database=template_db,
        target_table="users_template",
        include_indexes=True,
        include_constraints=True,
    )
    assert guide.counts(template_db) == {"users_template": 0}

    # Conditional Cloning (into test_db next to users_copy: orders references it)
    clone_manager.clone_table(
        source_database=production_db,
        source_table="orders",
        target_database=test_db,
        target_table="recent_orders",
        where_condition="created_at > '2024-01-01' AND status = 'completed'",
        include_data=True,
    )
    assert guide.counts(test_db) == {
        "recent_orders": guide.count(production_db, "orders", "created_at > '2024-01-01' AND status = 'completed'"),
        "users_copy": USERS,
    }
    anonymized_db = guide.db("anonymized_db")
    clone_manager.clone_table(
        source_database=production_db,
        source_table="users",
        target_database=anonymized_db,
        target_table="anonymized_users",
        data_transformations={"email": "CONCAT('user_', id, '@example.com')", "phone": "NULL", "address": "NULL"},
        include_data=True,
    )
    assert guide.count(anonymized_db, "anonymized_users", "phone IS NULL AND address IS NULL") == USERS
    assert guide.count(anonymized_db, "anonymized_users", "email LIKE 'user\\_%@example.com'") == USERS

    # Multiple Table Cloning
    multi_db, filtered_db, related_db = guide.db("multi_db"), guide.db("filtered_test_db"), guide.db("related_db")
    tables_to_clone = ["users", "orders", "products", "categories"]
    clone_manager.clone_tables(
        source_database=production_db, target_database=multi_db, tables=tables_to_clone, include_data=True
    )
    assert guide.tables(multi_db) == set(tables_to_clone)
    clone_manager.clone_tables(
        source_database=production_db,
        target_database=filtered_db,
        tables=["users", "orders"],
        where_conditions={"users": "created_at > '2024-01-01'", "orders": "status = 'completed'"},
        include_data=True,
    )
    assert guide.count(filtered_db, "users") == guide.count(production_db, "users", "created_at > '2024-01-01'")
    assert guide.count(filtered_db, "orders", "status <> 'completed'") == 0
    assert guide.count(filtered_db, "orders") == int(
        guide.scalar(
            f"SELECT COUNT(*) FROM {q(production_db)}.orders o JOIN {q(production_db)}.users u ON u.id = o.user_id"
            " WHERE o.status = 'completed' AND u.created_at > '2024-01-01'"
        )
    )
    clone_manager.clone_related_tables(
        source_database=production_db,
        target_database=related_db,
        root_table="users",
        include_data=True,
        max_depth=3,  # Include tables up to 3 levels deep
    )
    assert guide.counts(related_db) == {t: n for t, n in guide.counts(production_db).items() if t != "temp_data"}

    # Cross-Database Cloning
    analytics_db = guide.db("analytics_db")
    clone_manager.clone_cross_database(
        source_database=production_db,
        source_table="users",
        target_database=analytics_db,
        target_table="user_analytics",
        include_data=True,
    )
    assert guide.counts(analytics_db) == {"user_analytics": USERS}


def test_clone_cross_server(guide: Guide, second_sandbox: Sandbox) -> None:
    """Copies to another server are being built elsewhere; until they land, the refusal must be clear."""
    clone_manager = guide.connect().clone
    target = second_sandbox.prefix + "analytics_db"
    try:
        clone_result = clone_manager.clone_cross_server(
            source_database=guide.production,
            source_table="users",
            target_server=second_sandbox.url,
            target_database=target,
            target_table="users",
            include_data=True,
        )
    except moenv.CloneError as exc:
        cause = exc.__cause__
        if not (isinstance(cause, moenv.ManifestError) and "not supported yet" in str(cause)):
            raise
        assert "cross-server" in str(exc) and "target_server" in str(exc)
        assert second_sandbox.databases() == []
        pytest.skip(f"this version refuses cross-server copies: {exc}")
    try:
        assert clone_result.success and clone_result.target_server != clone_manager.server
        assert second_sandbox.query(f"SELECT COUNT(*) FROM {q(target)}.users")[0][0] == USERS
        info = clone_manager.get_clone(clone_result.name)
        assert info is not None and info.target_server == clone_result.target_server
        assert clone_manager.delete_clone(clone_result.name).success
        assert target not in second_sandbox.databases()
    finally:
        second_sandbox.execute(f"DROP DATABASE IF EXISTS {q(guide.sandbox.ledger)}")


def test_include_permissions_is_refused_with_its_reason_and_nothing_is_created(guide: Guide) -> None:
    clone_manager = guide.connect().clone
    staging_db = guide.db("staging_db")

    with pytest.raises(moenv.CloneError, match="grants") as info:
        clone_manager.clone_database(
            source_database=guide.production,
            target_database=staging_db,
            include_data=True,
            include_indexes=True,
            include_permissions=True,
            description="Staging environment clone",
        )

    assert "not supported yet" in str(info.value) and "include_permissions=True" in str(info.value)
    assert not guide.exists(staging_db)
    assert clone_manager.get_clone(staging_db) is None


# -- Clone Management ---------------------------------------------------------------------------


def test_listing_status_statistics_and_deleting(guide: Guide, capsys: pytest.CaptureFixture[str]) -> None:
    clone_manager = guide.connect().clone
    production_db = guide.production
    test_db, staging_db, backup_db = guide.db("test_db"), guide.db("staging_db"), guide.db("backup_db")
    clone_manager.clone_database(source_database=production_db, target_database=test_db, include_data=True)
    clone_manager.clone_database_schema(source_database=production_db, target_database=staging_db)
    clone_manager.clone_database(
        source_database=production_db, target_database=backup_db, data_filters={"users": "id <= 10"}
    )

    # List all clones
    clones = clone_manager.list_clones()
    for clone in clones:
        print(f"Clone: {clone.name}")
        print(f"  Source: {clone.source_database}")
        print(f"  Target: {clone.target_database}")
        print(f"  Created: {clone.created_at}")
        print(f"  Status: {clone.status}")
    assert sorted(c.target_database for c in clones) == sorted([test_db, staging_db, backup_db])
    assert {c.status for c in clones} == {"completed"}
    assert all(datetime.now() - timedelta(minutes=5) < c.created_at <= datetime.now() for c in clones)
    assert len(clone_manager.list_clones(database=production_db)) == 3
    assert clone_manager.list_clones(database=guide.db("elsewhere")) == []

    # Get clone details
    clone = clone_manager.get_clone("test_db")
    assert clone is None  # adapted: names
    clone = clone_manager.get_clone(test_db)
    assert clone is not None
    assert clone == clone_manager.get_clone(clone.name)
    assert clone.table_count == len(TABLES) and clone.size_mb is not None and clone.size_mb > 0
    assert clone.last_updated >= clone.created_at

    # Check clone status
    status = clone_manager.get_clone_status(test_db)
    assert (status.state, status.progress, status.tables_completed, status.tables_total) == (
        "completed",
        100.0,
        len(TABLES),
        len(TABLES),
    )

    def monitor_clone_progress(clone_name: str) -> None:
        while True:
            status = clone_manager.get_clone_status(clone_name)
            print(f"Progress: {status.progress}%")

            if status.state in ["completed", "failed"]:
                break

            time.sleep(5)  # Check every 5 seconds

    monitor_clone_progress(staging_db)
    assert "Progress: 100.0%" in capsys.readouterr().out

    # Get clone statistics
    stats = clone_manager.get_clone_statistics(test_db)
    assert stats.table_count == len(TABLES)
    assert stats.total_rows == sum(guide.counts(production_db).values())
    assert stats.index_count == int(
        guide.scalar(
            "SELECT COUNT(DISTINCT TABLE_NAME, INDEX_NAME) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s",
            (test_db,),
        )
    )
    assert stats.total_size_mb > 0
    assert clone_manager.get_clone_statistics(staging_db).total_rows == 0

    # Delete specific clone
    delete_result = clone_manager.delete_clone(test_db)
    assert delete_result.success and not guide.exists(test_db)
    again = clone_manager.delete_clone(test_db)
    assert not again.success and again.error and "no clone" in again.error
    assert clone_manager.get_clone_status(test_db).state == "not_found"

    # Delete multiple clones
    clones_to_delete = [test_db, staging_db, backup_db]
    for clone_name in clones_to_delete:
        clone_manager.delete_clone(clone_name)
    assert clone_manager.list_clones() == []
    assert not any(guide.exists(d) for d in clones_to_delete)

    # Cleanup old clones
    cleanup_result = clone_manager.cleanup_old_clones(older_than_days=30, database=production_db)
    print(f"Cleaned up {cleanup_result.deleted_count} old clones")
    assert (cleanup_result.success, cleanup_result.deleted_count) == (True, 0)


def test_clone_status_is_live_while_an_apply_runs_elsewhere(guide: Guide, tmp_path: Path) -> None:
    """get_clone_status in this thread and `moenv status` in another process see a running apply's progress."""
    target = guide.db("monitored_db")
    seen = threading.Event()
    copies = 0

    def hold(progress: CloneProgress) -> None:
        nonlocal copies
        if progress.event == "step" and progress.step == "copy_rows" and not seen.is_set():
            copies += 1
            # The executor writes progress at most every 2 s: after the first table, wait that long,
            # so the next table's progress reaches the ledger; then hold until it has been seen.
            if copies == 1:
                time.sleep(2.1)
            else:
                seen.wait(timeout=30)

    worker = guide.connect(progress=hold).clone
    monitor = guide.connect().clone
    observed: list[moenv.clone.CloneStatus] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(worker.clone_database, guide.production, target)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not running.done():
                status = monitor.get_clone_status(target)
                observed.append(status)
                if status.state == "running" and status.tables_completed > 0:
                    break
                time.sleep(0.05)
            from_cli = run_cli("status", "--json", url=guide.sandbox.url, ledger=guide.sandbox.ledger, cwd=tmp_path)
        finally:
            seen.set()
        result = running.result()

    live = observed[-1]
    assert live.state == "running", observed
    assert 0 < live.tables_completed < live.tables_total == len(TABLES)
    assert 0 < live.progress < 100
    assert from_cli.returncode == 0, output(from_cli)
    [row] = [e for e in json.loads(from_cli.stdout)["environments"] if e["target_database"] == target]
    assert row["status"] == "building" and row["tables_done"] > 0
    assert result.success
    assert monitor.get_clone_status(target).state == "completed"


# -- export: a notebook prototype becomes a manifest in git ------------------------------------


def test_a_python_clone_shows_in_moenv_status_and_exports_as_a_manifest_that_plans_as_a_noop(
    guide: Guide, tmp_path: Path
) -> None:
    clone_manager = guide.connect().clone
    target = guide.db("notebook_db")
    clone_manager.clone_table(
        source_database=guide.production,
        source_table="users",
        target_database=target,
        target_table="people",
        columns=["id", "username", "email", "phone", "created_at"],
        where_condition="created_at > '2024-01-01'",
        data_transformations={"email": "CONCAT('user_', id, '@example.com')", "phone": "NULL"},
    )
    clone_manager.clone_tables(guide.production, target, ["categories", "products"])
    name = clone_manager.environment_name(target)

    def cli(*args: str) -> Any:
        return run_cli(*args, url=guide.sandbox.url, ledger=guide.sandbox.ledger, cwd=tmp_path)

    status = cli("status")
    assert status.returncode == 0 and name in status.stdout, output(status)
    exported = cli("export", name)
    assert exported.returncode == 0, output(exported)
    document = yaml.safe_load(exported.stdout)
    assert document["metadata"] == {"name": name, "labels": {"created-by": "python"}}
    assert document["spec"]["tables"] == {"include": ["users", "categories", "products"]}
    assert document["spec"]["rules"]["users"] == {
        "where": "created_at > '2024-01-01'",
        "columns": ["id", "username", "email", "phone", "created_at"],
        "mask": {"email": "CONCAT('user_', id, '@example.com')", "phone": None},
        "rename": "people",
    }
    manifest = tmp_path / "notebook.yaml"
    manifest.write_text(exported.stdout, encoding="utf-8")

    validated = cli("validate", str(manifest))
    assert validated.returncode == 0, output(validated)
    planned = cli("plan", "--detailed-exitcode", str(manifest))
    assert planned.returncode == 0, output(planned)
    assert not moenv.api.plan([manifest], config=clone_manager.config).has_changes

    missing = cli("export", "py-nothing")
    assert missing.returncode == 1 and "no environment named" in missing.stderr


# -- Async Operations ---------------------------------------------------------------------------


def test_the_async_example(guide: Guide) -> None:
    production_db = guide.production

    async def async_database_cloning() -> list[CloneResult]:
        # Connect asynchronously
        async_client = await moenv.connect_async(guide.sandbox.url, config=guide.config)  # adapted: connection setup

        # Get async clone manager
        clone_manager = async_client.clone

        # Async database clone
        clone_result = await clone_manager.clone_database_async(
            source_database=production_db, target_database=guide.db("async_test_db"), include_data=True
        )
        results = [clone_result]

        # Async table clone
        clone_result = await clone_manager.clone_table_async(
            source_database=production_db,
            source_table="users",
            target_database=guide.db("async_users_db"),  # adapted: async_test_db holds users already
            target_table="users_async",
            include_data=True,
        )
        results.append(clone_result)

        await async_client.disconnect()
        return results

    # Run async operations
    results = asyncio.run(async_database_cloning())

    assert all(r.success for r in results)
    assert guide.counts(guide.db("async_test_db")) == guide.counts(production_db)
    assert guide.counts(guide.db("async_users_db")) == {"users_async": USERS}


def test_two_async_clones_progress_concurrently_on_one_event_loop(guide: Guide) -> None:
    first, second = guide.db("async_a"), guide.db("async_b")
    manager = guide.connect().clone
    names = {manager.environment_name(first): "a", manager.environment_name(second): "b"}
    started = {"a": threading.Event(), "b": threading.Event()}
    events: list[tuple[float, str, str]] = []
    overlapped: list[bool] = []

    def progress(report: CloneProgress) -> None:
        me = names[report.environment]
        events.append((time.monotonic(), me, report.event))
        if report.event == "started":
            started[me].set()
        elif report.event == "step" and report.step == "copy_rows" and len(overlapped) < 2:
            # Each copy waits (in its worker thread) until the other clone has started: if the two
            # ran one after the other, this would time out instead.
            overlapped.append(started["b" if me == "a" else "a"].wait(timeout=15))

    async def main() -> tuple[list[CloneResult], list[float], float, float]:
        client = await moenv.connect_async(guide.sandbox.url, config=guide.config, progress=progress)
        ticks: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        begin = time.monotonic()
        results = await asyncio.gather(
            client.clone.clone_database_async(guide.production, first),
            client.clone.clone_database_async(guide.production, second),
        )
        end = time.monotonic()
        stop.set()
        await ticking
        await client.disconnect()
        return list(results), ticks, begin, end

    results, ticks, begin, end = asyncio.run(main())

    assert all(r.success for r in results)
    assert overlapped == [True, True]
    start = {who: t for t, who, event in events if event == "started"}
    finish = {who: t for t, who, event in events if event == "finished"}
    assert max(start.values()) < min(finish.values())  # both were running at once
    during = [t for t in ticks if begin <= t <= end]
    # the loop ticked all along (every 10 ms): at least a few ticks, however fast the copies were,
    # and no long gap (was `>= 10` ticks, which a fast machine missed with 9)
    assert len(during) >= min(10, int((end - begin) / 0.02))
    assert len(during) >= 3
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert max(gaps) < 0.5  # the loop kept running while the copies ran in threads
    for target in (first, second):
        assert guide.counts(target) == guide.counts(guide.production)


def test_async_management_calls(guide: Guide) -> None:
    async def main() -> None:
        async with await moenv.connect_async(guide.sandbox.url, config=guide.config) as client:
            manager = client.clone
            target = guide.db("async_managed")
            await manager.clone_database_schema_async(guide.production, target, tables=["users", "orders"])
            assert await manager.get_database_tables_async(guide.production) == sorted(TABLES)
            [info] = await manager.list_clones_async(database=guide.production)
            assert info.target_database == target
            assert (await manager.get_clone_status_async(target)).state == "completed"
            assert (await manager.get_clone_statistics_async(target)).table_count == 2
            assert (await manager.delete_clone_async(target)).success
            assert await manager.get_clone_async(target) is None
            assert (await client.execute("SELECT 1")) == [(1,)]

    asyncio.run(main())
