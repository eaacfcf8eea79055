"""The clone guide's Python API: `moenv.connect(url).clone.clone_database(...)`, sync and async.

Every clone call builds an EnvironmentSpec and goes through `moenv.api` (resolver, planner,
executor, ledger), exactly like a manifest; the async twins run the same calls in worker threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pydantic import ValidationError

from moenv import api
from moenv.errors import CloneError, ConfigError, ConflictError, DatabaseError, ManifestError, MoenvError, Problem
from moenv.executor.apply import Clock, utc_now
from moenv.live.catalog import read_catalogs, read_databases
from moenv.live.connection import connect as open_session
from moenv.live.ledger import read_ledger
from moenv.manifest.loader import LoadedManifest
from moenv.manifest.support import unsupported_fields
from moenv.models.catalog import Catalog, Table
from moenv.models.config import Config, Server
from moenv.models.desired import Desired
from moenv.models.ledger import LedgerRecord
from moenv.models.manifest import EnvironmentSpec, check_name
from moenv.models.plan import Action, Create, Plan, PlanOptions, Rebuild, Refresh, Selector, Step
from moenv.resolve import resolve_environment

__all__ = [
    "AsyncClient",
    "AsyncCloneManager",
    "CleanupResult",
    "Client",
    "CloneInfo",
    "CloneManager",
    "CloneProgress",
    "CloneResult",
    "CloneStatistics",
    "CloneStatus",
    "DeleteResult",
    "connect",
    "connect_async",
    "environment_name",
]

CREATED_BY = "created-by"
PYTHON = "python"
NO_ROWS = "FALSE"
"""The `where` of a table copied without its rows in an environment whose other tables have rows."""
# Column names taken for "when this row last changed", in this order, after any column the
# server itself updates (`ON UPDATE CURRENT_TIMESTAMP`).
CHANGE_COLUMNS = (
    "updated_at",
    "modified_at",
    "last_modified",
    "last_updated",
    "updated_on",
    "modified_on",
    "changed_at",
    "updated",
    "modified",
)
_TIME_TYPES = ("datetime", "timestamp", "date")
_STATES: Mapping[str, str] = {
    "building": "running",
    "ready": "completed",
    "failed": "failed",
    "deleting": "deleting",
    "expired": "expired",
}
# Manifest fields this facade sets, named by the parameter the caller used (for refusals).
_PARAMETERS = (
    ("spec.grants", "include_permissions=True"),
    ("spec.target.server", "target_server"),
    ("spec.refresh", "track_changes=True"),
    ("spec.rules", "track_changes=True"),
)
_ENV_ALLOWED = re.compile(r"[^a-z0-9_.\-]")

ProgressCallback = Callable[["CloneProgress"], None]


# -- results ------------------------------------------------------------------------------------
#
# Datetimes in results are naive local time, like `datetime.now()`, because that is what the
# clone guide compares them with (`clone.created_at < datetime.now() - timedelta(days=30)`).


@dataclass(frozen=True)
class CloneResult:
    """What a clone call did. A failed copy raises CloneError, so `success` is True when returned."""

    success: bool
    name: str
    """The environment (`moenv status`, `moenv export NAME`)."""
    source_database: str
    target_database: str
    target_server: str
    status: str
    """completed"""
    action: str
    """create, rebuild (the environment changed) or refresh (the same clone, copied again)."""
    tables: tuple[str, ...] = ()
    """Target tables, parents first."""
    rows_copied: int = 0
    seconds: float = 0.0
    notes: tuple[str, ...] = ()
    """How the guide's parameters were mapped where that is not obvious; views that could not be recreated."""
    incremental: bool = False
    """True when only the rows changed since the last copy were copied (clone_database_incremental, track_changes)."""
    error: str | None = None


@dataclass(frozen=True)
class CloneInfo:
    """One environment as the ledger records it (list_clones, get_clone)."""

    success: bool
    name: str
    source_database: str
    target_database: str
    source_server: str
    target_server: str
    status: str
    """running, completed, failed, deleting or expired."""
    created_at: datetime
    last_updated: datetime
    description: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    table_count: int = 0
    rows_copied: int = 0
    size_mb: float | None = None
    """Data size of the target's tables (information_schema DATA_LENGTH); None when unreadable."""
    expires_at: datetime | None = None
    error: str | None = None

    @property
    def created_by_python(self) -> bool:
        return self.labels.get(CREATED_BY) == PYTHON


@dataclass(frozen=True)
class CloneStatus:
    """Progress of a clone as its ledger row says right now (live while an apply runs elsewhere)."""

    success: bool
    name: str
    state: str
    """running, completed, failed, deleting, expired, or not_found."""
    progress: float = 0.0
    """Percent of the tables done (100 when completed)."""
    tables_completed: int = 0
    tables_total: int = 0
    rows_copied: int = 0
    last_updated: datetime | None = None
    message: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class CloneStatistics:
    """Sizes and counts of a clone's target database (`moenv show`)."""

    success: bool
    name: str
    total_size_mb: float = 0.0
    table_count: int = 0
    view_count: int = 0
    total_rows: int = 0
    """Rows as copied by the last apply (exact)."""
    estimated_rows: int = 0
    """Rows the server estimates now (information_schema)."""
    index_count: int = 0
    """Indexes of the base tables, primary keys included."""
    error: str | None = None


@dataclass(frozen=True)
class DeleteResult:
    success: bool
    name: str
    target_database: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class CleanupResult:
    success: bool
    deleted_count: int = 0
    deleted: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()
    """(environment, error) of the clones that could not be deleted."""
    error: str | None = None


@dataclass(frozen=True)
class CloneProgress:
    """One report of a running apply, given to the `progress` callback (in the worker thread)."""

    environment: str
    event: Literal["started", "step", "finished"]
    op: str
    step: str | None = None
    table: str | None = None
    rows: int | None = None
    seconds: float = 0.0
    error: str | None = None


