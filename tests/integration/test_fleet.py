"""Fleet scale: selectors (--only, -l), quotas from moenv.yaml, and round trips of plan and a converged apply.

Every test works in its sandbox (unique database prefix and ledger) on the session's server;
environment names carry the sandbox token, so locks and staging databases never collide.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.integration.helpers import World, q
from tests.support.mariadb import Sandbox, free_port, open_sandbox

from moenv import api
from moenv.cli.main import main as cli_main
from moenv.errors import ConflictError, DatabaseError
from moenv.executor.apply import check_fresh
from moenv.live.connection import statement_count
from moenv.manifest.config import load_config
from moenv.models.config import Config, Quotas, Server, ServerQuota
from moenv.models.plan import Action, Create, Plan, PlanOptions, Selector, Step

CUSTOMERS = 40
ORDERS = 120
NOTES = 15
ROWS_PER_ENVIRONMENT = CUSTOMERS + ORDERS + NOTES


def build_source(world: World, database: str) -> None:
    """customers ← orders (FK), notes: a few rows each, statistics exact (ANALYZE)."""
    d = q(database)
    statements = [
        f"CREATE DATABASE {d}",
        f"CREATE TABLE {d}.customers (id INT PRIMARY KEY, email VARCHAR(64) NOT NULL) ENGINE=InnoDB",
        f"""CREATE TABLE {d}.orders (id INT PRIMARY KEY, customer_id INT NOT NULL, amount DECIMAL(8,2),
            CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id)) ENGINE=InnoDB""",
        f"CREATE TABLE {d}.notes (id INT PRIMARY KEY, body VARCHAR(64)) ENGINE=InnoDB",
        f"INSERT INTO {d}.customers SELECT seq, CONCAT('c', seq, '@example.com') FROM {d}.seq_1_to_{CUSTOMERS}",
        f"INSERT INTO {d}.orders SELECT seq, 1 + seq % {CUSTOMERS}, seq * 1.5 FROM {d}.seq_1_to_{ORDERS}",
        f"INSERT INTO {d}.notes SELECT seq, CONCAT('note ', seq) FROM {d}.seq_1_to_{NOTES}",
        f"ANALYZE TABLE {d}.customers, {d}.orders, {d}.notes",
    ]
    for statement in statements:
        world.run(statement)


@dataclass
class Fleet:
    """A world with one small source and manifests of environments `<token>-<short>` → `<prefix><short>`."""

    world: World
    directory: Path

    @property
    def config(self) -> Config:
        return self.world.config

    def name(self, short: str) -> str:
        return self.world.env(short)

    def target(self, short: str) -> str:
        return self.world.prefix + short.replace("-", "_")

    def manifest(self, short: str, labels: dict[str, str] | None = None, **spec: Any) -> Path:
        return self.world.manifest(
            short,
            target=self.target(short),
            metadata={"labels": labels} if labels else None,
            **spec,
        )

    def plan(self, config: Config | None = None, paths: list[Path] | None = None, **options: Any) -> Plan:
        only = frozenset(self.name(s) for s in options.pop("only", ()))
        labels = tuple(options.pop("labels", {}).items())
        opts = PlanOptions(selector=Selector(only=only, labels=labels), **options)
        return api.plan(paths or [self.directory], config=config or self.config, options=opts)

    def apply(self, plan: Plan, config: Config | None = None) -> None:
        result = api.apply(plan, config=config or self.config)
        assert result.ok, result.failed

    def ledger(self) -> set[str]:
        return {r.name for r in api.status(self.config).records}

    def exists(self, short: str) -> bool:
        return self.world.exists(self.target(short))

    def tables(self, short: str) -> list[str]:
        return self.world.base_tables(self.target(short))


@pytest.fixture
def fleet(sandbox: Sandbox, tmp_path: Path) -> Iterator[Fleet]:
    directory = tmp_path / "environments"
    directory.mkdir()
    with World.open(sandbox, directory) as world:
        build_source(world, world.source)
        yield Fleet(world, directory)


def ops(plan: Plan) -> set[tuple[str, str]]:
    return {(a.op, a.environment) for a in plan.actions}


def three_teams(fleet: Fleet) -> None:
    fleet.manifest("a1", {"team": "a", "tier": "dev"})
    fleet.manifest("a2", {"team": "a", "tier": "ci"})
    fleet.manifest("b1", {"team": "b", "tier": "dev"})


# --- selectors ----------------------------------------------------------------------------


def test_only_limits_plan_and_apply_to_the_named_environments(fleet: Fleet) -> None:
    three_teams(fleet)
    a1, a2, b1 = fleet.name("a1"), fleet.name("a2"), fleet.name("b1")

    plan = fleet.plan(only=["a1"])
    assert ops(plan) == {("create", a1)}
    assert a2 not in plan.unchanged and b1 not in plan.unchanged
    fleet.apply(plan)
    assert fleet.exists("a1") and not fleet.exists("a2") and not fleet.exists("b1")
    assert fleet.ledger() == {a1}

    fleet.apply(fleet.plan())
    assert fleet.ledger() == {a1, a2, b1}

    # drift in every clone; only the selected one is repaired
    for short in ("a1", "a2", "b1"):
        fleet.world.execute(f"DROP TABLE {q(fleet.target(short))}.notes")
    plan = fleet.plan(only=["b1", "a2"])
    assert ops(plan) == {("rebuild", b1), ("rebuild", a2)}
    fleet.apply(fleet.plan(only=["b1"]))
    assert "notes" in fleet.tables("b1")
    assert "notes" not in fleet.tables("a1") and "notes" not in fleet.tables("a2")


def test_an_environment_left_out_by_the_selector_is_never_pruned(fleet: Fleet) -> None:
    three_teams(fleet)
    a1, a2, b1 = fleet.name("a1"), fleet.name("a2"), fleet.name("b1")
    fleet.apply(fleet.plan())

    # loaded but not selected: untouched by --prune
    plan = fleet.plan(prune=True, only=["b1"])
    assert ops(plan) == set()
    assert plan.unchanged == (b1,)

    # in the ledger and in no manifest, but outside the selector: not pruned either
    (fleet.directory / "a2.yaml").unlink()
    assert ops(fleet.plan(prune=True, only=["b1"])) == set()
    assert ops(fleet.plan(prune=True, labels={"team": "b"})) == set()
    assert ops(fleet.plan(prune=True, only=["a1"])) == set()
    fleet.apply(fleet.plan(prune=True, only=["a1", "b1"]))
    assert fleet.exists("a2") and fleet.ledger() == {a1, a2, b1}

    # without a selector it is pruned (so the checks above were not vacuous)
    plan = fleet.plan(prune=True)
    assert ops(plan) == {("delete", a2)}
    fleet.apply(plan)
    assert not fleet.exists("a2") and fleet.ledger() == {a1, b1}


def test_label_selector_picks_environments_by_label(fleet: Fleet) -> None:
    three_teams(fleet)
    a1, a2, b1 = fleet.name("a1"), fleet.name("a2"), fleet.name("b1")
    assert ops(fleet.plan(labels={"team": "a"})) == {("create", a1), ("create", a2)}
    assert ops(fleet.plan(labels={"team": "a", "tier": "dev"})) == {("create", a1)}
    assert ops(fleet.plan(labels={"team": "c"})) == set()
    assert ops(fleet.plan(labels={"team": "b"}, only=["a1"])) == set()  # both must match

    fleet.apply(fleet.plan(labels={"team": "a"}))
    assert fleet.ledger() == {a1, a2}
    assert fleet.exists("a1") and fleet.exists("a2") and not fleet.exists("b1")
    assert ops(fleet.plan()) == {("create", b1)}


def _write_config(fleet: Fleet, path: Path, quotas: dict[str, Any] | None = None) -> Path:
    document: dict[str, Any] = {
        "servers": {"default": {"url": fleet.world.sandbox.url}},
        "ledger": fleet.world.sandbox.ledger,
    }
    if quotas is not None:
        document["quotas"] = quotas
    path.write_text(json.dumps(document), encoding="utf-8")  # JSON is YAML
    return path


@pytest.fixture
def cli_config(fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A moenv.yaml for the fleet's server and ledger, and no MOENV_* variable to override it."""
    for name in ("MOENV_URL", "MOENV_LEDGER", "MOENV_SALT"):
        monkeypatch.delenv(name, raising=False)
    return str(_write_config(fleet, tmp_path / "moenv.yaml"))


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        cli_main(args)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_selectors_on_the_command_line(fleet: Fleet, cli_config: str, capsys: pytest.CaptureFixture[str]) -> None:
    three_teams(fleet)
    a1, a2, b1 = fleet.name("a1"), fleet.name("a2"), fleet.name("b1")
    config = cli_config
    manifests = str(fleet.directory)

    code, out, _ = _cli(["--config", config, "plan", manifests, "-l", "team=a", "--json"], capsys)
    assert code == 0
    assert {a["environment"] for a in json.loads(out)["actions"]} == {a1, a2}

    code, out, _ = _cli(["--config", config, "plan", manifests, "--only", b1, "--detailed-exitcode"], capsys)
    assert code == 2 and b1 in out and a1 not in out

    code, _, err = _cli(["--config", config, "apply", manifests, "--only", a2, "--yes"], capsys)
    assert code == 0, err
    assert fleet.ledger() == {a2}

    code, _, err = _cli(["--config", config, "plan", manifests, "-l", "team"], capsys)
    assert code == 1 and "KEY=VALUE" in err

    # an unknown name is an error (1), never "changes pending" (2)
    code, _, err = _cli(["--config", config, "plan", manifests, "--only", "no-such-env", "--detailed-exitcode"], capsys)
    assert code == 1 and "no-such-env" in err


