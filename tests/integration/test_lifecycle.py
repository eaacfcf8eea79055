"""The lifecycle of environments (issue 4, SPEC §4-§6) on a real MariaDB, with an injected clock
(never `sleep`): ttl and expiry by `apply` and `gc`, protect, scheduled refresh, incremental
refresh compared with a fresh full copy, drift and its reasons, content drift, saved and stale
plans, prune guards, `moenv drift` exit codes and `moenv history`.

Time: the planner gets `now=`, the executor `clock=`; the CLI gets the hidden `--now`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymysql
import pytest
from tests.integration.helpers import World, manifest_text, output, q
from tests.support.mariadb import Sandbox

from moenv import api
from moenv.errors import ConflictError, ManifestError
from moenv.executor import apply as apply_module
from moenv.executor.apply import ApplyResult
from moenv.models.config import Config, Server
from moenv.models.plan import Create, Delete, Plan, PlanOptions, Rebuild, Refresh

EXIT_ERROR = 1
EXIT_PENDING = 2

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
"""When every environment of these tests is created (the real clock is never read)."""

OLD = "2024-06-01 00:00:00"  # the watermarks of the rows the first copy sees: OLD + n seconds
NEW = "2024-07-01 00:00:00"  # the watermark of every change made afterwards
TABLES = ("customers", "events", "items", "notes", "orders")


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


def cli_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


# -- the source: a small shop with watermarks, a virtual FK, a declared FK, a keyless table ----------


def shop_statements(db: str) -> list[str]:
    """200 customers (every 10th banned), 600 orders (customer_id is a *virtual* FK: no declared
    constraint, so a customer deleted at the source leaves orphan orders behind), 1,200 items
    (declared FK to orders), 20 notes (no watermark column), 30 events (no key)."""
    d = q(db)
    return [
        f"CREATE DATABASE {d} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        f"""CREATE TABLE {d}.customers (
            id INT UNSIGNED NOT NULL PRIMARY KEY,
            name VARCHAR(100) NOT NULL,
            email VARCHAR(200) NOT NULL,
            tier VARCHAR(10) NOT NULL,
            updated_at DATETIME NOT NULL,
            KEY ix_customers_email (email)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        f"""CREATE TABLE {d}.orders (
            id INT UNSIGNED NOT NULL PRIMARY KEY,
            customer_id INT UNSIGNED NOT NULL,
            amount DECIMAL(10,2) NOT NULL,
            status VARCHAR(10) NOT NULL,
            note VARCHAR(100) NULL,
            updated_at DATETIME NOT NULL,
            KEY ix_orders_customer (customer_id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        f"""CREATE TABLE {d}.items (
            order_id INT UNSIGNED NOT NULL,
            line SMALLINT UNSIGNED NOT NULL,
            sku VARCHAR(20) NOT NULL,
            qty INT NOT NULL,
            updated_at DATETIME NOT NULL,
            PRIMARY KEY (order_id, line),
            CONSTRAINT fk_items_order FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        f"""CREATE TABLE {d}.notes (
            id INT UNSIGNED NOT NULL PRIMARY KEY,
            body VARCHAR(100) NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        f"""CREATE TABLE {d}.events (
            at DATETIME NOT NULL,
            what VARCHAR(50) NOT NULL,
            KEY ix_events_at (at)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        f"""INSERT INTO {d}.customers (id, name, email, tier, updated_at)
            SELECT seq, CONCAT('Customer ', seq), CONCAT('c', seq, '@shop.test'),
                   IF(seq % 10 = 0, 'banned', ELT(1 + seq % 3, 'gold', 'silver', 'bronze')),
                   '{OLD}' + INTERVAL seq SECOND
            FROM {d}.seq_1_to_200""",
        f"""INSERT INTO {d}.orders (id, customer_id, amount, status, note, updated_at)
            SELECT seq, 1 + seq % 200, seq * 1.5, ELT(1 + seq % 3, 'new', 'paid', 'shipped'),
                   CONCAT('note ', seq), '{OLD}' + INTERVAL seq SECOND
            FROM {d}.seq_1_to_600""",
        f"""INSERT INTO {d}.items (order_id, line, sku, qty, updated_at)
            SELECT o.seq, l.seq, CONCAT('SKU-', o.seq * 10 + l.seq), 1 + (o.seq + l.seq) % 5,
                   '{OLD}' + INTERVAL o.seq SECOND
            FROM {d}.seq_1_to_600 o JOIN {d}.seq_1_to_2 l""",
        f"INSERT INTO {d}.notes (id, body) SELECT seq, CONCAT('body ', seq) FROM {d}.seq_1_to_20",
        f"""INSERT INTO {d}.events (at, what)
            SELECT '{OLD}' + INTERVAL seq MINUTE, CONCAT('event ', seq) FROM {d}.seq_1_to_30""",
    ]


RELATIONS = [{"from": "orders(customer_id)", "to": "customers(id)"}]
WATERMARKED_RULES: dict[str, Any] = {
    "customers": {
        "where": "tier <> 'banned'",
        "watermark": "updated_at",
        "mask": {"email": "moenv.email(email)", "name": "CONCAT('Customer #', id)"},
    },
    "orders": {"watermark": "updated_at", "exclude_columns": ["note"]},
    "items": {"watermark": "updated_at"},
    "events": {"watermark": "at"},  # no key: copied whole with fallback: full
}


def incremental_spec(**refresh: str) -> dict[str, Any]:
    """Filters, a column subset, masks, strict integrity over a virtual FK, incremental refresh."""
    return {
        "rules": WATERMARKED_RULES,
        "relations": RELATIONS,
        "integrity": "strict",
        "refresh": {"every": "24h", "mode": "incremental", "fallback": "full", **refresh},
    }


@dataclass
class Lab:
    """A World (probes, CLI, cleanup) with the shop as source and a salted config."""

    world: World

    @property
    def config(self) -> Config:
        sandbox = self.world.sandbox
        return Config(
            servers={"default": Server.from_url("default", sandbox.url)}, ledger_database=sandbox.ledger, salt="s1"
        )

    @property
    def source(self) -> str:
        return self.world.prefix + "shop"

    def db(self, short: str) -> str:
        return self.world.prefix + short

    def env(self, short: str) -> str:
        return self.world.env(short)

    def manifest(self, short: str, *, directory: Path | None = None, target: str | None = None, **spec: Any) -> Path:
        """Environment `<token>-<short>`: the shop → `<prefix><short>`, written to `<directory>/<short>.yaml`."""
        folder = directory or self.world.directory
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{short}.yaml"
        text = manifest_text(self.env(short), self.source, target or self.db(short), extra=spec)
        path.write_text(text, encoding="utf-8")
        return path

    # -- moenv through the Python API, at a given time ---------------------------------------------

    def plan(self, paths: Sequence[Path], moment: datetime, **options: Any) -> Plan:
        return api.plan(list(paths), config=self.config, now=moment, options=PlanOptions(**options))

    def apply(self, plan: Plan, moment: datetime | Callable[[], datetime]) -> ApplyResult:
        clock = moment if callable(moment) else (lambda: moment)
        result = api.apply(plan, config=self.config, clock=clock)
        assert result.ok, result.failed
        return result

    def converge(self, paths: Sequence[Path], moment: datetime, **options: Any) -> Plan:
        plan = self.plan(paths, moment, **options)
        self.apply(plan, moment)
        return plan

    # -- probes ----------------------------------------------------------------------------------

    def execute(self, *statements: str) -> None:
        for statement in statements:
            self.world.run(statement)

    def rows(self, db: str, table: str) -> list[tuple[Any, ...]]:
        return sorted(self.world.query(f"SELECT * FROM {q(db)}.{q(table)}"), key=repr)

    def content(self, db: str) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every base table."""
        return {table: self.rows(db, table) for table in self.world.base_tables(db)}

    def count(self, db: str, table: str, where: str = "1") -> int:
        return int(self.world.query(f"SELECT COUNT(*) FROM {q(db)}.{q(table)} WHERE {where}")[0][0])

    def columns(self, db: str, table: str) -> list[str]:
        rows = self.world.query(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
            " ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        return [str(name) for (name,) in rows]

    def record(self, env: str) -> dict[str, Any]:
        row = self.world.ledger_row(env)
        assert row is not None, f"{env} is not in the ledger"
        return row

    def cli(self, *args: str, moment: datetime | None = None) -> Any:
        prefix = ("--now", cli_time(moment)) if moment is not None else ()
        return self.world.cli(*prefix, *args)


@pytest.fixture
def lab(sandbox: Sandbox, tmp_path: Path) -> Iterator[Lab]:
    with World.open(sandbox, tmp_path) as world:
        opened = Lab(world)
        opened.execute(*shop_statements(opened.source))
        yield opened


def only(plan: Plan) -> Any:
    assert len(plan.actions) == 1, plan.actions
    return plan.actions[0]


# -- 1. ttl and expiry ------------------------------------------------------------------------------


def test_an_expired_environment_is_deleted_by_apply_kept_as_expired_and_revived_by_a_longer_ttl(lab: Lab) -> None:
    env = lab.env("ttl")
    target = lab.db("ttl")
    path = lab.manifest("ttl", ttl="1h")
    created = lab.converge([path], T0)
    assert isinstance(only(created), Create)
    assert lab.record(env)["expires_at"] == at(hours=1).replace(tzinfo=None)

    early = lab.plan([path], at(minutes=59))
    assert (early.actions, early.unchanged) == ((), (env,))

    late = lab.plan([path], at(hours=2))
    delete = only(late)
    assert isinstance(delete, Delete)
    assert delete.expire
    assert delete.reasons == ("expired at 2030-01-01 13:00 UTC (ttl 1h)",)
    lab.apply(late, at(hours=2))

    assert not lab.world.exists(target)
    record = lab.record(env)
    assert record["status"] == "expired"
    assert record["updated_at"] == at(hours=2).replace(tzinfo=None)
    assert lab.world.events(env)[-2:] == [("delete", "started"), ("delete", "succeeded")]
    # the tombstone stays: a later plan does not re-create it, and gc has nothing left to do
    again = lab.plan([path], at(hours=3))
    assert (again.actions, again.unchanged) == ((), (env,))
    assert api.gc_plan(lab.config, now=at(hours=3)).actions == ()

    # extending the ttl in the manifest re-creates it (expiry counted from its creation)
    longer = lab.manifest("ttl", ttl="7d")
    revived = lab.plan([longer], at(hours=3))
    create = only(revived)
    assert isinstance(create, Create)
    assert "expired at 2030-01-01 13:00" in create.reasons[0]
    lab.apply(revived, at(hours=3))
    assert lab.world.exists(target)
    assert lab.count(target, "customers") == 200
    record = lab.record(env)
    assert (record["status"], record["expires_at"]) == ("ready", at(days=7).replace(tzinfo=None))
    assert lab.plan([longer], at(hours=3)).actions == ()


def test_a_longer_ttl_on_a_live_environment_is_a_ledger_update_that_moves_its_expiry(lab: Lab) -> None:
    env, target = lab.env("extended"), lab.db("extended")
    lab.converge([lab.manifest("extended", ttl="1h")], T0)
    table_ids = lab.world.table_ids(target)

    plan = lab.plan([lab.manifest("extended", ttl="3h")], at(minutes=30))
    update = only(plan)
    assert (update.op, update.reasons) == ("update", ('spec.ttl: "1h" → "3h"',))
    lab.apply(plan, at(minutes=30))

    path = lab.world.directory / "extended.yaml"
    assert lab.record(env)["expires_at"] == at(hours=3).replace(tzinfo=None)
    assert lab.world.table_ids(target) == table_ids  # no data moved
    assert lab.plan([path], at(hours=2)).actions == ()  # past the old expiry, before the new one
    assert api.gc_plan(lab.config, now=at(hours=2)).actions == ()
    assert isinstance(only(lab.plan([path], at(hours=3))), Delete)
    assert isinstance(only(api.gc_plan(lab.config, now=at(hours=3))), Delete)


def test_gc_deletes_expired_environments_and_protect_blocks_it_unless_forced(lab: Lab) -> None:
    short_env, kept_env = lab.env("brief"), lab.env("kept")
    brief = lab.manifest("brief", ttl="1h")
    kept = lab.manifest("kept", ttl="1h", protect=True)
    lab.converge([brief, kept], T0)

    assert api.gc_plan(lab.config, now=at(minutes=59)).actions == ()

    gc = api.gc_plan(lab.config, now=at(hours=2))
    delete = only(gc)
    assert isinstance(delete, Delete)
    assert (delete.environment, delete.expire) == (short_env, True)
    [blocked] = gc.blocked
    assert (blocked.environment, blocked.op) == (kept_env, "delete")
    assert "protect: true (use --force)" in blocked.reasons
    lab.apply(gc, at(hours=2))
    assert not lab.world.exists(lab.db("brief"))
    assert lab.record(short_env)["status"] == "expired"
    assert lab.world.exists(lab.db("kept"))

    # the same rule in `apply`: a Blocked entry, no action; --force deletes
    blocked_plan = lab.plan([kept], at(hours=2))
    assert blocked_plan.actions == ()
    assert [(b.environment, b.op) for b in blocked_plan.blocked] == [(kept_env, "delete")]
    forced = lab.plan([kept], at(hours=2), force=True)
    assert isinstance(only(forced), Delete)
    lab.apply(forced, at(hours=2))
    assert not lab.world.exists(lab.db("kept"))
    assert lab.record(kept_env)["status"] == "expired"


def test_moenv_gc_from_the_command_line_with_an_injected_time(lab: Lab) -> None:
    short_env, kept_env = lab.env("brief"), lab.env("kept")
    lab.converge([lab.manifest("brief", ttl="1h"), lab.manifest("kept", ttl="1h", protect=True)], T0)

    result = lab.cli("gc", moment=at(hours=2))  # destructive, no terminal, no --yes: refused
    assert result.returncode == EXIT_ERROR, output(result)
    assert "--yes" in result.stderr
    assert lab.world.exists(lab.db("brief"))

    result = lab.cli("gc", "--yes", moment=at(hours=2))
    assert result.returncode == 0, output(result)
    assert f"delete {short_env}" in result.stdout
    assert f"! delete {kept_env} blocked" in result.stdout
    assert not lab.world.exists(lab.db("brief"))
    assert lab.world.exists(lab.db("kept"))
    assert lab.record(short_env)["status"] == "expired"
    assert lab.record(short_env)["updated_at"] == at(hours=2).replace(tzinfo=None)  # --now reached the executor

    result = lab.cli("gc", "--yes", "--force", moment=at(hours=2))
    assert result.returncode == 0, output(result)
    assert not lab.world.exists(lab.db("kept"))
    assert lab.record(kept_env)["status"] == "expired"


# -- 2. scheduled refresh ---------------------------------------------------------------------------


def test_a_refresh_is_planned_exactly_when_due(lab: Lab) -> None:
    env = lab.env("daily")
    target = lab.db("daily")
    path = lab.manifest("daily", refresh={"every": "24h"})
    lab.converge([path], T0)

    assert lab.plan([path], at(hours=23, minutes=59)).actions == ()
    due = lab.plan([path], at(hours=24))
    refresh = only(due)
    assert isinstance(refresh, Refresh)
    assert refresh.reasons == (
        "refresh every 24h: last refreshed 2030-01-01 12:00 UTC, due since 2030-01-02 12:00 UTC",
    )
    assert "swap" in [s.kind for s in refresh.steps]  # mode full: built in staging, swapped in

    lab.execute(f"INSERT INTO {q(lab.source)}.notes (id, body) VALUES (99, 'written after the copy')")
    before = lab.world.table_ids(target)
    lab.apply(due, at(hours=24))

    assert lab.count(target, "notes", "id = 99") == 1
    assert lab.world.table_ids(target).keys() == before.keys()
    assert set(lab.world.table_ids(target).values()).isdisjoint(before.values())  # new tables, swapped in
    assert lab.record(env)["refreshed_at"] == at(hours=24).replace(tzinfo=None)
    assert lab.world.events(env)[-2:] == [("refresh", "started"), ("refresh", "succeeded")]
    # the next one is due 24 h after this one
    assert lab.plan([path], at(hours=24)).actions == ()
    assert lab.plan([path], at(hours=47, minutes=59)).actions == ()
    assert isinstance(only(lab.plan([path], at(hours=48))), Refresh)


# -- 3. incremental refresh ---------------------------------------------------------------------------


class Reader(threading.Thread):
    """Reads the counts of every table and the orphans of both FKs, each time in one statement."""

    def __init__(self, lab: Lab, db: str) -> None:
        super().__init__(daemon=True)
        self.sandbox = lab.world.sandbox
        d = q(db)
        self.sql = (
            f"SELECT (SELECT COUNT(*) FROM {d}.customers), (SELECT COUNT(*) FROM {d}.orders),"
            f" (SELECT COUNT(*) FROM {d}.items), (SELECT COUNT(*) FROM {d}.notes), (SELECT COUNT(*) FROM {d}.events),"
            f" (SELECT COUNT(*) FROM {d}.orders o WHERE NOT EXISTS"
            f"   (SELECT 1 FROM {d}.customers c WHERE c.id = o.customer_id)),"
            f" (SELECT COUNT(*) FROM {d}.items i WHERE NOT EXISTS (SELECT 1 FROM {d}.orders o WHERE o.id = i.order_id))"
        )
        self.stop = threading.Event()
        self.seen: list[tuple[int, ...]] = []
        self.failures: list[str] = []

    def run(self) -> None:
        connection = self.sandbox.connect()
        try:
            while not self.stop.is_set():
                with connection.cursor() as cursor:
                    try:
                        cursor.execute(self.sql)
                        row = cursor.fetchone()
                    except pymysql.MySQLError as exc:
                        self.failures.append(str(exc))
                        continue
                self.seen.append(tuple(int(v) for v in row))
        finally:
            connection.close()


SOURCE_CHANGES = [
    # inserts: a new customer with new orders and items, an order and an item for existing rows
    "INSERT INTO {s}.customers VALUES (1001, 'Newcomer', 'new@shop.test', 'gold', '{new}')",
    "INSERT INTO {s}.orders VALUES (1001, 1001, 10.00, 'new', 'n', '{new}'), (1002, 3, 20.00, 'paid', 'n', '{new}')",
    "INSERT INTO {s}.items VALUES (1001, 1, 'SKU-A', 1, '{new}'), (1001, 2, 'SKU-B', 2, '{new}'),"
    " (1002, 1, 'SKU-C', 3, '{new}'), (5, 3, 'SKU-D', 4, '{new}')",
    # an order placed by a customer that leaves the copy below: never copied
    "INSERT INTO {s}.orders VALUES (1003, 9, 30.00, 'new', 'n', '{new}')",
    # updates, one of a masked column
    "UPDATE {s}.customers SET email = 'changed5@shop.test', updated_at = '{new}' WHERE id = 5",
    "UPDATE {s}.orders SET amount = 999.99, updated_at = '{new}' WHERE id = 10",
    "UPDATE {s}.items SET qty = 42, updated_at = '{new}' WHERE order_id = 11 AND line = 1",
    # a row that stops matching `where`: its orders (8, 208, 408) and their items become orphans
    "UPDATE {s}.customers SET tier = 'banned', updated_at = '{new}' WHERE id = 9",
    # a parent deleted (virtual FK: its orders 6, 206, 406 stay at the source, orphans under strict)
    "DELETE FROM {s}.customers WHERE id = 7",
    # deletes (the order's items go with it at the source: ON DELETE CASCADE)
    "DELETE FROM {s}.orders WHERE id = 20",
    "DELETE FROM {s}.items WHERE order_id = 30 AND line = 2",
    # tables copied whole: notes (no watermark column), events (no key)
    "INSERT INTO {s}.notes VALUES (21, 'body 21')",
    "UPDATE {s}.notes SET body = 'edited' WHERE id = 3",
    "DELETE FROM {s}.notes WHERE id = 4",
    "INSERT INTO {s}.events VALUES ('{new}', 'event new')",
    "DELETE FROM {s}.events WHERE what = 'event 2'",
]


def change_source(lab: Lab, statements: Sequence[str]) -> None:
    lab.execute(*(s.format(s=q(lab.source), new=NEW) for s in statements))


def incremental_refresh(lab: Lab, short: str, changes: Sequence[str]) -> Refresh:
    """Create `short` at T0, change the source, then apply the refresh planned at T0 + 24 h."""
    path = lab.manifest(short, **incremental_spec())
    lab.converge([path], T0)
    change_source(lab, changes)
    plan = lab.plan([path], at(hours=24))
    refresh = only(plan)
    assert isinstance(refresh, Refresh)
    assert [s.kind for s in refresh.steps] == ["ledger_begin", "refresh_incremental", "ledger_commit"]
    lab.apply(plan, at(hours=24))
    return refresh


def fresh_copy(lab: Lab, short: str) -> str:
    """The same spec, freshly and fully copied into another target (same salt)."""
    path = lab.manifest(short, **incremental_spec())
    assert isinstance(only(lab.converge([path], at(hours=24))), Create)
    return lab.db(short)


@pytest.mark.mariadb_only("an incremental refresh upserts in place on MySQL/MariaDB; MatrixOne re-clones instead")
def test_incremental_refresh_leaves_the_target_equal_to_a_fresh_full_copy(lab: Lab) -> None:
    env, target = lab.env("inc"), lab.db("inc")
    path = lab.manifest("inc", **incremental_spec())
    lab.converge([path], T0)
    # the first copy already applied filter, strict integrity over the virtual FK, subset and masks
    assert lab.count(target, "customers", "tier = 'banned'") == 0
    assert lab.count(target, "orders", "customer_id = 10") == 0
    assert lab.count(target, "items", "order_id = 9") == 0
    assert "note" not in lab.columns(target, "orders")
    first_marks = json.loads(lab.record(env)["watermarks_json"])
    assert first_marks == {
        "customers": "2024-06-01 00:03:20",
        "orders": "2024-06-01 00:10:00",
        "items": "2024-06-01 00:10:00",
    }
    table_ids = lab.world.table_ids(target)
    [(first_email,)] = lab.world.query(f"SELECT email FROM {q(target)}.customers WHERE id = 5")

    change_source(lab, SOURCE_CHANGES)
    plan = lab.plan([path], at(hours=24))
    refresh = only(plan)
    assert isinstance(refresh, Refresh)
    assert [s.kind for s in refresh.steps] == ["ledger_begin", "refresh_incremental", "ledger_commit"]
    assert "copied whole: events, notes" in refresh.steps[1].detail

    reader = Reader(lab, target)
    reader.start()
    try:
        while not reader.seen and not reader.failures:
            threading.Event().wait(0.005)  # the reader's first read happened before the refresh
        before = reader.seen[0]
        lab.apply(plan, at(hours=24))
        mark = len(reader.seen)
        while len(reader.seen) < mark + 2 and not reader.failures:
            threading.Event().wait(0.005)
    finally:
        reader.stop.set()
        reader.join(10)

    expected = lab.content(fresh_copy(lab, "full"))
    assert lab.content(target) == expected
    # ... and that equality is not a vacuous one: 180 customers, 540 orders, 1,080 items before
    assert {t: len(rows) for t, rows in expected.items()} == {
        "customers": 180 - 1 - 1 + 1,  # customer 9 banned now, customer 7 deleted, 1001 added
        "orders": 540 - 3 - 3 - 1 + 2,  # orders of customers 9 and 7, order 20; 1001, 1002 (not 1003)
        "items": 1080 - 6 - 6 - 2 - 1 + 3 + 1,  # items of those orders, (30, 2); 3 of the new orders, (5, 3)
        "notes": 20,
        "events": 30,
    }
    assert lab.count(target, "customers", "id IN (7, 9)") == 0
    assert lab.count(target, "orders", "id IN (6, 206, 406, 8, 208, 408, 20, 1003)") == 0
    assert lab.count(target, "items", "order_id IN (6, 206, 406, 8, 208, 408, 20)") == 0
    assert lab.count(target, "orders", "id IN (1001, 1002) OR (id = 10 AND amount = 999.99)") == 3
    assert lab.count(target, "items", "(order_id = 30 AND line = 2)") == 0
    assert lab.count(target, "items", "(order_id = 11 AND line = 1 AND qty = 42) OR (order_id = 5 AND line = 3)") == 2
    assert lab.count(target, "notes", "id = 21 OR body = 'edited'") == 2
    assert lab.count(target, "notes", "id = 4") == 0
    # the masked column of an updated row: a new pseudonym, the one a fresh copy with the same salt makes
    [(email, name)] = lab.world.query(f"SELECT email, name FROM {q(target)}.customers WHERE id = 5")
    [(fresh_email,)] = lab.world.query(f"SELECT email FROM {q(lab.db('full'))}.customers WHERE id = 5")
    assert email == fresh_email != first_email
    assert email.endswith("@example.invalid") and name == "Customer #5"

    # in place, not swapped; the ledger has the new watermarks and the methods used
    assert lab.world.table_ids(target) == table_ids
    record = lab.record(env)
    assert record["status"] == "ready"
    marks = json.loads(record["watermarks_json"])
    assert marks == {"customers": NEW, "items": NEW, "orders": NEW}
    assert lab.world.events(env)[-2:] == [("refresh", "started"), ("refresh", "succeeded")]
    assert lab.plan([path], at(hours=24)).actions == ()

    # readers saw the old environment or the new one, never a mix, never an orphan
    assert reader.failures == []
    after = reader.seen[-1]
    assert after != before
    assert set(reader.seen) <= {before, after}, sorted(set(reader.seen))
    assert after[:5] == tuple(len(expected[t]) for t in ("customers", "orders", "items", "notes", "events"))
    assert after[5:] == (0, 0)
    # ... and it was incremental: changed rows by watermark, whole copies only where there is none
    methods = {s["table"]: s["method"] for s in json.loads(record["stats_json"])}
    assert methods == {
        "customers": "incremental",
        "orders": "incremental",
        "items": "incremental",
        "notes": "full (no watermark)",
        "events": "full (no watermark)",
    }


# Source changes an incremental refresh must follow (also run across servers: test_incremental_cross_server.py).
EDGE_CASES = [
    pytest.param(
        ["UPDATE {s}.orders SET customer_id = 10, updated_at = '{new}' WHERE id = 1"],
        id="a-child-moved-to-a-parent-that-is-not-copied",
    ),
    pytest.param(
        ["UPDATE {s}.customers SET tier = 'gold', updated_at = '{new}' WHERE id = 10"],
        id="a-parent-that-matches-where-again-brings-its-unchanged-children",
    ),
    pytest.param(
        ["INSERT INTO {s}.customers VALUES (1002, 'Late', 'late@shop.test', 'gold', '2024-06-01 00:03:20')"],
        id="a-row-committed-with-the-last-copied-watermark",
    ),
]


@pytest.mark.mariadb_only("an incremental refresh upserts in place on MySQL/MariaDB; MatrixOne re-clones instead")
@pytest.mark.parametrize("changes", EDGE_CASES)
def test_incremental_refresh_equals_a_fresh_copy_in_edge_cases(lab: Lab, changes: list[str]) -> None:
    """Changes the brief does not list, same promise: the refresh equals a fresh full copy."""
    incremental_refresh(lab, "inc", changes)
    expected = lab.content(fresh_copy(lab, "full"))
    actual = lab.content(lab.db("inc"))
    differences = {
        table: (sorted(set(actual[table]) - set(rows), key=repr), sorted(set(rows) - set(actual[table]), key=repr))
        for table, rows in expected.items()
        if actual[table] != rows
    }
    assert differences == {}, "table: (only in the refreshed target, only in the fresh copy)"
    # not vacuous: the tables with a watermark were refreshed by it, not copied whole again
    methods = {s["table"]: s["method"] for s in json.loads(lab.record(lab.env("inc"))["stats_json"])}
    assert {t: methods[t] for t in ("customers", "orders", "items")} == dict.fromkeys(
        ("customers", "orders", "items"), "incremental"
    )


def test_incremental_mode_refuses_tables_without_a_watermark_or_a_key(lab: Lab) -> None:
    no_mark_rules = {k: v for k, v in WATERMARKED_RULES.items() if k != "events"}
    refuse = {"every": "24h", "mode": "incremental"}  # fallback: refuse is the default
    path = lab.manifest(
        "nomark", rules=no_mark_rules, relations=RELATIONS, tables={"exclude": ["events"]}, refresh=refuse
    )
    with pytest.raises(ManifestError) as caught:
        lab.plan([path], T0)
    assert "notes cannot be refreshed incrementally" in caught.value.message
    assert "watermark" in caught.value.message
    assert "customers" not in caught.value.message

    path = lab.manifest(
        "nokey", rules=WATERMARKED_RULES, relations=RELATIONS, tables={"exclude": ["notes"]}, refresh=refuse
    )
    with pytest.raises(ManifestError) as caught:
        lab.plan([path], T0)
    assert "events cannot be refreshed incrementally" in caught.value.message
    assert "key" in caught.value.message
    assert not lab.world.exists(lab.db("nomark")) and not lab.world.exists(lab.db("nokey"))


# -- 4. drift: reasons and convergence ---------------------------------------------------------------


DRIFT_RULES = {"customers": {"where": "tier <> 'banned'"}}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            "ALTER TABLE {source}.customers ADD COLUMN loyalty INT NULL",
            "the source schema of default:{source_name} changed since the last copy",
            id="column-added-at-the-source",
        ),
        pytest.param("DROP TABLE {target}.notes", "table notes was dropped from the target", id="table-dropped"),
        pytest.param(
            "ALTER TABLE {target}.orders MODIFY status VARCHAR(40) NOT NULL",
            "a table of the target was altered by hand",
            id="column-altered-in-the-target",
        ),
        pytest.param(
            None,
            """spec.rules.customers.where: "tier <> 'banned'" → "tier = 'gold'\"""",
            id="where-changed",
        ),
    ],
)
def test_drift_rebuilds_with_a_reason_naming_the_change_and_converges(
    lab: Lab, change: str | None, expected: str
) -> None:
    env, target = lab.env("drift"), lab.db("drift")
    path = lab.manifest("drift", rules=DRIFT_RULES, relations=RELATIONS)
    lab.converge([path], T0)
    if change is None:
        path = lab.manifest("drift", rules={"customers": {"where": "tier = 'gold'"}}, relations=RELATIONS)
    else:
        lab.execute(change.format(source=q(lab.source), target=q(target)))

    plan = lab.plan([path], at(hours=1))

    rebuild = only(plan)
    assert isinstance(rebuild, Rebuild)
    assert rebuild.reasons == (expected.format(source_name=lab.source),)
    lab.apply(plan, at(hours=1))
    assert lab.plan([path], at(hours=1)).actions == ()
    assert lab.world.events(env)[-2:] == [("rebuild", "started"), ("rebuild", "succeeded")]
    assert sorted(lab.world.base_tables(target)) == sorted(TABLES)
    if change is None:
        assert lab.count(target, "customers") == lab.count(lab.source, "customers", "tier = 'gold'")
    if change and "loyalty" in change:
        assert "loyalty" in lab.columns(target, "customers")


