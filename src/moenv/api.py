"""The operations behind the CLI, as Python calls: load, plan, apply, status, history, destroy.

Each one wires the layers together in the one-way flow: manifests → specs → (source catalog)
desired → (live state) plan → apply. Nothing here prints.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moenv.engines import mysql
from moenv.errors import ConfigError, ConflictError, DatabaseError, ManifestError, MoenvError, Problem
from moenv.executor.apply import ApplyResult, Clock, apply_plan, utc_now
from moenv.executor.report import Reporter
from moenv.live.catalog import read_catalogs, read_databases, read_target_shapes
from moenv.live.check import Finding, engine_finding, source_findings, target_findings, unreachable
from moenv.live.connection import connect
from moenv.live.ledger import read_busy, read_events, read_ledger
from moenv.live.matrixone import read_moenv_snapshots
from moenv.manifest.config import find_config, load_config
from moenv.manifest.loader import LoadedManifest, load_manifests
from moenv.models.catalog import Catalog
from moenv.models.config import Config
from moenv.models.desired import Desired
from moenv.models.ledger import Event, LedgerRecord
from moenv.models.manifest import EnvironmentSpec
from moenv.models.plan import Blocked, Delete, Live, Plan, PlanOptions, Refresh, ServerLive, TableContent
from moenv.planner import build_plan
from moenv.planner.build import delete_steps, refresh_steps
from moenv.planner.gc import build_gc_plan
from moenv.planner.policy import error_reasons
from moenv.resolve import resolve_environment
from moenv.resolve.estimate import count_statements, with_counts
from moenv.resolve.scaffold import scaffold


def current_config(path: Path | None = None) -> Config:
    """moenv.yaml (explicit, or in the working directory) plus MOENV_URL."""
    return load_config(find_config(path))


def load(
    paths: Sequence[Path], *, variables: Mapping[str, str] | None = None, now: datetime | None = None
) -> list[LoadedManifest]:
    """Render and validate manifests; ManifestError lists every problem with file:line."""
    return load_manifests(paths, variables=variables, now=now)


def read_source_catalogs(
    manifests: Sequence[LoadedManifest], config: Config, *, unreachable: dict[str, str] | None = None
) -> dict[tuple[str, str], Catalog]:
    """One bulk read per source server, shared by every environment that reads it.

    unreachable: when given, a server that cannot be read is recorded there (name → error)
    instead of failing the whole read (--keep-going).
    """
    wanted: dict[str, set[str]] = defaultdict(set)
    for manifest in manifests:
        source = manifest.spec.spec.source
        wanted[source.server].add(source.database)
    catalogs: dict[tuple[str, str], Catalog] = {}
    for server_name, databases in sorted(wanted.items()):
        with _per_server(server_name, unreachable):
            with connect(config.server(server_name), read_only=True) as conn:
                read = read_catalogs(conn, databases)
            for name, catalog in read.items():
                catalogs[(server_name, name)] = catalog
    return catalogs


@contextlib.contextmanager
def _per_server(server: str, unreachable: dict[str, str] | None) -> Iterator[None]:
    """Fail as usual; or, with `unreachable`, record the server's error there and go on."""
    if unreachable is None:
        yield
        return
    try:
        yield
    except DatabaseError as exc:
        unreachable[server] = exc.message


def resolve(manifests: Sequence[LoadedManifest], config: Config) -> dict[str, Desired]:
    """Every environment resolved against its source catalog; all problems reported together."""
    desired, _ = _resolve(manifests, config, keep_going=False, unreachable={})
    return desired


def _unreachable_error(environment: str, role: str, server: str, unreachable: Mapping[str, str]) -> Blocked:
    return Blocked(
        environment=environment,
        op="plan",
        reasons=(
            f"{environment}: its {role} server {server} could not be read: {unreachable[server]}",
            "hint: nothing was done to it; the next run plans it once the server answers",
        ),
    )


