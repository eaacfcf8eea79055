"""Actions (create, rebuild, refresh, update, delete) with their reasons and steps; the Plan; pure values.

A plan round-trips through JSON (`plan -o plan.json`, `apply plan.json`), so every action carries
all the executor needs, and the ledger revisions it was made against (stale-plan check).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from moenv.models.catalog import TargetShape
from moenv.models.config import Quotas
from moenv.models.desired import Desired
from moenv.models.ledger import LedgerRecord, LedgerState

StepKind = Literal[
    "ledger_begin",
    "prepare_staging",
    "create_table",
    "copy_rows",
    "refresh_incremental",
    "delete_orphans",
    "check_leaks",
    "swap",
    "create_view",
    "drop_leftovers",
    "drop_old_target",
    "ledger_commit",
    "ledger_update",
    "drop_target",
    "ledger_forget",
    "ledger_expire",
    "ledger_interrupted",
]


class Step(BaseModel):
    """One unit of work of an action; bookkeeping (ledger writes) is a step like any other."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: StepKind
    table: str | None = None
    detail: str = ""


class _Action(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    destructive: ClassVar[bool] = False

    environment: str
    reasons: tuple[str, ...] = ()
    steps: tuple[Step, ...] = ()
    target_server: str
    target_database: str
    ledger_stamp: str | None = None
    """updated_at of the ledger record the plan saw (None: no record); the executor re-checks it under the lock."""


class Create(_Action):
    op: Literal["create"] = "create"
    desired: Desired


class Rebuild(_Action):
    op: Literal["rebuild"] = "rebuild"
    destructive: ClassVar[bool] = True
    desired: Desired
    old_database: str | None = None
    """The database currently holding the environment, when it differs from the desired target."""
    adopt: bool = False


class Refresh(_Action):
    op: Literal["refresh"] = "refresh"
    destructive: ClassVar[bool] = True
    desired: Desired


class Update(_Action):
    """Only bookkeeping changed (labels, description, protect, ttl): the ledger is updated, no data moves."""

    op: Literal["update"] = "update"
    desired: Desired


class Delete(_Action):
    op: Literal["delete"] = "delete"
    destructive: ClassVar[bool] = True
    staging_database: str | None = None
    expire: bool = False
    """Keep the ledger record as `expired` (a ttl ran out) instead of forgetting it."""


class Cleanup(_Action):
    """An apply was interrupted (its lock is free, its ledger row still says building): drop its leftovers."""

    op: Literal["cleanup"] = "cleanup"
    staging_database: str | None = None


Action = Annotated[Create | Rebuild | Refresh | Update | Delete | Cleanup, Field(discriminator="op")]


class Blocked(BaseModel):
    """An action the plan would take but a safety rule forbids (protect without --force, ...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    environment: str
    op: str
    reasons: tuple[str, ...]


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["moenv-plan/v1"] = "moenv-plan/v1"
    created_at: datetime
    actions: tuple[Action, ...] = ()
    unchanged: tuple[str, ...] = ()
    blocked: tuple[Blocked, ...] = ()
    errors: tuple[Blocked, ...] = ()
    """Environments left out of the plan because they could not be planned (only with --keep-going):
    each with its error. A plan with errors applies the rest, then reports failure."""
    ledger_revisions: dict[str, int] = Field(default_factory=dict)
    """Revision of each target server's ledger when the plan was made."""
    ledger_database: str = "moenv"

    @property
    def has_changes(self) -> bool:
        return bool(self.actions)

    @property
    def destructive(self) -> bool:
        return any(a.destructive for a in self.actions)


@dataclass(frozen=True)
class ServerLive:
    """One target server as read for planning."""

    server: str
    ledger: LedgerState
    databases: frozenset[str] = frozenset()
    targets: dict[str, TargetShape] = field(default_factory=dict)
    """Tables and structure digests of the target databases the manifests name."""
    busy: frozenset[str] = frozenset()
    """Environments whose lock another session holds right now (an apply is running)."""


@dataclass(frozen=True)
class TableContent:
    """Row counts (and checksums where comparable) of one copied table, read for content verification."""

    expected_rows: int
    """Rows the copy should hold now: the source's count through the table's filters."""
    target_rows: int
    source_checksum: int | None = None
    target_checksum: int | None = None


@dataclass(frozen=True)
class Live:
    """Everything the planner knows about the servers: ledgers, databases, target catalogs."""

    servers: dict[str, ServerLive] = field(default_factory=dict)
    ledger_database: str = "moenv"
    content: dict[str, dict[str, TableContent]] = field(default_factory=dict)
    """`verify: {content: true}` only: environment → target table → what source and target hold."""
    unreachable: dict[str, str] = field(default_factory=dict)
    """--keep-going only: servers that could not be read (name → error); their ledgers are unknown."""

    def record(self, name: str) -> LedgerRecord | None:
        for server in self.servers.values():
            if name in server.ledger.records:
                return server.ledger.records[name]
        return None

    def records(self) -> list[LedgerRecord]:
        return [r for s in self.servers.values() for r in s.ledger.records.values()]

    @property
    def revisions(self) -> dict[str, int]:
        return {name: s.ledger.revision for name, s in sorted(self.servers.items())}


@dataclass(frozen=True)
class Selector:
    """`--only NAME...` and `-l key=value` / `-l key!=value`: which environments a plan may touch
    (empty: all). `key!=value` also matches environments without that label."""

    only: frozenset[str] = frozenset()
    labels: tuple[tuple[str, str], ...] = ()
    excluded: tuple[tuple[str, str], ...] = ()

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if self.only and name not in self.only:
            return False
        if any(labels.get(key) == value for key, value in self.excluded):
            return False
        return all(labels.get(key) == value for key, value in self.labels)

    @property
    def everything(self) -> bool:
        return not self.only and not self.labels and not self.excluded


@dataclass(frozen=True)
class PlanOptions:
    prune: bool = False
    force: bool = False
    adopt: bool = False
    max_deletes: int | None = None
    selector: Selector = field(default_factory=Selector)
    quotas: Quotas = field(default_factory=Quotas)
    keep_going: bool = False
    """An environment that cannot be planned (its target is not moenv's, its source is gone, it is
    over budget...) is reported in Plan.errors and the others are planned; without it, the first
    such error fails the whole plan. A quota exceeded then holds back what would grow, not deletes."""