class _ProgressReporter:
    """The executor's Reporter, forwarding to a user callback."""

    def __init__(self, callback: ProgressCallback) -> None:
        self.callback = callback

    def action_started(self, action: Action) -> None:
        self.callback(CloneProgress(action.environment, "started", action.op))

    def step_started(self, action: Action, step: Step) -> None:
        pass  # the guide's callbacks report finished steps

    def rows_copied(self, action: Action, rows: int) -> None:
        pass  # `get_clone_status(...).progress` reads the ledger's running count

    def step_finished(self, action: Action, step: Step, *, rows: int | None, seconds: float) -> None:
        self.callback(CloneProgress(action.environment, "step", action.op, step.kind, step.table, rows, seconds))

    def action_finished(self, action: Action, *, error: str | None, seconds: float) -> None:
        self.callback(CloneProgress(action.environment, "finished", action.op, seconds=seconds, error=error))


# -- pure mapping -------------------------------------------------------------------------------


def environment_name(target_database: str, target_server: str | None = None) -> str:
    """`py-<target>` (`py-<server>.<target>` on another server than the client's); pure.

    Environment names are lower case; a target name that had to be changed to fit gets a digest
    of the exact name, so two targets never share an environment.
    """
    base = f"{target_server}.{target_database}" if target_server else target_database
    name = _ENV_ALLOWED.sub("-", base.lower())
    if name != base:
        name = f"{name}-{hashlib.sha256(base.encode()).hexdigest()[:8]}"
    return f"py-{name}"[:128].rstrip("-_.")


def mask_of(transformations: Mapping[str, str | None]) -> dict[str, str | None]:
    """The guide's data_transformations as `rules.<t>.mask`: the string "NULL" (or None) → null; pure."""
    return {
        column: None if expression is None or expression.strip().upper() == "NULL" else expression
        for column, expression in transformations.items()
    }


def change_column(table: Table) -> str | None:
    """The column that says when a row last changed, if the table has one; pure."""
    timed = [c for c in table.columns if c.type.lower().startswith(_TIME_TYPES)]
    for column in timed:
        if "on update" in column.extra.lower():
            return column.name
    by_name = {c.name.lower(): c.name for c in timed}
    return next((by_name[n] for n in CHANGE_COLUMNS if n in by_name), None)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _problem_text(problem: Problem) -> str:
    text = f"{problem.field}: {problem.message}" if problem.field else problem.message
    for prefix, parameter in _PARAMETERS:
        if problem.field and problem.field.startswith(prefix) and "not supported yet" in problem.message:
            return f"{text} (from {parameter})"
    return text


def _error_text(exc: MoenvError) -> str:
    if isinstance(exc, ManifestError):
        return "; ".join(_problem_text(p) for p in exc.problems)
    return exc.message


def _clone_error(exc: MoenvError, environment: str) -> CloneError:
    return CloneError(f"{environment}: {_error_text(exc)}", environment=environment, hint=exc.hint)


def build_spec(
    name: str,
    *,
    source_server: str,
    source_database: str,
    target_server: str | None,
    target_database: str,
    body: Mapping[str, Any],
    description: str | None = None,
) -> EnvironmentSpec:
    """The manifest a clone call stands for; CloneError when a name or value is not acceptable; pure."""
    document = {
        "apiVersion": "moenv/v1",
        "kind": "Environment",
        "metadata": {"name": name, "labels": {CREATED_BY: PYTHON}}
        | ({"description": description} if description is not None else {}),
        "spec": {
            "source": {"server": source_server, "database": source_database},
            "target": {"database": target_database} | ({"server": target_server} if target_server else {}),
            **body,
        },
    }
    try:
        return EnvironmentSpec.model_validate(document)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in error['loc'])}: {str(error['msg']).removeprefix('Value error, ')}"
            for error in exc.errors(include_url=False)
        ]
        raise CloneError(f"{name}: " + "; ".join(problems), environment=name) from exc


@dataclass(frozen=True)
class _Entry:
    """One table (or view) of an environment being merged: its rule as written, and whether rows are copied."""

    source: str
    rule: Mapping[str, Any]
    with_data: bool
    view: bool = False

    @property
    def target(self) -> str:
        return str(self.rule.get("rename") or self.source)


def _entries(spec: EnvironmentSpec, desired: Desired) -> dict[str, _Entry]:
    full = spec.spec.data == "full"
    entries: dict[str, _Entry] = {}
    for table in desired.tables:
        named = spec.spec.rules.get(table.source)
        rule = dict(named.model_dump(mode="json", by_alias=True, exclude_defaults=True)) if named else {}
        no_rows = rule.get("where") == NO_ROWS
        if no_rows:
            del rule["where"]
        entries[table.source] = _Entry(table.source, rule, full and not no_rows)
    for view in [v.name for v in desired.views] + [name for name, _ in desired.skipped_views]:
        entries[view] = _Entry(view, {}, False, view=True)
    return entries