def _resolve(
    manifests: Sequence[LoadedManifest], config: Config, *, keep_going: bool, unreachable: dict[str, str]
) -> tuple[dict[str, Desired], list[Blocked]]:
    """resolve(); with keep_going, an environment whose rules do not fit its source, or whose source
    server cannot be read (recorded in `unreachable`), is left out and returned as an error."""
    for manifest in manifests:
        config.server(manifest.spec.spec.source.server)
        config.server(manifest.spec.spec.target_server)
    catalogs = read_source_catalogs(manifests, config, unreachable=unreachable if keep_going else None)
    desired: dict[str, Desired] = {}
    problems: list[Problem] = []
    errors: list[Blocked] = []
    for manifest in manifests:
        source = manifest.spec.spec.source
        if source.server in unreachable:
            errors.append(_unreachable_error(manifest.name, "source", source.server, unreachable))
            continue
        try:
            desired[manifest.name] = resolve_environment(
                manifest.spec, catalogs[(source.server, source.database)], problem=manifest.problem
            )
        except ManifestError as exc:
            if keep_going:
                errors.append(Blocked(environment=manifest.name, op="plan", reasons=error_reasons(exc)))
            else:
                problems += exc.problems
    if problems:
        raise ManifestError(problems)
    desired = count_rows(desired, config, unreachable=unreachable if keep_going else None)
    for name in [n for n, want in desired.items() if want.source.server in unreachable]:
        errors.append(_unreachable_error(name, "source", desired.pop(name).source.server, unreachable))
    salted = sorted(name for name, want in desired.items() if any(t.needs_salt for t in want.tables))
    if salted and not config.salt:
        raise ConfigError(
            Problem(f"{', '.join(salted)}: masks use moenv.* helpers, which need a salt"),
            hint="set MOENV_SALT (or `salt:` in moenv.yaml); the salt never comes from a manifest",
        )
    return desired, errors


def count_rows(
    desired: Mapping[str, Desired], config: Config, *, unreachable: dict[str, str] | None = None
) -> dict[str, Desired]:
    """Exact counts of the filtered tables: one statement per source server whatever the number of
    environments and tables (identical counts, e.g. of per-PR environments, are asked once)."""
    wanted: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for name, want in desired.items():
        if want.manifest.spec.data == "full" and (statements := count_statements(want)):
            wanted[want.source.server][name] = statements
    counted = dict(desired)
    for server_name, per_env in sorted(wanted.items()):
        if unreachable and server_name in unreachable:
            continue  # its environments are errors already
        distinct = sorted({sql for statements in per_env.values() for sql in statements.values()})
        row: tuple[Any, ...] | None = None
        with _per_server(server_name, unreachable), connect(config.server(server_name), read_only=True) as conn:
            row = conn.query("SELECT " + ", ".join(f"({sql})" for sql in distinct))[0]
        if row is None:
            continue  # recorded in `unreachable`
        value = {sql: int(n or 0) for sql, n in zip(distinct, row, strict=True)}
        for name, statements in per_env.items():
            counted[name] = with_counts(desired[name], {table: value[sql] for table, sql in statements.items()})
    return counted


def read_live(
    config: Config,
    desired: Mapping[str, Desired],
    *,
    all_servers: bool = False,
    only: set[str] | None = None,
    unreachable: dict[str, str] | None = None,
) -> Live:
    """Ledgers, database lists and target catalogs: a fixed number of queries per target server.

    unreachable: when given, a server that cannot be read is recorded there and left out of Live.
    """
    servers = {d.target.server for d in desired.values()}
    if all_servers:
        servers |= set(config.servers)
    states: dict[str, ServerLive] = {}
    for name in sorted(servers - set(unreachable or ())):
        with _per_server(name, unreachable):
            with connect(config.server(name), read_only=True) as conn:
                ledger = read_ledger(conn, config.ledger_database)
                databases = read_databases(conn)
                targets = {d.target.database for d in desired.values() if d.target.server == name}
                shapes = read_target_shapes(conn, sorted(targets & databases))
                running = [r.name for r in ledger.records.values() if r.status in {"building", "deleting"}]
                busy = read_busy(conn, running, config.ledger_database)
            states[name] = ServerLive(name, ledger, databases, shapes, busy)
    return Live(states, config.ledger_database, unreachable=dict(unreachable or {}))


def scaffold_manifest(config: Config, server: str, database: str, *, name: str, target: str) -> tuple[str, int]:
    """`moenv init`: the text of a first manifest copying `database` whole, columns that look
    personal masked, and how many are; checked by resolving it against the catalog it came from."""
    with connect(config.server(server), read_only=True) as conn:
        catalog = read_catalogs(conn, [database])[database]
    if not catalog.exists:
        raise ConflictError(
            f"database {database!r} does not exist on server {server!r}", hint="name a database of the source server"
        )
    text, masked = scaffold(catalog, name=name, target=target, server=server, today=datetime.now(UTC).date())
    with tempfile.TemporaryDirectory(prefix="moenv-init-") as folder:
        draft = Path(folder) / f"{name}.yaml"
        draft.write_text(text, encoding="utf-8")
        [manifest] = load([draft])
        resolve_environment(manifest.spec, catalog, problem=manifest.problem)  # the masks compile and fit
    return text, masked


