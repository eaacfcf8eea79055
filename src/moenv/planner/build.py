"""build_plan(desired, live, now, options) → Plan; pure (no I/O, no clock read inside)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from moenv.engines.matrixone import Capabilities, is_matrixone
from moenv.errors import ConflictError
from moenv.models.desired import Desired
from moenv.models.ledger import LedgerRecord, staging_database
from moenv.models.manifest import CONTENT_FIELDS, parse_duration
from moenv.models.plan import (
    Action,
    Blocked,
    Create,
    Delete,
    Live,
    Plan,
    PlanOptions,
    Rebuild,
    Refresh,
    ServerLive,
    Step,
    TableContent,
    Update,
)
from moenv.planner.diff import diff_specs
from moenv.planner.policy import (
    GROWING,
    check_budget,
    check_deletes,
    check_prune,
    check_quotas,
    check_target_is_free,
    check_target_is_not_a_source,
    error_reasons,
    protected,
)


def _stamp(record: LedgerRecord | None) -> str | None:
    return record.updated_at.isoformat() if record is not None else None


def build_steps(desired: Desired, *, rebuild: bool, old_database: str | None = None) -> tuple[Step, ...]:
    """The steps of a create or rebuild: build in staging, swap in atomically, record it."""
    if is_matrixone(desired.source_engine):
        return _matrixone_steps(desired, rebuild=rebuild, old_database=old_database)
    staging = staging_database(desired.environment)
    steps = [
        Step(kind="ledger_begin", detail=f"mark {desired.environment} building (staging {staging})"),
        Step(kind="prepare_staging", detail=f"create staging database {staging}"),
    ]
    for table in desired.tables:
        steps.append(Step(kind="create_table", table=table.target, detail=f"from SHOW CREATE TABLE {table.source}"))
        if table.with_data:
            steps.append(Step(kind="copy_rows", table=table.target, detail=f"INSERT … SELECT from {table.source}"))
    if any(t.filters for t in desired.tables if t.with_data):
        steps.append(
            Step(
                kind="delete_orphans",
                detail="remove rows whose reference was not copied (self-references, cycles, concurrent writes)",
            )
        )
    for table in desired.tables:
        if table.with_data and table.masked and table.leak_check:
            steps.append(
                Step(
                    kind="check_leaks",
                    table=table.target,
                    detail=f"no masked value of {', '.join(table.masked)} equals a source value",
                )
            )
    how = "swap old and new tables in one RENAME TABLE" if rebuild else "move tables in with one RENAME TABLE"
    steps.append(Step(kind="swap", detail=f"{how} into {desired.target.database}"))
    steps += [Step(kind="create_view", table=v.name, detail="recreate view over the copy") for v in desired.views]
    steps.append(Step(kind="drop_leftovers", detail="drop the staging (and old tables') databases"))
    if old_database and old_database != desired.target.database:
        steps.append(Step(kind="drop_old_target", detail=f"drop the previous target database {old_database}"))
    steps.append(Step(kind="ledger_commit", detail=f"mark {desired.environment} ready"))
    return tuple(steps)


def _matrixone_steps(desired: Desired, *, rebuild: bool, old_database: str | None) -> tuple[Step, ...]:
    """The same step kinds as on MySQL/MariaDB (executor/matrixone.py runs them), described as
    MatrixOne does them: snapshot, CLONE or INSERT … SELECT at it, publication by clone."""
    caps = Capabilities.from_text(desired.source_engine or "")
    staging = staging_database(desired.environment)
    target = desired.target.database
    grants = desired.manifest.spec.grants
    direct = bool(desired.tables) and (grants or all(t.method == "clone_database" for t in desired.tables))
    named = desired.manifest.spec.source.snapshot
    at = f"snapshot {named}" if named else "the snapshot"
    if not any(t.with_data for t in desired.tables):
        read = "no snapshot (structure only)"
    elif named:
        read = f"check {at} covers {desired.source.database}"
    else:
        read = f"take a snapshot of {desired.source.database}"
    steps = [
        Step(kind="ledger_begin", detail=f"mark {desired.environment} building (staging {staging})"),
        Step(
            kind="prepare_staging",
            detail=f"{read}; " + ("no staging: tables are cloned from the source" if direct else f"create {staging}"),
        ),
    ]
    for table in desired.tables:
        if direct or table.method == "clone_database":
            how = "cloned from the source at publication (zero-copy)"
        elif table.method == "clone_table":
            how = f"CREATE TABLE … CLONE {table.source} at {at} (zero-copy)"
        else:
            how = f"from SHOW CREATE TABLE {table.source}"
        steps.append(Step(kind="create_table", table=table.target, detail=how))
        if table.with_data:
            copied = table.method == "insert_select"
            rows = f"INSERT … SELECT from {table.source} at {at}" if copied else "rows come with the clone"
            steps.append(Step(kind="copy_rows", table=table.target, detail=rows))
    if any(t.filters for t in desired.tables if t.with_data):
        steps.append(Step(kind="delete_orphans", detail="remove rows whose reference was not copied"))
    for table in desired.tables:
        if table.with_data and table.masked and table.leak_check:
            detail = f"no masked value of {', '.join(table.masked)} equals a source value"
            steps.append(Step(kind="check_leaks", table=table.target, detail=detail))
    copy_grants = " with COPY GRANTS" if grants else ""
    if not rebuild or (old_database and old_database != target):
        origin = f"{desired.source.database} at {at}" if direct else staging
        how = (
            f"create {target} and clone every table into it{copy_grants}"
            if grants
            else f"CREATE DATABASE {target} CLONE {origin} (zero-copy, atomic)"
        )
    elif caps.chained_rename:
        how = f"clone the new tables into {target}{copy_grants}, swap them in with one chained RENAME TABLE"
    else:
        how = f"drop {target}'s tables and clone the new ones{copy_grants} in one transaction"
    steps.append(Step(kind="swap", detail=f"{how}; foreign keys re-pointed into {target}"))
    steps += [Step(kind="create_view", table=v.name, detail="recreate view over the copy") for v in desired.views]
    steps.append(Step(kind="drop_leftovers", detail="drop the staging database and moenv's snapshot"))
    if old_database and old_database != target:
        steps.append(Step(kind="drop_old_target", detail=f"drop the previous target database {old_database}"))
    steps.append(Step(kind="ledger_commit", detail=f"mark {desired.environment} ready"))
    return tuple(steps)


def refresh_steps(desired: Desired, record: LedgerRecord, *, full: bool = False) -> tuple[Step, ...]:
    """Incremental (in place, one transaction) when the mode says so and every watermark is known; else full."""
    refresh = desired.manifest.spec.refresh
    marked = [t for t in desired.tables if t.watermark]
    if full or refresh is None or refresh.mode != "incremental" or desired.manifest.spec.data != "full":
        return build_steps(desired, rebuild=True)
    if is_matrixone(desired.source_engine):
        return build_steps(desired, rebuild=True)  # a re-clone: zero-copy for unchanged tables, atomic
    if any(t.source not in record.watermarks for t in marked):
        return build_steps(desired, rebuild=True)  # the first refresh after a copy without watermarks
    across = desired.source.server != desired.target.server
    if across and any(c in t.masked for t in marked for f in t.filters for c in f.columns):
        return build_steps(desired, rebuild=True)  # masked references cannot be matched on the target
    by_mark = ", ".join(f"{t.target} (by {t.watermark})" for t in marked) or "none"
    whole = ", ".join(t.target for t in desired.tables if not t.watermark) or "none"
    how = (
        f"streamed from server {desired.source.server}: the changed rows and the keys of the source's rows, then"
        if across
        else "the changed rows and the keys of the source's rows read into staging (no source lock), then"
    )
    return (
        Step(kind="ledger_begin", detail=f"mark {desired.environment} building"),
        Step(
            kind="refresh_incremental",
            detail=f"{how} in one transaction: upsert changed rows, remove vanished ones: {by_mark};"
            f" copied whole: {whole}".lstrip(),
        ),
        Step(kind="ledger_commit", detail=f"mark {desired.environment} ready with the new watermarks"),
    )


def delete_steps(record: LedgerRecord, *, expire: bool = False) -> tuple[Step, ...]:
    last = (
        Step(kind="ledger_expire", detail=f"keep {record.name} in the ledger as expired")
        if expire
        else Step(kind="ledger_forget", detail=f"remove {record.name} from the ledger")
    )
    return (
        Step(kind="ledger_begin", detail=f"mark {record.name} deleting"),
        Step(kind="drop_target", detail=f"DROP DATABASE {record.target_database}"),
        Step(kind="drop_leftovers", detail="drop staging leftovers, if any"),
        last,
    )


def rebuild_reasons(
    want: Desired,
    record: LedgerRecord,
    server: ServerLive | None,
    content: Mapping[str, TableContent] | None = None,
) -> list[str]:
    """Why the environment must be rebuilt; empty when it is converged."""
    reasons: list[str] = []
    if record.status != "ready":
        reasons.append(f"the last apply did not finish (status {record.status})")
    if record.spec and record.spec_hash != want.spec_hash:
        old = {k: v for k, v in (record.spec.get("spec") or {}).items() if k in CONTENT_FIELDS}
        changes = diff_specs(old, want.manifest.content())
        # A changed spec changes the table set, so fingerprints and target tables differ too:
        # those differences are its consequences, not drift of their own.
        return reasons + (changes or ["the spec changed"])
    if record.source_fingerprint and record.source_fingerprint != want.source_fingerprint:
        reasons.append(f"the source schema of {want.source} changed since the last copy")
    if record.status == "ready" and server is not None:
        reasons += target_drift(want, record, server)
    if not reasons and content is not None:
        reasons += content_drift(content)
    return reasons


def content_drift(content: Mapping[str, TableContent]) -> list[str]:
    """`verify: {content: true}`: counts that differ, and checksums of whole, unmasked copies."""
    reasons = []
    for table, facts in sorted(content.items()):
        if facts.expected_rows != facts.target_rows:
            reasons.append(
                f"content of {table} drifted: {facts.target_rows:,} rows in the target,"
                f" {facts.expected_rows:,} expected from the source"
            )
        elif facts.source_checksum is not None and facts.source_checksum != facts.target_checksum:
            reasons.append(f"content of {table} drifted: same row count, different checksum")
    return reasons


def target_drift(want: Desired, record: LedgerRecord, server: ServerLive) -> list[str]:
    database = record.target_database
    if database not in server.databases:
        return [f"the target database {database} is missing"]
    shape = server.targets.get(database)
    if shape is None:
        return []
    expected = set(want.table_names)
    present = set(shape.tables)
    reasons = [f"table {name} was dropped from the target" for name in sorted(expected - present)]
    reasons += [f"table {name} was added to the target by hand" for name in sorted(present - expected)]
    if not reasons and record.target_fingerprint and shape.digest != record.target_fingerprint:
        reasons.append("a table of the target was altered by hand")
    return reasons


def _bookkeeping_changes(want: Desired, record: LedgerRecord) -> list[str]:
    old = dict(record.spec)
    new = want.manifest.model_dump(mode="json", by_alias=True)
    old_rest = {k: v for k, v in (old.get("spec") or {}).items() if k not in CONTENT_FIELDS}
    new_rest = {k: v for k, v in new["spec"].items() if k not in CONTENT_FIELDS}
    changes = diff_specs(old.get("metadata") or {}, new["metadata"], root="metadata")
    return changes + diff_specs(old_rest, new_rest)


def expires_at(record: LedgerRecord, want: Desired | None) -> datetime | None:
    """Creation + the ttl the manifest says now (an edited ttl applies at once); else the recorded expiry."""
    if want is not None:
        ttl = want.manifest.spec.ttl
        return record.created_at + parse_duration(ttl) if ttl else None
    return record.expires_at


def refresh_due(record: LedgerRecord, want: Desired, now: datetime) -> datetime | None:
    """When the last refresh was due, if a refresh is due now."""
    refresh = want.manifest.spec.refresh
    if refresh is None or record.status != "ready":
        return None
    due = (record.refreshed_at or record.created_at) + parse_duration(refresh.every)
    return due if due <= now else None


def delete_action(record: LedgerRecord, reasons: tuple[str, ...], *, expire: bool = False) -> Delete:
    return Delete(
        environment=record.name,
        target_server=record.target_server,
        target_database=record.target_database,
        ledger_stamp=_stamp(record),
        staging_database=record.staging_database,
        reasons=reasons,
        expire=expire,
        steps=delete_steps(record, expire=expire),
    )


def _plan_environment(
    want: Desired, record: LedgerRecord | None, live: Live, *, now: datetime, options: PlanOptions
) -> Action | Blocked | None:
    """The one action `want` needs (None: converged)."""
    name = want.environment
    common = {
        "environment": name,
        "target_server": want.target.server,
        "target_database": want.target.database,
        "ledger_stamp": _stamp(record),
    }
    expiry = expires_at(record, want) if record is not None else None
    if record is not None and record.status == "expired":
        if expiry is not None and expiry <= now:
            return None  # stays expired: extend its ttl (or destroy it) to change that
        check_target_is_free(want, live, adopt=False)
        again = f"it expired at {record.expires_at:%Y-%m-%d %H:%M} and its ttl now runs to {expiry or 'no end'}"
        return Create(**common, desired=want, reasons=(again,), steps=build_steps(want, rebuild=False))
    if record is None:
        if check_target_is_free(want, live, adopt=options.adopt):
            adopting = f"adopting the existing database {want.target.database} (--adopt)"
            steps = build_steps(want, rebuild=True)
            return Rebuild(**common, desired=want, adopt=True, reasons=(adopting,), steps=steps)
        return Create(**common, desired=want, reasons=("not created yet",), steps=build_steps(want, rebuild=False))
    if expiry is not None and expiry <= now:
        why = (f"expired at {expiry:%Y-%m-%d %H:%M} UTC (ttl {want.manifest.spec.ttl})",)
        if protected(want, record) and not options.force:
            return Blocked(environment=name, op="delete", reasons=(*why, "protect: true (use --force)"))
        return delete_action(record, why, expire=True)
    old_database = record.target_database if record.target_database != want.target.database else None
    if old_database is not None:
        check_target_is_free(want, live, adopt=False)
    if reasons := rebuild_reasons(want, record, live.servers.get(want.target.server), live.content.get(name)):
        if protected(want, record) and not options.force:
            return Blocked(environment=name, op="rebuild", reasons=(*reasons, "protect: true (use --force)"))
        steps = build_steps(want, rebuild=True, old_database=old_database)
        return Rebuild(**common, desired=want, old_database=old_database, reasons=tuple(reasons), steps=steps)
    if due := refresh_due(record, want, now):
        every = want.manifest.spec.refresh.every if want.manifest.spec.refresh else "?"
        last = record.refreshed_at or record.created_at
        due_text = (
            f"refresh every {every}: last refreshed {last:%Y-%m-%d %H:%M} UTC, due since {due:%Y-%m-%d %H:%M} UTC"
        )
        return Refresh(**common, desired=want, reasons=(due_text,), steps=refresh_steps(want, record))
    if changes := _bookkeeping_changes(want, record):
        step = Step(kind="ledger_update", detail="update labels, description and lifecycle fields")
        return Update(**common, desired=want, reasons=tuple(changes), steps=(step,))
    return None


def build_plan(
    desired: Mapping[str, Desired],
    live: Live,
    *,
    now: datetime,
    options: PlanOptions,
    declared: frozenset[str] | None = None,
) -> Plan:
    """The actions that make `live` match `desired`, each with its reasons; safety rules enforced here.

    `desired` holds the selected environments (`options.selector`); `declared` names every loaded
    one, so that an environment left out by a selector is never taken for one to prune.
    """
    known = set(desired) | set(declared or ())
    check_prune(known, options)
    actions: list[Action] = []
    unchanged: list[str] = []
    blocked: list[Blocked] = []
    errors: list[Blocked] = []
    for name, want in sorted(desired.items()):
        try:
            check_target_is_not_a_source(want, desired, live)
            check_budget(want)
            outcome = _plan_environment(want, live.record(name), live, now=now, options=options)
        except ConflictError as exc:
            if not options.keep_going:
                raise
            errors.append(Blocked(environment=name, op="plan", reasons=error_reasons(exc)))
            continue
        if outcome is None:
            unchanged.append(name)
        elif isinstance(outcome, Blocked):
            blocked.append(outcome)
        else:
            actions.append(outcome)
    for record in sorted(live.records(), key=lambda r: r.name):
        if record.name in known:
            continue
        record_labels = (record.spec.get("metadata") or {}).get("labels") or {}
        if not options.selector.matches(record.name, record_labels):
            continue
        if options.prune:
            why: tuple[str, ...] = (f"{record.name} is in the ledger but in no loaded manifest (--prune)",)
        elif record.status != "expired" and record.expires_at is not None and record.expires_at <= now:
            why = (f"expired at {record.expires_at:%Y-%m-%d %H:%M} UTC",)
        else:
            continue
        if record.protect and not options.force:
            blocked.append(Blocked(environment=record.name, op="delete", reasons=(*why, "protect: true (use --force)")))
            continue
        expire = not options.prune and record.status != "expired"
        actions.append(delete_action(record, why, expire=expire))
    check_deletes(actions, options)
    try:
        check_quotas(actions, desired, live, options)
    except ConflictError as exc:
        if not options.keep_going:
            raise
        held = [a for a in actions if a.op in GROWING]  # deletes, updates and cleanups still go
        errors += [Blocked(environment=a.environment, op=a.op, reasons=error_reasons(exc)) for a in held]
        actions = [a for a in actions if a.op not in GROWING]
    return Plan(
        created_at=now,
        actions=tuple(actions),
        unchanged=tuple(unchanged),
        blocked=tuple(blocked),
        errors=tuple(sorted(errors, key=lambda e: e.environment)),
        ledger_revisions=live.revisions,
        ledger_database=live.ledger_database,
    )
