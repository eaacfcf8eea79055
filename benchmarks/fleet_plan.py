"""Fleet scale: queries and wall time of `plan` for 10, 50 and 200 environments.

    python benchmarks/fleet_plan.py [--url mysql://root@127.0.0.1:3306/] [--tables 200] [--sources 5]

Builds 5 source databases of 200 tables each (small tables with foreign keys), writes 200
manifests (each a schema-only copy of 10 tables of one source, so 2,000 tables get created),
then measures, in one run: the statements sent and the wall time of `plan` for 10, 50 and 200
environments, the same with 4× fewer tables per source (the query count must not change), and
a converged `apply` of all 200 (nothing to do) against `plan`. Without --url a private MariaDB
is started (tests/support/mariadb.py). Everything it creates is dropped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "src"), str(Path(__file__).resolve().parents[1])]

import pymysql  # noqa: E402

from moenv import api  # noqa: E402
from moenv.live.connection import statement_count  # noqa: E402
from moenv.models.config import Config, Server  # noqa: E402

PREFIX = "fleetbench_"


def _connect(url: str) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    server = Server.from_url("bench", url)
    return pymysql.connect(
        host=server.host, port=server.port, user=server.user, password=server.password, autocommit=True
    )


def build_sources(url: str, sources: int, tables: int) -> None:
    conn = _connect(url)
    with conn.cursor() as cur:
        for s in range(sources):
            db = f"{PREFIX}src{s}"
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
            cur.execute(f"CREATE DATABASE `{db}`")
            for t in range(tables):
                fk = ""
                if t % 10:
                    parent = t - t % 10
                    fk = f", parent_id INT, FOREIGN KEY (parent_id) REFERENCES t{parent:03d}(id)"
                cur.execute(
                    f"CREATE TABLE `{db}`.t{t:03d} (id INT PRIMARY KEY, name VARCHAR(40), created DATETIME,"
                    f" KEY ix_name (name){fk})"
                )
    conn.close()


def write_manifests(directory: Path, count: int, sources: int) -> None:
    for i in range(count):
        group = i % 5
        (directory / f"env{i:03d}.yaml").write_text(
            f"""apiVersion: moenv/v1
kind: Environment
metadata: {{name: env-{i:03d}, labels: {{team: t{i % 7}}}}}
spec:
  source: {{database: {PREFIX}src{i % sources}}}
  target: {{database: {PREFIX}env{i:03d}}}
  data: schema
  tables: {{include: ["t0{group}*"]}}
""",
            encoding="utf-8",
        )


def measure(paths: list[Path], config: Config, repeat: int = 3) -> tuple[int, float, int]:
    times = []
    queries = 0
    actions = 0
    for _ in range(repeat):
        before = statement_count()
        started = time.perf_counter()
        plan = api.plan(paths, config=config)
        times.append(time.perf_counter() - started)
        queries = statement_count() - before
        actions = len(plan.actions)
    return queries, statistics.median(times), actions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--tables", type=int, default=200)
    parser.add_argument("--sources", type=int, default=5)
    args = parser.parse_args()
    private = None
    url = args.url
    if url is None:
        from tests.support.mariadb import PrivateMariaDB

        private = PrivateMariaDB.start(Path(tempfile.mkdtemp(prefix="moenv-fleet-")))
        url = private.url
    config = Config(servers={"default": Server.from_url("default", url)}, ledger_database=f"{PREFIX}ledger")
    try:
        build_sources(url, args.sources, args.tables)
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            write_manifests(directory, 200, args.sources)
            files = sorted(directory.glob("*.yaml"))
            print(f"sources: {args.sources} databases x {args.tables} tables; 200 manifests (10 tables each)")
            print("plan (nothing applied yet: every environment is a create)")
            for n in (10, 50, 200):
                queries, seconds, actions = measure(files[:n], config)
                print(f"  {n:>3} environments: {queries:>3} queries, {seconds:.3f} s, {actions} actions")
            started = time.perf_counter()
            result = api.apply(api.plan(files, config=config), config=config)
            print(f"apply of 200 creates: {time.perf_counter() - started:.1f} s, ok={result.ok}")
            print("plan (converged)")
            converged = {}
            for n in (10, 50, 200):
                queries, seconds, actions = measure(files[:n], config)
                converged[n] = seconds
                print(f"  {n:>3} environments: {queries:>3} queries, {seconds:.3f} s, {actions} actions")
            times = []
            for _ in range(3):
                started = time.perf_counter()
                plan = api.plan(files, config=config)
                outcome = api.apply(plan, config=config)
                times.append(time.perf_counter() - started)
                assert outcome.ok and not plan.actions
            apply_s = statistics.median(times)
            print(f"converged apply of 200: {apply_s:.3f} s = {apply_s / converged[200]:.2f}x plan")
            build_sources(url, args.sources, args.tables // 4)
            print(f"with {args.tables // 4} tables per source (query count must not change)")
            for n in (10, 200):
                queries, seconds, _ = measure(files[:n], config)
                print(f"  {n:>3} environments: {queries:>3} queries, {seconds:.3f} s")
    finally:
        conn = _connect(url)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s", (PREFIX + "%",)
            )
            for (name,) in cur.fetchall():
                cur.execute(f"DROP DATABASE `{name}`")
        conn.close()
        if private is not None:
            private.stop()


if __name__ == "__main__":
    main()