def test_a_protected_environment_that_drifted_is_blocked_unless_forced(lab: Lab) -> None:
    env, target = lab.env("guarded"), lab.db("guarded")
    path = lab.manifest("guarded", protect=True)
    lab.converge([path], T0)
    lab.execute(f"DROP TABLE {q(target)}.notes")

    plan = lab.plan([path], T0)
    assert plan.actions == ()
    [blocked] = plan.blocked
    assert (blocked.environment, blocked.op) == (env, "rebuild")
    assert blocked.reasons == ("table notes was dropped from the target", "protect: true (use --force)")
    lab.converge([path], T0, force=True)
    assert "notes" in lab.world.base_tables(target)


# -- 5. content drift (verify: {content: true}) --------------------------------------------------------


def test_content_drift_is_reported_with_counts_and_repaired(lab: Lab) -> None:
    target = lab.db("checked")
    path = lab.manifest("checked", rules=DRIFT_RULES, relations=RELATIONS, verify={"content": True})
    lab.converge([path], T0)
    assert lab.plan([path], T0).actions == ()  # counts agree right after the copy (filters and integrity)

    items = lab.count(target, "items")
    assert items == 1080
    lab.execute(f"DELETE FROM {q(target)}.items WHERE order_id = 1 AND line = 2")
    plan = lab.plan([path], T0)
    rebuild = only(plan)
    assert isinstance(rebuild, Rebuild)
    assert rebuild.reasons == ("content of items drifted: 1,079 rows in the target, 1,080 expected from the source",)
    lab.apply(plan, T0)
    assert lab.count(target, "items", "order_id = 1 AND line = 2") == 1
    assert lab.plan([path], T0).actions == ()

    # a whole, unmasked table: same count, other values → its checksum says so
    lab.execute(f"UPDATE {q(target)}.notes SET body = 'edited by hand' WHERE id = 2")
    rebuild = only(lab.plan([path], T0))
    assert rebuild.reasons == ("content of notes drifted: same row count, different checksum",)