def merge_specs(
    existing: EnvironmentSpec,
    existing_desired: Desired,
    addition: EnvironmentSpec,
    addition_desired: Desired,
    *,
    explicit: Collection[str],
    indexes: bool | None = None,
    constraints: bool | None = None,
) -> EnvironmentSpec:
    """`existing` with the tables of `addition`; pure.

    Tables named in `explicit` replace their earlier rule (clone_table of a table already there
    clones it again, as asked); tables the addition only pulled in (foreign-key parents of
    clone_related_tables) keep the rule they had, so a mask is never lost by a later call. Table
    lists become explicit (globs and `related` are expanded against the source), and a table
    copied without rows next to tables with rows gets `where: FALSE`.
    """
    name = existing.name
    if (existing.spec.source.server, existing.spec.source.database) != (
        addition.spec.source.server,
        addition.spec.source.database,
    ):
        raise CloneError(
            f"{name}: {existing.spec.target.database} holds tables of {existing.spec.source.database}; "
            f"one target database is cloned from one source database, not also from {addition.spec.source.database}",
            environment=name,
            hint="clone into another target_database",
        )
    flags = (("indexes", indexes, existing.spec.indexes), ("constraints", constraints, existing.spec.constraints))
    for flag, wanted, current in flags:
        if wanted is not None and wanted != current:
            raise CloneError(
                f"{name}: {existing.spec.target.database} was cloned with include_{flag}={current}; "
                f"{flag} are set per target database, so a table cannot be added with include_{flag}={wanted}",
                environment=name,
                hint="clone it into another target_database, or clone the whole database again",
            )
    merged = _entries(existing, existing_desired)
    for source, entry in _entries(addition, addition_desired).items():
        before = merged.get(source)
        if before is not None and source not in explicit:
            continue
        if before is not None and not entry.view and before.target != entry.target:
            raise CloneError(
                f"{name}: {existing.spec.target.database} already holds {existing.spec.source.database}.{source} "
                f"as {before.target}; an environment copies each source table once, "
                f"so it cannot also be {entry.target}",
                environment=name,
                table=source,
                hint=f"clone {source} as {entry.target} into another target_database",
            )
        merged[source] = entry
    tables = [e for e in merged.values() if not e.view]
    full = any(e.with_data for e in tables)
    rules: dict[str, dict[str, Any]] = {}
    for entry in tables:
        rule = dict(entry.rule)
        if not entry.with_data:
            rule.pop("where", None)
            if full:
                rule["where"] = NO_ROWS
        if rule:
            rules[entry.source] = rule
    body = existing.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    body |= {"tables": {"include": list(merged)}, "rules": rules, "data": "full" if full else "schema"}
    document = existing.model_dump(mode="json", by_alias=True, exclude_defaults=True) | {"spec": body}
    return EnvironmentSpec.model_validate(document)


# -- the manager --------------------------------------------------------------------------------

_target_locks: dict[tuple[str, int, str | None, str, str], threading.Lock] = {}
_target_locks_guard = threading.Lock()


@contextmanager
def _target_lock(server: Server, ledger: str, database: str) -> Iterator[None]:
    """Calls into one target database, from any thread of this process, merge one after another."""
    key = (server.host, server.port, server.socket, ledger, database)
    with _target_locks_guard:
        lock = _target_locks.setdefault(key, threading.Lock())
    with lock:
        yield


def _local(moment: datetime) -> datetime:
    return moment.astimezone().replace(tzinfo=None)


def _made_by_python(record: LedgerRecord) -> bool:
    labels = (record.spec.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(CREATED_BY) == PYTHON)


def _same_server(a: Server, b: Server) -> bool:
    return (a.host, a.port, a.socket, a.user) == (b.host, b.port, b.socket, b.user)


@dataclass(frozen=True)
class _Request:
    operation: str
    source_database: str
    target_database: str
    body: Mapping[str, Any]
    merge: bool
    explicit: tuple[str, ...] = ()
    description: str | None = None
    target_server: str | None = None
    indexes: bool | None = None
    constraints: bool | None = None
    notes: tuple[str, ...] = ()