def test_unknown_name_in_only_is_an_error(fleet: Fleet) -> None:
    three_teams(fleet)
    with pytest.raises(ConflictError, match="no-such-env"):
        api.plan(
            [fleet.directory],
            config=fleet.config,
            options=PlanOptions(selector=Selector(only=frozenset({"no-such-env", fleet.name("a1")}))),
        )


def test_unknown_name_in_only_is_an_error_with_prune_too(fleet: Fleet) -> None:
    """`--prune --only typo`: a name in no manifest and in no ledger must not silently select nothing."""
    three_teams(fleet)
    fleet.apply(fleet.plan())
    with pytest.raises(ConflictError, match="no-such-env"):
        api.plan(
            [fleet.directory],
            config=fleet.config,
            options=PlanOptions(prune=True, selector=Selector(only=frozenset({"no-such-env"}))),
        )


def test_prune_with_a_label_prunes_only_that_labels_orphans(fleet: Fleet) -> None:
    three_teams(fleet)
    fleet.manifest("b2", {"team": "b"})
    a1, a2, b1, b2 = (fleet.name(s) for s in ("a1", "a2", "b1", "b2"))
    fleet.apply(fleet.plan())
    for short in ("a1", "b1"):  # a1 (team=a) and b1 (team=b) leave the manifests
        (fleet.directory / f"{short}.yaml").unlink()
    fleet.manifest("a3", {"team": "a"})
    a3 = fleet.name("a3")

    plan = fleet.plan(prune=True, labels={"team": "a"})
    assert ops(plan) == {("delete", a1), ("create", a3)}
    fleet.apply(plan)
    assert not fleet.exists("a1") and fleet.exists("b1")
    assert fleet.ledger() == {a2, a3, b1, b2}
    assert ops(fleet.plan(prune=True)) == {("delete", b1)}