def test_content_verification_converges_when_the_source_holds_orphans(lab: Lab) -> None:
    """Strict integrity drops child rows whose parent the source no longer has; the expected
    count must drop them too, or the environment is rebuilt on every run."""
    path = lab.manifest("orphans", relations=RELATIONS, verify={"content": True})
    lab.execute(f"DELETE FROM {q(lab.source)}.customers WHERE id = 7")  # orders 6, 206, 406 become orphans
    lab.converge([path], T0)
    assert lab.count(lab.db("orphans"), "orders") == 597

    plan = lab.plan([path], T0)

    assert plan.actions == (), [a.reasons for a in plan.actions]


# -- 6. saved plans --------------------------------------------------------------------------------------


def test_a_saved_plan_is_applied_exactly(lab: Lab) -> None:
    env, target = lab.env("saved"), lab.db("saved")
    lab.manifest("saved")
    result = lab.cli("plan", "saved.yaml", "-o", "plan.json", moment=T0)
    assert result.returncode == 0, output(result)
    saved = json.loads((lab.world.directory / "plan.json").read_text(encoding="utf-8"))
    assert [(a["op"], a["environment"]) for a in saved["actions"]] == [("create", env)]
    assert saved["actions"][0]["reasons"] == ["not created yet"]

    lab.manifest("saved", tables={"exclude": ["notes"]})  # edited after the plan was saved
    result = lab.cli("apply", "plan.json", "--yes", moment=T0)

    assert result.returncode == 0, output(result)
    assert sorted(lab.world.base_tables(target)) == sorted(TABLES)  # the saved plan, not the edited manifest
    assert lab.record(env)["created_at"] == T0.replace(tzinfo=None)
    result = lab.cli("plan", "saved.yaml", "--detailed-exitcode", moment=T0)
    assert result.returncode == EXIT_PENDING, output(result)
    assert 'spec.tables.exclude: [] → ["notes"]' in result.stdout


