"""The recipes of recipes/, run for real against the demo database on a private MariaDB.

The GitHub Actions workflow's `moenv` commands run in the order of a pull request's life
(validate, plan, PR create, PR refresh, apply on merge, PR destroy); the Kubernetes CronJob's
and the cron lines' commands reconcile environments/; every manifest of environments/ converges.

The server is private to this module (the demo's database names — production_db, dev_db,
ci_schema_db, pr_42_db — and the default ledger `moenv` would collide on a shared server), and
every test starts from the freshly loaded demo: everything but production_db is dropped first.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml
from tests.support.mariadb import PrivateMariaDB, connect, find_binary

from moenv import api
from moenv.live.connection import statement_count
from moenv.models.config import Config, Server
from moenv.models.ledger import LedgerRecord
from moenv.models.plan import PlanOptions

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "recipes" / "github-actions" / "moenv.yml"
CRONJOB = REPO / "recipes" / "kubernetes" / "cronjob.yaml"
CRON = REPO / "recipes" / "cron.txt"
PR_MANIFEST = REPO / "recipes" / "pr-environment.yaml"
DEMO_SQL = REPO / "demo" / "production_db.sql"
ENVIRONMENT_FILES = sorted(p for p in (REPO / "environments").iterdir() if p.suffix in {".yaml", ".yml"})

PR = "42"
PR_ENV = f"pr-{PR}"
PR_DB = f"pr_{PR}_db"
SALT = "recipes-test-salt"
SOURCE = "production_db"
SYSTEM = {"mysql", "information_schema", "performance_schema", "sys"}


# --- the private demo server ---------------------------------------------------------------


@dataclass(frozen=True)
class Demo:
    server: PrivateMariaDB

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def config(self) -> Config:
        return Config(servers={"default": Server.from_url("default", self.url)}, salt=SALT)

    def query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        conn = connect(self.url)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, args)
                return [tuple(row) for row in cursor.fetchall()]
        finally:
            conn.close()

    def execute(self, sql: str) -> None:
        self.query(sql)

    def databases(self) -> set[str]:
        return {str(name) for (name,) in self.query("SHOW DATABASES")}

    def exists(self, database: str) -> bool:
        return database in self.databases()

    def reset(self) -> None:
        """Back to the freshly loaded demo: every database but production_db and the system ones dropped."""
        for name in self.databases() - SYSTEM - {SOURCE}:
            self.execute(f"DROP DATABASE `{name}`")


def _load_demo(url: str, port: int) -> None:
    """`mariadb -uroot -h127.0.0.1 < demo/production_db.sql`, as the file says; PyMySQL when there is no client."""
    try:
        client = find_binary(("mariadb", "mysql"))
    except RuntimeError:
        client = None
    if client is not None:
        with DEMO_SQL.open("rb") as sql:
            done = subprocess.run(
                [client, "--no-defaults", "-uroot", "-h127.0.0.1", f"-P{port}", "--protocol=TCP"],
                stdin=sql,
                capture_output=True,
                timeout=300,
                check=False,
            )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return
    conn = connect(url)
    conn.client_flag |= pymysql.constants.CLIENT.MULTI_STATEMENTS
    conn.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(DEMO_SQL.read_text(encoding="utf-8"))
            while cursor.nextset():
                pass
    finally:
        conn.close()


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    server = PrivateMariaDB.start(tmp_path_factory.mktemp("recipes-mariadb"))
    try:
        _load_demo(server.url, server.port)
        yield Demo(server)
    finally:
        server.stop()


@pytest.fixture
def demo(demo_server: Demo) -> Demo:
    demo_server.reset()
    return demo_server


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A checkout: environments/ and recipes/ as in the repository (and no moenv.yaml lying around)."""
    root = tmp_path / "checkout"
    root.mkdir()
    shutil.copytree(REPO / "environments", root / "environments")
    shutil.copytree(REPO / "recipes", root / "recipes")
    return root


# --- running commands ----------------------------------------------------------------------


