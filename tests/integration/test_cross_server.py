"""Cross-server clones against two real MariaDB servers: the same result as on one server,
bit-exact values, one snapshot for parallel workers, retries after a killed session, and
nothing half-built after a failure."""

from __future__ import annotations

import math
import random
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml
from tests.integration.helpers import World, output, q
from tests.support.mariadb import Sandbox

from moenv import api
from moenv.executor import apply as apply_module
from moenv.executor import stream as stream_module
from moenv.executor.report import SilentReporter
from moenv.models.config import Config, Server
from moenv.models.plan import Action, Create

pytestmark = pytest.mark.mariadb_only(
    "LOAD DATA LOCAL between two MariaDB servers, BACKUP STAGE snapshots, KILL of a MariaDB session"
)

SALT = "cross-server-test-salt"


@pytest.fixture
def worlds(sandbox: Sandbox, second_sandbox: Sandbox, tmp_path: Path) -> Iterator[tuple[World, World]]:
    """The source (and a same-server target) on the first server, the cross-server target on the second."""
    with World.open(sandbox, tmp_path) as here, World.open(second_sandbox, tmp_path) as there:
        there.environments = here.environments  # staging lives on the target's server
        try:
            here.build_source()
            yield here, there
        finally:  # the ledger is kept on each target server, under the first sandbox's name
            second_sandbox.execute(f"DROP DATABASE IF EXISTS {q(sandbox.ledger)}")


def config(here: World, there: World, *, source_url: str | None = None) -> Config:
    return Config(
        servers={
            "src": Server.from_url("src", source_url or here.sandbox.url),
            "dst": Server.from_url("dst", there.sandbox.url),
        },
        ledger_database=here.sandbox.ledger,
        salt=SALT,
        retries=3,
    )


def manifest(world: World, short: str, *, source: str, target: str, target_server: str, **spec: Any) -> Path:
    document = {
        "apiVersion": "moenv/v1",
        "kind": "Environment",
        "metadata": {"name": world.env(short)},
        "spec": {
            "source": {"server": "src", "database": source},
            "target": {"server": target_server, "database": target},
            **spec,
        },
    }
    path = world.directory / f"{short}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def apply(path: Path, cfg: Config, *, parallel: int = 1) -> api.ApplyResult:
    return api.apply(api.plan([path], config=cfg), config=cfg, parallel=parallel)


def ledger_row(world: World, ledger: str, environment: str) -> dict[str, Any] | None:
    rows = world.sandbox.query(
        f"SELECT status, message, rows_copied, stats_json FROM {q(ledger)}.environments WHERE name = %s", (environment,)
    )
    if not rows:
        return None
    status, message, rows_copied, stats = rows[0]
    return {"status": status, "message": message, "rows_copied": rows_copied, "stats": stats}


def last_event_message(world: World, ledger: str, environment: str) -> str | None:
    rows = world.sandbox.query(
        f"SELECT message FROM {q(ledger)}.events WHERE environment = %s ORDER BY id DESC LIMIT 1", (environment,)
    )
    return str(rows[0][0]) if rows and rows[0][0] is not None else None


SUBSET = {
    "rules": {
        "users": {
            "where": "id <= 700",
            "mask": {"email": "moenv.email(email)", "display_name": "CONCAT('Person #', id)"},
        },
        "orders": {"where": "status <> 'cancelled'", "exclude_columns": ["note"]},
        "categories": {"where": "id <> 4"},
    },
    "integrity": "strict",
}


