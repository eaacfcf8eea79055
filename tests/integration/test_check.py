"""`moenv check`: each server probed the way an apply would use it, findings with what to do.

Run against the session's server (once per engine) with root, then (MariaDB only) with users
that lack privileges, a server that is down, and a copy to a second server.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from tests.integration.helpers import World, q
from tests.support.mariadb import Sandbox, free_port

from moenv import api
from moenv.cli.main import main as cli_main
from moenv.models.config import Config, Server


@pytest.fixture
def world(sandbox: Sandbox, tmp_path: Path) -> Iterator[World]:
    with World.open(sandbox, tmp_path) as opened:
        opened.build_source()
        yield opened


def run(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    for name in ("MOENV_URL", "MOENV_LEDGER", "MOENV_SALT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as exited:
        cli_main(args)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out + err


def config_file(path: Path, servers: dict[str, str], ledger: str) -> Path:
    path.write_text(json.dumps({"servers": {n: {"url": u} for n, u in servers.items()}, "ledger": ledger}))
    return path


def findings(config: Config, *paths: Path) -> dict[tuple[str, str], Any]:
    _, found = api.check(config, paths)
    return {(f.server, f.check): f for f in found}


def test_a_capable_user_passes_every_check(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = world.manifest("dev")
    config = config_file(tmp_path / "moenv.yaml", {"default": world.sandbox.url}, world.sandbox.ledger)

    code, output = run(["--config", str(config), "check", str(path)], capsys, monkeypatch)

    assert code == 0, output
    assert f"✓ read {world.source}" in output and "7 tables, 2 views" in output
    assert "✓ create databases" in output and "✓ environment locks" in output
    assert "0 failure(s)" in output
    assert [name for name in world.sandbox.databases() if "_moenv_check_" in name] == []  # the probe is gone
    assert not world.exists(world.sandbox.ledger)  # checked, not created
    env = world.env("dev")
    assert "environments  (as `moenv plan --keep-going` sees them)" in output
    assert f"✓ {env}  create: not created yet" in output
    assert f"! {env}  personal data? copied unmasked: users.username, users.email, users.display_name" in output

    code, output = run(["--config", str(config), "check", str(path), "--json"], capsys, monkeypatch)
    report = json.loads(output)
    assert code == 0 and report["ok"] is True
    assert {f["level"] for f in report["servers"]["default"]["findings"]} == {"ok"}
    assert [(e["environment"], e["level"]) for e in report["environments"]] == [(env, "ok"), (env, "warning")]


def test_a_manifest_that_cannot_be_planned_fails_the_check_with_what_to_do(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    masked = world.manifest("dev", rules={"users": {"mask": {"email": "moenv.email(email)"}}})
    world.execute(f"CREATE DATABASE {q(world.prefix + 'taken')}")
    taken = world.manifest("taken", target=world.prefix + "taken")
    config = config_file(tmp_path / "moenv.yaml", {"default": world.sandbox.url}, world.sandbox.ledger)

    code, output = run(["--config", str(config), "check", str(masked)], capsys, monkeypatch)
    assert code == 1
    assert "✗ plan" in output and "need a salt" in output and "→ set MOENV_SALT" in output

    code, output = run(["--config", str(config), "check", str(taken)], capsys, monkeypatch)
    assert code == 1
    assert f"✗ {world.env('taken')}" in output and "not managed by moenv" in output and "--adopt" in output


@pytest.mark.mariadb_only("a server on a closed local port")
def test_a_server_that_does_not_answer_is_a_failure_and_the_others_are_still_checked(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    down = f"mysql://root@127.0.0.1:{free_port()}/"
    config = config_file(tmp_path / "moenv.yaml", {"default": world.sandbox.url, "down": down}, world.sandbox.ledger)

    code, output = run(["--config", str(config), "check"], capsys, monkeypatch)  # no manifests: every server

    assert code == 1
    assert "server down" in output and "✗ connect" in output and "→ check the URL" in output
    assert "server default" in output and "✓ create databases" in output


@pytest.mark.mariadb_only("MariaDB users and grants")
def test_missing_privileges_are_named_with_the_grant_that_fixes_them(
    world: World, second_sandbox: Sandbox, tmp_path: Path
) -> None:
    user, password = f"chk_{world.sandbox.token}", secrets.token_hex(8)
    s = q(world.source)
    world.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
    try:
        world.execute(f"GRANT SELECT, SHOW VIEW ON {s}.* TO %s@'%%'", (user,))
        world.execute(f"REVOKE SELECT ON {s}.* FROM %s@'%%'", (user,))
        world.execute(f"GRANT SELECT ON {s}.users TO %s@'%%'", (user,))  # one table readable, the others not
        host = world.sandbox.url.split("@", 1)[1]
        limited = Server.from_url("default", f"mysql://{user}:{quote(password, safe='')}@{host}")
        other = Server.from_url("other", second_sandbox.url)
        config = Config(servers={"default": limited, "other": other}, ledger_database=world.sandbox.ledger)
        here = world.manifest("here")  # source and target on the limited user's server
        there = world.manifest("there", target=world.prefix + "there")
        document = yaml.safe_load(there.read_text())
        document["spec"]["target"]["server"] = "other"
        there.write_text(json.dumps(document))

        found = findings(config, here, there)

        read = found[("default", f"read {world.source}")]
        assert read.level == "failure"
        assert "orders (1142)" in read.detail and "users" not in read.detail.split("cannot read ")[1]
        assert read.hint == f"GRANT SELECT, SHOW VIEW ON {s}.* TO the moenv user"
        assert found[("default", "create databases")].level == "failure"
        assert "GRANT ALL ON the target databases" in (found[("default", "create databases")].hint or "")
        snapshot = found[("default", "synchronized snapshot")]  # a source of a copy to another server
        assert snapshot.level == "warning" and "RELOAD" in (snapshot.hint or "")
        assert found[("other", "create databases")].level == "ok"
        assert found[("other", "LOAD DATA LOCAL")].level == "ok"  # the private servers allow it
    finally:
        world.execute("DROP USER IF EXISTS %s@'%%'", (user,))


# -- moenv init ---------------------------------------------------------------------------------------


def test_init_writes_a_manifest_whose_masks_pass_the_leak_check(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_file(tmp_path / "moenv.yaml", {"default": world.sandbox.url}, world.sandbox.ledger)
    out = tmp_path / "environments" / "dev.yaml"
    name = world.env("dev")
    args = ["--config", str(config), "init", world.source, "--name", name, "--target", world.target, "-o", str(out)]

    code, output = run(args, capsys, monkeypatch)

    assert code == 0, output
    assert "3 column(s) masked" in output and "MOENV_SALT" in output
    rules = yaml.safe_load(out.read_text())["spec"]["rules"]
    assert rules == {
        "users": {
            "mask": {
                "username": "CONCAT('username_', id)",  # unique
                "email": "moenv.email(email)",
                "display_name": "moenv.name(display_name)",
            }
        }
    }
    code, output = run(args, capsys, monkeypatch)
    assert code == 1 and "exists; nothing written" in output  # never overwritten without --force

    salted = Config(
        servers={"default": Server.from_url("default", world.sandbox.url)},
        ledger_database=world.sandbox.ledger,
        salt="init-test",
    )
    plan = api.plan([out], config=salted)
    [action] = plan.actions
    assert action.desired.unmasked_personal == ()  # nothing left for the plan to point out
    result = api.apply(plan, config=salted)
    assert result.ok, result.failed  # the leak checks passed on real rows
    leaked = world.query(
        f"SELECT COUNT(*) FROM {q(world.target)}.users t JOIN {q(world.source)}.users s"
        " ON t.email = s.email OR t.username = s.username"
    )
    assert leaked == [(0,)]
    names = world.query(f"SELECT DISTINCT LEFT(display_name, 5) FROM {q(world.target)}.users")
    assert set(names) <= {("Name-",), (None,)}


def test_init_of_a_database_that_does_not_exist_says_so(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_file(tmp_path / "moenv.yaml", {"default": world.sandbox.url}, world.sandbox.ledger)
    out = tmp_path / "x.yaml"
    code, output = run(["--config", str(config), "init", world.prefix + "nowhere", "-o", str(out)], capsys, monkeypatch)
    assert code == 1 and "does not exist" in output and "Traceback" not in output
    assert not out.exists()
