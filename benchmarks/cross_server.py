"""Copy speed and client memory of moenv against the fastest alternatives, on two local servers.

    python benchmarks/cross_server.py [--rows 1000000] [--repeat 3] [--parallel 2] [--transports] [--json out.json]

Starts two private MariaDB servers (tests/support/mariadb.py), builds a source database
(customers 100 k rows, orders --rows rows with a foreign key to customers, page_views 200 k rows
without a primary key; utf8mb4 text, NULLs, FLOAT, DOUBLE, DECIMAL) and reports, in one run:

  same-server   moenv apply (full copy)  vs  raw SQL: DDL from SHOW CREATE TABLE, one
                INSERT … SELECT transaction per table, foreign_key_checks/unique_checks off
  cross-server  moenv apply --parallel N  vs  mysqldump --single-transaction | mysql
  memory        peak RSS of a moenv process copying a 1 M-row table vs a 100 k-row one

Timed runs alternate (A, B, A, B, …) and each starts on settled servers (dirty pages flushed,
purge caught up), so one run does not pay for the previous one's background work; medians are
reported with every sample, each server's CPU seconds, and the load average (the machine may be
shared). Ratios are alternative time / moenv time (higher is better for moenv) and RSS 1 M / 100 k.
--transports also times the multi-row INSERT transport and --parallel 1 against the default.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import pymysql  # noqa: E402
import yaml  # noqa: E402
from tests.support.mariadb import PrivateMariaDB  # noqa: E402

from moenv import api  # noqa: E402
from moenv.executor import stream  # noqa: E402
from moenv.models.config import Config, Server  # noqa: E402

SOURCE = "bench_src"
SMALL = "bench_small"
LEDGER = "moenv_bench"


def connect(url: str) -> Any:
    server = Server.from_url("bench", url)
    return pymysql.connect(host=server.host, port=server.port, user=server.user, autocommit=True, local_infile=True)


def execute(url: str, *statements: str) -> list[tuple[Any, ...]]:
    conn = connect(url)
    try:
        rows: list[tuple[Any, ...]] = []
        with conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
                rows = list(cursor.fetchall())
        return rows
    finally:
        conn.close()


def build_source(url: str, rows: int) -> None:
    execute(
        url,
        f"DROP DATABASE IF EXISTS {SOURCE}",
        f"CREATE DATABASE {SOURCE} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        f"""CREATE TABLE {SOURCE}.customers (
            id INT UNSIGNED NOT NULL PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(255) NOT NULL,
            country CHAR(2) NOT NULL, balance DECIMAL(12,2) NOT NULL, score FLOAT NULL, created_at DATETIME NOT NULL,
            bio TEXT NULL, UNIQUE KEY uq_email (email), KEY ix_country (country)) ENGINE=InnoDB""",
        f"""CREATE TABLE {SOURCE}.orders (
            id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, customer_id INT UNSIGNED NOT NULL,
            status ENUM('new','paid','shipped','cancelled') NOT NULL, total DECIMAL(12,2) NOT NULL,
            weight DOUBLE NULL, placed_at DATETIME NOT NULL, note VARCHAR(255) NULL,
            KEY ix_customer (customer_id), KEY ix_placed (placed_at),
            CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id)) ENGINE=InnoDB""",
        f"""CREATE TABLE {SOURCE}.page_views (
            customer_id INT UNSIGNED NULL, url VARCHAR(255) NOT NULL, viewed_at DATETIME NOT NULL,
            KEY ix_viewed (viewed_at)) ENGINE=InnoDB""",
        "SET SESSION unique_checks = 0, foreign_key_checks = 0",
        f"""INSERT INTO {SOURCE}.customers SELECT seq,
            CONCAT(ELT(1 + seq % 4, 'Jürgen', 'Zoë', 'Søren', '李'), ' ', seq), CONCAT('c', seq, '@example.com'),
            ELT(1 + seq % 5, 'DE', 'FR', 'US', 'CN', 'BR'), (seq % 10000) / 7,
            IF(seq % 11 = 0, NULL, seq / 3), '2020-01-01' + INTERVAL seq MINUTE,
            IF(seq % 3 = 0, NULL, REPEAT(CONCAT('bio 🐬 ', seq, ' '), 1 + seq % 4)) FROM {SOURCE}.seq_1_to_100000""",
        f"""INSERT INTO {SOURCE}.orders SELECT seq, 1 + (seq * 7919) % 100000,
            ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'), (seq % 50000) / 100,
            IF(seq % 7 = 0, NULL, seq / 13),
            '2021-01-01' + INTERVAL seq SECOND, IF(seq % 5 = 0, CONCAT('note\t', seq, ' "q" ☕'), NULL)
            FROM {SOURCE}.seq_1_to_{rows}""",
        f"""INSERT INTO {SOURCE}.page_views SELECT IF(seq % 4 = 0, NULL, 1 + seq % 100000),
            CONCAT('/p/', seq % 977, '?q=ü'), '2022-01-01' + INTERVAL seq SECOND FROM {SOURCE}.seq_1_to_200000""",
        f"DROP DATABASE IF EXISTS {SMALL}",
        f"CREATE DATABASE {SMALL} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        f"CREATE TABLE {SMALL}.orders LIKE {SOURCE}.orders",
        f"INSERT INTO {SMALL}.orders SELECT * FROM {SOURCE}.orders WHERE id <= 100000",
        f"ANALYZE TABLE {SOURCE}.customers, {SOURCE}.orders, {SOURCE}.page_views, {SMALL}.orders",
    )


def settle(url: str, timeout: float = 120) -> None:
    """Flush dirty pages and let purge catch up, so a run does not pay for the previous one."""
    conn = connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT @@innodb_max_dirty_pages_pct")
            before = cursor.fetchone()[0]
            cursor.execute("SET GLOBAL innodb_max_dirty_pages_pct = 0")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                cursor.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
                dirty = int(cursor.fetchone()[1])
                cursor.execute("SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'")
                row = cursor.fetchone()
                history = int(row[1]) if row else 0
                if dirty < 50 and history < 100:
                    break
                time.sleep(0.5)
            cursor.execute(f"SET GLOBAL innodb_max_dirty_pages_pct = {before}")
    finally:
        conn.close()
    time.sleep(1)


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    seconds: float
    cpu: dict[str, float]
    load: float


@dataclass
class Series:
    name: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    def describe(self) -> str:
        runs = ", ".join(f"{s.seconds:.1f}" for s in self.samples)
        cpu = {k: statistics.median(s.cpu[k] for s in self.samples) for k in self.samples[0].cpu}
        cpu_text = ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
        return f"{self.name:<44} median {self.median:6.1f} s  (runs: {runs}; server CPU s: {cpu_text})"


class Bench:
    def __init__(self, a: PrivateMariaDB, b: PrivateMariaDB, directory: Path) -> None:
        self.a, self.b, self.directory = a, b, directory
        self.config = Config(
            servers={"src": Server.from_url("src", a.url), "dst": Server.from_url("dst", b.url)},
            ledger_database=LEDGER,
        )

    def timed(
        self,
        series: Series,
        run: Callable[[], None],
        *,
        prepare: Callable[[], None],
        check: Callable[[], None] | None = None,
    ) -> None:
        prepare()
        settle(self.a.url)
        settle(self.b.url)
        cpu0 = {"source": cpu_seconds(self.a.pid), "target": cpu_seconds(self.b.pid)}
        started = time.monotonic()
        run()
        seconds = time.monotonic() - started
        cpu = {
            "source": cpu_seconds(self.a.pid) - cpu0["source"],
            "target": cpu_seconds(self.b.pid) - cpu0["target"],
        }
        series.samples.append(Sample(seconds, cpu, os.getloadavg()[0]))
        print(f"  {series.name}: {seconds:.1f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
        if check is not None:
            check()

    # -- the copies ---------------------------------------------------------------------------

    def manifest(self, name: str, source: str, target: str, target_server: str, **spec: Any) -> Path:
        document = {
            "apiVersion": "moenv/v1",
            "kind": "Environment",
            "metadata": {"name": name},
            "spec": {
                "source": {"server": "src", "database": source},
                "target": {"server": target_server, "database": target},
                **spec,
            },
        }
        path = self.directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
        return path

    def moenv(self, path: Path, *, parallel: int) -> None:
        result = api.apply(api.plan([path], config=self.config), config=self.config, parallel=parallel)
        if not result.ok:
            raise SystemExit(f"moenv apply failed: {result.failed}")

    def raw_same_server(self, target: str) -> None:
        """The fastest plain-SQL copy inside one server (SPEC §5): DDL from SHOW CREATE TABLE, one
        INSERT … SELECT transaction per table, checks off, non-locking reads (READ COMMITTED)."""
        conn = connect(self.a.url)
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {target} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
                cursor.execute(f"USE {target}")
                cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                cursor.execute("SET SESSION foreign_key_checks = 0, unique_checks = 0")
                cursor.execute(
                    "SELECT TABLE_NAME FROM information_schema.TABLES"
                    " WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'",
                    (SOURCE,),
                )
                tables = [str(t) for (t,) in cursor.fetchall()]
                for table in tables:
                    cursor.execute(f"SHOW CREATE TABLE {SOURCE}.`{table}`")
                    cursor.execute(cursor.fetchone()[1])
                for table in tables:
                    cursor.execute("START TRANSACTION")
                    cursor.execute(f"INSERT INTO {target}.`{table}` SELECT * FROM {SOURCE}.`{table}`")
                    cursor.execute("COMMIT")
        finally:
            conn.close()

    def mysqldump(self, target: str) -> None:
        a, b = Server.from_url("a", self.a.url), Server.from_url("b", self.b.url)
        execute(self.b.url, f"CREATE DATABASE {target} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        dump = subprocess.Popen(
            ["mysqldump", "-h", a.host, "-P", str(a.port), "-u", a.user, "--single-transaction", SOURCE],
            stdout=subprocess.PIPE,
        )
        load = subprocess.run(
            ["mysql", "-h", b.host, "-P", str(b.port), "-u", b.user, target], stdin=dump.stdout, check=False
        )
        assert dump.stdout is not None
        dump.stdout.close()
        if dump.wait() != 0 or load.returncode != 0:
            raise SystemExit("mysqldump | mysql failed")

    # -- cleanup between runs -----------------------------------------------------------------

    def drop(self, url: str, *databases: str) -> None:
        execute(url, "SET SESSION foreign_key_checks = 0", *(f"DROP DATABASE IF EXISTS {d}" for d in databases))

    def forget(self) -> None:
        for url in (self.a.url, self.b.url):
            self.drop(url, LEDGER, "bench_same", "bench_raw", "bench_cross", "bench_dump", "bench_rss")

    def counts(self, url: str, database: str) -> dict[str, int]:
        tables = ("customers", "orders", "page_views")
        return {t: int(execute(url, f"SELECT COUNT(*) FROM {database}.{t}")[0][0]) for t in tables}

    def checksum(self, url: str, database: str, table: str) -> int:
        return int(execute(url, f"CHECKSUM TABLE {database}.{table}")[0][1])


def copy_rss_kib(bench: Bench, path: Path) -> tuple[int, int]:
    """(RSS before, peak RSS during) `moenv apply` of one manifest in a fresh Python process,
    sampled every 10 ms from /proc (the process's ru_maxrss is set by imports and planning)."""
    program = textwrap.dedent(
        f"""
        import sys, threading, time
        sys.path[:0] = [{str(ROOT / "src")!r}, {str(ROOT)!r}]
        from pathlib import Path
        from moenv import api
        from moenv.models.config import Config, Server

        def rss():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
            return 0

        config = Config(servers={{"src": Server.from_url("src", {bench.a.url!r}),
                                  "dst": Server.from_url("dst", {bench.b.url!r})}}, ledger_database={LEDGER!r})
        plan = api.plan([Path({str(path)!r})], config=config)
        before = peak = rss()
        done = threading.Event()

        def sample():
            global peak
            while not done.wait(0.01):
                peak = max(peak, rss())

        sampler = threading.Thread(target=sample)
        sampler.start()
        ok = api.apply(plan, config=config).ok
        done.set()
        sampler.join()
        print(before, peak)
        sys.exit(0 if ok else 1)
        """
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"the RSS run of {path.name} failed: {result.stderr[-2000:]}")
    before, peak = (int(v) for v in result.stdout.split())
    return before, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the largest table (orders)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each method")
    parser.add_argument("--parallel", type=int, default=2, help="moenv apply --parallel for the cross-server copy")
    parser.add_argument("--transports", action="store_true", help="also time multi-row INSERT and --parallel 1")
    parser.add_argument("--json", type=Path, help="write the samples here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="moenv-bench-") as tmp:
        directory = Path(tmp)
        a = PrivateMariaDB.start(directory / "a")
        b = PrivateMariaDB.start(directory / "b")
        try:
            run(Bench(a, b, directory), args)
        finally:
            a.stop()
            b.stop()


def run(bench: Bench, args: argparse.Namespace) -> None:
    started = time.monotonic()
    print(f"building the source: orders {args.rows:,} rows, customers 100,000, page_views 200,000 …", flush=True)
    build_source(bench.a.url, args.rows)
    print(f"  built in {time.monotonic() - started:.0f} s", flush=True)
    expected = bench.counts(bench.a.url, SOURCE)
    a_url, b_url = bench.a.url, bench.b.url

    same = bench.manifest("bench-same", SOURCE, "bench_same", "src")
    loose = bench.manifest("bench-loose", SOURCE, "bench_same", "src", integrity="loose")
    cross = bench.manifest("bench-cross", SOURCE, "bench_cross", "dst")
    series = {
        name: Series(name)
        for name in (
            "same-server: raw SQL (INSERT … SELECT)",
            "same-server: moenv apply",
            "same-server: moenv apply, integrity: loose",
            "cross-server: mysqldump | mysql",
            f"cross-server: moenv apply --parallel {args.parallel}",
        )
    }
    names = list(series)
    original = bench.checksum(a_url, SOURCE, "customers")

    def complete(url: str, database: str) -> Callable[[], None]:
        def check() -> None:
            if bench.counts(url, database) != expected:
                raise SystemExit(f"{database}: the copy is incomplete")
            exact = bench.checksum(url, database, "customers") == original
            print(f"    {database}: row counts equal; customers (with a FLOAT column) bit-exact: {exact}")

        return check

    for rep in range(args.repeat):
        print(f"round {rep + 1} of {args.repeat}", flush=True)
        first = rep == 0
        bench.timed(
            series[names[0]],
            lambda: bench.raw_same_server("bench_raw"),
            prepare=bench.forget,
            check=complete(a_url, "bench_raw") if first else None,
        )
        bench.timed(
            series[names[1]],
            lambda: bench.moenv(same, parallel=1),
            prepare=bench.forget,
            check=complete(a_url, "bench_same") if first else None,
        )
        bench.timed(series[names[2]], lambda: bench.moenv(loose, parallel=1), prepare=bench.forget)
        bench.timed(
            series[names[3]],
            lambda: bench.mysqldump("bench_dump"),
            prepare=bench.forget,
            check=complete(b_url, "bench_dump") if first else None,
        )
        bench.timed(
            series[names[4]],
            lambda: bench.moenv(cross, parallel=args.parallel),
            prepare=bench.forget,
            check=complete(b_url, "bench_cross") if first else None,
        )

    extra: dict[str, Series] = {}
    if args.transports:
        old = stream.DEFAULT_TRANSPORT
        extra = {n: Series(n) for n in ("cross-server: moenv --parallel 1", "cross-server: moenv, multi-row INSERT")}
        for rep in range(args.repeat):
            print(f"transports, round {rep + 1} of {args.repeat}", flush=True)
            bench.timed(
                extra["cross-server: moenv --parallel 1"], lambda: bench.moenv(cross, parallel=1), prepare=bench.forget
            )
            stream.DEFAULT_TRANSPORT = "insert"
            try:
                bench.timed(
                    extra["cross-server: moenv, multi-row INSERT"],
                    lambda: bench.moenv(cross, parallel=args.parallel),
                    prepare=bench.forget,
                )
            finally:
                stream.DEFAULT_TRANSPORT = old

    print("peak client RSS …", flush=True)
    rss: dict[str, int] = {}
    for label, source in (("1M", SOURCE), ("100k", SMALL)):
        bench.forget()
        path = bench.manifest(f"bench-rss-{label.lower()}", source, "bench_rss", "dst", tables={"include": ["orders"]})
        rss[f"{label} before"], rss[label] = copy_rss_kib(bench, path)
    bench.forget()

    same_ratio = series[names[0]].median / series[names[1]].median
    loose_ratio = series[names[0]].median / series[names[2]].median
    cross_ratio = series[names[3]].median / series[names[4]].median
    rss_ratio = rss["1M"] / rss["100k"]
    print()
    print(
        f"rows: orders {expected['orders']:,}, customers {expected['customers']:,},"
        f" page_views {expected['page_views']:,}"
    )
    for item in [*series.values(), *extra.values()]:
        print(item.describe())
    for label in ("1M", "100k"):
        grown = (rss[label] - rss[f"{label} before"]) / 1024
        print(
            f"client RSS copying {label} rows: peak {rss[label] / 1024:.1f} MiB"
            f" ({grown:+.1f} MiB over the process before the copy)"
        )
    print()
    print(f"same-server  moenv vs raw SQL          {same_ratio:5.2f}x  (target >= 0.9)")
    print(f"  (integrity: loose, no parent filters: {loose_ratio:5.2f}x)")
    print(f"cross-server moenv vs mysqldump|mysql  {cross_ratio:5.2f}x  (target >= 2.0)")
    print(f"client RSS   1 M rows vs 100 k rows    {rss_ratio:5.2f}   (target <= 1.2)")
    print(
        f"this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB peak; "
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {time.monotonic() - started:.0f} s"
    )
    if args.json:
        data = {
            "series": {k: [s.__dict__ for s in v.samples] for k, v in {**series, **extra}.items()},
            "rss_kib": rss,
            "ratios": {
                "same_server": same_ratio,
                "same_server_loose": loose_ratio,
                "cross_server": cross_ratio,
                "rss": rss_ratio,
            },
        }
        args.json.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