# -- 1. the same result as on one server --------------------------------------------------------


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_cross_server_clone_equals_the_same_server_clone_row_for_row(
    worlds: tuple[World, World], parallel: int
) -> None:
    here, there = worlds
    cfg = config(here, there)
    same = manifest(here, "same", source=here.source, target=here.prefix + "same", target_server="src", **SUBSET)
    cross = manifest(here, "cross", source=here.source, target=there.prefix + "cross", target_server="dst", **SUBSET)

    assert apply(same, cfg).ok
    plan = api.plan([cross], config=cfg)
    [action] = plan.actions
    assert isinstance(action, Create) and action.target_server == "dst"
    result = api.apply(plan, config=cfg, parallel=parallel)

    assert result.ok, result.failed
    expected, copied = here.row_counts(here.prefix + "same"), there.row_counts(there.prefix + "cross")
    assert copied == expected
    assert copied["users"] == 700
    assert 0 < copied["order_items"] < here.row_counts(here.source)["order_items"]  # strict integrity filtered them
    assert there.checksums(there.prefix + "cross") == here.checksums(here.prefix + "same")
    # the masks ran on the source with the salt, exactly as on one server
    [(email,)] = there.sandbox.query(f"SELECT email FROM {q(there.prefix + 'cross')}.users WHERE id = 1")
    assert email.endswith("@example.invalid")
    # every foreign key resolves in the copy (filters enforced on the target, after loading)
    [(orphans,)] = there.sandbox.query(
        f"SELECT COUNT(*) FROM {q(there.prefix + 'cross')}.order_items i"
        f" LEFT JOIN {q(there.prefix + 'cross')}.orders o ON o.id = i.order_id WHERE o.id IS NULL"
    )
    assert orphans == 0
    assert there.work_databases() == []
    record = ledger_row(there, here.sandbox.ledger, here.env("cross"))
    assert record is not None and record["status"] == "ready"
    assert record["rows_copied"] == sum(copied.values())
    assert '"method": "stream"' in record["stats"]
    # the reconciler invariant holds across servers too
    assert api.plan([cross], config=cfg).actions == ()


def test_a_full_cross_server_copy_is_faithful(worlds: tuple[World, World]) -> None:
    here, there = worlds
    cfg = config(here, there)
    path = manifest(here, "full", source=here.source, target=there.prefix + "full", target_server="dst")

    result = apply(path, cfg)

    assert result.ok, result.failed
    target = there.prefix + "full"
    assert there.row_counts(target) == here.row_counts(here.source)
    assert there.checksums(target) == here.checksums(here.source)
    assert there.indexes(target) == here.indexes(here.source)
    assert {(t, c, rt) for t, c, _, rt in there.foreign_keys(target)} == {
        (t, c, rt) for t, c, _, rt in here.foreign_keys(here.source)
    }
    [(name,)] = there.sandbox.query(f"SELECT name FROM {q(target)}.categories WHERE id = 3")
    assert name == "Café ☕ & Bücher 📚"
    [(views,)] = there.sandbox.query(f"SELECT COUNT(*) FROM {q(target)}.order_totals")
    assert views == here.row_counts(here.source)["orders"]


# -- 2. values arrive bit for bit ---------------------------------------------------------------

