"""Safety rules the planner enforces: ownership, adopt, sources, protect, prune guards; pure."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from moenv.errors import ConflictError, MoenvError
from moenv.models.desired import Desired
from moenv.models.ledger import HOLDING_PREFIX, STAGING_PREFIX, LedgerRecord
from moenv.models.plan import Action, Delete, Live, PlanOptions

_SYSTEM = {"mysql", "information_schema", "performance_schema", "sys", "mo_catalog", "system", "system_metrics"}

GROWING = frozenset({"create", "rebuild", "refresh"})
"""The actions a quota can hold back (a quota never blocks a delete)."""


def error_reasons(exc: MoenvError) -> tuple[str, ...]:
    """An error as a plan's reasons: its message, then its hint."""
    return (exc.message, *((f"hint: {exc.hint}",) if exc.hint else ()))


def check_prune(loaded: Collection[str], options: PlanOptions) -> None:
    """`loaded`: every environment of the manifests given, selected or not."""
    if options.prune and not loaded:
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


def check_budget(want: Desired) -> None:
    """`budget.max_rows`: the plan is refused when the copy would hold more rows (counted or estimated)."""
    limit = want.manifest.spec.budget.max_rows
    if limit is None or want.manifest.spec.data != "full":
        return
    total = sum(t.estimated_rows or 0 for t in want.tables)
    if total > limit:
        biggest = sorted(want.tables, key=lambda t: -(t.estimated_rows or 0))[:3]
        detail = ", ".join(f"{t.target} {t.estimated_rows or 0:,}{'' if t.rows_exact else ' (est.)'}" for t in biggest)
        raise ConflictError(
            f"{want.environment}: the copy would hold {total:,} rows, more than budget.max_rows {limit:,}"
            f" (largest: {detail})",
            hint="tighten rules.<table>.where or tables.related, or raise budget.max_rows",
        )


def check_quotas(actions: Sequence[Action], desired: Mapping[str, Desired], live: Live, options: PlanOptions) -> None:
    """Refuse a plan that grows past the quotas of moenv.yaml; the error gives the figures.

    Counted: every environment that exists after the plan — the loaded ones (their estimated
    rows and bytes) and the ledger's others (their copied rows; their bytes are not recorded).
    Only plans that create, rebuild or refresh something are checked: a quota never blocks a delete.
    """
    quotas = options.quotas
    growing = [a for a in actions if a.op in GROWING]
    if not growing or (not quotas.max_environments and not quotas.servers):
        return
    deleted = {a.environment for a in actions if isinstance(a, Delete)}
    labels: dict[str, dict[str, str]] = {}
    rows: dict[str, int] = {}
    size: dict[str, int] = {}
    servers: dict[str, str] = {}
    for name, want in desired.items():
        labels[name] = dict(want.manifest.metadata.labels)
        rows[name] = sum(t.estimated_rows or 0 for t in want.tables)
        size[name] = sum(t.estimated_bytes or 0 for t in want.tables)
        servers[name] = want.target.server
    for record in live.records():
        if record.name in desired or record.status == "expired":
            continue
        labels[record.name] = dict((record.spec.get("metadata") or {}).get("labels") or {})
        rows[record.name] = record.rows_copied
        size[record.name] = 0
        servers[record.name] = record.target_server
    alive = [n for n in labels if n not in deleted]
    problems: list[str] = []
    if quotas.max_environments and live.unreachable:
        down = ", ".join(sorted(live.unreachable))
        problems.append(f"environments on {down} cannot be counted (the server could not be read)")
    for key, limit in sorted(quotas.max_environments.items()):
        counts: dict[str, list[str]] = {}
        for name in alive:
            if key in labels[name]:
                counts.setdefault(labels[name][key], []).append(name)
        for value, names in sorted(counts.items()):
            if len(names) > limit:
                problems.append(f"{len(names)} environments labelled {key}={value}, quota {limit}")
    for server, quota in sorted(quotas.servers.items()):
        on_server = [n for n in alive if servers[n] == server]
        total_rows = sum(rows[n] for n in on_server)
        total_bytes = sum(size[n] for n in on_server)
        if quota.max_rows is not None and total_rows > quota.max_rows:
            problems.append(f"~{total_rows:,} rows on server {server}, quota {quota.max_rows:,}")
        if quota.max_bytes is not None and total_bytes > quota.max_bytes:
            problems.append(f"~{total_bytes:,} bytes on server {server}, quota {quota.max_bytes:,}")
    if problems:
        raise ConflictError(
            "the plan exceeds the quotas of moenv.yaml: " + "; ".join(problems),
            hint="delete environments you no longer need, or raise the quota in moenv.yaml",
        )