def _base_env() -> dict[str, str]:
    """The process environment without any MOENV_* of the developer's shell; the working copy's moenv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOENV_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "200"
    return env


def moenv(args: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moenv", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _show(args: list[str], done: subprocess.CompletedProcess[str]) -> str:
    return f"moenv {shlex.join(args)} exited {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"


def run_ok(args: list[str], *, cwd: Path, env: dict[str, str], codes: tuple[int, ...] = (0,)) -> str:
    done = moenv(args, cwd=cwd, env=env)
    assert done.returncode in codes, _show(args, done)
    return done.stdout


_REDIRECT = re.compile(r"^\d*[<>]")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def moenv_invocations(script: str) -> list[tuple[dict[str, str], list[str]]]:
    """Every `moenv ...` (or `path/to/moenv ...`) in a shell script: its VAR=value prefixes and its arguments.

    Commands are split at `&&`, `||`, `;` and newlines; redirections end the arguments.
    """
    found: list[tuple[dict[str, str], list[str]]] = []
    for line in script.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for part in re.split(r"&&|\|\||;", line):
            try:
                tokens = shlex.split(part)
            except ValueError:
                continue
            assignments: dict[str, str] = {}
            for index, token in enumerate(tokens):
                if _ASSIGNMENT.match(token):
                    key, _, value = token.partition("=")
                    assignments[key] = value
                    continue
                if Path(token).name == "moenv":
                    args: list[str] = []
                    for arg in tokens[index + 1 :]:
                        if _REDIRECT.match(arg):
                            break
                        args.append(arg)
                    found.append((assignments, args))
                break
    return found


# --- the GitHub Actions workflow -----------------------------------------------------------


def _workflow() -> dict[Any, Any]:
    document = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _substitute(text: str, values: dict[str, str]) -> str:
    """`${{ expr }}` → values[expr]; every expression left must be known."""

    def one(match: re.Match[str]) -> str:
        expression = match.group(1).strip()
        assert expression in values, f"unexpected expression ${{{{ {expression} }}}} in {WORKFLOW}"
        return values[expression]

    return re.sub(r"\$\{\{(.*?)\}\}", one, text)


def _expressions(demo_url: str) -> dict[str, str]:
    return {
        "github.event.number": PR,
        "secrets.MOENV_URL": demo_url,
        "secrets.MOENV_SALT": SALT,
        "github.actor": "octocat",
    }


def workflow_env(demo_url: str) -> dict[str, str]:
    env = _base_env()
    for key, value in (_workflow().get("env") or {}).items():
        env[str(key)] = _substitute(str(value), _expressions(demo_url))
    return env


def job_commands(
    job: str, demo_url: str = "mysql://unused@127.0.0.1:1/"
) -> list[tuple[dict[str, Any], list[list[str]]]]:
    """(step, [moenv arguments...]) of every step of `job` whose run: holds moenv commands."""
    steps = []
    for step in _workflow()["jobs"][job]["steps"]:
        script = step.get("run")
        if not isinstance(script, str):
            continue
        commands = [args for _, args in moenv_invocations(_substitute(script, _expressions(demo_url)))]
        if commands:
            steps.append((step, commands))
    return steps


def pr_step(action: str) -> list[list[str]]:
    """The moenv commands the pr-environment job runs for a pull_request event of this action."""
    chosen = [commands for step, commands in job_commands("pr-environment") if f"'{action}'" in str(step.get("if"))]
    assert len(chosen) == 1, f"one step of the pr-environment job should run on {action!r}: {chosen}"
    return chosen[0]


def test_github_workflow_is_well_formed() -> None:
    document = _workflow()
    triggers: dict[str, Any] = document.get("on", document.get(True)) or {}  # PyYAML (YAML 1.1) reads `on` as True
    assert set(triggers["pull_request"]["types"]) >= {"opened", "synchronize", "reopened", "closed"}
    assert triggers["push"]["branches"] == ["main"]
    assert any(p.startswith("environments/") for p in triggers["push"]["paths"])
    assert document["env"]["MOENV_URL"] == "${{ secrets.MOENV_URL }}"
    assert document["env"]["MOENV_SALT"] == "${{ secrets.MOENV_SALT }}"
    jobs = document["jobs"]
    assert "closed" in jobs["plan"]["if"] and "pull_request" in jobs["plan"]["if"]
    assert "push" in jobs["apply"]["if"]

    plan_job = [args for _, commands in job_commands("plan") for args in commands]
    assert plan_job == [["validate", "environments/"], ["plan", "environments/", "--detailed-exitcode"]]
    # The plan step tolerates 2 (changes pending) and fails on 1: its script says so.
    plan_script = next(step["run"] for step, _ in job_commands("plan") if "plan" in step["run"])
    assert "set +e" in plan_script and '"$code" -eq 1' in plan_script
    assert [args for _, commands in job_commands("apply") for args in commands] == [["apply", "environments/", "--yes"]]

    manifest = ["recipes/pr-environment.yaml", "--var", f"pr={PR}"]
    assert pr_step("opened") == [["apply", *manifest, "--yes"]]
    assert pr_step("reopened") == pr_step("opened")
    assert pr_step("synchronize") == [["apply", *manifest, "--yes"], ["refresh", PR_ENV, "--yes"]]
    assert pr_step("closed") == [["destroy", PR_ENV, "--yes"]]


def _status(cwd: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """`moenv status --json`, by environment name."""
    document = json.loads(run_ok(["status", "--json"], cwd=cwd, env=env))
    return {record["name"]: record for record in document["environments"]}


def _records(demo: Demo) -> dict[str, LedgerRecord]:
    """The ledger, read in this process (cheaper than another `moenv status --json`)."""
    return {record.name: record for record in api.status(demo.config).records}


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _check_pr_database(demo: Demo) -> None:
    assert demo.exists(PR_DB), f"{PR_DB} was not created"
    [(users, distinct)] = demo.query(f"SELECT COUNT(*), COUNT(DISTINCT email) FROM `{PR_DB}`.users")
    assert users > 0 and distinct == users
    [(leaked,)] = demo.query(f"SELECT COUNT(*) FROM `{PR_DB}`.users t JOIN `{SOURCE}`.users s ON s.email = t.email")
    assert leaked == 0, f"{leaked} source e-mail addresses in {PR_DB}.users"
    [(same_name,)] = demo.query(
        f"SELECT COUNT(*) FROM `{PR_DB}`.users t JOIN `{SOURCE}`.users s ON s.id = t.id AND s.username = t.username"
    )
    assert same_name == 0
    columns = {
        str(c)
        for (c,) in demo.query(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'users'",
            (PR_DB,),
        )
    }
    assert "address" not in columns
    [(orphans,)] = demo.query(
        f"SELECT COUNT(*) FROM `{PR_DB}`.orders o LEFT JOIN `{PR_DB}`.users u ON u.id = o.user_id WHERE u.id IS NULL"
    )
    assert orphans == 0


def _without_leak_check(workspace: Path) -> None:
    """The PR manifest with `leak_check: false` on users (the workaround for the date_shift false positive)."""
    path = workspace / "recipes" / "pr-environment.yaml"
    text = path.read_text(encoding="utf-8")
    patched = text.replace('      where: "id % 20 = 1"\n', '      where: "id % 20 = 1"\n      leak_check: false\n')
    assert patched != text
    path.write_text(patched, encoding="utf-8")


def test_github_workflow_through_a_pull_requests_life(demo: Demo, workspace: Path) -> None:
    """validate, plan, PR opened (create), PR pushed (refresh), merged (apply), PR closed (destroy).

    Should the PR create of the shipped recipes/pr-environment.yaml fail, the failure is kept and
    reported at the end, and the flow goes on with `leak_check: false` on users, so the later
    steps are still checked.
    """
    failures: list[str] = []
    env = workflow_env(demo.url)
    assert env["MOENV_URL"] == demo.url and env["MOENV_SALT"] == SALT

    # pull request opened: the plan job
    [(_, validate), (_, plan)] = job_commands("plan", demo.url)
    run_ok(validate[0], cwd=workspace, env=env)
    planned = moenv(plan[0], cwd=workspace, env=env)
    assert planned.returncode in (0, 2), _show(plan[0], planned)

    # ... and the pr-environment job creates the PR's environment
    [create] = pr_step("opened")
    done = moenv(create, cwd=workspace, env=env)
    if done.returncode != 0:
        failures.append("the PR create step of the workflow failed: " + _show(create, done))
        _without_leak_check(workspace)
        run_ok(create, cwd=workspace, env=env)
    _check_pr_database(demo)
    record = _status(workspace, env)[PR_ENV]
    assert record["status"] == "ready"
    assert record["target_database"] == PR_DB
    created = _when(record["created_at"])
    assert record["expires_at"] is not None
    assert _when(record["expires_at"]) - created == timedelta(days=3)  # ttl: 3d

    # a push to the pull request: apply (nothing to do) then refresh
    for args in pr_step("synchronize"):
        run_ok(args, cwd=workspace, env=env)
    refreshed = _records(demo)[PR_ENV]
    assert refreshed.status == "ready"
    assert refreshed.refreshed_at is not None and refreshed.refreshed_at > created
    assert refreshed.expires_at == created + timedelta(days=3)  # a refresh does not extend the TTL
    _check_pr_database(demo)

    # merged: the push to main runs the apply job
    [(_, apply_commands)] = job_commands("apply", demo.url)
    run_ok(apply_commands[0], cwd=workspace, env=env)
    run_ok(plan[0], cwd=workspace, env=env, codes=(0,))  # the plan job's command now finds nothing to do
    assert demo.exists("dev_db") and demo.exists("ci_schema_db")

    # closed: the PR's environment goes
    for args in pr_step("closed"):
        run_ok(args, cwd=workspace, env=env)
    assert not demo.exists(PR_DB)
    assert PR_ENV not in _records(demo)
    assert not any(name.startswith("_moenv_") for name in demo.databases())
    assert not failures, "\n".join(failures)


# --- scheduled reconciliation: the Kubernetes CronJob and cron ------------------------------


def _cronjob_container() -> dict[str, Any]:
    document = yaml.safe_load(CRONJOB.read_text(encoding="utf-8"))
    assert document["apiVersion"] == "batch/v1" and document["kind"] == "CronJob"
    pod = document["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in {"Never", "OnFailure"}
    [container] = pod["containers"]
    return {**container, "_volumes": pod.get("volumes", [])}


def _config_map_mount(directory: Path, files: list[Path]) -> Path:
    """How Kubernetes mounts a ConfigMap: the files are symlinks through `..data` into a timestamped directory."""
    directory.mkdir()
    stamp = directory / "..2024_06_01_00_00_00.000000001"
    stamp.mkdir()
    for file in files:
        shutil.copy(file, stamp / file.name)
    (directory / "..data").symlink_to(stamp.name)
    for file in files:
        (directory / file.name).symlink_to(Path("..data") / file.name)
    return directory


def _converged(demo: Demo, paths: list[Path]) -> None:
    again = api.plan(paths, config=demo.config)
    assert not again.has_changes, [(a.op, a.environment, a.reasons) for a in again.actions]
    pruned = api.plan(paths, config=demo.config, options=PlanOptions(prune=True))
    assert not pruned.has_changes, [(a.op, a.environment, a.reasons) for a in pruned.actions]


def test_kubernetes_cronjob_reconciles_the_environments(demo: Demo, workspace: Path, tmp_path: Path) -> None:
    container = _cronjob_container()
    assert container["command"][:2] == ["/bin/sh", "-c"]
    script = " ".join([*container["command"][2:], *container.get("args", [])])
    commands = [args for _, args in moenv_invocations(script)]
    applies = [args for args in commands if args[:1] == ["apply"]]
    assert len(applies) == 1, commands
    apply_args = applies[0]
    assert "--prune" in apply_args and ("--yes" in apply_args or "-y" in apply_args)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    manifests_dir = apply_args[1]
    assert manifests_dir.rstrip("/") in mounts.values()
    [volume] = [v for v in container["_volumes"] if mounts.get(v["name"]) == manifests_dir.rstrip("/")]
    assert "configMap" in volume
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["MOENV_URL"]["valueFrom"] and "secretKeyRef" in env["MOENV_SALT"]["valueFrom"]

    mounted = _config_map_mount(tmp_path / "manifests", ENVIRONMENT_FILES)
    run_env = _base_env() | {"MOENV_URL": demo.url, "MOENV_SALT": SALT}
    run_env |= {k: v["value"] for k, v in env.items() if "value" in v}
    for args in commands:
        run_ok([str(mounted) if a == manifests_dir else a for a in args], cwd=workspace, env=run_env)
    assert demo.exists("dev_db") and demo.exists("ci_schema_db")
    _converged(demo, [workspace / "environments"])


def _cron_entries() -> list[str]:
    """The command of every schedule line of recipes/cron.txt (comments and VAR=value lines skipped)."""
    entries = []
    for line in CRON.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#") or _ASSIGNMENT.match(line):
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"not a cron line: {line!r}"
        entries.append(fields[5])
    return entries


def _shell_entry(entry: str, workspace: Path, tmp_path: Path) -> tuple[str, Path]:
    """A cron entry made runnable here: its `cd` into the checkout, its moenv a shim running this
    interpreter's `-m moenv`, its log files under tmp_path (/dev/null stays)."""
    shim = tmp_path / "bin" / "moenv"
    if not shim.exists():
        shim.parent.mkdir(parents=True)
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m moenv "$@"\n', encoding="utf-8")
        shim.chmod(0o755)
    log = tmp_path / "moenv.log"
    entry = re.sub(r"\bcd\s+\S+", lambda _: f"cd {shlex.quote(str(workspace))}", entry)
    entry = re.sub(r"(?<![\w/.-])(?:\S*/)?moenv(?=\s)", lambda _: shlex.quote(str(shim)), entry)
    entry = re.sub(r"(>>?)\s*(/(?!dev/null)\S+)", lambda m: f"{m.group(1)} {shlex.quote(str(log))}", entry)
    return entry, log


