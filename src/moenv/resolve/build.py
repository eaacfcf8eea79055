"""Resolve one environment against its source catalog; pure (no I/O, no clock)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping

import sqlglot
import sqlglot.errors
from sqlglot import exp

from moenv.engines.base import quote_ident
from moenv.errors import ManifestError, Problem
from moenv.models.catalog import Catalog, Table
from moenv.models.desired import Desired, Endpoint, TableCopy, ViewCopy
from moenv.models.manifest import EnvironmentSpec

Loc = tuple[str | int, ...]
ProblemAt = Callable[[Loc, str], Problem]


def _plain_problem(loc: Loc, message: str) -> Problem:
    return Problem(message, field=".".join(str(p) for p in loc) or None)


def select_tables(spec: EnvironmentSpec, catalog: Catalog, problem: ProblemAt) -> tuple[list[str], list[Problem]]:
    """Names matched by include globs minus exclude globs, in catalog order."""
    tables = spec.spec.tables
    problems: list[Problem] = []
    names = list(catalog.tables)
    chosen: set[str] = set()
    for index, pattern in enumerate(tables.include):
        matched = fnmatch.filter(names, pattern)
        if not matched:
            problems.append(
                problem(
                    ("spec", "tables", "include", index),
                    f"{pattern!r} matches no table in {catalog.database}",
                )
            )
        chosen.update(matched)
    for pattern in tables.exclude:
        chosen.difference_update(fnmatch.filter(names, pattern))
    return [n for n in names if n in chosen], problems


def order_parents_first(tables: Mapping[str, Table], database: str) -> list[str]:
    """Topological order over same-database foreign keys; cycles and self-references are cut."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            return  # a cycle: this edge is cut (foreign_key_checks is off while filling)
        state[name] = 1
        for fk in tables[name].foreign_keys:
            if fk.ref_database == database and fk.ref_table in tables and fk.ref_table != name:
                visit(fk.ref_table)
        state[name] = 2
        order.append(name)

    for name in sorted(tables):
        visit(name)
    return order


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


def resolve_environment(
    spec: EnvironmentSpec,
    catalog: Catalog,
    *,
    problem: ProblemAt = _plain_problem,
) -> Desired:
    """Everything the executor needs to build this environment; ManifestError lists every problem."""
    body = spec.spec
    if not catalog.exists:
        raise ManifestError(
            problem(
                ("spec", "source", "database"),
                f"source database {catalog.database!r} does not exist on server {catalog.server!r}",
            )
        )
    names, problems = select_tables(spec, catalog, problem)
    if problems:
        raise ManifestError(problems)
    base = {n: catalog.tables[n] for n in names if catalog.tables[n].kind == "table"}
    copies: list[TableCopy] = []
    for name in order_parents_first(base, catalog.database):
        table = base[name]
        columns = tuple(c.name for c in table.columns if not c.generated)
        dropped: list[str] = []
        notes: list[str] = []
        parents: list[str] = []
        for fk in table.foreign_keys:
            if fk.ref_database != catalog.database:
                dropped.append(fk.name)
                notes.append(f"foreign key {fk.name} points outside the source ({fk.ref_database}.{fk.ref_table})")
            elif fk.ref_table not in base:
                dropped.append(fk.name)
                notes.append(f"foreign key {fk.name} references {fk.ref_table}, which is not copied")
            elif fk.ref_table != name:
                parents.append(fk.ref_table)
        with_data = body.data == "full"
        copies.append(
            TableCopy(
                source=name,
                target=name,
                columns=columns,
                select=tuple(quote_ident(c) for c in columns),
                with_data=with_data,
                method="insert_select" if with_data else "schema_only",
                parents=tuple(sorted(set(parents))),
                dropped_foreign_keys=tuple(dropped) if body.constraints else (),
                notes=tuple(notes) if body.constraints else (),
                estimated_rows=table.rows_estimate if with_data else 0,
            )
        )
    views, skipped = _resolve_views(names, catalog, set(base))
    return Desired(
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
    )


def _resolve_views(
    names: list[str], catalog: Catalog, copied: set[str]
) -> tuple[list[ViewCopy], list[tuple[str, str]]]:
    """Views whose every read is a copied table or view, ordered so a view follows the views it reads."""
    pending = {n: catalog.tables[n] for n in names if catalog.tables[n].kind == "view"}
    ready: list[ViewCopy] = []
    skipped: list[tuple[str, str]] = []
    available = set(copied)
    reads: dict[str, set[tuple[str, str]]] = {}
    for name, view in pending.items():
        deps = view_reads(view.view_definition or "", catalog.database)
        if deps is None:
            skipped.append((name, "its definition could not be parsed"))
            continue
        reads[name] = deps
        outside = sorted({db for db, _ in deps if db != catalog.database})
        if outside:
            skipped.append((name, f"reads database {', '.join(outside)} outside the copy"))
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