@dataclass(frozen=True)
class ServerRoles:
    """What the loaded manifests ask of one server."""

    sources: frozenset[str] = frozenset()  # source databases read there
    targets: frozenset[str] = frozenset()  # environments whose target is there
    streamed_from: bool = False  # a source of a copy to another server
    streamed_to: bool = False  # a target of a copy from another server


def check(
    config: Config, paths: Sequence[Path] = (), *, variables: Mapping[str, str] | None = None
) -> tuple[dict[str, ServerRoles], list[Finding]]:
    """`moenv check`: every server the manifests use (every configured one without manifests),
    probed the way an apply would use it. Findings of unreachable servers say so; nothing raises
    for a server's sake."""
    manifests = load(paths, variables=variables) if paths else []
    roles: dict[str, ServerRoles] = {name: ServerRoles() for name in (config.servers if not manifests else ())}
    for manifest in manifests:
        body = manifest.spec.spec
        source, target = body.source.server, body.target_server
        config.server(source)
        config.server(target)
        across = source != target
        was = roles.get(source, ServerRoles())
        roles[source] = replace(
            was, sources=was.sources | {body.source.database}, streamed_from=was.streamed_from or across
        )
        was = roles.get(target, ServerRoles())
        roles[target] = replace(was, targets=was.targets | {manifest.name}, streamed_to=was.streamed_to or across)
    findings: list[Finding] = []
    for name, role in sorted(roles.items()):
        try:
            with connect(config.server(name)) as conn:
                findings.append(engine_finding(conn))
                if role.sources:
                    findings += source_findings(conn, role.sources, streamed=role.streamed_from)
                if role.targets or not manifests:
                    findings += target_findings(conn, config.ledger_database, loads=role.streamed_to)
        except DatabaseError as exc:
            findings.append(unreachable(name, exc.message))
    if manifests:
        findings += _plan_findings(manifests, config)
    return roles, findings


def _plan_findings(manifests: Sequence[LoadedManifest], config: Config) -> list[Finding]:
    """The environments as `plan --keep-going` sees them (server "" in the findings): what would be
    done, what is blocked or in error, which copies keep personal-looking columns unmasked."""
    try:
        planned = plan_manifests(manifests, config=config, options=PlanOptions(keep_going=True))
    except MoenvError as exc:  # a missing salt, a prune guard...: nothing could be planned
        return [Finding("", "plan", "failure", exc.message, exc.hint)]
    found: list[Finding] = []
    for action in planned.actions:
        found.append(Finding("", action.environment, "ok", f"{action.op}: {'; '.join(action.reasons)}"))
        personal = getattr(action, "desired", None)
        if personal is not None and personal.unmasked_personal:
            copied = ", ".join(personal.unmasked_personal)
            found.append(
                Finding(
                    "",
                    action.environment,
                    "warning",
                    f"personal data? copied unmasked: {copied}",
                    "mask it, or leave it out with exclude_columns (`moenv init` suggests masks)",
                )
            )
    found += [Finding("", name, "ok", "unchanged") for name in planned.unchanged]
    for blocked in planned.blocked:
        found.append(Finding("", blocked.environment, "warning", f"{blocked.op} blocked: {'; '.join(blocked.reasons)}"))
    for error in planned.errors:
        hints = [r.removeprefix("hint: ") for r in error.reasons[1:] if r.startswith("hint: ")]
        found.append(Finding("", error.environment, "failure", error.reasons[0], hints[0] if hints else None))
    return found