EXOTIC = """CREATE TABLE {db}.exotic (
    id INT NOT NULL PRIMARY KEY,
    f FLOAT NULL, d DOUBLE NULL, dec65 DECIMAL(65,30) NULL,
    bin VARBINARY(300) NULL, blb LONGBLOB NULL, fixed BINARY(4) NULL,
    txt VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL,
    lat VARCHAR(50) CHARACTER SET latin1 NULL,
    js JSON NULL, b1 BIT(1) NULL, b64 BIT(64) NULL,
    dt DATETIME(6) NULL, dd DATE NULL, tm TIME(6) NULL, ts TIMESTAMP(6) NULL DEFAULT NULL, yr YEAR NULL,
    en ENUM('a','b','') NULL, st SET('x','y','z') NULL, ip INET6 NULL, uid UUID NULL, g GEOMETRY NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""


def _exotic_rows() -> list[tuple[Any, ...]]:

    rng = random.Random(5)
    rows: list[tuple[Any, ...]] = []
    every_byte = bytes(range(256))
    texts = ["", None, "tab\there", "line\nbreak\r\n", "back\\slash", "\\N", "NULL", "🐬🚀 emoji", "ünïcødé", "'\""]
    for i in range(1, 401):
        f = struct.unpack("<f", struct.pack("<I", rng.getrandbits(32)))[0]
        d = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        rows.append(
            (
                i,
                f if math.isfinite(f) else None,
                d if math.isfinite(d) else None,
                f"{rng.randint(-(10**34), 10**34)}.{rng.randint(0, 10**30 - 1):030d}",
                every_byte[i % 256 :] + every_byte[: i % 256] if i % 3 else (b"" if i % 2 else None),
                every_byte * (i % 5) if i % 7 else None,
                bytes([i % 256, 0, 9, 10]),
                texts[i % len(texts)],
                ["café", "", None, "x\\y\tz"][i % 4],
                [None, '{"a": [1, 2.5, "x\\n\\t"], "b": null, "c": "🐬"}', "[]", '"s"'][i % 4],
                i % 2,
                rng.getrandbits(64),
                f"2024-02-29 23:59:59.{i:06d}",
                "1000-01-01" if i % 5 == 0 else "9999-12-31",
                f"-838:59:59.{i % 1000000:06d}" if i % 2 else "12:34:56.000001",
                "2038-01-19 03:14:07.999999" if i % 3 == 0 else ("1970-01-01 00:00:01" if i % 3 == 1 else None),
                1901 + i % 255,
                ["a", "b", "", None][i % 4],
                ["x,y", "", "z", None][i % 4],
                ["::1", "2001:db8::ff00:42:8329", None, "::ffff:192.0.2.1"][i % 4],
                "123e4567-e89b-12d3-a456-426655440000" if i % 2 else None,
            )
        )
    return rows


def test_exotic_values_arrive_bit_exact(worlds: tuple[World, World]) -> None:
    here, there = worlds
    source = here.prefix + "exotic_src"
    here.sandbox.execute(f"CREATE DATABASE {q(source)} CHARACTER SET utf8mb4")
    here.sandbox.execute(EXOTIC.format(db=q(source)))
    conn = here.sandbox.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SET time_zone = '+00:00'")
            cursor.executemany(
                f"INSERT INTO {q(source)}.exotic VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL)",
                _exotic_rows(),
            )
            cursor.execute(
                f"UPDATE {q(source)}.exotic SET g = IF(id % 2, ST_GeomFromText('POINT(1 2)'),"
                " ST_GeomFromText('LINESTRING(0 0, 1.5 -2.25)', 4326)) WHERE id % 3 = 0"
            )
            cursor.execute("SET SESSION sql_mode = ''")
            cursor.execute(f"UPDATE {q(source)}.exotic SET ts = '0000-00-00 00:00:00' WHERE id = 4")
    finally:
        conn.close()
    cfg = config(here, there)
    path = manifest(here, "exotic", source=source, target=there.prefix + "exotic", target_server="dst")

    result = apply(path, cfg)

    assert result.ok, result.failed
    target = there.prefix + "exotic"
    # CHECKSUM TABLE reads the stored records: equal checksums are equal bytes, FLOAT bits included
    [(_, original)] = here.sandbox.query(f"CHECKSUM TABLE {q(source)}.exotic")
    [(_, copied)] = there.sandbox.query(f"CHECKSUM TABLE {q(target)}.exotic")
    assert copied == original
    probe = (
        "SELECT CAST(f AS DOUBLE), CAST(d AS DOUBLE), HEX(bin), HEX(blb), txt, HEX(lat), js, b64 + 0,"
        " UNIX_TIMESTAMP(ts), HEX(g), txt IS NULL FROM {db}.exotic ORDER BY id"
    )
    assert there.sandbox.query(probe.format(db=q(target))) == here.sandbox.query(probe.format(db=q(source)))
    [(empty, null)] = there.sandbox.query(f"SELECT SUM(txt = ''), SUM(txt IS NULL) FROM {q(target)}.exotic")
    assert empty > 0 and null > 0  # '' and NULL stay apart


# -- 3. a killed session is retried --------------------------------------------------------------


def _load_sessions(url: str) -> list[int]:
    conn = pymysql.connect(**_params(url))
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'LOAD DATA LOCAL INFILE%%big%%'"
            )
            return [int(row[0]) for row in cursor.fetchall()]
    finally:
        conn.close()


def _params(url: str) -> dict[str, Any]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return {"host": parts.hostname, "port": parts.port, "user": parts.username or "root", "autocommit": True}


def test_a_target_session_killed_mid_copy_is_retried_and_the_copy_is_complete(worlds: tuple[World, World]) -> None:
    here, there = worlds
    source = here.prefix + "big_src"
    here.sandbox.execute(f"CREATE DATABASE {q(source)}")
    here.sandbox.execute(
        f"CREATE TABLE {q(source)}.big (id INT PRIMARY KEY, pad VARCHAR(200) NOT NULL, n DOUBLE) ENGINE=InnoDB"
    )
    here.sandbox.execute(
        f"INSERT INTO {q(source)}.big SELECT seq, REPEAT(CHAR(65 + seq % 26), 150), seq / 7"
        f" FROM {q(source)}.seq_1_to_300000"
    )
    cfg = config(here, there)
    path = manifest(here, "kill", source=source, target=there.prefix + "big", target_server="dst")
    plan = api.plan([path], config=cfg)
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for session in _load_sessions(there.sandbox.url):
                there.sandbox.execute(f"KILL {session}")
                killed.append(session)
            time.sleep(0.02)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        result = api.apply(plan, config=cfg)
    finally:
        thread.join()

    assert killed, "the load was never seen running"
    assert result.ok, result.failed
    assert there.row_counts(there.prefix + "big") == {"big": 300000}
    [(_, original)] = here.sandbox.query(f"CHECKSUM TABLE {q(source)}.big")
    [(_, copied)] = there.sandbox.query(f"CHECKSUM TABLE {q(there.prefix + 'big')}.big")
    assert copied == original


def test_a_lost_source_session_is_replaced_by_a_newer_snapshot_and_said_so(worlds: tuple[World, World]) -> None:
    here, there = worlds
    source = here.prefix + "big_src"
    here.sandbox.execute(f"CREATE DATABASE {q(source)}")
    here.sandbox.execute(f"CREATE TABLE {q(source)}.big (id INT PRIMARY KEY, pad VARCHAR(200) NOT NULL) ENGINE=InnoDB")
    here.sandbox.execute(
        f"INSERT INTO {q(source)}.big SELECT seq, REPEAT(CHAR(65 + seq % 26), 150) FROM {q(source)}.seq_1_to_300000"
    )
    cfg = config(here, there)
    env = here.env("lost")
    path = manifest(here, "lost", source=source, target=there.prefix + "lost", target_server="dst")
    plan = api.plan([path], config=cfg)
    killed: list[int] = []

    def killer() -> None:
        conn = pymysql.connect(**_params(here.sandbox.url))
        try:
            with conn.cursor() as cursor:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not killed:
                    cursor.execute(
                        "SELECT ID FROM information_schema.PROCESSLIST"
                        " WHERE INFO LIKE 'SELECT COUNT(*), GROUP_CONCAT(%%'"
                    )
                    for (session,) in cursor.fetchall():
                        cursor.execute(f"KILL {int(session)}")
                        killed.append(int(session))
                    time.sleep(0.01)
        finally:
            conn.close()

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        result = api.apply(plan, config=cfg)
    finally:
        thread.join()

    assert killed, "no chunk query was seen running"
    assert result.ok, result.failed
    [(_, original)] = here.sandbox.query(f"CHECKSUM TABLE {q(source)}.big")
    [(_, copied)] = there.sandbox.query(f"CHECKSUM TABLE {q(there.prefix + 'lost')}.big")
    assert copied == original
    assert "later snapshot" in (last_event_message(there, here.sandbox.ledger, env) or "")


# -- 4. failures leave nothing half-built --------------------------------------------------------


def test_a_non_transient_error_leaves_nothing_half_built_and_the_next_apply_converges(
    worlds: tuple[World, World],
) -> None:
    here, there = worlds
    cfg = config(here, there)
    env = here.env("broken")
    colliding = {"rules": {"users": {"mask": {"username": "'same name'"}}}}  # a UNIQUE index: collisions
    path = manifest(
        here, "broken", source=here.source, target=there.prefix + "broken", target_server="dst", **colliding
    )

    result = apply(path, cfg, parallel=2)

    assert not result.ok
    [failure] = result.failed
    assert "users" in (failure.error or "") and "make the mask unique" in (failure.error or "")
    assert not there.exists(there.prefix + "broken")
    assert there.work_databases() == []  # no staging (`_moenv_`) database left behind
    record = ledger_row(there, here.sandbox.ledger, env)
    assert record is not None and record["status"] == "failed"

    fixed = manifest(
        here,
        "broken",
        source=here.source,
        target=there.prefix + "broken",
        target_server="dst",
        rules={"users": {"mask": {"username": "CONCAT('user-', id)"}}},
    )
    assert apply(fixed, cfg, parallel=2).ok
    assert there.row_counts(there.prefix + "broken") == here.row_counts(here.source)
    assert api.plan([fixed], config=cfg).actions == ()
    record = ledger_row(there, here.sandbox.ledger, env)
    assert record is not None and record["status"] == "ready"


# -- 5. one snapshot for parallel workers --------------------------------------------------------


def test_without_reload_the_workers_share_one_snapshot_and_say_so(worlds: tuple[World, World]) -> None:
    here, there = worlds
    user = f"ro_{here.sandbox.token}"
    here.sandbox.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
    try:
        here.sandbox.execute(f"GRANT SELECT, SHOW VIEW ON *.* TO '{user}'@'%'")
        url = here.sandbox.url.replace("root@", f"{user}:pw@")
        cfg = config(here, there, source_url=url)
        env = here.env("noreload")
        path = manifest(here, "noreload", source=here.source, target=there.prefix + "noreload", target_server="dst")

        result = apply(path, cfg, parallel=3)

        assert result.ok, result.failed
        assert there.checksums(there.prefix + "noreload") == here.checksums(here.source)
        message = last_event_message(there, here.sandbox.ledger, env) or ""
        assert "share one snapshot" in message and "RELOAD" in message
    finally:
        here.sandbox.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def test_parallel_workers_read_one_point_in_time_under_concurrent_writes(worlds: tuple[World, World]) -> None:
    """Each writer transaction adds a parent and its child: in the copy, both or neither."""
    here, there = worlds
    source = here.prefix + "busy_src"
    here.sandbox.execute(f"CREATE DATABASE {q(source)}")
    here.sandbox.execute(f"CREATE TABLE {q(source)}.parent (id INT PRIMARY KEY, pad CHAR(200)) ENGINE=InnoDB")
    here.sandbox.execute(
        f"CREATE TABLE {q(source)}.child (id INT PRIMARY KEY, parent_id INT NOT NULL, pad CHAR(200),"
        " KEY (parent_id)) ENGINE=InnoDB"
    )
    here.sandbox.execute(f"INSERT INTO {q(source)}.parent SELECT seq, 'x' FROM {q(source)}.seq_1_to_60000")
    here.sandbox.execute(f"INSERT INTO {q(source)}.child SELECT seq, seq, 'y' FROM {q(source)}.seq_1_to_60000")
    cfg = config(here, there)
    path = manifest(here, "busy", source=source, target=there.prefix + "busy", target_server="dst")
    plan = api.plan([path], config=cfg)
    stop = threading.Event()

    def writer() -> None:
        conn = pymysql.connect(**_params(here.sandbox.url))
        try:
            with conn.cursor() as cursor:
                n = 100000
                while not stop.is_set():
                    n += 1
                    cursor.execute("START TRANSACTION")
                    cursor.execute(f"INSERT INTO {q(source)}.child VALUES (%s, %s, 'new')", (n, n))
                    cursor.execute(f"INSERT INTO {q(source)}.parent VALUES (%s, 'new')", (n,))
                    cursor.execute("COMMIT")
        finally:
            conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = api.apply(plan, config=cfg, parallel=2)
    finally:
        stop.set()
        thread.join()

    assert result.ok, result.failed
    target = q(there.prefix + "busy")
    [(parents_without_child,)] = there.sandbox.query(
        f"SELECT COUNT(*) FROM {target}.parent p LEFT JOIN {target}.child c ON c.id = p.id WHERE c.id IS NULL"
    )
    [(children_without_parent,)] = there.sandbox.query(
        f"SELECT COUNT(*) FROM {target}.child c LEFT JOIN {target}.parent p ON p.id = c.id WHERE p.id IS NULL"
    )
    assert (parents_without_child, children_without_parent) == (0, 0)


# -- 6. a target that refuses LOAD DATA LOCAL, progress while a table streams ----------------------


def test_a_target_refusing_load_data_local_gets_multi_row_inserts(worlds: tuple[World, World]) -> None:
    here, there = worlds
    cfg = config(here, there)
    env = here.env("noinfile")
    same = manifest(here, "same", source=here.source, target=here.prefix + "same", target_server="src", **SUBSET)
    path = manifest(
        here, "noinfile", source=here.source, target=there.prefix + "noinfile", target_server="dst", **SUBSET
    )
    assert apply(same, cfg).ok
    [(before,)] = there.sandbox.query("SELECT @@GLOBAL.local_infile")
    there.sandbox.execute("SET GLOBAL local_infile = 0")
    try:
        result = apply(path, cfg, parallel=2)
    finally:
        there.sandbox.execute(f"SET GLOBAL local_infile = {int(before)}")

    assert result.ok, result.failed
    assert there.checksums(there.prefix + "noinfile") == here.checksums(here.prefix + "same")
    message = last_event_message(there, here.sandbox.ledger, env) or ""
    assert "refused LOAD DATA LOCAL" in message and "multi-row INSERTs" in message


def test_a_streamed_table_reports_its_rows_while_it_is_copied(
    worlds: tuple[World, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger (`moenv status`) and the reporter (the live display) see a table's rows while
    it is in flight. The intervals are shortened (2 s and 0.5 s by default) so that the test does
    not depend on how long the copy takes."""
    monkeypatch.setattr(apply_module, "PROGRESS_SECONDS", 0.05)
    monkeypatch.setattr(stream_module, "PROGRESS_POLL", 0.02)
    here, there = worlds
    source = here.prefix + "wide_src"
    here.sandbox.execute(f"CREATE DATABASE {q(source)}")
    here.sandbox.execute(
        f"CREATE TABLE {q(source)}.wide (id INT PRIMARY KEY, pad VARCHAR(250) NOT NULL, KEY (pad(20))) ENGINE=InnoDB"
    )
    here.sandbox.execute(
        f"INSERT INTO {q(source)}.wide SELECT seq, REPEAT(MD5(seq), 7) FROM {q(source)}.seq_1_to_400000"
    )
    cfg = config(here, there)
    env = here.env("progress")
    path = manifest(here, "progress", source=source, target=there.prefix + "wide", target_server="dst")
    plan = api.plan([path], config=cfg)
    seen: list[tuple[str, int]] = []
    reported: list[int] = []
    done = threading.Event()

    class Counting(SilentReporter):
        def rows_copied(self, action: Action, rows: int) -> None:
            reported.append(rows)

    def watch() -> None:
        while not done.is_set():
            row = ledger_row(there, here.sandbox.ledger, env) if there.exists(here.sandbox.ledger) else None
            if row is not None:
                seen.append((str(row["status"]), int(row["rows_copied"])))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = api.apply(plan, config=cfg, reporter=Counting())
    finally:
        done.set()
        watcher.join()

    assert result.ok, result.failed
    assert any(0 < rows < 400000 for rows in reported), reported[-5:]  # counts of a table in flight
    assert any(status == "building" and 0 < rows < 400000 for status, rows in seen), seen[-5:]


def test_the_cli_copies_across_servers_in_parallel_and_show_names_the_method(worlds: tuple[World, World]) -> None:
    here, there = worlds
    servers = {"src": {"url": here.sandbox.url}, "dst": {"url": there.sandbox.url}}
    (here.directory / "moenv.yaml").write_text(yaml.safe_dump({"servers": servers}), encoding="utf-8")
    path = manifest(here, "cli", source=here.source, target=there.prefix + "cli", target_server="dst")

    applied = here.cli("--config", "moenv.yaml", "apply", "--parallel", "2", "--yes", str(path))

    assert applied.returncode == 0, output(applied)
    assert there.checksums(there.prefix + "cli") == here.checksums(here.source)
    shown = here.cli("--config", "moenv.yaml", "show", here.env("cli"))
    assert shown.returncode == 0, output(shown)
    assert "users" in shown.stdout and "stream" in shown.stdout, shown.stdout
    assert here.cli("--config", "moenv.yaml", "apply", "--parallel", "0", str(path)).returncode != 0
