"""moenv.manifest.config.load_config and moenv.models.config.Server: servers, ${VAR} expansion, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from moenv.errors import ConfigError
from moenv.manifest.config import load_config
from moenv.models.config import Config, Server


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "moenv.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_variables_are_expanded_from_the_environment(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "servers:\n"
        "  prod: {url: 'mysql://ro:${PROD_PASSWORD}@${PROD_HOST}:6001/?charset=utf8mb4'}\n"
        "ledger: moenv_ledger\n"
        "lock_timeout: 5\n",
    )

    config = load_config(path, env={"PROD_PASSWORD": "s3cret", "PROD_HOST": "db1.internal"})

    assert config.servers == {
        "prod": Server(
            name="prod",
            host="db1.internal",
            port=6001,
            user="ro",
            password="s3cret",
            scheme="mysql",
            params=(("charset", "utf8mb4"),),
        )
    }
    assert config.ledger_database == "moenv_ledger"
    assert config.lock_timeout == 5.0


def test_a_default_is_used_when_the_variable_is_unset(tmp_path: Path) -> None:
    path = write_config(tmp_path, "servers:\n  dev: {url: 'mariadb://${DEV_USER:-root}@${DEV_HOST:-localhost}/'}\n")

    unset = load_config(path, env={}).server("dev")
    set_ = load_config(path, env={"DEV_HOST": "dev1", "DEV_USER": "app"}).server("dev")

    assert (unset.user, unset.host, unset.port, unset.scheme) == ("root", "localhost", 3306, "mariadb")
    assert (set_.user, set_.host) == ("app", "dev1")


def test_a_missing_variable_is_an_error_naming_it_and_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "servers:\n  prod: {url: 'mysql://ro:${PROD_PASSWORD}@db1/'}\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    (problem,) = caught.value.problems
    assert problem.path == path
    assert "PROD_PASSWORD" in problem.message
    assert "servers.prod" in problem.message


def test_moenv_url_defines_the_default_server() -> None:
    config = load_config(None, env={"MOENV_URL": "matrixone://dump:111@mo.local/"})

    assert list(config.servers) == ["default"]
    server = config.server("default")
    assert (server.name, server.scheme, server.host, server.port, server.user) == (
        "default",
        "matrixone",
        "mo.local",
        6001,
        "dump",
    )


def test_moenv_url_overrides_a_default_server_from_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "servers:\n  default: {url: 'mysql://a@file-host/'}\n  prod: {url: 'mysql://b@p/'}\n")

    config = load_config(path, env={"MOENV_URL": "mysql://c@env-host:3307/"})

    assert config.server("default").host == "env-host"
    assert config.server("default").port == 3307
    assert config.server("prod").host == "p"


def test_the_password_never_shows() -> None:
    server = Server.from_url("prod", "mysql://admin:Hunter2-secret@db1:3306/")

    assert server.password == "Hunter2-secret"
    assert server.display == "mysql://admin:***@db1:3306/"
    assert str(server) == "prod (mysql://admin:***@db1:3306/)"
    for text in (server.display, str(server), repr(server), repr(Config(servers={"prod": server}))):
        assert "Hunter2" not in text


def test_the_salt_is_not_in_the_config_repr_but_is_a_known_secret(tmp_path: Path) -> None:
    path = write_config(tmp_path, "servers:\n  p: {url: 'mysql://u:pw1@h/'}\nsalt: '${SALT}'\n")

    config = load_config(path, env={"SALT": "pepper-42"})

    assert "pepper-42" not in repr(config)
    assert sorted(config.secrets()) == ["pepper-42", "pw1"]


def test_a_socket_url_displays_the_socket() -> None:
    server = Server.from_url("local", "mysql://root@/?unix_socket=/run/mysqld/mysqld.sock&charset=utf8mb4")

    assert server.socket == "/run/mysqld/mysqld.sock"
    assert server.params == (("charset", "utf8mb4"),)
    assert server.display == "mysql://root@localhost (socket /run/mysqld/mysqld.sock)/"


def test_url_encoded_user_and_password_are_decoded() -> None:
    server = Server.from_url("prod", "mysql://app%40corp:p%40ss%3Aw%2Fd%23%25@db1/")

    assert server.user == "app@corp"
    assert server.password == "p@ss:w/d#%"
    assert "p@ss" not in repr(server)


@pytest.mark.parametrize("url", ["postgres://u@h/", "http://u@h/", "u@h:3306"])
def test_an_unknown_scheme_is_an_error(url: str) -> None:
    with pytest.raises(ConfigError, match="URL scheme must be one of mysql, mariadb, matrixone"):
        Server.from_url("x", url)


@pytest.mark.parametrize("url", ["mysql://u@h:notaport/", "mysql:///"])
def test_a_malformed_url_is_an_error(url: str) -> None:
    with pytest.raises(ConfigError, match="server 'x'"):
        Server.from_url("x", url)


def test_an_unknown_server_names_the_configured_ones_and_hints_at_moenv_yaml() -> None:
    config = Config(
        servers={"prod": Server.from_url("prod", "mysql://u@h/"), "dev": Server.from_url("dev", "mysql://u@d/")}
    )

    with pytest.raises(ConfigError) as caught:
        config.server("staging")

    assert "unknown server 'staging' (configured: dev, prod)" in str(caught.value)
    assert caught.value.hint is not None
    assert "moenv.yaml" in caught.value.hint


def test_a_missing_default_server_hints_at_moenv_url() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={}).server("default")

    assert "configured: none" in str(caught.value)
    assert caught.value.hint is not None
    assert "MOENV_URL" in caught.value.hint


def test_unknown_top_level_keys_are_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, "servers: {}\nledgr: moenv\n")

    with pytest.raises(ConfigError, match="unknown keys \\['ledgr'\\]"):
        load_config(path, env={})


def test_a_server_without_url_is_refused_with_its_field(tmp_path: Path) -> None:
    path = write_config(tmp_path, "servers:\n  prod: {host: db1}\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    assert caught.value.field == "servers.prod"


def test_an_unusable_ledger_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="ledger database"):
        load_config(None, env={"MOENV_LEDGER": "moenv; DROP"})
