"""moenv.yaml (with ${VAR} expansion) and MOENV_URL → Config; reads files and the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from moenv.errors import ConfigError, Problem
from moenv.models.config import DEFAULT_LEDGER, Config, Quotas, Server, ServerQuota
from moenv.models.manifest import check_name

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
CONFIG_NAMES = ("moenv.yaml", "moenv.yml")
_KEYS = {"servers", "ledger", "salt", "lock_timeout", "quotas", "retries"}


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
    data: Any = {}
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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
    quotas = _quotas(data.get("quotas") if path is not None else None, path, set(servers))
    retries = _count(data["retries"], path, "retries") if "retries" in data else 3
    return Config(
        servers=servers, ledger_database=ledger, salt=salt, lock_timeout=lock_timeout, quotas=quotas, retries=retries
    )


def _count(value: object, path: Path | None, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(Problem("must be a whole number ≥ 0", path, None, field))
    return value


def _quotas(data: object, path: Path | None, servers: set[str]) -> Quotas:
    """quotas: {max_environments: {LABEL: N}, servers: {NAME: {max_rows: N, max_bytes: N}}}"""
    if data is None:
        return Quotas()
    if not isinstance(data, dict) or set(data) - {"max_environments", "servers"}:
        raise ConfigError(
            Problem(
                "expected {max_environments: {label: N}, servers: {name: {max_rows, max_bytes}}}", path, None, "quotas"
            )
        )
    per_label = data.get("max_environments") or {}
    if not isinstance(per_label, dict):
        raise ConfigError(Problem("expected {label: N}", path, None, "quotas.max_environments"))
    limits = {str(k): _count(v, path, f"quotas.max_environments.{k}") for k, v in per_label.items()}
    per_server: dict[str, ServerQuota] = {}
    raw_servers = data.get("servers") or {}
    if not isinstance(raw_servers, dict):
        raise ConfigError(Problem("expected {server: {max_rows, max_bytes}}", path, None, "quotas.servers"))
    for name, body in raw_servers.items():
        field = f"quotas.servers.{name}"
        if name not in servers and name != "default":
            raise ConfigError(Problem(f"unknown server {name!r}", path, None, field))
        if not isinstance(body, dict) or set(body) - {"max_rows", "max_bytes"}:
            raise ConfigError(Problem("expected {max_rows: N, max_bytes: N}", path, None, field))
        per_server[str(name)] = ServerQuota(
            max_rows=_count(body["max_rows"], path, f"{field}.max_rows") if "max_rows" in body else None,
            max_bytes=_count(body["max_bytes"], path, f"{field}.max_bytes") if "max_bytes" in body else None,
        )
    return Quotas(max_environments=limits, servers=per_server)
