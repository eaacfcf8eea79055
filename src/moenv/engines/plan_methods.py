"""Which copy method each table gets, cheapest first, and why; what a source's engine cannot do; pure.

Cheapest first (SPEC §5): `clone_database` when the whole database is copied unchanged, then
`clone_table` per unchanged table (both zero-copy on MatrixOne), then `insert_select` for
filtered, trimmed or masked tables (rows copied inside the server, at the snapshot), and
`stream` when the target is another server. The reason goes into the table's notes, so the
plan shows it next to the method.
"""

from __future__ import annotations

from moenv.engines.base import quote_ident
from moenv.engines.matrixone import COPY_GRANTS, MINIMUM, Capabilities, check_snapshot_name, release_text
from moenv.engines.matrixone import is_matrixone as _is_matrixone
from moenv.models.catalog import Catalog
from moenv.models.desired import Desired, TableCopy
from moenv.models.manifest import EnvironmentSpec

Loc = tuple[str | int, ...]

_AT_SNAPSHOT = "at the apply's snapshot"


def is_matrixone(catalog: Catalog) -> bool:
    return _is_matrixone(catalog.engine)


def _changes(table: TableCopy, desired: Desired) -> list[str]:
    """What makes this table differ from its source table (so it cannot be cloned)."""
    found: list[str] = []
    if table.where:
        found.append("rows filtered (where)")
    masked = [c for c, s in zip(table.columns, table.select, strict=True) if s != quote_ident(c)]
    if masked:
        found.append(f"columns masked: {', '.join(masked)}")
    if table.excluded_columns:
        found.append(f"columns left out: {', '.join(table.excluded_columns)}")
    if not desired.indexes:
        found.append("indexes: false (a clone carries the source's indexes)")
    virtual = [f.name for f in table.filters if f.virtual]
    if virtual:
        found.append(
            f"integrity: strict over the virtual relation(s) {', '.join(virtual)}, which the source does not enforce"
        )
    return found


def _demote_children(tables: tuple[TableCopy, ...], changed: dict[str, list[str]]) -> None:
    """Strict integrity keeps only child rows whose parent row was copied: a child of a changed
    table is changed too (until nothing moves: cycles and self-references included)."""
    moved = True
    while moved:
        moved = False
        for table in tables:
            if table.target in changed:
                continue
            filtered = sorted({f.parent for f in table.filters if f.parent in changed and f.parent != table.target})
            if filtered:
                changed[table.target] = [
                    f"integrity: strict keeps only rows whose parent was copied ({', '.join(filtered)} "
                    "is not copied whole)"
                ]
                moved = True


def _whole_database(desired: Desired, source: Catalog, changed: dict[str, list[str]]) -> str | None:
    """Why one CREATE DATABASE … CLONE cannot make this environment; None when it can."""
    spec = desired.manifest.spec
    copied = {t.source for t in desired.tables}
    base = {t.name for t in source.base_tables}
    if changed:
        return "some tables are changed"
    if copied != base:
        return "not every table of the source is copied"
    if {v.name for v in desired.views} != {v.name for v in source.views} or desired.skipped_views:
        return "not every view of the source is copied"
    if any(t.source != t.target for t in desired.tables):
        return "tables are renamed"
    if not desired.constraints or any(t.dropped_foreign_keys for t in desired.tables):
        return "foreign keys are dropped"
    if spec.grants:
        return "grants: true (a database clone copies no grants; a table clone can)"
    return None


def _note(method: str, reason: str) -> str:
    return f"{method}: {reason}"


def _with_method(table: TableCopy, method: str, reason: str) -> TableCopy:
    return table.model_copy(update={"method": method, "notes": (*table.notes, _note(method, reason))})