def test_a_saved_plan_is_refused_after_any_other_ledger_change(lab: Lab) -> None:
    env, target = lab.env("stale"), lab.db("stale")
    path = lab.manifest("stale")
    lab.converge([path], T0)
    lab.execute(f"DROP TABLE {q(target)}.notes")
    result = lab.cli("plan", "stale.yaml", "-o", "plan.json", moment=T0)
    assert result.returncode == 0, output(result)
    saved = Plan.model_validate_json((lab.world.directory / "plan.json").read_text(encoding="utf-8"))
    assert isinstance(only(saved), Rebuild)

    lab.converge([lab.manifest("other", directory=lab.world.directory / "other")], T0)  # another environment
    events = lab.world.events(env)
    record = lab.record(env)

    result = lab.cli("apply", "plan.json", "--yes", moment=T0)

    assert result.returncode == EXIT_ERROR, output(result)
    assert "stale plan" in result.stderr
    assert "Traceback" not in result.stderr
    assert "notes" not in lab.world.base_tables(target)  # nothing was done
    assert lab.world.events(env) == events
    assert lab.record(env) == record
    with pytest.raises(ConflictError, match="stale plan"):
        api.apply(saved, config=lab.config, clock=lambda: T0)


# -- 7. prune guards ---------------------------------------------------------------------------------------