class CloneManager:
    """The clone guide's operations on one server; safe to call from several threads at once.

    Each clone call is one environment per target database (`py-<target>`), planned and applied
    by moenv: a new target is created, a target made by earlier calls is rebuilt (table calls add
    to it) or, unchanged, copied again; every call leaves it freshly copied from its source.
    """

    def __init__(
        self,
        config: Config,
        server: str = "default",
        *,
        clock: Clock = utc_now,
        progress: ProgressCallback | None = None,
    ) -> None:
        config.server(server)
        self._config = config
        self._server = server
        self._clock = clock
        self._progress = progress
        self._config_guard = threading.Lock()

    @property
    def config(self) -> Config:
        return self._config

    @property
    def server(self) -> str:
        return self._server

    def environment_name(self, target_database: str, target_server: str | None = None) -> str:
        """The environment a clone into `target_database` (on `target_server`) is recorded as."""
        server = self._target_server(target_server)
        return environment_name(target_database, None if server == self._server else server)

    # -- database calls (each defines the whole target database) --------------------------------

    def clone_database(
        self,
        source_database: str,
        target_database: str,
        include_data: bool = True,
        include_indexes: bool = True,
        include_permissions: bool = False,
        description: str | None = None,
        target_server: str | None = None,
        data_filters: Mapping[str, str] | None = None,
    ) -> CloneResult:
        """Every table and view (`data: full`, or `schema` without data); data_filters → rules.<t>.where."""
        body: dict[str, Any] = {
            "data": "full" if include_data else "schema",
            "indexes": include_indexes,
            "grants": include_permissions,
            "rules": {table: {"where": where} for table, where in (data_filters or {}).items()},
        }
        return self._clone(
            _Request(
                "clone_database",
                source_database,
                target_database,
                body,
                merge=False,
                description=description,
                target_server=target_server,
            )
        )

    def clone_database_schema(
        self,
        source_database: str,
        target_database: str,
        tables: Sequence[str] | None = None,
        include_indexes: bool = True,
        include_constraints: bool = True,
    ) -> CloneResult:
        """Structure only (`data: schema`), of every table or of `tables` (globs allowed)."""
        body: dict[str, Any] = {
            "data": "schema",
            "indexes": include_indexes,
            "constraints": include_constraints,
        }
        if tables is not None:
            body["tables"] = {"include": list(tables)}
        return self._clone(_Request("clone_database_schema", source_database, target_database, body, merge=False))

    def clone_database_incremental(
        self,
        source_database: str,
        target_database: str,
        last_clone_timestamp: str | datetime | None = None,
        track_changes: bool = False,
        change_window_hours: float | None = None,
    ) -> CloneResult:
        """Rows changed since a moment, or a clone kept up to date by change tracking.

        Mapping, per table with a change column (`ON UPDATE CURRENT_TIMESTAMP`, else updated_at,
        modified_at, …); tables without one are always copied whole:
        - `last_clone_timestamp=T`: only the rows with `column >= T` (`rules.<t>.where`; T is
          compared as written with the column's values), with `integrity: loose`, since changed
          rows may reference unchanged ones. Rows deleted before T are not represented.
        - `change_window_hours=N` alone: the same, with `column >= NOW() - INTERVAL N HOUR`
          evaluated by the source server at copy time.
        - `track_changes=True`: `rules.<t>.watermark: column` and `refresh: {every: <N or 24>h,
          mode: incremental, fallback: full}`. The first call copies; calling again with the same
          arguments refreshes in place: rows changed since the stored watermarks are upserted,
          rows gone from the source removed (`CloneResult.incremental`). `moenv export` gives the
          manifest that `moenv apply` then refreshes every N hours.
        - none of them: a full clone (the first copy of an incremental series is a full one).
        """
        catalog = self._source_catalog(source_database)
        changes = {t.name: c for t in catalog.base_tables if (c := change_column(t))}
        whole = sorted(t.name for t in catalog.base_tables if t.name not in changes)
        since: str | None = None
        if last_clone_timestamp is not None:
            moment = (
                last_clone_timestamp
                if isinstance(last_clone_timestamp, datetime)
                else _parse_timestamp(last_clone_timestamp)
            )
            since = "'" + moment.strftime("%Y-%m-%d %H:%M:%S" + (".%f" if moment.microsecond else "")) + "'"
        elif change_window_hours is not None and not track_changes:
            since = f"NOW() - INTERVAL {_hours(change_window_hours)} HOUR"
        rules: dict[str, dict[str, str]] = {}
        notes: list[str] = []
        body: dict[str, Any] = {"data": "full"}
        if since is not None:
            body["integrity"] = "loose"
            for table, column in changes.items():
                rules[table] = {"where": f"{_quote(column)} >= {since}"}
            notes.append(
                "rows changed since "
                + since.strip("'")
                + ": "
                + (", ".join(f"{t} by {c}" for t, c in sorted(changes.items())) or "no table has a change column")
            )
            if whole:
                notes.append(f"copied whole (no change column): {', '.join(whole)}")
        if track_changes:
            for table, column in changes.items():
                rules.setdefault(table, {})["watermark"] = column
            every = f"{_hours(change_window_hours or 24)}h"
            body["refresh"] = {"every": every, "mode": "incremental", "fallback": "full"}
        body["rules"] = rules
        request = _Request(
            "clone_database_incremental", source_database, target_database, body, merge=False, notes=tuple(notes)
        )
        return self._clone(request)

    # -- table calls (each adds to, or replaces tables in, the target database) -----------------

    def clone_table(
        self,
        source_database: str,
        source_table: str,
        target_database: str,
        target_table: str | None = None,
        columns: Sequence[str] | None = None,
        where_condition: str | None = None,
        data_transformations: Mapping[str, str | None] | None = None,
        include_data: bool = True,
        leak_check: bool = True,
    ) -> CloneResult:
        """One table: columns → rules.<t>.columns, where_condition → where,
        data_transformations → mask ("NULL" → null), target_table → rename.

        `leak_check=False` (moenv's addition) is for transformations that keep some source values
        on purpose (a renamed status); anonymizing masks keep the default, which fails the copy
        when a masked value still equals a source value."""
        return self._clone(
            self._table_request(
                "clone_table",
                source_database,
                source_table,
                target_database,
                target_table=target_table,
                columns=columns,
                where=where_condition,
                mask=mask_of(data_transformations or {}),
                include_data=include_data,
                leak_check=leak_check,
            )
        )

    def clone_table_schema(
        self,
        source_database: str,
        source_table: str,
        target_database: str,
        target_table: str | None = None,
        include_indexes: bool = True,
        include_constraints: bool = True,
    ) -> CloneResult:
        """One table's structure (in a target whose other tables have rows: `where: FALSE`)."""
        return self._clone(
            self._table_request(
                "clone_table_schema",
                source_database,
                source_table,
                target_database,
                target_table=target_table,
                include_data=False,
                indexes=include_indexes,
                constraints=include_constraints,
            )
        )

    def clone_tables(
        self,
        source_database: str,
        target_database: str,
        tables: Sequence[str],
        where_conditions: Mapping[str, str] | None = None,
        include_data: bool = True,
    ) -> CloneResult:
        """Several tables in one copy: tables → tables.include, where_conditions → rules.<t>.where."""
        body: dict[str, Any] = {
            "data": "full" if include_data else "schema",
            "tables": {"include": list(tables)},
            "rules": {table: {"where": where} for table, where in (where_conditions or {}).items()},
        }
        return self._clone(
            _Request("clone_tables", source_database, target_database, body, merge=True, explicit=tuple(tables))
        )

    def clone_related_tables(
        self,
        source_database: str,
        target_database: str,
        root_table: str,
        include_data: bool = True,
        max_depth: int = 1,
    ) -> CloneResult:
        """root_table, its children down to max_depth levels and every parent: tables.related."""
        body: dict[str, Any] = {
            "data": "full" if include_data else "schema",
            # An explicit include keeps the meaning when the spec is read back from the ledger.
            "tables": {"include": [root_table], "related": {"roots": [root_table], "max_depth": max_depth}},
        }
        return self._clone(
            _Request("clone_related_tables", source_database, target_database, body, merge=True, explicit=(root_table,))
        )

    def clone_cross_database(
        self,
        source_database: str,
        source_table: str,
        target_database: str,
        target_table: str,
        include_data: bool = True,
    ) -> CloneResult:
        """clone_table into another database on the same server."""
        return self._clone(
            self._table_request(
                "clone_cross_database",
                source_database,
                source_table,
                target_database,
                target_table=target_table,
                include_data=include_data,
            )
        )

    def clone_cross_server(
        self,
        source_database: str,
        source_table: str,
        target_server: str,
        target_database: str,
        target_table: str,
        include_data: bool = True,
    ) -> CloneResult:
        """clone_table onto another server: a server name of the config, a mysql:// URL, or host:port
        (then with the client's user and password)."""
        return self._clone(
            self._table_request(
                "clone_cross_server",
                source_database,
                source_table,
                target_database,
                target_table=target_table,
                include_data=include_data,
                target_server=target_server,
            )
        )

    # -- reading and deleting ---------------------------------------------------------------------

    def list_clones(self, database: str | None = None) -> list[CloneInfo]:
        """Every environment in the ledgers of the configured servers (those of manifests too);
        `database` keeps the clones of that source database."""
        records = [r for r in self._records() if database is None or r.source_database == database]
        sizes = self._sizes(records)
        return [self._info(r, sizes.get((r.target_server, r.target_database))) for r in records]

    def get_clone(self, name: str) -> CloneInfo | None:
        """A clone by environment name or by target database name; None when there is none."""
        record = self._find(name)
        if record is None:
            return None
        return self._info(record, self._sizes([record]).get((record.target_server, record.target_database)))

    def get_clone_status(self, name: str) -> CloneStatus:
        """State and progress from the ledger; state `not_found` (success False) when unknown."""
        record = self._find(name)
        if record is None:
            return CloneStatus(False, name, "not_found", error=f"no clone named {name!r}")
        state = _STATES.get(record.status, record.status)
        total = record.tables_total
        done = total if state == "completed" else record.tables_done
        progress = 100.0 if state == "completed" else (round(100.0 * done / total, 1) if total else 0.0)
        return CloneStatus(
            True,
            record.name,
            state,
            progress=progress,
            tables_completed=done,
            tables_total=total,
            rows_copied=record.rows_copied,
            last_updated=_local(record.updated_at),
            message=record.message,
        )

    def get_clone_statistics(self, name: str) -> CloneStatistics:
        """Sizes and counts of the target database now, rows as copied (success False when unknown)."""
        record = self._find(name)
        if record is None:
            return CloneStatistics(False, name, error=f"no clone named {name!r}")
        detail = api.show(self._config, record.name)
        tables = [t for t in detail.tables if t.kind == "table"]
        return CloneStatistics(
            True,
            record.name,
            total_size_mb=round(sum(t.bytes or 0 for t in tables) / 2**20, 3),
            table_count=len(tables),
            view_count=len(detail.tables) - len(tables),
            total_rows=detail.record.rows_copied,
            estimated_rows=sum(t.rows or 0 for t in tables),
            index_count=sum(t.indexes for t in tables),
        )

    def delete_clone(self, name: str) -> DeleteResult:
        """Drop the target database and forget the environment (`moenv destroy`); success False
        (with `error`) when there is no such clone, it is protected, or the drop failed."""
        record = self._find(name)
        if record is None:
            return DeleteResult(False, name, error=f"no clone named {name!r}")
        return self._delete(record)

    def cleanup_old_clones(self, older_than_days: float, database: str | None = None) -> CleanupResult:
        """Delete the clones made from Python that were created more than `older_than_days` ago
        (of source `database` only, when given). Environments of manifests are left to their
        `ttl` and `moenv gc`; protected and running ones are skipped."""
        cutoff = self._clock() - timedelta(days=older_than_days)
        old = [
            r
            for r in self._records()
            if _made_by_python(r)
            and r.created_at < cutoff
            and r.status in {"ready", "failed"}
            and not r.protect
            and (database is None or r.source_database == database)
        ]
        deleted: list[str] = []
        failed: list[tuple[str, str]] = []
        for record in old:
            result = self._delete(record)
            if result.success:
                deleted.append(record.name)
            else:
                failed.append((record.name, result.error or "failed"))
        error = "; ".join(f"{n}: {e}" for n, e in failed) or None
        return CleanupResult(not failed, len(deleted), tuple(deleted), tuple(failed), error)

    def get_database_tables(self, database: str) -> list[str]:
        """The base tables of a database on the client's server, sorted (DatabaseError when it does not exist)."""
        catalog = self._catalog(self._server, database)
        if not catalog.exists:
            raise DatabaseError(f"database {database} does not exist on server {self._server}", code=1049)
        return sorted(t.name for t in catalog.base_tables)

    # -- internals ---------------------------------------------------------------------------------

    def _table_request(
        self,
        operation: str,
        source_database: str,
        source_table: str,
        target_database: str,
        *,
        target_table: str | None = None,
        columns: Sequence[str] | None = None,
        where: str | None = None,
        mask: Mapping[str, str | None] | None = None,
        include_data: bool = True,
        leak_check: bool = True,
        indexes: bool | None = None,
        constraints: bool | None = None,
        target_server: str | None = None,
    ) -> _Request:
        rule: dict[str, Any] = {}
        if target_table is not None and target_table != source_table:
            rule["rename"] = target_table
        if columns is not None:
            rule["columns"] = list(columns)
        if where is not None:
            rule["where"] = where
        if mask:
            rule["mask"] = dict(mask)
            if not leak_check:
                rule["leak_check"] = False
        body: dict[str, Any] = {
            "data": "full" if include_data else "schema",
            "tables": {"include": [source_table]},
            "rules": {source_table: rule} if rule else {},
        }
        if indexes is not None:
            body["indexes"] = indexes
        if constraints is not None:
            body["constraints"] = constraints
        return _Request(
            operation,
            source_database,
            target_database,
            body,
            merge=True,
            explicit=(source_table,),
            target_server=target_server,
            indexes=indexes,
            constraints=constraints,
        )

    def _target_server(self, target_server: str | None) -> str:
        """The config's name for `target_server`, adding a server given as URL or host:port."""
        config = self._config
        if target_server is None or target_server == self._server:
            return self._server
        if target_server in config.servers:
            return target_server
        own = config.server(self._server)
        if "://" in target_server:
            server = Server.from_url("target", target_server)
        else:
            host, _, port = target_server.rpartition(":") if ":" in target_server else (target_server, "", "")
            if port and not port.isdigit():
                raise ConfigError(Problem(f"target_server {target_server!r}: expected a server name, URL or host:port"))
            server = replace(own, host=host, port=int(port) if port else own.port, socket=None)
        for name, known in sorted(config.servers.items()):
            if _same_server(known, server):
                return name
        name = re.sub(r"[^A-Za-z0-9_$\-]", "-", f"{server.host}-{server.port}")[:64]
        with self._config_guard:
            self._config = replace(self._config, servers={**self._config.servers, name: replace(server, name=name)})
        return name

    def _clone(self, request: _Request) -> CloneResult:
        server = self._target_server(request.target_server)
        name = environment_name(request.target_database, None if server == self._server else server)
        config = self._config
        try:
            check_name(request.target_database)
        except ValueError as exc:
            raise CloneError(f"{name}: target_database: {exc}", environment=name) from exc
        with _target_lock(config.server(server), config.ledger_database, request.target_database):
            record, adopt = self._inspect_target(server, request.target_database, name)
            spec = build_spec(
                name,
                source_server=self._server,
                source_database=request.source_database,
                target_server=None if server == self._server else server,
                target_database=request.target_database,
                body=request.body,
                description=request.description,
            )
            previous = None
            if record is not None and record.spec and record.status != "expired":
                previous = EnvironmentSpec.model_validate(record.spec)
            if previous is not None and request.merge:
                spec = self._merged(previous, spec, request)
            elif previous is not None and request.description is None and previous.metadata.description:
                spec = spec.model_copy(update={"metadata": previous.metadata})
            refused = unsupported_fields(spec)
            if refused:
                refusal = ManifestError([Problem(message, field=".".join(map(str, loc))) for loc, message in refused])
                raise _clone_error(refusal, name) from refusal
            return self._plan_and_apply(spec, request, adopt=adopt)

    def _inspect_target(self, server: str, database: str, name: str) -> tuple[LedgerRecord | None, bool]:
        """The environment's ledger record, and whether the target is an existing, empty, unmanaged
        database (the guide creates one with CREATE DATABASE before cloning into it): adopted."""
        config = self._config
        with open_session(config.server(server), read_only=True) as conn:
            ledger = read_ledger(conn, config.ledger_database)
            record = ledger.records.get(name)
            if record is not None and record.spec and not _made_by_python(record):
                raise CloneError(
                    f"{name} is the environment of a manifest, not of a Python clone; change its manifest instead",
                    environment=name,
                )
            owned = any(r.target_database == database for r in ledger.records.values())
            if owned or database not in read_databases(conn):
                return record, False
            # Nothing in it can be lost: no table, view or routine.
            empty = not read_catalogs(conn, [database])[database].tables and not conn.query(
                "SELECT 1 FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s LIMIT 1", (database,)
            )
            return record, empty

    def _merged(self, previous: EnvironmentSpec, addition: EnvironmentSpec, request: _Request) -> EnvironmentSpec:
        manifests = [LoadedManifest(previous, Path("<ledger>"), 1), LoadedManifest(addition, Path("<call>"), 1)]
        try:
            catalogs = api.read_source_catalogs(manifests, self._config)
            source = previous.spec.source
            before = resolve_environment(previous, catalogs[(source.server, source.database)])
            added = addition.spec.source
            after = resolve_environment(addition, catalogs[(added.server, added.database)])
        except ManifestError as exc:
            raise _clone_error(exc, addition.name) from exc
        return merge_specs(
            previous,
            before,
            addition,
            after,
            explicit=request.explicit,
            indexes=request.indexes,
            constraints=request.constraints,
        )

    def _plan_and_apply(self, spec: EnvironmentSpec, request: _Request, *, adopt: bool) -> CloneResult:
        name = spec.name
        manifest = LoadedManifest(spec, Path(f"<{request.operation}>"), 1)
        options = PlanOptions(adopt=adopt, selector=Selector(only=frozenset({name})))
        try:
            plan = api.plan_manifests([manifest], config=self._config, options=options, now=self._clock())
        except (ManifestError, ConflictError) as exc:
            raise _clone_error(exc, name) from exc
        blocked = [b for b in plan.blocked if b.environment == name]
        if blocked:
            raise CloneError(f"{name}: {'; '.join(blocked[0].reasons)}", environment=name)
        actions = tuple(a for a in plan.actions if a.environment == name)
        applied: list[tuple[Action, int, float]] = []
        if actions:
            applied.append(self._apply(plan.model_copy(update={"actions": actions}), name))
        if not actions or actions[0].op == "update":
            refresh = spec.spec.refresh
            full = refresh is None or refresh.mode != "incremental"
            try:
                again = api.refresh_plan(self._config, name, now=self._clock(), full=full)
            except ConflictError as exc:
                raise _clone_error(exc, name) from exc
            applied.append(self._apply(again, name))
        action = applied[-1][0]
        assert isinstance(action, Create | Rebuild | Refresh)
        want = action.desired
        notes = request.notes + tuple(f"view {v} not recreated: {why}" for v, why in want.skipped_views)
        return CloneResult(
            True,
            name,
            want.source.database,
            want.target.database,
            want.target.server,
            "completed",
            action.op,
            tables=tuple(t.target for t in want.tables) + tuple(v.name for v in want.views),
            rows_copied=applied[-1][1],
            seconds=round(sum(s for _, _, s in applied), 3),
            notes=notes,
            incremental=any(step.kind == "refresh_incremental" for step in action.steps),
        )

    def _apply(self, plan: Plan, name: str) -> tuple[Action, int, float]:
        reporter = _ProgressReporter(self._progress) if self._progress else None
        result = api.apply(plan, config=self._config, reporter=reporter, clock=self._clock, check_revisions=False)
        if not result.ok:
            raise CloneError(f"{name}: {result.failed[0].error}", environment=name)
        (outcome,) = result.results
        return plan.actions[0], outcome.rows, outcome.seconds

    def _delete(self, record: LedgerRecord) -> DeleteResult:
        config = self._config
        with _target_lock(config.server(record.target_server), config.ledger_database, record.target_database):
            try:
                plan = api.destroy_plan(config, record.name, now=self._clock())
            except ConflictError as exc:
                return DeleteResult(False, record.name, record.target_database, _error_text(exc))
            reporter = _ProgressReporter(self._progress) if self._progress else None
            result = api.apply(plan, config=config, reporter=reporter, clock=self._clock, check_revisions=False)
        if not result.ok:
            return DeleteResult(False, record.name, record.target_database, result.failed[0].error)
        return DeleteResult(True, record.name, record.target_database)

    def _records(self) -> list[LedgerRecord]:
        status = api.status(self._config)
        if self._server in status.unreachable:
            raise DatabaseError(f"reading the ledger on server {self._server}: {status.unreachable[self._server]}")
        return status.records

    def _find(self, name: str) -> LedgerRecord | None:
        """By environment name, else by target database (the client's server first)."""
        records = self._records()
        for record in records:
            if record.name == name:
                return record
        by_target = [r for r in records if r.target_database == name and r.status != "expired"]
        by_target.sort(key=lambda r: r.target_server != self._server)
        return by_target[0] if by_target else None

    def _catalog(self, server: str, database: str) -> Catalog:
        with open_session(self._config.server(server), read_only=True) as conn:
            return read_catalogs(conn, [database])[database]

    def _source_catalog(self, database: str) -> Catalog:
        catalog = self._catalog(self._server, database)
        if not catalog.exists:
            raise CloneError(f"source database {database} does not exist on server {self._server}")
        return catalog

    def _sizes(self, records: Sequence[LedgerRecord]) -> dict[tuple[str, str], tuple[float, int]]:
        """(size in MiB, base tables) of each record's target, one bulk catalog read per server."""
        wanted: dict[str, set[str]] = {}
        for record in records:
            if record.status != "expired":
                wanted.setdefault(record.target_server, set()).add(record.target_database)
        sizes: dict[tuple[str, str], tuple[float, int]] = {}
        for server, databases in sorted(wanted.items()):
            try:
                with open_session(self._config.server(server), read_only=True) as conn:
                    catalogs = read_catalogs(conn, databases)
            except DatabaseError:
                continue  # an unreachable server: its clones are listed without sizes
            for database, catalog in catalogs.items():
                if catalog.exists:
                    tables = catalog.base_tables
                    sizes[(server, database)] = (round(sum(t.data_bytes or 0 for t in tables) / 2**20, 3), len(tables))
        return sizes

    def _info(self, record: LedgerRecord, size: tuple[float, int] | None) -> CloneInfo:
        metadata = record.spec.get("metadata") or {}
        return CloneInfo(
            True,
            record.name,
            record.source_database,
            record.target_database,
            record.source_server,
            record.target_server,
            _STATES.get(record.status, record.status),
            created_at=_local(record.created_at),
            last_updated=_local(record.updated_at),
            description=metadata.get("description"),
            labels=dict(metadata.get("labels") or {}),
            table_count=size[1] if size else (len(record.stats) or record.tables_total),
            rows_copied=record.rows_copied,
            size_mb=size[0] if size else None,
            expires_at=_local(record.expires_at) if record.expires_at else None,
        )