def plan(
    paths: Sequence[Path],
    *,
    config: Config,
    options: PlanOptions | None = None,
    variables: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> Plan:
    """What `apply` would do for the manifests in `paths`."""
    moment = now or datetime.now(UTC)
    manifests = load(paths, variables=variables, now=moment)
    return plan_manifests(manifests, config=config, options=options, now=moment)


def plan_manifests(
    manifests: Sequence[LoadedManifest],
    *,
    config: Config,
    options: PlanOptions | None = None,
    now: datetime | None = None,
) -> Plan:
    opts = replace(options or PlanOptions(), quotas=config.quotas)
    selector = opts.selector
    names = {m.name for m in manifests}
    chosen = [m for m in manifests if selector.matches(m.name, m.spec.metadata.labels)]
    unreachable: dict[str, str] = {}
    desired, errors = _resolve(chosen, config, keep_going=opts.keep_going, unreachable=unreachable)
    all_servers = opts.prune or bool(opts.quotas.servers)
    live = read_live(config, desired, all_servers=all_servers, unreachable=unreachable if opts.keep_going else None)
    for name in [n for n, want in desired.items() if want.target.server in unreachable]:
        errors.append(_unreachable_error(name, "target", desired[name].target.server, unreachable))
        desired = {n: w for n, w in desired.items() if n != name}
    unknown = sorted(selector.only - names - ({r.name for r in live.records()} if opts.prune else set()))
    if unknown:
        raise ConflictError(
            f"--only names {', '.join(unknown)}, which no loaded manifest defines"
            + (" and no ledger holds" if opts.prune else ""),
            hint=f"loaded: {', '.join(sorted(names)) or 'none'}",
        )
    if any(d.manifest.spec.verify.content for d in desired.values()):
        live = replace(live, content=read_content(config, desired, live))
    planned = build_plan(desired, live, now=now or datetime.now(UTC), options=opts, declared=frozenset(names))
    if not errors:
        return planned
    return planned.model_copy(update={"errors": tuple(sorted((*planned.errors, *errors), key=lambda e: e.environment))})


def apply(
    plan_: Plan,
    *,
    config: Config,
    reporter: Reporter | None = None,
    clock: Clock = utc_now,
    check_revisions: bool = True,
    parallel: int = 1,
    jobs: int = 1,
) -> ApplyResult:
    """Apply a plan: `jobs` environments at once; `parallel` tables at once where the target is on
    another server than the source."""
    return apply_plan(
        plan_, config, reporter=reporter, clock=clock, check_revisions=check_revisions, parallel=parallel, jobs=jobs
    )


@dataclass(frozen=True)
class Status:
    records: list[LedgerRecord] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)


def status(config: Config) -> Status:
    """Every environment in the ledgers of every configured server; unreachable servers are reported."""
    records: list[LedgerRecord] = []
    unreachable: dict[str, str] = {}
    for name in sorted(config.servers):
        try:
            with connect(config.server(name), read_only=True) as conn:
                records += read_ledger(conn, config.ledger_database).records.values()
        except MoenvError as exc:
            unreachable[name] = exc.message
    return Status(sorted(records, key=lambda r: r.name), unreachable)


def find_record(config: Config, environment: str) -> tuple[LedgerRecord, int]:
    """The ledger record of `environment` and its server's ledger revision."""
    for name in sorted(config.servers):
        with connect(config.server(name), read_only=True) as conn:
            ledger = read_ledger(conn, config.ledger_database)
        if environment in ledger.records:
            return ledger.records[environment], ledger.revision
    raise ConflictError(f"no environment named {environment!r} in any ledger", hint="`moenv status` lists them")


def destroy_plan(config: Config, environment: str, *, force: bool = False, now: datetime | None = None) -> Plan:
    """A plan that deletes one environment (protect needs --force)."""
    record, revision = find_record(config, environment)
    if record.protect and not force:
        raise ConflictError(f"{environment} is protected (protect: true)", hint="use --force to delete it anyway")
    action = Delete(
        environment=record.name,
        target_server=record.target_server,
        target_database=record.target_database,
        ledger_stamp=record.updated_at.isoformat(),
        staging_database=record.staging_database,
        reasons=("requested by moenv destroy",),
        steps=delete_steps(record),
    )
    return Plan(
        created_at=now or datetime.now(UTC),
        actions=(action,),
        ledger_revisions={record.target_server: revision},
        ledger_database=config.ledger_database,
    )


def history(config: Config, environment: str | None = None, limit: int = 50) -> list[Event]:
    events: list[Event] = []
    for name in sorted(config.servers):
        with connect(config.server(name), read_only=True) as conn:
            events += read_events(conn, config.ledger_database, environment, limit)
    return sorted(events, key=lambda e: (e.at, e.id), reverse=True)[:limit]


def gc_plan(config: Config, *, options: PlanOptions | None = None, now: datetime | None = None) -> Plan:
    """Expired environments and leftovers of interrupted applies, on every configured server."""
    # MatrixOne: moenv's snapshots, listed before the ledgers, so each one's record is in them.
    snapshots: dict[str, list[str]] = {}
    for name in sorted(config.servers):
        with connect(config.server(name), read_only=True) as conn:
            # a server whose mo_snapshots this user may not read (a read-only source) holds none of moenv's
            if conn.engine.kind == "matrixone":
                with contextlib.suppress(DatabaseError):
                    snapshots[name] = read_moenv_snapshots(conn, config.ledger_database)
    live = read_live(config, {}, all_servers=True)
    return build_gc_plan(live, now=now or datetime.now(UTC), options=options or PlanOptions(), snapshots=snapshots)