# --- quotas -------------------------------------------------------------------------------


def test_quota_on_environments_per_label_refuses_the_plan(fleet: Fleet, tmp_path: Path) -> None:
    fleet.manifest("a1", {"team": "a"})
    fleet.manifest("a2", {"team": "a"})
    fleet.manifest("b1", {"team": "b"})
    config = load_config(_write_config(fleet, tmp_path / "moenv.yaml", {"max_environments": {"team": 2}}), env={})
    assert config.quotas.max_environments == {"team": 2}
    fleet.apply(fleet.plan(config))  # two of team a: within the quota

    fleet.manifest("a3", {"team": "a"})
    with pytest.raises(ConflictError, match="3 environments labelled team=a, quota 2") as refused:
        fleet.plan(config)
    assert "team=b" not in refused.value.message
    # the environments already in the ledger count, whatever the selector
    with pytest.raises(ConflictError, match="3 environments labelled team=a, quota 2"):
        fleet.plan(config, only=["a3"])
    assert fleet.ledger() == {fleet.name(s) for s in ("a1", "a2", "b1")}
    assert not fleet.exists("a3")

    # another label value has its own count; a label the quota does not name is not limited
    fleet.manifest("b2", {"team": "b"})
    fleet.manifest("x1", {"purpose": "ci"})
    fleet.manifest("x2", {"purpose": "ci"})
    fleet.manifest("x3", {"purpose": "ci"})
    plan = fleet.plan(config, labels={"purpose": "ci"})
    assert len(plan.actions) == 3
    assert ops(fleet.plan(config, only=["b2"])) == {("create", fleet.name("b2"))}


