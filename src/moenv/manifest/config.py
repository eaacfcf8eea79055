"""moenv.yaml (with ${VAR} expansion) and MOENV_URL → Config; reads files and the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from moenv.errors import ConfigError, Problem
from moenv.models.config import DEFAULT_LEDGER, Config, Server
from moenv.models.manifest import check_name

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
CONFIG_NAMES = ("moenv.yaml", "moenv.yml")
_KEYS = {"servers", "ledger", "salt", "lock_timeout"}


def _expand(text: str, env: Mapping[str, str], path: Path, what: str) -> str:
    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(Problem(f"{what}: environment variable {name} is not set", path))

    return _VAR.sub(one, text)


def find_config(explicit: Path | None, cwd: Path | None = None) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(Problem("config file not found", explicit))
        return explicit
    for name in CONFIG_NAMES:
        candidate = (cwd or Path.cwd()) / name
        if candidate.is_file():
            return candidate
    return None


def load_config(path: Path | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Read moenv.yaml when there is one; MOENV_URL defines (or overrides) the server `default`."""
    environ = dict(os.environ if env is None else env)
    servers: dict[str, Server] = {}
    ledger = environ.get("MOENV_LEDGER", DEFAULT_LEDGER)
    salt = environ.get("MOENV_SALT") or None
    lock_timeout = 30.0
    if path is not None:
        try:
            data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(Problem(f"cannot read: {exc}", path)) from exc
        except yaml.MarkedYAMLError as exc:
            line = exc.problem_mark.line + 1 if exc.problem_mark else None
            raise ConfigError(Problem(f"YAML: {exc.problem}", path, line)) from exc
        if not isinstance(data, dict):
            raise ConfigError(Problem("moenv.yaml must be a mapping", path))
        if unknown := set(data) - _KEYS:
            raise ConfigError(Problem(f"unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})", path))
        raw_servers = data.get("servers") or {}
        if not isinstance(raw_servers, dict):
            raise ConfigError(Problem("servers must be a mapping of names to {url: ...}", path, None, "servers"))
        for name, body in raw_servers.items():
            if not isinstance(body, dict) or set(body) != {"url"} or not isinstance(body["url"], str):
                raise ConfigError(Problem("expected {url: mysql://user@host:port/}", path, None, f"servers.{name}"))
            servers[str(name)] = Server.from_url(str(name), _expand(body["url"], environ, path, f"servers.{name}"))
        if "ledger" in data:
            ledger = str(data["ledger"])
        if "salt" in data:
            salt = _expand(str(data["salt"]), environ, path, "salt")
        if "lock_timeout" in data:
            try:
                lock_timeout = float(data["lock_timeout"])
            except (TypeError, ValueError) as exc:
                raise ConfigError(Problem("lock_timeout must be a number of seconds", path)) from exc
    if url := environ.get("MOENV_URL"):
        servers["default"] = Server.from_url("default", url)
    try:
        check_name(ledger)
    except ValueError as exc:
        raise ConfigError(Problem(f"ledger database: {exc}", path)) from exc
    return Config(servers=servers, ledger_database=ledger, salt=salt, lock_timeout=lock_timeout)