def _parse_timestamp(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise CloneError(f"last_clone_timestamp {text!r} is not a date and time (e.g. 2024-01-15 10:00:00)") from exc


def _hours(value: float) -> int:
    hours = int(value)
    if hours != value or hours <= 0:
        raise CloneError(f"change_window_hours must be a positive whole number of hours, not {value!r}")
    return hours


# -- clients ------------------------------------------------------------------------------------


class Client:
    """A connection to one server in the guide's sense: `client.clone` holds the operations.

    moenv keeps no session open between calls (each call opens what it needs, so a client is
    safe to share between threads); `disconnect()` exists for the guide's code and releases nothing.
    """

    def __init__(self, manager: CloneManager) -> None:
        self.clone = manager

    @property
    def config(self) -> Config:
        return self.clone.config

    @property
    def server(self) -> str:
        return self.clone.server

    def execute(self, sql: str, args: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement on the client's server (outside moenv's bookkeeping); its rows, if any."""
        with open_session(self.config.server(self.server)) as conn:
            return conn.query(sql, args)

    def disconnect(self) -> None:
        """Nothing to release: every call opens and closes its own sessions."""

    close = disconnect

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()


def _client_config(
    url_or_server_name: str | None, config: Config | Path | str | None, ledger: str | None, salt: str | None
) -> tuple[Config, str]:
    base = config if isinstance(config, Config) else api.current_config(Path(config) if config else None)
    name = url_or_server_name or "default"
    if "://" in name:
        server = Server.from_url("default", name)
        known = [n for n, s in sorted(base.servers.items()) if _same_server(s, server) and s == replace(server, name=n)]
        name = known[0] if known else "default"
        if not known:
            base = replace(base, servers={**base.servers, "default": server})
    if ledger is not None:
        try:
            check_name(ledger)
        except ValueError as exc:
            raise ConfigError(Problem(f"ledger database: {exc}")) from exc
        base = replace(base, ledger_database=ledger)
    if salt is not None:
        base = replace(base, salt=salt)
    base.server(name)
    return base, name


def connect(
    url_or_server_name: str | None = None,
    *,
    config: Config | Path | str | None = None,
    ledger: str | None = None,
    salt: str | None = None,
    clock: Clock | None = None,
    progress: ProgressCallback | None = None,
) -> Client:
    """A Client for a server URL (`mysql://user:pass@host:3306/`) or a server name of moenv.yaml.

    config: a Config, or the path of a moenv.yaml; by default ./moenv.yaml and the MOENV_*
    variables, as the CLI reads them. ledger / salt override the config's. clock: the "now" of
    every call (tests). progress: called with each CloneProgress of a running apply, in the
    thread that runs it; it must not raise. The server is reached once here (DatabaseError when not).
    """
    settings, name = _client_config(url_or_server_name, config, ledger, salt)
    with open_session(settings.server(name), read_only=True):
        pass
    return Client(CloneManager(settings, name, clock=clock or utc_now, progress=progress))


# -- async --------------------------------------------------------------------------------------


class AsyncCloneManager:
    """The `*_async` twins of CloneManager: the same calls in worker threads (asyncio.to_thread),
    so the event loop is never blocked. Cancelling an await does not stop a copy already running:
    it finishes (or fails) atomically in its thread."""

    def __init__(self, manager: CloneManager) -> None:
        self.sync = manager

    async def clone_database_async(
        self,
        source_database: str,
        target_database: str,
        include_data: bool = True,
        include_indexes: bool = True,
        include_permissions: bool = False,
        description: str | None = None,
        target_server: str | None = None,
        data_filters: Mapping[str, str] | None = None,
    ) -> CloneResult:
        return await asyncio.to_thread(
            self.sync.clone_database,
            source_database,
            target_database,
            include_data=include_data,
            include_indexes=include_indexes,
            include_permissions=include_permissions,
            description=description,
            target_server=target_server,
            data_filters=data_filters,
        )

    async def clone_database_schema_async(
        self,
        source_database: str,
        target_database: str,
        tables: Sequence[str] | None = None,
        include_indexes: bool = True,
        include_constraints: bool = True,
    ) -> CloneResult:
        return await asyncio.to_thread(
            self.sync.clone_database_schema,
            source_database,
            target_database,
            tables=tables,
            include_indexes=include_indexes,
            include_constraints=include_constraints,
        )

    async def clone_database_incremental_async(
        self,
        source_database: str,
        target_database: str,
        last_clone_timestamp: str | datetime | None = None,
        track_changes: bool = False,
        change_window_hours: float | None = None,
    ) -> CloneResult:
        return await asyncio.to_thread(
            self.sync.clone_database_incremental,
            source_database,
            target_database,
            last_clone_timestamp=last_clone_timestamp,
            track_changes=track_changes,
            change_window_hours=change_window_hours,
        )

    async def clone_table_async(
        self,
        source_database: str,
        source_table: str,
        target_database: str,
        target_table: str | None = None,
        columns: Sequence[str] | None = None,
        where_condition: str | None = None,
        data_transformations: Mapping[str, str | None] | None = None,
        include_data: bool = True,
        leak_check: bool = True,
    ) -> CloneResult:
        return await asyncio.to_thread(
            self.sync.clone_table,
            source_database,
            source_table,
            target_database,
            target_table=target_table,
            columns=columns,
            where_condition=where_condition,
            data_transformations=data_transformations,
            include_data=include_data,
            leak_check=leak_check,
        )

    async def clone_table_schema_async(
        self,
        source_database: str,
        source_table: str,
        target_database: str,
        target_table: str | None = None,
        include_indexes: bool = True,
        include_constraints: bool = True,
    ) -> CloneResult:
        return await asyncio.to_thread(
            self.sync.clone_table_schema,
            source_database,
            source_table,
            target_database,
            target_table=target_table,
            include_indexes=include_indexes,
            include_constraints=include_constraints,
        )

    async def clone_tables_async(
        self,
        source_database: str,
        target_database: str,
        tables: Sequence[str],
        where_conditions: Mapping[str, str] | None = None,
        include_data: bool = True,
    ) -> CloneResult:
        return await asyncio.to_thread(
            self.sync.clone_tables,
            source_database,
            target_database,
            tables,
            where_conditions=where_conditions,
            include_data=include_data,
        )

    async def clone_related_tables_async(
        self,
        source_database: str,
        target_database: str,
        root_table: str,
        include_data: bool = True,
        max_depth: int = 1,
    ) -> CloneResult:
        return await asyncio.to_thread(
            self.sync.clone_related_tables,
            source_database,
            target_database,
            root_table,
            include_data=include_data,
            max_depth=max_depth,
        )

    async def clone_cross_database_async(
        self,
        source_database: str,
        source_table: str,
        target_database: str,
        target_table: str,
        include_data: bool = True,
    ) -> CloneResult:
        return await asyncio.to_thread(
            self.sync.clone_cross_database,
            source_database,
            source_table,
            target_database,
            target_table,
            include_data=include_data,
        )

    async def clone_cross_server_async(
        self,
        source_database: str,
        source_table: str,
        target_server: str,
        target_database: str,
        target_table: str,
        include_data: bool = True,
    ) -> CloneResult:
        return await asyncio.to_thread(
            self.sync.clone_cross_server,
            source_database,
            source_table,
            target_server,
            target_database,
            target_table,
            include_data=include_data,
        )

    async def list_clones_async(self, database: str | None = None) -> list[CloneInfo]:
        return await asyncio.to_thread(self.sync.list_clones, database)

    async def get_clone_async(self, name: str) -> CloneInfo | None:
        return await asyncio.to_thread(self.sync.get_clone, name)

    async def get_clone_status_async(self, name: str) -> CloneStatus:
        return await asyncio.to_thread(self.sync.get_clone_status, name)

    async def get_clone_statistics_async(self, name: str) -> CloneStatistics:
        return await asyncio.to_thread(self.sync.get_clone_statistics, name)

    async def delete_clone_async(self, name: str) -> DeleteResult:
        return await asyncio.to_thread(self.sync.delete_clone, name)

    async def cleanup_old_clones_async(self, older_than_days: float, database: str | None = None) -> CleanupResult:
        return await asyncio.to_thread(self.sync.cleanup_old_clones, older_than_days, database)

    async def get_database_tables_async(self, database: str) -> list[str]:
        return await asyncio.to_thread(self.sync.get_database_tables, database)


class AsyncClient:
    """The async twin of Client: `client.clone` is an AsyncCloneManager."""

    def __init__(self, client: Client) -> None:
        self.sync = client
        self.clone = AsyncCloneManager(client.clone)

    @property
    def config(self) -> Config:
        return self.sync.config

    async def execute(self, sql: str, args: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self.sync.execute, sql, args)

    async def disconnect(self) -> None:
        self.sync.disconnect()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.disconnect()


async def connect_async(
    url_or_server_name: str | None = None,
    *,
    config: Config | Path | str | None = None,
    ledger: str | None = None,
    salt: str | None = None,
    clock: Clock | None = None,
    progress: ProgressCallback | None = None,
) -> AsyncClient:
    """`await moenv.connect_async(url)`: connect() without blocking the event loop."""
    client = await asyncio.to_thread(
        connect, url_or_server_name, config=config, ledger=ledger, salt=salt, clock=clock, progress=progress
    )
    return AsyncClient(client)
