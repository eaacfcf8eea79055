"""Resolve one environment against its source catalog; pure (no I/O, no clock).

Table set (globs, foreign-key closure), parent-first order, columns and SELECT expressions
(column subsets, masks), filters (`where`, strict integrity against copied parents), renames,
views. Every problem is reported together, each located in the manifest.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sqlglot
import sqlglot.errors
from sqlglot import exp

from moenv.engines.base import quote_ident
from moenv.engines.mysql import SOURCE_ALIAS
from moenv.engines.plan_methods import choose_copy_methods, engine_problems
from moenv.errors import ManifestError, Problem
from moenv.manifest.fragments import Fragment, FragmentError, parse_fragment, to_sql, unknown_columns
from moenv.models.catalog import Catalog, Table
from moenv.models.desired import Desired, Endpoint, ParentFilter, TableCopy, ViewCopy
from moenv.models.manifest import EnvironmentSpec, RuleSpec
from moenv.resolve.personal import unmasked_personal

Loc = tuple[str | int, ...]
ProblemAt = Callable[[Loc, str], Problem]
# Helpers whose values spread over 2^64 or more: a masked value equal to *any* source value is a
# leak. The others (dates shifted by days, numbers in a range, 10^7 phone numbers, short names,
# kept suffixes) land on other rows' values by chance, so their leak check compares each row
# with its own source row instead.
WIDE_HELPERS = frozenset({"email", "hash"})
_RELATION = re.compile(r"^\s*([A-Za-z0-9_$]+)\s*\(\s*([^)]*)\)\s*$")


def _plain_problem(loc: Loc, message: str) -> Problem:
    return Problem(message, field=".".join(str(p) for p in loc) or None)


@dataclass(frozen=True)
class Edge:
    """child(columns) → parent(ref_columns), declared in the schema or virtual (`relations`)."""

    name: str
    child: str
    columns: tuple[str, ...]
    parent: str
    ref_columns: tuple[str, ...]
    virtual: bool = False


class _Problems:
    def __init__(self, problem: ProblemAt) -> None:
        self.at = problem
        self.found: list[Problem] = []

    def add(self, loc: Loc, message: str) -> None:
        self.found.append(self.at(loc, message))

    def raise_if_any(self) -> None:
        if self.found:
            raise ManifestError(self.found)


def read_edges(spec: EnvironmentSpec, catalog: Catalog, problems: _Problems) -> list[Edge]:
    """Foreign keys inside the source database, plus the manifest's virtual ones."""
    edges = [
        Edge(fk.name, table.name, fk.columns, fk.ref_table, fk.ref_columns)
        for table in catalog.base_tables
        for fk in table.foreign_keys
        if fk.ref_database == catalog.database and fk.ref_table in catalog.tables
    ]
    for index, relation in enumerate(spec.spec.relations):
        ends = []
        for side, text in (("from", relation.from_), ("to", relation.to)):
            match = _RELATION.match(text)
            loc: Loc = ("spec", "relations", index, side)
            if not match:
                problems.add(loc, f"{text!r} must look like table(column, ...)")
                break
            table = catalog.tables.get(match.group(1))
            columns = tuple(c.strip() for c in match.group(2).split(",") if c.strip())
            if table is None or table.kind != "table":
                problems.add(loc, f"no table {match.group(1)!r} in {catalog.database}")
                break
            missing = [c for c in columns if table.column(c) is None]
            if missing or not columns:
                problems.add(loc, f"{table.name} has no column {', '.join(missing) or '(none given)'}")
                break
            ends.append((table.name, tuple(table.column(c).name for c in columns)))  # type: ignore[union-attr]
        if len(ends) == 2:
            (child, cols), (parent, refs) = ends
            if len(cols) != len(refs):
                problems.add(("spec", "relations", index), "both sides must name the same number of columns")
                continue
            edges.append(Edge(f"relation_{index}", child, cols, parent, refs, virtual=True))
    return edges