def test_prune_with_an_empty_manifest_directory_deletes_nothing(lab: Lab) -> None:
    env = lab.env("keep")
    lab.converge([lab.manifest("keep", directory=lab.world.directory / "live")], T0)
    (lab.world.directory / "empty").mkdir()
    revision = lab.world.revision()

    with pytest.raises(ConflictError, match="--prune with no environments loaded"):
        lab.plan([lab.world.directory / "empty"], T0, prune=True)
    result = lab.cli("apply", "empty", "--prune", "--yes", moment=T0)
    assert result.returncode == EXIT_ERROR, output(result)
    assert "--prune with no environments loaded" in result.stderr

    assert lab.world.exists(lab.db("keep"))
    assert lab.record(env)["status"] == "ready"
    assert lab.world.revision() == revision


def test_max_deletes_caps_the_deletions_of_a_run(lab: Lab) -> None:
    names = {short: lab.env(short) for short in ("one", "two", "three")}
    spec = {"tables": {"include": ["notes"]}}
    lab.converge([lab.manifest(short, directory=lab.world.directory / "all", **spec) for short in names], T0)
    lab.manifest("three", directory=lab.world.directory / "left", **spec)

    with pytest.raises(ConflictError, match="more than --max-deletes 1"):
        lab.plan([lab.world.directory / "left"], T0, prune=True, max_deletes=1)
    result = lab.cli("apply", "left", "--prune", "--max-deletes", "1", "--yes", moment=T0)
    assert result.returncode == EXIT_ERROR, output(result)
    assert "more than --max-deletes 1" in result.stderr
    assert all(lab.world.exists(lab.db(short)) for short in names)

    result = lab.cli("apply", "left", "--prune", "--max-deletes", "2", "--yes", moment=T0)
    assert result.returncode == 0, output(result)
    assert [lab.world.exists(lab.db(short)) for short in names] == [False, False, True]
    assert lab.world.ledger_names() == [names["three"]]