def test_quota_on_server_rows_refuses_with_the_figures(fleet: Fleet, tmp_path: Path) -> None:
    fleet.manifest("r1")
    fleet.manifest("r2")
    unlimited = fleet.plan()
    creates = [a for a in unlimited.actions if isinstance(a, Create)]
    assert len(creates) == 2
    total = sum(t.estimated_rows or 0 for a in creates for t in a.desired.tables)
    size = sum(t.estimated_bytes or 0 for a in creates for t in a.desired.tables)
    assert total == 2 * ROWS_PER_ENVIRONMENT  # exact statistics after ANALYZE of small tables
    assert size > 0

    quotas = {"servers": {"default": {"max_rows": total - 1}}}
    config = load_config(_write_config(fleet, tmp_path / "moenv.yaml", quotas), env={})
    assert config.quotas.servers == {"default": ServerQuota(max_rows=total - 1)}
    with pytest.raises(ConflictError) as refused:
        fleet.plan(config)
    assert f"~{total:,} rows on server default, quota {total - 1:,}" in refused.value.message

    tight_bytes = Config(
        servers=fleet.config.servers,
        ledger_database=fleet.config.ledger_database,
        quotas=Quotas(servers={"default": ServerQuota(max_bytes=size - 1)}),
    )
    with pytest.raises(ConflictError, match=f"~{size:,} bytes on server default, quota {size - 1:,}"):
        fleet.plan(tight_bytes)

    exact = load_config(
        _write_config(fleet, tmp_path / "moenv.yaml", {"servers": {"default": {"max_rows": total}}}), env={}
    )
    fleet.apply(fleet.plan(exact))
    assert fleet.exists("r1") and fleet.exists("r2")

    # what the ledger holds counts: one more environment goes over
    fleet.manifest("r3")
    with pytest.raises(
        ConflictError, match=f"~{total + ROWS_PER_ENVIRONMENT:,} rows on server default, quota {total:,}"
    ):
        fleet.plan(exact, only=["r3"])


def test_quotas_never_block_deletes(fleet: Fleet) -> None:
    for short in ("a1", "a2", "a3"):
        fleet.manifest(short, {"team": "a"})
    fleet.apply(fleet.plan())
    over = Config(
        servers=fleet.config.servers,
        ledger_database=fleet.config.ledger_database,
        quotas=Quotas(max_environments={"team": 1}, servers={"default": ServerQuota(max_rows=1, max_bytes=1)}),
    )
    # over every quota now; pruning one (the others unchanged) is still allowed
    (fleet.directory / "a3.yaml").unlink()
    plan = fleet.plan(over, prune=True)
    assert ops(plan) == {("delete", fleet.name("a3"))}
    fleet.apply(plan, over)
    assert not fleet.exists("a3")

    # so is `moenv destroy`
    destroy = api.destroy_plan(over, fleet.name("a2"))
    fleet.apply(destroy, over)
    assert not fleet.exists("a2")
    assert fleet.ledger() == {fleet.name("a1")}