def select_tables(spec: EnvironmentSpec, catalog: Catalog, edges: list[Edge], problems: _Problems) -> list[str]:
    """include globs (or the FK closure of `related`), minus exclude globs, in catalog order."""
    tables = spec.spec.tables
    names = list(catalog.tables)
    chosen: set[str] = set()
    # An unset include means every table, or with `related` the closure alone. Deciding by the
    # value, not by whether the field was written, keeps a spec read back from the ledger equal.
    include = tables.include if tables.include is not None else ([] if tables.related else ["*"])
    if include:
        for index, pattern in enumerate(include):
            matched = fnmatch.filter(names, pattern)
            if not matched:
                problems.add(
                    ("spec", "tables", "include", index), f"{pattern!r} matches no table in {catalog.database}"
                )
            chosen.update(matched)
    if tables.related is not None:
        roots = []
        for index, root in enumerate(tables.related.roots):
            if catalog.tables.get(root) is None or catalog.tables[root].kind != "table":
                problems.add(("spec", "tables", "related", "roots", index), f"no table {root!r} in {catalog.database}")
            else:
                roots.append(root)
        chosen |= related_closure(roots, edges, tables.related.max_depth)
    for pattern in tables.exclude:
        chosen.difference_update(fnmatch.filter(names, pattern))
    return [n for n in names if n in chosen]


def related_closure(roots: list[str], edges: list[Edge], max_depth: int) -> set[str]:
    """Roots, their children down to `max_depth` levels, and every parent of all of those."""
    children: dict[str, set[str]] = {}
    parents: dict[str, set[str]] = {}
    for edge in edges:
        children.setdefault(edge.parent, set()).add(edge.child)
        parents.setdefault(edge.child, set()).add(edge.parent)
    chosen = set(roots)
    level = set(roots)
    for _ in range(max_depth):
        level = {c for t in level for c in children.get(t, ())} - chosen
        if not level:
            break
        chosen |= level
    pending = list(chosen)
    while pending:  # parents of every copied row are always copied, so references resolve
        for parent in parents.get(pending.pop(), ()):
            if parent not in chosen:
                chosen.add(parent)
                pending.append(parent)
    return chosen


def order_parents_first(names: list[str], edges: list[Edge]) -> tuple[list[str], set[tuple[str, str, str]]]:
    """Topological order; self-references and the edges that close a cycle are returned as deferred."""
    wanted = set(names)
    by_child: dict[str, list[Edge]] = {}
    for edge in edges:
        if edge.child in wanted and edge.parent in wanted:
            by_child.setdefault(edge.child, []).append(edge)
    order: list[str] = []
    state: dict[str, int] = {}
    deferred: set[tuple[str, str, str]] = set()

    def visit(name: str) -> None:
        state[name] = 1
        for edge in sorted(by_child.get(name, ()), key=lambda e: e.name):
            if edge.parent == name or state.get(edge.parent) == 1:
                deferred.add((edge.child, edge.name, edge.parent))
            elif state.get(edge.parent) != 2:
                visit(edge.parent)
        state[name] = 2
        order.append(name)

    for name in sorted(wanted):
        if name not in state:
            visit(name)
    return order, deferred


def _source_calls(database: str) -> re.Pattern[str]:
    """Calls of stored functions of the source: the server writes them `db`.`function`(...)."""
    return re.compile(re.escape(quote_ident(database)) + r"\.`((?:[^`]|``)+)`\s*\(")


def view_reads(definition: str, database: str) -> set[tuple[str, str]] | None:
    """(database, table) pairs a view's SELECT reads; None when the SQL cannot be parsed."""
    try:
        tree = sqlglot.parse_one(definition, read="mysql")
    except sqlglot.errors.SqlglotError:
        return None
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    return {
        (table.db or database, table.name)
        for table in tree.find_all(exp.Table)
        if table.name and not (not table.db and table.name in ctes)
    }


def _fragment(text: str, kind: str, table: Table, loc: Loc, catalog: Catalog, problems: _Problems) -> Fragment | None:
    try:
        fragment = parse_fragment(text, kind="where" if kind == "where" else "mask")
        to_sql(fragment, database=catalog.database, alias=SOURCE_ALIAS)  # what the copy will run
    except FragmentError as exc:
        problems.add(loc, f"{kind}: {exc}")
        return None
    missing = unknown_columns(fragment, [c.name for c in table.columns])
    if missing:
        problems.add(loc, f"{kind}: {table.name} has no column {', '.join(missing)}")
        return None
    absent = sorted(t for t in fragment.tables if t not in catalog.tables)
    if absent:
        problems.add(loc, f"{kind}: no table {', '.join(absent)} in {catalog.database}")
        return None
    return fragment