def _sh(entry: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", entry], env=env, capture_output=True, text=True, timeout=300, check=False)


def test_cron_lines_reconcile_and_report_drift(demo: Demo, workspace: Path, tmp_path: Path) -> None:
    entries = _cron_entries()
    assert len(entries) == 2
    reconcile, report = (moenv_invocations(entry) for entry in entries)
    assert [args[0] for _, args in reconcile] == ["apply", "gc"]
    assert "--prune" in reconcile[0][1] and "--yes" in reconcile[0][1]
    assert [args[0] for _, args in report] == ["drift"]
    env = _base_env() | {"MOENV_URL": demo.url, "MOENV_SALT": SALT}

    command, log = _shell_entry(entries[0], workspace, tmp_path)
    done = _sh(command, env)
    assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}\n--- log\n{log.read_text()}"
    assert "Applied 2 of 2 action(s)." in log.read_text(encoding="utf-8")
    _converged(demo, [workspace / "environments"])
    command, _ = _shell_entry(entries[1], workspace, tmp_path)
    assert _sh(command, env).returncode == 0  # the drift report: nothing drifted (0, as _converged says)

    [(assignments, drift)] = report
    demo.execute("DROP TABLE dev_db.page_views")  # someone dropped a table of a clone
    done = moenv(drift, cwd=workspace, env=env | assignments)
    assert done.returncode == 2, _show(drift, done)  # the entry's `[ $? -ne 1 ]` passes: a drift, not an error
    assert "page_views" in done.stdout