def refresh_plan(
    config: Config,
    environment: str,
    *,
    paths: Sequence[Path] = (),
    now: datetime | None = None,
    full: bool = False,
) -> Plan:
    """Refresh one environment now: from its manifest when `paths` hold it, else from the spec it was applied with."""
    moment = now or datetime.now(UTC)
    manifests = [m for m in load(paths, now=moment) if m.name == environment] if paths else []
    if not manifests:
        record, _ = find_record(config, environment)
        if not record.spec:
            raise ConflictError(f"{environment} has never been applied completely: apply its manifest instead")
        spec = EnvironmentSpec.model_validate(record.spec)
        manifests = [LoadedManifest(spec, Path(f"<ledger:{environment}>"), 1)]
    desired = resolve(manifests, config)
    live = read_live(config, desired)
    want = desired[environment]
    current = live.record(environment)
    if current is None or current.status == "expired":
        raise ConflictError(f"{environment} does not exist (yet): apply its manifest to create it")
    if current.protect:
        raise ConflictError(f"{environment} is protected (protect: true)", hint="unprotect it to refresh it")
    action = Refresh(
        environment=environment,
        target_server=want.target.server,
        target_database=want.target.database,
        ledger_stamp=current.updated_at.isoformat(),
        desired=want,
        reasons=("requested by moenv refresh",),
        steps=refresh_steps(want, current, full=full),
    )
    if current.target_database != want.target.database:
        raise ConflictError(f"{environment}: its target changed in the manifest; run `moenv apply` to rebuild it")
    return Plan(
        created_at=moment, actions=(action,), ledger_revisions=live.revisions, ledger_database=live.ledger_database
    )


@dataclass(frozen=True)
class TableDetail:
    name: str
    kind: str
    rows: int | None
    bytes: int | None
    indexes: int
    method: str
    seconds: float | None


@dataclass(frozen=True)
class EnvironmentDetail:
    record: LedgerRecord
    tables: list[TableDetail]


def show(config: Config, environment: str) -> EnvironmentDetail:
    """The ledger record and per-table statistics (live rows and sizes, last copy method and time)."""
    record, _ = find_record(config, environment)
    with connect(config.server(record.target_server), read_only=True) as conn:
        catalog = read_catalogs(conn, [record.target_database])[record.target_database]
    stats = {s.table: s for s in record.stats}
    tables = [
        TableDetail(
            name=table.name,
            kind=table.kind,
            rows=table.rows_estimate if table.kind == "table" else None,
            bytes=table.data_bytes,
            indexes=len(table.indexes),
            method=stats[table.name].method if table.name in stats else ("view" if table.kind == "view" else "-"),
            seconds=stats[table.name].seconds if table.name in stats else None,
        )
        for table in catalog.tables.values()
    ]
    return EnvironmentDetail(record, tables)


def read_content(config: Config, desired: Mapping[str, Desired], live: Live) -> dict[str, dict[str, TableContent]]:
    """For environments with `verify: {content: true}` that are ready: counts and checksums to compare.

    Opt-in because it costs a COUNT of every copied table on both sides (and CHECKSUM TABLE of
    the copies that are whole and unmasked: no filter, no mask, every column, no generated one).
    """
    found: dict[str, dict[str, TableContent]] = {}
    for name, want in sorted(desired.items()):
        record = live.record(name)
        spec = want.manifest.spec
        if not spec.verify.content or spec.data != "full" or record is None or record.status != "ready":
            continue
        target = live.servers.get(want.target.server)
        if target is None or record.target_database not in target.databases:
            continue
        counts = count_statements(want, orphans=True)
        facts: dict[str, TableContent] = {}
        with (
            connect(config.server(want.source.server), read_only=True) as source,
            connect(config.server(want.target.server), read_only=True) as copy,
        ):
            for table in want.tables:
                counting = counts.get(table.target, mysql.count_rows(want.source.database, table.source))
                expected = int(source.scalar(counting) or 0)
                present = int(copy.scalar(mysql.count_rows(record.target_database, table.target)) or 0)
                changed = table.where or table.masked or table.excluded_columns or table.has_generated
                whole = not changed and table.target not in counts and "NULL" not in table.select
                sums: tuple[int | None, int | None] = (None, None)
                if whole and expected == present:  # CHECKSUM TABLE is unstable with generated columns
                    sums = (
                        source.query(mysql.checksum_table(want.source.database, table.source))[0][1],
                        copy.query(mysql.checksum_table(record.target_database, table.target))[0][1],
                    )
                facts[table.target] = TableContent(expected, present, *sums)
        found[name] = facts
    return found
