"""plan + apply against a real MatrixOne: a full clone, a filtered and masked clone, a refresh and a
delete, with rows checked through fresh connections (never through moenv).

Runs only when MOENV_TEST_MATRIXONE_URL names a MatrixOne server
(e.g. `mysql://root:111@127.0.0.1:6001/`); everything it creates carries a random prefix and is
dropped at the end. Without the variable the whole module is reported as skipped, not passed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml

from moenv import api
from moenv.engines import matrixone as mo
from moenv.models.config import Config, Server
from moenv.models.ledger import holding_database, staging_database
from moenv.models.plan import Create, Delete, Refresh

URL = os.environ.get("MOENV_TEST_MATRIXONE_URL")
if not URL:
    pytest.skip(
        "MatrixOne integration suite not run: set MOENV_TEST_MATRIXONE_URL (e.g. mysql://root:111@127.0.0.1:6001/)"
        " to run it against a MatrixOne server",
        allow_module_level=True,
    )


USERS = 300
ORDERS = 900
KEPT_USERS = 120  # users with id <= 120 pass the filter


@dataclass
class World:
    server: Server
    prefix: str
    tmp: Path
    version: str = ""

    @property
    def source(self) -> str:
        return f"{self.prefix}src"

    @property
    def ledger(self) -> str:
        return f"{self.prefix}ledger"

    @property
    def config(self) -> Config:
        return Config(servers={"default": self.server}, ledger_database=self.ledger, salt="test-salt", lock_timeout=5)

    def connect(self) -> Any:
        return pymysql.connect(
            host=self.server.host,
            port=self.server.port,
            user=self.server.user,
            password=self.server.password,
            autocommit=True,
        )

    def query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, args)
                return [tuple(row) for row in cursor.fetchall()]
        finally:
            conn.close()

    def execute(self, *statements: str) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
        finally:
            conn.close()

    def count(self, database: str, table: str, where: str = "") -> int:
        [(n,)] = self.query(f"SELECT COUNT(*) FROM `{database}`.`{table}` {where}")
        return int(n)

    def databases(self) -> set[str]:
        return {str(r[0]) for r in self.query("SHOW DATABASES") if str(r[0]).startswith(self.prefix)}

    def moenv_snapshots(self) -> list[str]:
        prefix = mo.snapshot_prefix(self.ledger)
        return [
            str(r[0]) for r in self.query("SELECT sname FROM mo_catalog.mo_snapshots") if str(r[0]).startswith(prefix)
        ]

    def manifest(self, name: str, **spec: Any) -> Path:
        document = {
            "apiVersion": "moenv/v1",
            "kind": "Environment",
            "metadata": {"name": f"{self.prefix.rstrip('_').replace('_', '-')}-{name}"},
            "spec": {"source": {"server": "default", "database": self.source}, **spec},
        }
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def env(self, name: str) -> str:
        return f"{self.prefix.rstrip('_').replace('_', '-')}-{name}"

    def build_source(self) -> None:
        src = f"`{self.source}`"
        self.execute(
            f"CREATE DATABASE {src}",
            f"CREATE TABLE {src}.users (id INT NOT NULL PRIMARY KEY, email VARCHAR(255) NOT NULL,"
            " created_at DATETIME NOT NULL)",
            f"CREATE TABLE {src}.orders (id INT NOT NULL PRIMARY KEY, user_id INT NOT NULL,"
            " status VARCHAR(16) NOT NULL,"
            f" CONSTRAINT fk_orders_user FOREIGN KEY (user_id) REFERENCES {src}.users (id))",
        )
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO {src}.users VALUES (%s, %s, '2025-01-01 00:00:00')",
                    [(i, f"person{i}@corp.example") for i in range(1, USERS + 1)],
                )
                cursor.executemany(
                    f"INSERT INTO {src}.orders VALUES (%s, %s, %s)",
                    [(i, (i % USERS) + 1, "completed" if i % 3 else "pending") for i in range(1, ORDERS + 1)],
                )
        finally:
            conn.close()

    def drop_everything(self) -> None:
        """Our snapshots, our databases, and the staging databases of our environments."""
        for name in self.moenv_snapshots():
            self.execute(f"DROP SNAPSHOT IF EXISTS {name}")
        envs = [self.env(n) for n in ("full", "subset", "refresh", "gone")]
        scratch = {staging_database(e) for e in envs} | {holding_database(e) for e in envs}
        for database in sorted(self.databases() | scratch):
            self.execute(f"DROP DATABASE IF EXISTS `{database}`")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    assert URL is not None
    server = Server.from_url("default", URL)
    box = World(server, f"mo{uuid.uuid4().hex[:6]}_", tmp_path)
    [(version,)] = box.query("SELECT version()")
    box.version = str(version)
    if mo.parse_version(box.version) is None:
        pytest.skip(f"MOENV_TEST_MATRIXONE_URL does not point at MatrixOne (version {version!r})")
    if not mo.Capabilities.from_text(box.version).supported:
        pytest.skip(f"moenv needs MatrixOne ≥ 3.0.0; this server runs {version}")
    box.build_source()
    try:
        yield box
    finally:
        box.drop_everything()


def apply(world: World, *paths: Path) -> None:
    result = api.apply(api.plan(list(paths), config=world.config), config=world.config)
    assert result.ok, result.failed


def test_a_full_clone_is_one_database_clone_and_converges(world: World) -> None:
    path = world.manifest("full", target={"database": f"{world.prefix}full"})
    plan = api.plan([path], config=world.config)
    [action] = plan.actions
    assert isinstance(action, Create)
    assert {t.method for t in action.desired.tables} == {"clone_database"}

    result = api.apply(plan, config=world.config)

    assert result.ok, result.failed
    target = f"{world.prefix}full"
    assert world.count(target, "users") == USERS
    assert world.count(target, "orders") == ORDERS
    assert world.moenv_snapshots() == []  # taken for the apply, dropped after
    assert api.plan([path], config=world.config).actions == ()  # the reconciler invariant


def test_a_filtered_and_masked_clone_keeps_only_consistent_masked_rows(world: World) -> None:
    target = f"{world.prefix}subset"
    path = world.manifest(
        "subset",
        target={"database": target},
        rules={"users": {"where": f"id <= {KEPT_USERS}", "mask": {"email": "CONCAT('user_', id, '@example.com')"}}},
    )
    plan = api.plan([path], config=world.config)
    [action] = plan.actions
    assert isinstance(action, Create)
    assert {t.target: t.method for t in action.desired.tables} == {"users": "insert_select", "orders": "insert_select"}

    apply(world, path)

    assert world.count(target, "users") == KEPT_USERS
    expected_orders = world.count(world.source, "orders", f"WHERE user_id <= {KEPT_USERS}")
    assert world.count(target, "orders") == expected_orders
    assert world.query(f"SELECT email FROM `{target}`.users WHERE id = 7") == [("user_7@example.com",)]
    assert world.count(target, "orders", f"WHERE user_id NOT IN (SELECT id FROM `{target}`.users)") == 0
    fks = world.query(
        "SELECT refer_db_name, refer_table_name FROM mo_catalog.mo_foreign_keys WHERE db_name = %s", (target,)
    )
    assert fks and all(db == target for db, _ in fks)  # never left pointing at the source
    assert world.moenv_snapshots() == []
    assert api.plan([path], config=world.config).actions == ()


def test_a_refresh_brings_new_source_rows_in_without_a_half_built_state(world: World) -> None:
    target = f"{world.prefix}refresh"
    path = world.manifest("refresh", target={"database": target}, tables={"include": ["users"]})
    apply(world, path)
    assert world.count(target, "users") == USERS

    world.execute(f"INSERT INTO `{world.source}`.users VALUES ({USERS + 1}, 'new@corp.example', '2025-02-01 00:00:00')")
    plan = api.refresh_plan(world.config, world.env("refresh"), paths=[path])
    [action] = plan.actions
    assert isinstance(action, Refresh)
    result = api.apply(plan, config=world.config)

    assert result.ok, result.failed
    assert world.count(target, "users") == USERS + 1
    leftovers = world.query(
        "SELECT relname FROM mo_catalog.mo_tables WHERE reldatabase = %s AND relname LIKE '\\_moenv\\_%%'", (target,)
    )
    assert leftovers == []
    assert world.moenv_snapshots() == []


def test_delete_drops_the_target_and_forgets_it(world: World) -> None:
    target = f"{world.prefix}gone"
    path = world.manifest("gone", target={"database": target})
    apply(world, path)
    assert target in world.databases()

    plan = api.destroy_plan(world.config, world.env("gone"))
    assert isinstance(plan.actions[0], Delete)
    result = api.apply(plan, config=world.config)

    assert result.ok, result.failed
    assert target not in world.databases()
    assert world.env("gone") not in {r.name for r in api.status(world.config).records}