def test_cron_reconcile_failures_reach_mailto(demo: Demo, workspace: Path, tmp_path: Path) -> None:
    """recipes/cron.txt: "moenv exits 1 on any error, so MAILTO gets the failures".

    cron mails what an entry prints, not its exit status: a failing reconcile must print something.
    """
    assert any(line.startswith("MAILTO=") for line in CRON.read_text(encoding="utf-8").splitlines())
    demo.execute("CREATE DATABASE dev_db")  # a database moenv does not own where dev should go: refused
    command, log = _shell_entry(_cron_entries()[0], workspace, tmp_path)
    done = _sh(command, _base_env() | {"MOENV_URL": demo.url, "MOENV_SALT": SALT})
    # cron ignores the exit status (the entry's `|| echo` succeeds): what it mails is the output.
    assert "not managed by moenv" in log.read_text(encoding="utf-8")
    assert (done.stdout + done.stderr).strip(), (
        "the reconcile failed, but the cron entry printed nothing, so cron mails nothing to MAILTO"
        f" (everything went to the log):\n{log.read_text(encoding='utf-8')}"
    )


def test_scheduled_reconcile_keeps_open_pull_request_environments(demo: Demo, workspace: Path) -> None:
    """The reconcile of the CronJob/cron (`apply environments/ --prune`) must not delete a PR's environment.

    recipes/github-actions/moenv.yml creates `pr-N` from recipes/pr-environment.yaml, which is not
    under environments/; the documented life of a PR environment is "destroyed when the PR closes,
    ttl: 3d as the safety net". A scheduled `--prune` over environments/ alone sees pr-N in the
    ledger but in no loaded manifest and deletes it within 30 minutes of its creation.
    """
    _without_leak_check(workspace)  # so the create itself succeeds (see the workflow test)
    created = api.apply(
        api.plan([workspace / "recipes" / "pr-environment.yaml"], config=demo.config, variables={"pr": PR}),
        config=demo.config,
    )
    assert created.ok, created.failed
    [(_, reconcile)] = [(a, args) for a, args in moenv_invocations(_cron_entries()[0]) if args[0] == "apply"]
    assert "--prune" in reconcile
    container = _cronjob_container()
    k8s = [args for _, args in moenv_invocations(" ".join(container["args"])) if args[0] == "apply"]
    assert k8s and "--prune" in k8s[0]

    # What each recipe's reconcile would do, planned with its own flags (plan, not apply).
    env = _base_env() | {"MOENV_URL": demo.url, "MOENV_SALT": SALT}
    for flags in (reconcile, k8s[0]):
        planned = [arg for arg in flags if arg != "--yes"]
        planned[0] = "plan"
        planned[1] = str(workspace / "environments")
        done = moenv([*planned, "--json"], cwd=workspace, env=env)
        assert done.returncode == 0, _show(planned, done)
        deletes = [a["environment"] for a in json.loads(done.stdout)["actions"] if a["op"] == "delete"]
        assert PR_ENV not in deletes, f"the scheduled reconcile would delete the open PR's environment: {deletes}"


# --- every manifest of environments/ converges ----------------------------------------------


@pytest.mark.parametrize("manifest", ENVIRONMENT_FILES, ids=[p.name for p in ENVIRONMENT_FILES])
def test_environment_manifest_converges(demo: Demo, manifest: Path) -> None:
    loaded = api.load([manifest])
    assert loaded, f"{manifest} defines no environment"
    names = {m.name for m in loaded}
    config = demo.config

    plan = api.plan([manifest], config=config)
    assert {a.environment for a in plan.actions} == names
    assert {a.op for a in plan.actions} == {"create"}
    result = api.apply(plan, config=config)
    assert result.ok, result.failed
    for m in loaded:
        assert demo.exists(m.spec.spec.target.database)

    again = api.plan([manifest], config=config)
    assert not again.has_changes, [(a.op, a.environment, a.reasons) for a in again.actions]
    assert set(again.unchanged) == names
    before = statement_count()
    second = api.apply(again, config=config, check_revisions=False)
    assert second.results == [] and statement_count() == before  # a second apply does nothing at all
    assert not api.plan([manifest], config=config).has_changes
