"""Environments applied at once: wall time of `apply --jobs N` against `--jobs 1`, same data, same run.

    python benchmarks/fleet_apply.py [--url mysql://root@127.0.0.1:3306/] [--environments 8] [--rows 40000]

Builds one source (customers ← orders ← items, `--rows` orders), writes `--environments`
manifests (half full copies, half filtered and masked subsets with strict integrity), then, in
alternating rounds, creates them all with jobs=1 and with jobs=2 and 4, destroying them between
rounds. Reports the median wall time per setting and its ratio to jobs=1 (> 1: faster). Without
--url a private MariaDB is started (tests/support/mariadb.py). Everything it creates is dropped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "src"), str(Path(__file__).resolve().parents[1])]

import yaml  # noqa: E402
from tests.support.mariadb import PrivateMariaDB, connect  # noqa: E402

from moenv import api  # noqa: E402
from moenv.models.config import Config, Server  # noqa: E402
from moenv.models.ledger import holding_database, staging_database  # noqa: E402

PREFIX = "jobsbench_"
SOURCE = PREFIX + "src"


def build_source(url: str, rows: int) -> None:
    conn = connect(url)
    d = f"`{SOURCE}`"
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {d}")
        cur.execute(f"CREATE DATABASE {d}")
        cur.execute(
            f"CREATE TABLE {d}.customers (id INT PRIMARY KEY, email VARCHAR(80) NOT NULL, region INT NOT NULL)"
        )
        cur.execute(
            f"CREATE TABLE {d}.orders (id INT PRIMARY KEY, customer_id INT NOT NULL, total DECIMAL(10,2),"
            " placed DATETIME NOT NULL, FOREIGN KEY (customer_id) REFERENCES customers (id))"
        )
        cur.execute(
            f"CREATE TABLE {d}.items (order_id INT NOT NULL, line INT NOT NULL, sku VARCHAR(20), qty INT,"
            " PRIMARY KEY (order_id, line), FOREIGN KEY (order_id) REFERENCES orders (id))"
        )
        customers = max(rows // 10, 1)
        cur.execute(
            f"INSERT INTO {d}.customers SELECT seq, CONCAT('c', seq, '@corp.example'), seq % 10"
            f" FROM {d}.seq_1_to_{customers}"
        )
        cur.execute(
            f"INSERT INTO {d}.orders SELECT seq, 1 + seq % {customers}, seq % 1000 + 0.5,"
            f" '2024-01-01' + INTERVAL seq MINUTE FROM {d}.seq_1_to_{rows}"
        )
        cur.execute(
            f"INSERT INTO {d}.items SELECT o.seq, l.seq, CONCAT('SKU', o.seq % 977), 1 + l.seq"
            f" FROM {d}.seq_1_to_{rows} o JOIN {d}.seq_1_to_2 l"
        )
    conn.close()


def write_manifests(directory: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        spec: dict[str, object] = {"source": {"database": SOURCE}, "target": {"database": f"{PREFIX}env{i:02d}"}}
        if i % 2:
            spec["rules"] = {"customers": {"where": "region < 3", "mask": {"email": "moenv.email(email)"}}}
            spec["integrity"] = "strict"
        metadata = {"name": f"jobs-{i:02d}"}
        document = {"apiVersion": "moenv/v1", "kind": "Environment", "metadata": metadata, "spec": spec}
        path = directory / f"env{i:02d}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        paths.append(path)
    return paths


def one_round(paths: list[Path], config: Config, jobs: int) -> float:
    plan = api.plan(paths, config=config)
    started = time.perf_counter()
    result = api.apply(plan, config=config, jobs=jobs)
    seconds = time.perf_counter() - started
    assert result.ok, result.failed
    assert len(result.results) == len(paths)
    for record in api.status(config).records:
        destroyed = api.apply(api.destroy_plan(config, record.name), config=config)
        assert destroyed.ok, destroyed.failed
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--environments", type=int, default=8)
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    private = None
    url = args.url
    if url is None:
        private = PrivateMariaDB.start(Path(tempfile.mkdtemp(prefix="moenv-jobs-")))
        url = private.url
    ledger = PREFIX + "ledger"
    config = Config(servers={"default": Server.from_url("default", url)}, ledger_database=ledger, salt="bench")
    try:
        build_source(url, args.rows)
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_manifests(Path(tmp), args.environments)
            one_round(paths, config, 1)  # warm-up: buffer pool, ledger creation
            times: dict[int, list[float]] = {1: [], 2: [], 4: []}
            for _ in range(args.rounds):
                for jobs, runs in times.items():
                    runs.append(one_round(paths, config, jobs))
        base = statistics.median(times[1])
        total_rows = args.rows // 10 + args.rows * 3
        print(f"{args.environments} environments ({args.environments // 2} full, the rest filtered + masked),"
              f" source {total_rows:,} rows, {args.rounds} rounds, medians:")
        for jobs, seconds in times.items():
            median = statistics.median(seconds)
            print(f"  jobs={jobs}: {median:6.2f} s  (runs {', '.join(f'{s:.2f}' for s in seconds)})"
                  f"  speed-up vs jobs=1: {base / median:.2f}x")
    finally:
        envs = [f"jobs-{i:02d}" for i in range(args.environments)]
        scratch = {staging_database(e) for e in envs} | {holding_database(e) for e in envs}
        conn = connect(url)
        with conn.cursor() as cur:
            cur.execute("SHOW DATABASES")
            for (name,) in cur.fetchall():
                if str(name).startswith(PREFIX) or str(name) in scratch:
                    cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()
        if private is not None:
            private.stop()


if __name__ == "__main__":
    main()