# --- round trips --------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundTrips:
    sandbox: Sandbox
    config: Config
    manifests: dict[tuple[str, str], list[Path]]  # (kind, source) → 12 manifests


def _chain_source(database: str, tables: int) -> list[str]:
    """`tables` tables t00.. in FK chains of five (t01 → t00, t02 → t01, ...), three rows each."""
    d = q(database)
    statements = [f"CREATE DATABASE {d}"]
    for i in range(tables):
        parent = f", parent_id INT, FOREIGN KEY (parent_id) REFERENCES t{i - 1:02d} (id)" if i % 5 else ""
        statements.append(f"CREATE TABLE {d}.t{i:02d} (id INT PRIMARY KEY, name VARCHAR(20){parent}) ENGINE=InnoDB")
        values = "(1, 'a', 1), (2, 'b', 2), (3, 'c', 3)" if i % 5 else "(1, 'a'), (2, 'b'), (3, 'c')"
        statements.append(f"INSERT INTO {d}.t{i:02d} VALUES {values}")
    return statements


_KINDS = {
    "schema": "  data: schema\n",
    "full": "  data: full\n",
    "filtered": '  data: full\n  rules:\n    t00: {where: "id < 3"}\n',
}


@pytest.fixture(scope="module")
def round_trips(mariadb_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoundTrips]:
    sandbox = open_sandbox(mariadb_url)
    directory = tmp_path_factory.mktemp("round-trips")
    try:
        sources = {"t5": 5, "t40": 40}
        conn = sandbox.connect()
        try:
            with conn.cursor() as cursor:
                for label, tables in sources.items():
                    for statement in _chain_source(sandbox.prefix + label, tables):
                        cursor.execute(statement)
        finally:
            conn.close()
        manifests: dict[tuple[str, str], list[Path]] = {}
        for kind, body in _KINDS.items():
            for label in sources:
                paths = []
                for i in range(12):
                    path = directory / f"{kind}-{label}-{i:02d}.yaml"
                    path.write_text(
                        "apiVersion: moenv/v1\nkind: Environment\n"
                        f"metadata: {{name: {sandbox.token}-{kind}-{label}-{i:02d}}}\n"
                        "spec:\n"
                        f"  source: {{database: {sandbox.prefix}{label}}}\n"
                        f"  target: {{database: {sandbox.prefix}{kind}_{label}_{i:02d}}}\n" + body,
                        encoding="utf-8",
                    )
                    paths.append(path)
                manifests[(kind, label)] = paths
        config = Config(servers={"default": Server.from_url("default", mariadb_url)}, ledger_database=sandbox.ledger)
        yield RoundTrips(sandbox, config, manifests)
    finally:
        sandbox.drop_all()


def _plan_statements(paths: list[Path], config: Config) -> tuple[int, Plan]:
    before = statement_count()
    plan = api.plan(paths, config=config)
    return statement_count() - before, plan


@pytest.mark.parametrize("kind", list(_KINDS))
def test_plan_round_trips_do_not_grow_with_environments_or_tables(round_trips: RoundTrips, kind: str) -> None:
    counts: dict[tuple[str, int], int] = {}
    for label in ("t5", "t40"):
        for n in (2, 12):
            counts[(label, n)], plan = _plan_statements(round_trips.manifests[(kind, label)][:n], round_trips.config)
            assert len(plan.actions) == n and {a.op for a in plan.actions} == {"create"}
    assert len(set(counts.values())) == 1, f"statements sent by plan (source, environments) → count: {counts}"


