"""Secrets: a password given in the URL or in moenv.yaml (and the pseudonym salt) never appears in
anything a run produces: output (text and JSON), saved plans, errors (a wrong password, a server
that is down, a failed copy), the ledger's rows or its history.

The test creates a server user with a distinctive password, runs every command and a few failing
ones through the CLI, then greps everything they produced and every row of every ledger table.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from tests.reliability_support import Bench, Run, ledger_rows, no_traceback, q
from tests.support.mariadb import Sandbox, free_port

from moenv.manifest.config import load_config


@pytest.fixture
def bench(sandbox: Sandbox, tmp_path: Path) -> Iterator[Bench]:
    with Bench.open(sandbox, tmp_path) as opened:
        opened.build_source()
        yield opened


class Secrets:
    """The distinctive values to look for, in every form they could be written."""

    def __init__(self, *values: str) -> None:
        self.values = [v for value in values for v in {value, quote(value, safe=""), json.dumps(value)[1:-1]}]

    def found_in(self, text: str) -> list[str]:
        return [v for v in self.values if v in text]


def server_user(bench: Bench, password: str) -> str:
    user = f"sec_{bench.box.token}"
    bench.probe.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
    bench.probe.execute("GRANT ALL ON *.* TO %s@'%%'", (user,))
    return user


def everything_in_the_ledger(bench: Bench) -> str:
    tables = [str(name) for (name,) in bench.probe.query(f"SHOW TABLES FROM {q(bench.ledger)}")]
    assert {"environments", "events", "meta"} <= set(tables)
    return "\n".join(repr(row) for table in tables for row in ledger_rows(bench.probe, bench.ledger, table))


@pytest.mark.mariadb_only("creates a MariaDB user@host with GRANT ALL ON *.*")
def test_passwords_and_the_salt_appear_nowhere(bench: Bench) -> None:
    core = secrets.token_hex(10)
    password = f"Pw:{core}@/%?#"  # characters a URL must encode, so both spellings are searched
    salt = f"salt-{secrets.token_hex(10)}"
    wrong = f"Wrong-{secrets.token_hex(10)}"
    look_for = Secrets(password, core, salt, wrong)
    user = server_user(bench, password)
    hostport = bench.url.split("@", 1)[1].rstrip("/")
    url = f"mysql://{user}:{quote(password, safe='')}@{hostport}/"
    env = bench.env("dev")
    try:
        manifest = bench.manifest(
            "dev",
            rules={"users": {"mask": {"email": "moenv.email(email)", "name": "moenv.name(name)"}}},
            ttl="7d",
        )
        leaky = bench.manifest("leaky", rules={"users": {"mask": {"email": "LOWER(email)"}}}, file="leaky/leaky.yaml")
        salted = {"MOENV_SALT": salt}
        runs: dict[str, Run] = {}

        def run(label: str, *args: str, via: str = url, **kw: str) -> Run:
            result = bench.cli(*args, url=via, extra_env={**salted, **kw})
            runs[label] = result
            return result

        # Every command, from the URL's password.
        assert run("validate", "validate", str(manifest)).code == 0
        assert run("render", "render", str(manifest)).code == 0
        assert run("plan", "plan", str(manifest)).code == 0
        assert run("plan --json", "plan", str(manifest), "--json").code == 0
        assert run("plan -o", "plan", str(manifest), "-o", "plan.json").code == 0
        assert run("apply plan.json", "apply", "plan.json", "--yes").code == 0
        assert run("status", "status").code == 0
        assert run("status --json", "status", "--json").code == 0
        assert run("show", "show", env).code == 0
        assert run("show --json", "show", env, "--json").code == 0
        assert run("history", "history").code == 0
        assert run("history --json", "history", "--json").code == 0
        assert run("refresh", "refresh", env, str(manifest), "--yes").code == 0
        assert run("drift", "drift", str(manifest)).code == 0
        assert run("gc --dry-run", "gc", "--dry-run").code == 0
        assert run("gc", "gc", "--yes").code == 0

        # Failures: a copy that fails (recorded in the ledger), a table gone between plan and apply,
        # a wrong password (with --debug too), a server that is down.
        assert run("failed copy", "apply", str(leaky), "--yes").code == 1
        assert run("plan -o again", "plan", str(manifest), "-o", "plan2.json").code == 0
        bench.manifest("other", file="other/other.yaml")
        assert run("plan -o other", "plan", "other/other.yaml", "-o", "plan3.json").code == 0
        bench.probe.execute(f"DROP TABLE {q(bench.source)}.orders")
        assert run("apply with a table gone", "apply", "plan3.json", "--yes").code == 1
        wrong_url = f"mysql://{user}:{quote(wrong, safe='')}@{hostport}/"
        assert run("wrong password", "plan", str(manifest), via=wrong_url).code == 1
        assert run("wrong password --debug", "--debug", "status", via=wrong_url).code in (0, 1)
        assert run("wrong password, apply --debug", "--debug", "apply", str(manifest), "--yes", via=wrong_url).code == 1
        down = f"mysql://{user}:{quote(password, safe='')}@127.0.0.1:{free_port()}/"
        assert run("server down", "plan", str(manifest), via=down).code == 1
        assert run("server down, status", "status", via=down).code in (0, 1)
        assert run("server down, destroy --debug", "--debug", "destroy", env, "--yes", via=down).code == 1
        assert "Access denied" in runs["wrong password"].stderr
        assert "unreachable" in runs["server down, status"].stdout

        # The same password from moenv.yaml, through ${VAR} expansion.
        (bench.directory / "moenv.yaml").write_text(
            f'servers:\n  default:\n    url: "mysql://{user}:${{DB_PASSWORD}}@{hostport}/"\nledger: {bench.ledger}\n',
            encoding="utf-8",
        )
        from_config = {"DB_PASSWORD": quote(password, safe="")}
        for args in (("status",), ("plan", str(manifest)), ("history", "--json"), ("destroy", env, "--yes")):
            result = bench.cli(*args, url="", extra_env={**salted, **from_config, "MOENV_URL": ""})
            runs["config: " + " ".join(args)] = result
            assert result.code == 0, result
        config = load_config(bench.directory / "moenv.yaml", env={"DB_PASSWORD": quote(password, safe="")})
        assert config.servers["default"].password == password  # the test did use that password

        for label, result in runs.items():
            if "--debug" not in label:
                no_traceback(result)
            assert not look_for.found_in(result.output), f"{label} shows a secret:\n{result}"
        for path in sorted(bench.directory.rglob("*")):
            if path.is_file() and path.name != "moenv.yaml":
                assert not look_for.found_in(path.read_text(encoding="utf-8")), f"{path.name} holds a secret"
        ledger = everything_in_the_ledger(bench)
        assert "leak check failed" in ledger and "doesn't exist" in ledger  # the failures were recorded
        assert not look_for.found_in(ledger), "the ledger holds a secret"
        assert not look_for.found_in(repr(config)) and not look_for.found_in(str(config.servers["default"]))
    finally:
        bench.probe.execute("DROP USER IF EXISTS %s@'%%'", (user,))


def test_a_manifest_template_cannot_reveal_the_password(bench: Bench) -> None:
    """Templates see the process environment (`env`), which holds MOENV_URL: a manifest (a pull
    request, say) must not be able to print the password into a plan or store it in the ledger."""
    core = secrets.token_hex(10)
    password = f"Pw-{core}"
    user = server_user(bench, password)
    url = f"mysql://{user}:{password}@{bench.url.split('@', 1)[1]}"
    try:
        path = bench.directory / "sneaky.yaml"
        path.write_text(
            "apiVersion: moenv/v1\nkind: Environment\n"
            f"metadata: {{name: {bench.env('sneaky')}, description: \"{{{{ env.MOENV_URL }}}}\"}}\n"
            f"spec: {{source: {{database: {bench.source}}}, target: {{database: {bench.database('sneaky')}}}}}\n",
            encoding="utf-8",
        )
        outputs = [bench.cli(*args, url=url) for args in (("render", str(path)), ("plan", str(path), "--json"))]
        outputs.append(bench.cli("apply", str(path), "--yes", url=url))
        for result in outputs:
            no_traceback(result)
            assert core not in result.output, f"a template printed the password:\n{result}"
        # moenv keeps MOENV_* (and secret-looking variables) out of `env`: the template is refused
        # with its line, so nothing is planned, applied or stored.
        assert all(r.code == 1 and "env" in r.output and "sneaky.yaml:3" in r.output for r in outputs), outputs
        assert not bench.probe.query("SHOW DATABASES LIKE %s", (bench.ledger,)), "nothing should reach a ledger"
    finally:
        bench.probe.execute("DROP USER IF EXISTS %s@'%%'", (user,))