# -- 8. moenv drift, plan --json ---------------------------------------------------------------------------


def test_moenv_drift_exit_codes_and_plan_json_reasons(lab: Lab) -> None:
    env, target = lab.env("watched"), lab.db("watched")
    lab.converge([lab.manifest("watched", refresh={"every": "24h"})], T0)

    result = lab.cli("drift", "watched.yaml", moment=at(hours=1))
    assert result.returncode == 0, output(result)

    result = lab.cli("drift", "watched.yaml", moment=at(hours=24))  # nothing drifted, a refresh is due
    assert result.returncode == EXIT_PENDING, output(result)
    assert "refresh every 24h" in result.stdout

    lab.execute(f"DROP TABLE {q(target)}.notes")
    result = lab.cli("drift", "watched.yaml", "--json", moment=at(hours=1))
    assert result.returncode == EXIT_PENDING, output(result)
    [action] = json.loads(result.stdout)["actions"]
    assert (action["op"], action["environment"]) == ("rebuild", env)
    assert action["reasons"] == ["table notes was dropped from the target"]
    result = lab.cli("plan", "watched.yaml", "--json", "--detailed-exitcode", moment=at(hours=1))
    assert result.returncode == EXIT_PENDING, output(result)
    assert json.loads(result.stdout)["actions"][0]["reasons"] == ["table notes was dropped from the target"]

    (lab.world.directory / "broken.yaml").write_text(
        manifest_text("broken", lab.source, lab.db("broken"), extra={"tabels": {}}), encoding="utf-8"
    )
    result = lab.cli("drift", "broken.yaml", moment=at(hours=1))
    assert result.returncode == EXIT_ERROR, output(result)
    assert "tabels" in result.stderr