def _check_rules(
    spec: EnvironmentSpec, catalog: Catalog, names: list[str], edges: list[Edge], problems: _Problems
) -> None:
    copied = set(names)
    for table_name in spec.spec.rules:
        loc: Loc = ("spec", "rules", table_name)
        table = catalog.tables.get(table_name)
        if table is None:
            problems.add(loc, f"no table {table_name!r} in {catalog.database} (a rule for it would never apply)")
        elif table_name not in copied:
            problems.add(loc, f"table {table_name} is not in the table set: this rule would never apply")
        elif table.kind != "table":
            problems.add(loc, f"{table_name} is a view: rules apply to tables")
    targets: dict[str, str] = {}
    for name in names:
        named = spec.spec.rules.get(name)
        target = named.rename if named and named.rename else name
        if target in targets:
            # Blame the rule that renames (the other table may have no rule at all).
            blamed = name if named and named.rename else targets[target]
            problems.add(
                ("spec", "rules", blamed, "rename"), f"{name} and {targets[target]} would both be named {target}"
            )
        targets[target] = name
    referenced = {(e.parent, c.lower()) for e in edges if e.child in copied for c in e.ref_columns}
    for name, rule in spec.spec.rules.items():
        table = catalog.tables.get(name)
        if table is None or name not in copied:
            continue
        loc = ("spec", "rules", name)
        for field, listed in (("columns", rule.columns), ("exclude_columns", rule.exclude_columns)):
            for index, column in enumerate(listed or ()):
                if table.column(column) is None:
                    problems.add((*loc, field, index), f"{name} has no column {column!r}")
        kept = _kept_columns(table, rule)
        missing_pk = [c for c in table.primary_key if c.lower() not in {k.lower() for k in kept}]
        if missing_pk:
            field = "columns" if rule.columns is not None else "exclude_columns"
            problems.add((*loc, field), f"the primary key column(s) {', '.join(missing_pk)} must be kept")
        for column, expression in rule.mask.items():
            where = (*loc, "mask", column)
            col = table.column(column)
            if col is None:
                problems.add(where, f"{name} has no column {column!r}")
                continue
            if col.name.lower() not in {k.lower() for k in kept}:
                problems.add(where, f"{column} is not copied (see columns/exclude_columns): nothing to mask")
                continue
            if col.generated:
                problems.add(where, f"{column} is a generated column: the target computes it, it cannot be masked")
                continue
            if (name, col.name.lower()) in referenced:
                problems.add(where, f"{column} is referenced by a foreign key: masking it would break the references")
                continue
            if expression is None and not col.nullable:
                problems.add(where, f"{column} is NOT NULL: mask it with an expression instead of null")
                continue
            if expression is not None:
                _fragment(expression, "mask", table, where, catalog, problems)
        if rule.where is not None:
            _fragment(rule.where, "where", table, (*loc, "where"), catalog, problems)
        if rule.watermark is not None:
            mark = table.column(rule.watermark)
            if mark is None:
                problems.add((*loc, "watermark"), f"{name} has no column {rule.watermark!r}")
            elif mark.name.lower() not in {k.lower() for k in kept}:
                problems.add((*loc, "watermark"), f"{rule.watermark} is not copied (see columns/exclude_columns)")
    refresh = spec.spec.refresh
    if refresh is not None and refresh.mode == "incremental" and spec.spec.data == "full":
        for name in names:
            table = catalog.tables[name]
            if table.kind != "table":
                continue
            reason = incremental_problem(table, spec.spec.rules.get(name))
            if reason and refresh.fallback == "refuse":
                problems.add(
                    ("spec", "rules", name) if name in spec.spec.rules else ("spec", "refresh", "mode"),
                    f"{name} cannot be refreshed incrementally: {reason}"
                    " (or set refresh.fallback: full to copy it in full each time)",
                )


def table_key(table: Table) -> tuple[str, ...]:
    """The primary key, else the first unique key whose columns are all NOT NULL; () when none."""
    if table.primary_key:
        return table.primary_key
    for index in table.indexes:
        columns = [table.column(c) for c in index.columns]
        if index.unique and all(c is not None and not c.nullable for c in columns):
            return index.columns
    return ()


def incremental_problem(table: Table, rule: RuleSpec | None) -> str | None:
    """Why `table` cannot be refreshed by watermark; None when it can."""
    if rule is None or rule.watermark is None:
        return "it has no rules.<table>.watermark"
    key = table_key(table)
    if not key:
        return "it has no primary key or unique NOT NULL key to match rows by"
    masked = {c.lower() for c in rule.mask}
    if any(c.lower() in masked for c in key):
        return "its key is masked, so target rows cannot be matched with source rows"
    kept = {c.lower() for c in _kept_columns(table, rule)}
    if any(c.lower() not in kept for c in key):
        return "its key is not copied"
    return None


