"""`python -m moenv` end to end against a real MariaDB: exit codes, confirmation, saved and stale
plans, status, destroy, history, and passwords kept out of every output."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from tests.integration.helpers import World, output, q, run_cli
from tests.support.mariadb import Sandbox, free_port

from moenv import api

EXIT_ERROR = 1
EXIT_PENDING = 2


@pytest.fixture
def world(sandbox: Sandbox, tmp_path: Path) -> Iterator[World]:
    with World.open(sandbox, tmp_path) as opened:
        opened.build_source()
        yield opened


def create(world: World, path: Path) -> None:
    result = api.apply(api.plan([path], config=world.config), config=world.config)
    assert result.ok, result.failed


# -- 12. manifests and usage, no server needed -------------------------------------------------------

BROKEN = {
    "typo.yaml": (
        "apiVersion: moenv/v1\nkind: Environment\nmetadata:\n  name: typo\nspec:\n"
        "  source: {database: a}\n  target: {database: b}\n  tabels:\n    exclude: [x]\n",
        8,
        "tabels",
    ),
    "indent.yaml": (
        "apiVersion: moenv/v1\nkind: Environment\nmetadata:\n  name: indent\nspec:\n"
        "  source: {database: a}\n   target: {database: b}\n",
        7,
        "YAML",
    ),
    "undefined.yaml": (
        "apiVersion: moenv/v1\nkind: Environment\nmetadata:\n  name: undefined\nspec:\n"
        '  source: {database: a}\n  target: {database: "{{ vars.who }}_db"}\n',
        7,
        "who",
    ),
}


def test_validate_reports_every_broken_manifest_with_file_and_line(tmp_path: Path) -> None:
    for name, (text, _, _) in BROKEN.items():
        (tmp_path / name).write_text(text, encoding="utf-8")

    result = run_cli("validate", *BROKEN, url=None, ledger=None, cwd=tmp_path)

    text = result.stdout + result.stderr
    assert result.returncode == EXIT_ERROR, output(result)
    assert "Traceback" not in text
    for name, (_, line, word) in BROKEN.items():
        located = [row for row in text.splitlines() if f"{name}:{line}:" in row]
        assert located, f"{name}:{line} not reported\n{output(result)}"
        assert word in located[0]


@pytest.mark.parametrize(
    "args",
    [
        ("plan", "--no-such-option", "dev.yaml"),
        ("plan", "--detailed-exitcode", "--no-such-option", "dev.yaml"),
        ("plan",),
    ],
    ids=["unknown-option", "unknown-option-with-detailed-exitcode", "missing-argument"],
)
def test_usage_errors_exit_1_never_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = run_cli(*args, url=None, ledger=None, cwd=tmp_path)

    assert result.returncode == EXIT_ERROR, output(result)
    assert "Usage:" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


# -- 12. plan, apply, status ---------------------------------------------------------------------------


def test_plan_detailed_exitcode_follows_terraform(world: World) -> None:
    env = world.env("dev")
    path = world.manifest("dev")
    world.manifest("broken", source=world.prefix + "nowhere", target=world.prefix + "never", file="broken.yaml")

    before = world.cli("plan", "--detailed-exitcode", path.name)
    assert before.returncode == EXIT_PENDING, output(before)
    assert f"create {env}" in before.stdout
    # a full copy of users: the columns that look personal are pointed out (nothing refused)
    assert "! personal data? copied unmasked: users.username, users.email, users.display_name" in before.stdout

    applied = world.cli("apply", path.name)  # a create replaces nothing: no confirmation needed
    assert applied.returncode == 0, output(applied)
    assert "Applied 1 of 1" in applied.stdout
    assert world.checksums(world.target) == world.checksums(world.source)

    after = world.cli("plan", "--detailed-exitcode", path.name)
    assert after.returncode == 0, output(after)
    assert "unchanged" in after.stdout

    failing = world.cli("plan", "--detailed-exitcode", "broken.yaml")
    assert failing.returncode == EXIT_ERROR, output(failing)
    assert "does not exist" in failing.stderr
    assert "Traceback" not in failing.stdout + failing.stderr

    status = world.cli("status")
    assert status.returncode == 0, output(status)
    [row] = [line for line in status.stdout.splitlines() if line.startswith(env)]
    assert world.target in row
    assert world.source in row
    assert "ready" in row


def test_a_destructive_apply_without_a_terminal_needs_yes(world: World) -> None:
    create(world, world.manifest("dev"))
    path = world.manifest("dev", tables={"exclude": ["page_views"]})
    revision = world.revision()
    table_ids = world.table_ids(world.target)

    refused = world.cli("apply", path.name)

    assert refused.returncode == EXIT_ERROR, output(refused)
    assert "--yes" in refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
    assert world.revision() == revision
    assert world.table_ids(world.target) == table_ids

    accepted = world.cli("apply", "--yes", path.name)
    assert accepted.returncode == 0, output(accepted)
    assert "page_views" not in world.tables(world.target)


def test_a_saved_plan_is_applied_exactly_once_and_refused_when_stale(world: World) -> None:
    dev = world.manifest("dev")
    qa = world.manifest("qa", target=world.prefix + "qa")

    saved = world.cli("plan", "-o", "plan.json", dev.name)
    assert saved.returncode == 0, output(saved)
    assert json.loads((world.directory / "plan.json").read_text())["format"] == "moenv-plan/v1"
    create(world, qa)  # another run changes the ledger after the plan was saved

    stale = world.cli("apply", "--yes", "plan.json")
    assert stale.returncode == EXIT_ERROR, output(stale)
    assert "stale plan" in stale.stderr
    assert not world.exists(world.target)

    fresh = world.cli("plan", "-o", "plan.json", dev.name)
    assert fresh.returncode == 0, output(fresh)
    applied = world.cli("apply", "--yes", "plan.json")
    assert applied.returncode == 0, output(applied)
    assert world.checksums(world.target) == world.checksums(world.source)
    revision = world.revision()

    again = world.cli("apply", "--yes", "plan.json")
    assert again.returncode == EXIT_ERROR, output(again)
    assert "stale plan" in again.stderr
    assert world.revision() == revision


# -- 9. destroy and history ----------------------------------------------------------------------------


def test_destroy_and_history(world: World) -> None:
    env = world.env("dev")
    create(world, world.manifest("dev"))

    refused = world.cli("destroy", env)
    assert refused.returncode == EXIT_ERROR, output(refused)
    assert "--yes" in refused.stderr
    assert world.exists(world.target)

    destroyed = world.cli("destroy", env, "--yes")
    assert destroyed.returncode == 0, output(destroyed)
    assert not world.exists(world.target)
    assert world.ledger_row(env) is None
    assert world.events(env)[-2:] == [("delete", "started"), ("delete", "succeeded")]

    history = world.cli("history")
    assert history.returncode == 0, output(history)
    lines = [line.split() for line in history.stdout.splitlines() if env in line]
    assert [(w[3], w[4]) for w in lines] == [
        ("delete", "succeeded"),
        ("delete", "started"),
        ("create", "succeeded"),
        ("create", "started"),
    ]
    as_json = world.cli("history", env, "--json")
    assert as_json.returncode == 0, output(as_json)
    events = json.loads(as_json.stdout)
    assert {e["environment"] for e in events} == {env}
    assert (events[0]["action"], events[0]["result"]) == ("delete", "succeeded")

    status = world.cli("status")
    assert status.returncode == 0, output(status)
    assert env not in status.stdout


# -- passwords -----------------------------------------------------------------------------------------


@pytest.fixture
def password_url(world: World) -> Iterator[tuple[str, str]]:
    """(URL with a password, the password) for a throw-away user with every privilege."""
    user = f"u_{world.sandbox.token}"
    password = f"S3cret-{secrets.token_hex(8)}"
    hosts = ("%", "localhost")
    for host in hosts:
        world.execute("CREATE USER %s@%s IDENTIFIED BY %s", (user, host, password))
        world.execute("GRANT ALL PRIVILEGES ON *.* TO %s@%s", (user, host))
    parts = urlsplit(world.sandbox.url)
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port or 3306}"
    try:
        yield urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), password
    finally:
        for host in hosts:
            world.execute("DROP USER IF EXISTS %s@%s", (user, host))


@pytest.mark.mariadb_only("creates a MariaDB user@host with GRANT ALL ON *.*")
def test_a_password_in_moenv_url_never_appears_in_output(world: World, password_url: tuple[str, str]) -> None:
    url, password = password_url
    env = world.env("dev")
    path = world.manifest("dev")
    runs = [
        world.cli("validate", path.name, url=url),
        world.cli("plan", path.name, url=url),
        world.cli("plan", "--json", "-o", "plan.json", path.name, url=url),
        world.cli("apply", "--yes", "plan.json", url=url),
        world.cli("status", url=url),
        world.cli("status", "--json", url=url),
        world.cli("history", url=url),
        world.cli("destroy", env, "--yes", url=url),
    ]
    for result in runs:
        assert result.returncode == 0, output(result)
    assert not world.exists(world.target)  # the runs did work, as the password's user
    unreachable = url.replace(f":{urlsplit(url).port}", f":{free_port()}")
    failures = [
        world.cli("--debug", "plan", path.name, url=unreachable),
        world.cli("status", url=unreachable),
        world.cli("plan", path.name, url=url.replace(password, password + "-wrong")),
    ]
    for result in failures[1:]:
        assert "Traceback" not in result.stderr, output(result)
    assert failures[0].returncode == EXIT_ERROR, output(failures[0])
    assert "connect" in failures[0].stderr.lower()
    for result in runs + failures:
        assert password not in result.stdout + result.stderr, output(result)
    assert password not in (world.directory / "plan.json").read_text()
    ledger = q(world.sandbox.ledger)
    stored = world.query(f"SELECT * FROM {ledger}.environments") + world.query(f"SELECT * FROM {ledger}.events")
    assert password not in repr(stored)