def choose_copy_methods(desired: Desired, source: Catalog) -> Desired:
    """`desired` with the cheapest copy method per table and its reason (MatrixOne sources only;
    MySQL and MariaDB keep the resolver's `insert_select`)."""
    if not is_matrixone(source):
        return desired
    caps = Capabilities.from_text(source.engine or "")
    if desired.source.server != desired.target.server:
        reason = f"the target is on server {desired.target.server}: rows are streamed through the client"
        return desired.model_copy(update={"tables": tuple(_with_method(t, "stream", reason) for t in desired.tables)})
    tables: list[TableCopy] = []
    if desired.manifest.spec.data != "full":
        reason = "data: schema: the table is created from SHOW CREATE TABLE, without rows"
        tables = [_with_method(t, "schema_only", reason) for t in desired.tables]
        return desired.model_copy(update={"tables": tuple(tables)})
    changed = {t.target: found for t in desired.tables if (found := _changes(t, desired))}
    _demote_children(desired.tables, changed)
    if not caps.clone:
        reason = f"MatrixOne {caps.describe()} has no CLONE (≥ {release_text(MINIMUM)}): rows are copied"
        tables = [_with_method(t, "insert_select", reason) for t in desired.tables]
        return desired.model_copy(update={"tables": tuple(tables)})
    whole = _whole_database(desired, source, changed) is None
    grants = " COPY GRANTS" if desired.manifest.spec.grants else ""
    for table in desired.tables:
        if whole:
            reason = "the whole database is copied unchanged: one zero-copy CREATE DATABASE … CLONE " + _AT_SNAPSHOT
            tables.append(_with_method(table, "clone_database", reason))
        elif table.target in changed:
            reason = (
                "; ".join(changed[table.target])
                + f": created from SHOW CREATE TABLE and filled by INSERT … SELECT {_AT_SNAPSHOT}"
            )
            tables.append(_with_method(table, "insert_select", reason))
        else:
            reason = f"unchanged: zero-copy CREATE TABLE … CLONE{grants} {_AT_SNAPSHOT}"
            if table.parents or table.filters or table.dropped_foreign_keys or not desired.constraints:
                reason += (
                    "; its foreign keys are re-pointed at the copy's parents or dropped afterwards"
                    " (a table clone keeps them on the source's)"
                )
            tables.append(_with_method(table, "clone_table", reason))
    return desired.model_copy(update={"tables": tuple(tables)})


def engine_problems(spec: EnvironmentSpec, source: Catalog, desired: Desired | None = None) -> list[tuple[Loc, str]]:
    """(field path, message) for what the manifest asks and the source's engine cannot do.

    These fields pass `validate` (no server there); the engine is known once the source catalog
    is read, so they are refused here, with the field and the server's version.
    """
    body = spec.spec
    found: list[tuple[Loc, str]] = []
    matrixone = is_matrixone(source)
    caps = Capabilities.from_text(source.engine or "") if matrixone else None
    if caps is not None and not caps.supported:
        found.append(
            (
                ("spec", "source", "server"),
                f"moenv needs MatrixOne ≥ {release_text(MINIMUM)} (CREATE … CLONE); server {source.server}"
                f" runs {caps.describe()}",
            )
        )
    if body.source.snapshot is not None:
        if not matrixone:
            found.append(
                (
                    ("spec", "source", "snapshot"),
                    "a named snapshot is a MatrixOne feature; the source server is MySQL or MariaDB",
                )
            )
        else:
            try:
                check_snapshot_name(body.source.snapshot)
            except ValueError as exc:
                found.append((("spec", "source", "snapshot"), str(exc)))
    if body.consistency == "snapshot" and not matrixone:
        found.append(
            (
                ("spec", "consistency"),
                "consistency: snapshot is not supported yet on MySQL/MariaDB (on MatrixOne every apply reads"
                " at one snapshot)",
            )
        )
    if body.grants:
        found += _grant_problems(source, caps, desired)
    return found


def _grant_problems(source: Catalog, caps: Capabilities | None, desired: Desired | None) -> list[tuple[Loc, str]]:
    loc: Loc = ("spec", "grants")
    if caps is None:
        return [
            (
                loc,
                "copying grants is not supported yet on MySQL/MariaDB"
                f" (MatrixOne ≥ {release_text(COPY_GRANTS)} copies them with CLONE … COPY GRANTS)",
            )
        ]
    if not caps.copy_grants:
        return [
            (
                loc,
                f"grants: true needs MatrixOne ≥ {release_text(COPY_GRANTS)} (CREATE TABLE … CLONE … COPY GRANTS);"
                f" server {source.server} runs {caps.describe()}",
            )
        ]
    if desired is None:
        return []
    uncloned = [t.target for t in desired.tables if t.method != "clone_table"]
    if uncloned:
        return [
            (
                loc,
                "grants are copied by CREATE TABLE … CLONE … COPY GRANTS, which copies whole tables only;"
                f" {', '.join(uncloned)} cannot be cloned (filtered, masked, trimmed, schema only or on another"
                " server)",
            )
        ]
    return []