def _kept_columns(table: Table, rule: RuleSpec | None) -> list[str]:
    columns = [c.name for c in table.columns]
    if rule is None:
        return columns
    if rule.columns is not None:
        wanted = {c.lower() for c in rule.columns}
        return [c for c in columns if c.lower() in wanted]
    if rule.exclude_columns is not None:
        dropped = {c.lower() for c in rule.exclude_columns}
        return [c for c in columns if c.lower() not in dropped]
    return columns


def resolve_environment(
    spec: EnvironmentSpec,
    catalog: Catalog,
    *,
    problem: ProblemAt = _plain_problem,
) -> Desired:
    """Everything the executor needs to build this environment; ManifestError lists every problem."""
    body = spec.spec
    problems = _Problems(problem)
    if not catalog.exists:
        problems.add(
            ("spec", "source", "database"),
            f"source database {catalog.database!r} does not exist on server {catalog.server!r}",
        )
        problems.raise_if_any()
    edges = read_edges(spec, catalog, problems)
    names = select_tables(spec, catalog, edges, problems)
    problems.raise_if_any()
    _check_rules(spec, catalog, names, edges, problems)
    problems.raise_if_any()
    base = [n for n in names if catalog.tables[n].kind == "table"]
    order, deferred = order_parents_first(base, edges)
    renames = {n: (r.rename if (r := body.rules.get(n)) and r.rename else n) for n in base}
    filtered = {n for n in base if (r := body.rules.get(n)) and r.where}
    copies = [
        _table_copy(spec, catalog, catalog.tables[name], edges, set(base), renames, deferred, filtered)
        for name in order
    ]
    views, skipped = _resolve_views(names, catalog, copies)
    desired = Desired(
        environment=spec.name,
        manifest=spec,
        spec_hash=spec.content_hash(),
        source=Endpoint(server=body.source.server, database=body.source.database),
        target=Endpoint(server=body.target_server, database=body.target.database),
        tables=tuple(copies),
        views=tuple(views),
        skipped_views=tuple(skipped),
        source_fingerprint=catalog.fingerprint(names),
        indexes=body.indexes,
        constraints=body.constraints,
        source_engine=catalog.engine,
    )
    desired = choose_copy_methods(desired, catalog)  # per engine and version, cheapest first
    for loc, message in engine_problems(spec, catalog, desired):
        problems.add(loc, message)
    problems.raise_if_any()
    return desired.model_copy(update={"unmasked_personal": unmasked_personal(desired)})


