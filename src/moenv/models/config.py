"""Servers and settings from moenv.yaml / MOENV_URL, as values; pure (parsing a URL is not I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from moenv.errors import ConfigError, Problem

SCHEMES = {"mysql": 3306, "mariadb": 3306, "matrixone": 6001}
DEFAULT_LEDGER = "moenv"


@dataclass(frozen=True)
class Server:
    """A named connection. The password is kept out of repr() and every rendering."""

    name: str
    host: str
    port: int
    user: str
    password: str = field(default="", repr=False)
    scheme: str = "mysql"
    params: tuple[tuple[str, str], ...] = ()
    socket: str | None = None

    @classmethod
    def from_url(cls, name: str, url: str) -> Server:
        """`mysql://user:pass@host:port/?unix_socket=...` (schemes: mysql, mariadb, matrixone)."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ConfigError(Problem(f"server {name!r}: malformed URL ({exc})")) from exc
        if parts.scheme not in SCHEMES:
            raise ConfigError(
                Problem(f"server {name!r}: URL scheme must be one of {', '.join(SCHEMES)}, got {parts.scheme!r}")
            )
        params = tuple(parse_qsl(parts.query))
        socket = dict(params).get("unix_socket")
        if not parts.hostname and not socket:
            raise ConfigError(Problem(f"server {name!r}: the URL names no host"))
        return cls(
            name=name,
            host=parts.hostname or "localhost",
            port=port or SCHEMES[parts.scheme],
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            scheme=parts.scheme,
            params=tuple((k, v) for k, v in params if k != "unix_socket"),
            socket=socket,
        )

    @property
    def display(self) -> str:
        """The URL with the password replaced: safe for output, logs and the ledger."""
        secret = ":***" if self.password else ""
        where = f"{self.host}:{self.port}" if not self.socket else f"{self.host} (socket {self.socket})"
        return f"{self.scheme}://{self.user}{secret}@{where}/"

    def __str__(self) -> str:
        return f"{self.name} ({self.display})"


@dataclass(frozen=True)
class ServerQuota:
    max_rows: int | None = None
    max_bytes: int | None = None


@dataclass(frozen=True)
class Quotas:
    """Limits from moenv.yaml that a plan must respect."""

    max_environments: Mapping[str, int] = field(default_factory=dict)
    """Label key → at most this many environments per value of that label."""
    servers: Mapping[str, ServerQuota] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    """Everything moenv needs besides the manifests."""

    servers: dict[str, Server] = field(default_factory=dict)
    ledger_database: str = DEFAULT_LEDGER
    salt: str | None = field(default=None, repr=False)
    lock_timeout: float = 30.0
    quotas: Quotas = field(default_factory=Quotas)
    retries: int = 3
    """Attempts after the first for a table whose copy hit a transient error (lost connection,
    deadlock, lock wait timeout), with exponential backoff."""

    def server(self, name: str) -> Server:
        try:
            return self.servers[name]
        except KeyError:
            known = ", ".join(sorted(self.servers)) or "none"
            hint = (
                "set MOENV_URL=mysql://user@host:port/ for the server 'default'"
                if name == "default"
                else "define it under servers: in moenv.yaml"
            )
            raise ConfigError(Problem(f"unknown server {name!r} (configured: {known})"), hint=hint) from None

    def secrets(self) -> list[str]:
        """Every secret moenv knows, so outputs can be checked or scrubbed."""
        found = [s.password for s in self.servers.values() if s.password]
        return found + ([self.salt] if self.salt else [])
