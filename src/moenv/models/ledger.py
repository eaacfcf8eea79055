"""moenv's own rows on each target server: environments it owns and the event log; pure values."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["building", "ready", "failed", "deleting", "expired"]


class TableStat(BaseModel):
    """What the last apply did to one table."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    table: str
    rows: int | None = None
    method: str = ""
    seconds: float = 0.0


class LedgerRecord(BaseModel):
    """One environment moenv owns (a row of `<ledger>.environments`)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    target_server: str
    target_database: str
    source_server: str
    source_database: str
    status: Status
    spec_hash: str = ""
    spec: dict[str, Any] = Field(default_factory=dict)
    """The manifest as applied (JSON), for diffs and `moenv export`."""
    source_fingerprint: str = ""
    target_fingerprint: str = ""
    staging_database: str | None = None
    created_at: datetime
    updated_at: datetime
    refreshed_at: datetime | None = None
    expires_at: datetime | None = None
    protect: bool = False
    tables_total: int = 0
    tables_done: int = 0
    rows_copied: int = 0
    stats: tuple[TableStat, ...] = ()
    message: str | None = None
    watermarks: dict[str, str] = Field(default_factory=dict)
    """Source table → the highest watermark copied so far (incremental refresh)."""


class Event(BaseModel):
    """One line of the event log (`<ledger>.events`)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: int
    at: datetime
    environment: str
    action: str
    result: str
    actor: str
    rows: int | None = None
    duration_ms: int | None = None
    message: str | None = None


@dataclass(frozen=True)
class LedgerState:
    """The ledger of one server as read at one moment."""

    server: str
    records: dict[str, LedgerRecord] = field(default_factory=dict)
    revision: int = 0
    version: int = 0


STAGING_PREFIX = "_moenv_s_"
HOLDING_PREFIX = "_moenv_o_"


def _digest(environment: str) -> str:
    return hashlib.sha256(environment.encode()).hexdigest()[:20]


def staging_database(environment: str) -> str:
    """Where an environment is built before the swap; recorded in the ledger before it is created."""
    return STAGING_PREFIX + _digest(environment)


def holding_database(environment: str) -> str:
    """Where the old tables go during a rebuild's swap, dropped right after."""
    return HOLDING_PREFIX + _digest(environment)