def test_a_converged_apply_sends_no_statement(fleet: Fleet) -> None:
    shorts = [f"c{i:02d}" for i in range(6)]
    for short in shorts:
        fleet.manifest(short, data="schema")
    paths = sorted(fleet.directory.glob("*.yaml"))
    fleet.apply(fleet.plan())

    before = statement_count()
    two = api.plan(paths[:2], config=fleet.config)
    cost_two = statement_count() - before
    before = statement_count()
    converged = api.plan(paths, config=fleet.config)
    cost_six = statement_count() - before
    assert not converged.has_changes and len(converged.unchanged) == 6 and not two.has_changes
    assert cost_two == cost_six, (cost_two, cost_six)

    before = statement_count()
    check_fresh(converged, fleet.config)
    revision_check = statement_count() - before
    assert revision_check <= 3  # a read-only session and the ledger read: no write

    before = statement_count()
    result = api.apply(converged, config=fleet.config)
    assert result.ok and result.results == []
    assert statement_count() - before <= revision_check  # the stale-plan check, nothing else
    before = statement_count()
    api.apply(converged, config=fleet.config, check_revisions=False)
    assert statement_count() == before


# --- environments applied at once (--jobs) --------------------------------------------------------


class ConcurrencyReporter:
    """Counts how many environments are between action_started and action_finished at any one time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: set[str] = set()
        self.most = 0
        self.threads: set[str] = set()
        self.finished: list[tuple[str, str | None]] = []

    def action_started(self, action: Action) -> None:
        assert self.lock.acquire(blocking=False), "reports must reach the reporter one at a time"
        try:
            self.active.add(action.environment)
            self.most = max(self.most, len(self.active))
            self.threads.add(threading.current_thread().name)
            time.sleep(0.05)  # hold the reporter: a second concurrent call would find it locked
        finally:
            self.lock.release()

    def step_started(self, action: Action, step: Step) -> None:
        assert self.lock.acquire(blocking=False), "reports must reach the reporter one at a time"
        self.lock.release()

    def rows_copied(self, action: Action, rows: int) -> None:
        assert self.lock.acquire(blocking=False), "reports must reach the reporter one at a time"
        self.lock.release()

    def step_finished(self, action: Action, step: Step, *, rows: int | None, seconds: float) -> None:
        assert self.lock.acquire(blocking=False), "reports must reach the reporter one at a time"
        self.lock.release()

    def action_finished(self, action: Action, *, error: str | None, seconds: float) -> None:
        with self.lock:
            self.active.discard(action.environment)
            self.finished.append((action.environment, error))


def test_jobs_apply_environments_at_once_and_each_one_is_whole(fleet: Fleet) -> None:
    shorts = [f"j{i}" for i in range(6)]
    for short in shorts:
        fleet.manifest(short, rules={"customers": {"where": "id <= 30"}})
    plan = fleet.plan()
    assert [a.op for a in plan.actions] == ["create"] * 6
    reporter = ConcurrencyReporter()

    result = api.apply(plan, config=fleet.config, reporter=reporter, jobs=3)

    assert result.ok, result.failed
    assert [r.environment for r in result.results] == [a.environment for a in plan.actions]  # the plan's order
    assert reporter.most >= 2, "no two environments were ever applied at the same time"
    assert len(reporter.threads) >= 2
    for short in shorts:
        target = fleet.target(short)
        assert fleet.world.row_counts(target) == {"customers": 30, "orders": 90, "notes": NOTES}
        [(orphans,)] = fleet.world.query(
            f"SELECT COUNT(*) FROM {q(target)}.orders o LEFT JOIN {q(target)}.customers c ON c.id = o.customer_id"
            " WHERE c.id IS NULL"
        )
        assert orphans == 0
    assert fleet.ledger() == {fleet.name(s) for s in shorts}
    assert all(fleet.world.events(fleet.name(s)) == [("create", "started"), ("create", "succeeded")] for s in shorts)
    assert fleet.world.work_databases() == []
    assert not fleet.plan().has_changes  # the reconciler invariant holds after a concurrent apply


def test_jobs_keep_a_failing_environment_from_stopping_the_others(fleet: Fleet) -> None:
    for short in ("ok1", "bad", "ok2", "ok3"):
        fleet.manifest(short)
    plan = fleet.plan()
    fleet.world.execute(f"CREATE DATABASE {q(fleet.target('bad'))}")  # made by hand after the plan

    result = api.apply(plan, config=fleet.config, jobs=4)

    assert {r.environment: r.ok for r in result.results} == {
        fleet.name("ok1"): True,
        fleet.name("bad"): False,
        fleet.name("ok2"): True,
        fleet.name("ok3"): True,
    }
    [failure] = result.failed
    assert "not managed by moenv" in (failure.error or "")
    assert fleet.tables("bad") == []  # never touched
    assert all(fleet.exists(s) for s in ("ok1", "ok2", "ok3"))


def test_jobs_on_the_command_line_tag_every_step_line(
    fleet: Fleet, cli_config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for short in ("t1", "t2"):
        fleet.manifest(short)
    config = cli_config

    code, _, err = _cli(["--config", config, "apply", str(fleet.directory), "--yes", "-j", "2"], capsys)

    assert code == 0, err
    copied = [line for line in err.splitlines() if "copied" in line]
    tags = tuple(f"  [{fleet.name(s)}] copied " for s in ("t1", "t2"))
    assert copied and all(line.startswith(tags) for line in copied), err
    assert fleet.exists("t1") and fleet.exists("t2")


# --- --keep-going: one environment in error does not hold the fleet back -------------------------


def test_keep_going_plans_and_applies_the_others_and_reports_the_one_in_error(fleet: Fleet) -> None:
    for short in ("k1", "taken", "k2"):
        fleet.manifest(short)
    fleet.world.execute(f"CREATE DATABASE {q(fleet.target('taken'))}")
    fleet.world.execute(f"CREATE TABLE {q(fleet.target('taken'))}.mine (id INT PRIMARY KEY)")
    with pytest.raises(ConflictError, match="not managed by moenv"):
        fleet.plan()  # the default: the first error fails the whole plan

    plan = fleet.plan(keep_going=True)

    assert ops(plan) == {("create", fleet.name("k1")), ("create", fleet.name("k2"))}
    [error] = plan.errors
    assert (error.environment, error.op) == (fleet.name("taken"), "plan")
    assert "not managed by moenv" in error.reasons[0]
    assert any("--adopt" in r for r in error.reasons[1:])
    fleet.apply(plan)
    assert fleet.exists("k1") and fleet.exists("k2")
    assert fleet.tables("taken") == ["mine"]  # never touched
    assert fleet.ledger() == {fleet.name("k1"), fleet.name("k2")}


def test_keep_going_never_prunes_an_environment_in_error(fleet: Fleet) -> None:
    fleet.manifest("p1")
    fleet.manifest("p2")
    fleet.apply(fleet.plan())
    fleet.manifest("p2", rules={"customers": {"where": "no_such_column > 1"}})  # now it cannot be resolved
    fleet.manifest("p3")

    plan = fleet.plan(keep_going=True, prune=True)

    assert ops(plan) == {("create", fleet.name("p3"))}  # p2 is declared: in error, not pruned
    [error] = plan.errors
    assert error.environment == fleet.name("p2")
    assert "no_such_column" in error.reasons[0] and "p2.yaml:" in error.reasons[0]  # file:line kept
    fleet.apply(plan)
    assert fleet.exists("p2")
    assert fleet.ledger() == {fleet.name(s) for s in ("p1", "p2", "p3")}


def test_keep_going_holds_back_growth_over_a_quota_but_not_deletes(fleet: Fleet) -> None:
    for short in ("q1", "q2"):
        fleet.manifest(short, {"team": "q"})
    fleet.apply(fleet.plan())
    (fleet.directory / "q2.yaml").unlink()
    fleet.manifest("q3", {"team": "q"})
    fleet.manifest("q4", {"team": "q"})
    capped = Config(
        servers=fleet.config.servers,
        ledger_database=fleet.config.ledger_database,
        quotas=Quotas(max_environments={"team": 2}),
    )
    with pytest.raises(ConflictError, match="quotas"):
        fleet.plan(capped, prune=True)  # q1, q3, q4 would be three: the whole plan is refused

    plan = fleet.plan(capped, prune=True, keep_going=True)

    assert ops(plan) == {("delete", fleet.name("q2"))}
    assert {(e.environment, e.op) for e in plan.errors} == {(fleet.name("q3"), "create"), (fleet.name("q4"), "create")}
    assert all("3 environments labelled team=q, quota 2" in e.reasons[0] for e in plan.errors)
    fleet.apply(plan, capped)
    assert not fleet.exists("q2")
    assert fleet.ledger() == {fleet.name("q1")}


def test_keep_going_on_the_command_line_applies_the_rest_and_exits_1(
    fleet: Fleet, cli_config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for short in ("c1", "busy"):
        fleet.manifest(short)
    fleet.world.execute(f"CREATE DATABASE {q(fleet.target('busy'))}")
    config = cli_config
    manifests = str(fleet.directory)

    code, out, err = _cli(["--config", config, "plan", manifests, "--keep-going", "--detailed-exitcode"], capsys)
    assert code == 1, err
    assert f"✗ {fleet.name('busy')} could not be planned" in out and "1 in error" in out
    assert f"error: {fleet.name('busy')}: " in err and "not managed by moenv" in err

    code, out, err = _cli(["--config", config, "apply", manifests, "-k", "--yes"], capsys)
    assert code == 1, err
    assert "Applied 1 of 1 action(s)." in out
    assert fleet.exists("c1") and fleet.ledger() == {fleet.name("c1")}

    code, _, err = _cli(["--config", config, "drift", manifests, "-k"], capsys)
    assert code == 1 and "could not be planned" in err

    code, _, err = _cli(["--config", config, "apply", manifests, "--yes"], capsys)
    assert code == 1 and "not managed by moenv" in err  # without -k: the whole run stops, as before


def test_keep_going_plans_the_servers_that_answer_and_reports_the_environments_of_one_that_does_not(
    fleet: Fleet,
) -> None:
    down = Server.from_url("down", f"mysql://root@127.0.0.1:{free_port()}/")
    config = Config(
        servers={**fleet.config.servers, "down": down},
        ledger_database=fleet.config.ledger_database,
    )
    fleet.manifest("up")
    for short, spec in (
        ("to-down", {"source": {"database": fleet.world.source}, "target": {"server": "down", "database": "x_db"}}),
        ("from-down", {"source": {"server": "down", "database": "y_db"}, "target": {"database": fleet.target("f")}}),
    ):
        document = {"apiVersion": "moenv/v1", "kind": "Environment", "metadata": {"name": fleet.name(short)}}
        (fleet.directory / f"{short}.yaml").write_text(json.dumps({**document, "spec": spec}), encoding="utf-8")
    with pytest.raises(DatabaseError):
        fleet.plan(config)  # the default: the whole run stops

    plan = fleet.plan(config, keep_going=True)

    assert ops(plan) == {("create", fleet.name("up"))}
    errors = {e.environment: e.reasons for e in plan.errors}
    assert set(errors) == {fleet.name("to-down"), fleet.name("from-down")}
    assert "its target server down could not be read" in errors[fleet.name("to-down")][0]
    assert "its source server down could not be read" in errors[fleet.name("from-down")][0]
    assert set(plan.ledger_revisions) == {"default"}
    fleet.apply(plan, config)
    assert fleet.exists("up")

    # a label quota cannot be checked while a server's ledger is unknown: growth waits, with the reason
    counted = Config(
        servers=config.servers,
        ledger_database=config.ledger_database,
        quotas=Quotas(max_environments={"team": 5}),
    )
    fleet.manifest("more", {"team": "a"})
    held = fleet.plan(counted, keep_going=True)
    assert ops(held) == set()
    assert (
        "environments on down cannot be counted"
        in {e.environment: e for e in held.errors}[fleet.name("more")].reasons[0]
    )