# -- 9. history ---------------------------------------------------------------------------------------------


class Ticking:
    """A clock that moves one second every time it is read (so durations are not zero)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def test_history_lists_create_refresh_and_delete_with_result_rows_and_duration(lab: Lab) -> None:
    env = lab.env("logged")
    lab.apply(lab.plan([lab.manifest("logged")], T0), Ticking(T0))
    copied = lab.record(env)["rows_copied"]
    assert copied == 200 + 600 + 1200 + 20 + 30
    result = lab.cli("refresh", env, "--yes", moment=at(hours=1))
    assert result.returncode == 0, output(result)
    lab.apply(api.destroy_plan(lab.config, env, now=at(hours=2)), Ticking(at(hours=2)))

    result = lab.cli("history", env, "--json")
    assert result.returncode == 0, output(result)
    events = json.loads(result.stdout)
    assert [(e["action"], e["result"]) for e in reversed(events)] == [
        ("create", "started"),
        ("create", "succeeded"),
        ("refresh", "started"),
        ("refresh", "succeeded"),
        ("delete", "started"),
        ("delete", "succeeded"),
    ]
    done = {e["action"]: e for e in events if e["result"] == "succeeded"}
    assert (done["create"]["rows"], done["refresh"]["rows"]) == (copied, copied)
    assert done["create"]["duration_ms"] > 0  # the ticking clock moved while it ran
    assert done["refresh"]["duration_ms"] == 0  # --now: a fixed clock
    assert done["delete"]["duration_ms"] is not None
    assert done["create"]["at"].startswith("2030-01-01T12:00")
    assert done["refresh"]["at"].startswith("2030-01-01T13:00:00")
    assert all(e["environment"] == env and e["actor"] for e in events)

    result = lab.cli("history", env)
    assert result.returncode == 0, output(result)
    lines = result.stdout.splitlines()
    assert all(word in lines[0] for word in ("WHEN (UTC)", "ACTION", "RESULT", "ROWS", "TOOK"))
    create = next(line for line in lines if " create " in line and "succeeded" in line)
    assert f"{copied:,}" in create
    assert any(" refresh " in line and "succeeded" in line and "0.0s" in line for line in lines)
    assert any(" delete " in line and "succeeded" in line for line in lines)


@pytest.mark.mariadb_only("InnoDB's row locks under READ COMMITTED (test_safety.py shows the copies take none)")
def test_an_incremental_refresh_never_locks_a_source_row(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the refresh's transaction is open on the target (its changes made, not yet committed),
    a production UPDATE of a source row it read goes through at once: reading the source from a
    DELETE … WHERE [NOT] EXISTS (SELECT … FROM source) would hold shared locks on those rows
    until the COMMIT (measured on MariaDB 10.11: a lock-wait timeout)."""
    path = lab.manifest("inc", **incremental_spec())
    lab.converge([path], T0)
    change_source(lab, SOURCE_CHANGES)
    plan = lab.plan([path], at(hours=24))
    assert [s.kind for s in only(plan).steps] == ["ledger_begin", "refresh_incremental", "ledger_commit"]
    outcomes: list[str] = []
    original = apply_module._Run._orphan_fixpoint

    def update_the_source_meanwhile(run: Any, *args: Any, **kwargs: Any) -> int:
        writer = lab.world.sandbox.connect()
        try:
            with writer.cursor() as cursor:
                cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
                for table, key in (("customers", "id = 5"), ("orders", "id = 10"), ("items", "order_id = 11")):
                    try:
                        cursor.execute(f"UPDATE {q(lab.source)}.{table} SET updated_at = updated_at WHERE {key}")
                        outcomes.append(f"{table}: written")
                    except pymysql.MySQLError as exc:
                        outcomes.append(f"{table}: {exc.args[0]}")
        finally:
            writer.close()
        return int(original(run, *args, **kwargs))

    monkeypatch.setattr(apply_module._Run, "_orphan_fixpoint", update_the_source_meanwhile)
    lab.apply(plan, at(hours=24))

    assert outcomes == ["customers: written", "orders: written", "items: written"]
