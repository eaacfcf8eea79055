"""Incremental refresh across servers against a full one, same data, same run.

    python benchmarks/incremental_refresh.py [--rows 500000] [--payload 150] [--changed 0.01] [--rounds 3]
                                             [--same-server]

Starts two private MariaDB servers (tests/support/mariadb.py); with --same-server, one, which
holds both the source and the environment. The source holds accounts
(rows/20) and events (--rows, FK to accounts, a watermark column, a text of about --payload
bytes); the environment copies both
to the other server with `refresh: {mode: incremental}` and a mask. Each round changes
--changed of the events (UPDATE of the watermark and a value), inserts as many and deletes a
tenth as many, then times `refresh` (incremental: only the changes are streamed) and, after the
same kind of change, `refresh --full` (everything streamed again), alternating. Reports medians
and full / incremental (> 1: the incremental one is faster), and checks after each refresh that
the target holds what the source does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "src"), str(Path(__file__).resolve().parents[1])]

import yaml  # noqa: E402
from tests.support.mariadb import PrivateMariaDB, connect  # noqa: E402

from moenv import api  # noqa: E402
from moenv.models.config import Config, Server  # noqa: E402

SOURCE = "incbench_src"
TARGET = "incbench_dev"
ENV = "incbench"


def build_source(url: str, rows: int, payload: int) -> None:
    conn = connect(url)
    d = f"`{SOURCE}`"
    accounts = max(rows // 20, 1)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {d}")
        cur.execute(f"CREATE DATABASE {d}")
        cur.execute(
            f"CREATE TABLE {d}.accounts (id INT PRIMARY KEY, email VARCHAR(80) NOT NULL,"
            " updated_at DATETIME(6) NOT NULL)"
        )
        cur.execute(
            f"CREATE TABLE {d}.events (id INT PRIMARY KEY, account_id INT NOT NULL, kind VARCHAR(20) NOT NULL,"
            " amount DECIMAL(10,2) NOT NULL, payload TEXT, updated_at DATETIME(6) NOT NULL,"
            " KEY ix_updated (updated_at), FOREIGN KEY (account_id) REFERENCES accounts (id))"
        )
        cur.execute(
            f"INSERT INTO {d}.accounts SELECT seq, CONCAT('a', seq, '@corp.example'),"
            f" '2024-01-01' + INTERVAL seq SECOND"
            f" FROM {d}.seq_1_to_{accounts}"
        )
        cur.execute(
            f"INSERT INTO {d}.events SELECT seq, 1 + seq % {accounts}, ELT(1 + seq % 3, 'view', 'buy', 'refund'),"
            f" seq % 1000 + 0.25, REPEAT(CHAR(65 + seq % 26), {payload} - 25 + seq % 50),"
            f" '2024-01-01' + INTERVAL seq SECOND"
            f" FROM {d}.seq_1_to_{rows}"
        )
    conn.close()


def change(url: str, rows: int, fraction: float, round_: int) -> None:
    """Update `fraction` of the events, insert as many new ones, delete a tenth as many."""
    conn = connect(url)
    d = f"`{SOURCE}`"
    step = max(int(1 / fraction), 1)
    count = rows // step
    accounts = max(rows // 20, 1)
    start = rows * (10 + round_)
    with conn.cursor() as cur:
        cur.execute(
            f"UPDATE {d}.events SET amount = amount + 1, updated_at = NOW(6) WHERE id % {step} = {round_ % step}"
        )
        cur.execute(
            f"INSERT INTO {d}.events SELECT {start} + seq, 1 + seq % {accounts}, 'new', 1, 'y', NOW(6)"
            f" FROM {d}.seq_1_to_{count}"
        )
        cur.execute(f"DELETE FROM {d}.events WHERE id % {step * 10} = {(round_ + 1) % (step * 10)} AND id < {rows}")
    conn.close()


def same_content(src_url: str, dst_url: str) -> bool:
    def sums(url: str, db: str) -> tuple[object, ...]:
        conn = connect(url)
        with conn.cursor() as cur:
            line = "CONCAT_WS('|', id, account_id, kind, amount, payload)"
            cur.execute(f"SELECT COUNT(*), SUM(amount), SUM(CRC32({line})) FROM `{db}`.events")
            row = cur.fetchone()
        conn.close()
        return tuple(row or ())

    return sums(src_url, SOURCE) == sums(dst_url, TARGET)


def received(url: str) -> int:
    """Bytes the server has received from clients (LOAD DATA LOCAL payloads included)."""
    conn = connect(url)
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Bytes_received'")
        (_, value) = cur.fetchone() or ("", 0)
    conn.close()
    return int(value)


def timed_refresh(config: Config, target_url: str, *, full: bool) -> tuple[float, int]:
    """Seconds of the refresh, and the bytes the target server received meanwhile."""
    plan = api.refresh_plan(config, ENV, full=full)
    kinds = {s.kind for a in plan.actions for s in a.steps}
    assert ("refresh_incremental" in kinds) != full, kinds  # the run measures what it says it does
    before = received(target_url)
    started = time.perf_counter()
    result = api.apply(plan, config=config)
    seconds = time.perf_counter() - started
    assert result.ok, result.failed
    return seconds, received(target_url) - before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--payload", type=int, default=150)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--same-server", action="store_true", help="source and environment on one server")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="moenv-incbench-"))
    source = PrivateMariaDB.start(base / "src")
    target = source if args.same_server else PrivateMariaDB.start(base / "dst")
    try:
        build_source(source.url, args.rows, args.payload)
        config = Config(
            servers={"src": Server.from_url("src", source.url), "dst": Server.from_url("dst", target.url)},
            ledger_database="incbench_ledger",
            salt="bench",
        )
        manifest = base / "env.yaml"
        manifest.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "moenv/v1",
                    "kind": "Environment",
                    "metadata": {"name": ENV},
                    "spec": {
                        "source": {"server": "src", "database": SOURCE},
                        "target": {"server": "src" if args.same_server else "dst", "database": TARGET},
                        "rules": {
                            "accounts": {"watermark": "updated_at", "mask": {"email": "moenv.email(email)"}},
                            "events": {"watermark": "updated_at"},
                        },
                        "refresh": {"every": "24h", "mode": "incremental"},
                    },
                }
            ),
            encoding="utf-8",
        )
        started = time.perf_counter()
        created = api.apply(api.plan([manifest], config=config, now=datetime.now(UTC)), config=config)
        assert created.ok, created.failed
        create_seconds = time.perf_counter() - started
        times: dict[str, list[float]] = {"incremental": [], "full": []}
        sent: dict[str, list[int]] = {"incremental": [], "full": []}
        for round_ in range(args.rounds):
            for kind in ("incremental", "full"):
                change(source.url, args.rows, args.changed, 2 * round_ + (kind == "full"))
                seconds, size = timed_refresh(config, target.url, full=kind == "full")
                times[kind].append(seconds)
                sent[kind].append(size)
                assert same_content(source.url, target.url), f"round {round_} {kind}: the target differs"
        inc, full = statistics.median(times["incremental"]), statistics.median(times["full"])
        print(f"events {args.rows:,} rows of ~{args.payload} B payload (+ accounts {args.rows // 20:,}),"
              f" {args.changed:.1%} updated, as many"
              f" inserted, a tenth deleted per round; create {create_seconds:.2f} s")
        print(f"  incremental refresh: {inc:.2f} s  (runs {', '.join(f'{s:.2f}' for s in times['incremental'])})")
        print(f"  full refresh:        {full:.2f} s  (runs {', '.join(f'{s:.2f}' for s in times['full'])})")
        print(f"  full / incremental:  {full / inc:.2f}x   (every refresh checked: target = source)")
        if not args.same_server:
            inc_mb, full_mb = statistics.median(sent["incremental"]) / 2**20, statistics.median(sent["full"]) / 2**20
            print(f"  received by the target server: incremental {inc_mb:.1f} MiB, full {full_mb:.1f} MiB"
                  f" ({full_mb / inc_mb:.1f}x less)")
    finally:
        source.stop()
        if target is not source:
            target.stop()


if __name__ == "__main__":
    main()
