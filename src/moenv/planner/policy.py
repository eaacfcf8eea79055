"""Safety rules the planner enforces: ownership, adopt, sources, protect, prune guards; pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from moenv.errors import ConflictError
from moenv.models.desired import Desired
from moenv.models.ledger import HOLDING_PREFIX, STAGING_PREFIX, LedgerRecord
from moenv.models.plan import Action, Delete, Live, PlanOptions

_SYSTEM = {"mysql", "information_schema", "performance_schema", "sys", "mo_catalog", "system", "system_metrics"}


def check_prune(desired: Mapping[str, Desired], options: PlanOptions) -> None:
    if options.prune and not desired:
        raise ConflictError(
            "--prune with no environments loaded would delete every environment moenv owns; refused",
            hint="check the paths given: an empty checkout or a wrong directory must not delete everything",
        )


def check_deletes(actions: Sequence[Action], options: PlanOptions) -> None:
    deletes = [a for a in actions if isinstance(a, Delete)]
    if options.max_deletes is not None and len(deletes) > options.max_deletes:
        names = ", ".join(a.environment for a in deletes)
        raise ConflictError(
            f"the plan deletes {len(deletes)} environments ({names}), more than --max-deletes {options.max_deletes}",
            hint="raise --max-deletes after checking that these deletions are intended",
        )


def check_target_is_not_a_source(want: Desired, desired: Mapping[str, Desired], live: Live) -> None:
    """A target may never be a source database, the ledger, a system database or a moenv work database."""
    target = want.target
    if target.database.lower() in _SYSTEM:
        raise ConflictError(f"{want.environment}: target {target.database} is a system database; refused")
    if target.database == live.ledger_database:
        raise ConflictError(f"{want.environment}: target {target.database} is moenv's ledger database; refused")
    if target.database.startswith((STAGING_PREFIX, HOLDING_PREFIX)):
        raise ConflictError(
            f"{want.environment}: target names start with {STAGING_PREFIX!r}/{HOLDING_PREFIX!r}: reserved"
        )
    for other in desired.values():
        if other.source == target:
            raise ConflictError(
                f"{want.environment}: target {target} is the source of {other.environment};"
                " moenv never writes to a source",
                hint="choose another target database",
            )
    for other in desired.values():
        if other.environment != want.environment and other.target == target:
            raise ConflictError(f"{want.environment} and {other.environment} have the same target {target}")


def check_target_is_free(want: Desired, live: Live, *, adopt: bool) -> bool:
    """True when the existing target is to be adopted; ConflictError when it exists and moenv does not own it."""
    server = live.servers.get(want.target.server)
    for record in live.records():
        if (
            record.name != want.environment
            and record.target_server == want.target.server
            and record.target_database == want.target.database
        ):
            raise ConflictError(
                f"{want.environment}: target {want.target} already belongs to environment {record.name}",
                hint=f"choose another target, or destroy {record.name} first",
            )
    if server is None or want.target.database not in server.databases:
        return False
    if adopt:
        return True
    raise ConflictError(
        f"{want.environment}: database {want.target.database} exists on server {want.target.server} "
        "and is not managed by moenv; it is never touched",
        hint="pick another target, or after review take it over with --adopt (its content will be replaced)",
    )


def protected(want: Desired | None, record: LedgerRecord) -> bool:
    return record.protect or (want is not None and want.manifest.spec.protect)