def _table_copy(
    spec: EnvironmentSpec,
    catalog: Catalog,
    table: Table,
    edges: list[Edge],
    copied: set[str],
    renames: Mapping[str, str],
    deferred: set[tuple[str, str, str]],
    filtered: set[str],
) -> TableCopy:
    body = spec.spec
    rule = body.rules.get(table.name)
    kept = _kept_columns(table, rule)
    kept_lower = {k.lower() for k in kept}
    excluded = tuple(c.name for c in table.columns if c.name.lower() not in kept_lower)
    columns = tuple(c for c in kept if not table.column(c).generated)  # type: ignore[union-attr]
    masks = {k.lower(): v for k, v in (rule.mask.items() if rule else ())}
    select: list[str] = []
    masked: list[str] = []
    row_checked: list[str] = []
    salt = False
    for column in columns:
        if column.lower() not in masks:
            select.append(quote_ident(column))
            continue
        expression = masks[column.lower()]
        if expression is None:
            select.append("NULL")
            continue
        fragment = parse_fragment(expression, kind="mask")
        select.append(to_sql(fragment, database=catalog.database, alias=SOURCE_ALIAS))
        masked.append(column)
        if fragment.helpers and not fragment.helpers & WIDE_HELPERS:
            row_checked.append(column)
        salt = salt or fragment.needs_salt
    where = None
    if rule is not None and rule.where is not None:
        fragment = parse_fragment(rule.where, kind="where")
        where = to_sql(fragment, database=catalog.database, alias=SOURCE_ALIAS)
        salt = salt or fragment.needs_salt
    dropped: list[str] = []
    notes: list[str] = []
    for fk in table.foreign_keys:
        if fk.ref_database != catalog.database:
            dropped.append(fk.name)
            notes.append(f"foreign key {fk.name} points outside the source ({fk.ref_database}.{fk.ref_table}): dropped")
        elif fk.ref_table not in copied:
            dropped.append(fk.name)
            notes.append(f"foreign key {fk.name} references {fk.ref_table}, which is not copied: dropped")
        elif any(c.lower() not in kept_lower for c in fk.columns):
            dropped.append(fk.name)
            notes.append(f"foreign key {fk.name} uses a column that is not copied: dropped")
    filters: list[ParentFilter] = []
    parents: set[str] = set()
    for edge in edges:
        if edge.child != table.name or edge.parent not in copied or edge.name in dropped:
            continue
        if any(c.lower() not in kept_lower for c in edge.columns):
            continue
        if edge.parent != table.name:
            parents.add(edge.parent)
        if body.integrity == "strict":
            filters.append(
                ParentFilter(
                    name=edge.name,
                    columns=edge.columns,
                    parent=renames[edge.parent],
                    ref_columns=edge.ref_columns,
                    deferred=(edge.child, edge.name, edge.parent) in deferred,
                    virtual=edge.virtual,
                )
            )
        elif edge.parent in filtered and not edge.virtual:
            dropped.append(edge.name)
            notes.append(
                f"foreign key {edge.name} dropped: integrity is loose and {edge.parent} is filtered, "
                "so some references may not resolve"
            )
    if filters and body.data == "full":
        deferred_names = [f.name for f in filters if f.deferred]
        if deferred_names:
            notes.append(f"rows whose {', '.join(deferred_names)} reference was not copied are removed after the copy")
    incremental = body.refresh is not None and body.refresh.mode == "incremental"
    watermark = None
    if rule is not None and rule.watermark is not None and not (incremental and incremental_problem(table, rule)):
        watermark = table.column(rule.watermark).name  # type: ignore[union-attr]
    unique = any(
        index.unique and any(c.lower() in {m.lower() for m in masked} for c in index.columns) for index in table.indexes
    )
    with_data = body.data == "full"
    return TableCopy(
        source=table.name,
        target=renames[table.name],
        columns=columns,
        select=tuple(select),
        where=where,
        with_data=with_data,
        method="insert_select" if with_data else "schema_only",
        parents=tuple(sorted(parents)),
        filters=tuple(filters) if with_data else (),
        excluded_columns=excluded,
        masked=tuple(masked),
        unique_checks=unique,
        needs_salt=salt and with_data,
        dropped_foreign_keys=tuple(dropped) if body.constraints else (),
        notes=tuple(notes) if body.constraints else (),
        estimated_rows=table.rows_estimate if with_data else 0,
        estimated_bytes=table.data_bytes if with_data else 0,
        leak_check=rule.leak_check if rule is not None else True,
        row_checked=tuple(row_checked) if table_key(table) else (),
        key=table_key(table),
        has_generated=any(c.generated for c in table.columns),
        watermark=watermark if with_data else None,
    )


def _resolve_views(
    names: list[str], catalog: Catalog, copies: list[TableCopy]
) -> tuple[list[ViewCopy], list[tuple[str, str]]]:
    """Views whose every read is a copied table or view, ordered so a view follows the views it reads."""
    pending = {n: catalog.tables[n] for n in names if catalog.tables[n].kind == "view"}
    available = {c.source for c in copies}
    trimmed = {c.source for c in copies if c.excluded_columns}
    ready: list[ViewCopy] = []
    skipped: list[tuple[str, str]] = []
    reads: dict[str, set[tuple[str, str]]] = {}
    for name, view in pending.items():
        deps = view_reads(view.view_definition or "", catalog.database)
        if deps is None:
            skipped.append((name, "its definition could not be parsed"))
            continue
        reads[name] = deps
        outside = sorted({db for db, _ in deps if db != catalog.database})
        calls = sorted(set(_source_calls(catalog.database).findall(view.view_definition or "")))
        if calls:
            called = ", ".join(c.replace("``", "`") for c in calls)
            skipped.append((name, f"calls {called} of the source database, which the copy does not have"))
        elif outside:
            skipped.append((name, f"reads database {', '.join(outside)} outside the copy"))
        elif trimmed & {t for _, t in deps}:
            skipped.append(
                (name, f"reads {', '.join(sorted(trimmed & {t for _, t in deps}))}, whose columns are trimmed")
            )
    pending = {n: v for n, v in pending.items() if n not in {s for s, _ in skipped}}
    progress = True
    while pending and progress:
        progress = False
        for name in sorted(pending):
            if {t for _, t in reads[name]} <= available:
                view = pending.pop(name)
                ready.append(
                    ViewCopy(name=name, definition=view.view_definition or "", security=view.view_security or "DEFINER")
                )
                available.add(name)
                progress = True
    for name in sorted(pending):
        missing = sorted({t for _, t in reads[name]} - available)
        skipped.append((name, f"reads {', '.join(missing)}, which is not copied"))
    return ready, skipped
