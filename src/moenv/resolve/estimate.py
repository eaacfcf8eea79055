"""Row counts a copy will hold after its filters and FK closure: the SQL that counts them; pure.

A table whose own `where`, or whose parents' kept rows, restrict it is counted exactly at plan
time with nested EXISTS over the source (each parent's kept rows, recursively); the others keep
the server's estimate. The planner marks which is which and checks `budget.max_rows`.
"""

from __future__ import annotations

from collections.abc import Mapping

from moenv.engines.base import qualified, quote_ident
from moenv.manifest.fragments import parse_fragment, to_sql
from moenv.models.desired import Desired, TableCopy


def restricted_tables(desired: Desired, *, orphans: bool = False) -> set[str]:
    """Tables (target names) whose copy keeps fewer rows than the source has.

    A table is restricted by its own `where` and by its restricted parents. With `orphans`, every
    table with an integrity filter counts too: strict integrity also drops the source's own orphan
    rows, which only an exact comparison (content verification) needs to foresee.
    """
    by_target = {t.target: t for t in desired.tables}
    restricted: set[str] = set()
    for table in desired.tables:  # parents first: a parent's status is known before its children
        live = [f for f in table.filters if not f.deferred]
        if table.where or any(orphans or f.parent in restricted for f in live):
            restricted.add(table.target)
    return {t for t in restricted if by_target[t].with_data}


def _kept(
    table: TableCopy,
    alias: str,
    desired: Desired,
    tables: Mapping[str, TableCopy],
    restricted: set[str],
    depth: int,
    orphans: bool = False,
) -> list[str]:
    """Conditions on `alias` (a row of `table`) that hold when the copy keeps that row."""
    conditions: list[str] = []
    rule = desired.manifest.spec.rules.get(table.source)
    if rule is not None and rule.where is not None:
        conditions.append(
            to_sql(parse_fragment(rule.where, kind="where"), database=desired.source.database, alias=alias)
        )
    for filter_ in table.filters:
        if filter_.deferred or (filter_.parent not in restricted and not orphans) or depth > 16:
            continue
        parent = tables[filter_.parent]
        inner = f"p{depth}"
        match = " AND ".join(
            f"{quote_ident(inner)}.{quote_ident(r)} = {quote_ident(alias)}.{quote_ident(c)}"
            for c, r in zip(filter_.columns, filter_.ref_columns, strict=True)
        )
        nested = " AND ".join([match, *_kept(parent, inner, desired, tables, restricted, depth + 1, orphans)])
        nulls = " OR ".join(f"{quote_ident(alias)}.{quote_ident(c)} IS NULL" for c in filter_.columns)
        conditions.append(
            f"({nulls} OR EXISTS (SELECT 1 FROM {qualified(desired.source.database, parent.source)}"
            f" AS {quote_ident(inner)} WHERE {nested}))"
        )
    return conditions


def count_statements(desired: Desired, *, orphans: bool = False) -> dict[str, str]:
    """Target table → the `SELECT COUNT(*)` of the rows its copy will hold, for restricted tables."""
    restricted = restricted_tables(desired, orphans=orphans)
    tables = {t.target: t for t in desired.tables}
    statements = {}
    for name in sorted(restricted):
        table = tables[name]
        conditions = _kept(table, "s", desired, tables, restricted, 0, orphans)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        statements[name] = f"SELECT COUNT(*) FROM {qualified(desired.source.database, table.source)} AS `s`{where}"
    return statements


def upper_bounds(desired: Desired) -> set[str]:
    """Counted tables whose count is only an upper bound: rows removed after the copy (a reference
    through a self-reference or a cycle to a restricted table) are not foreseen by the count."""
    restricted = restricted_tables(desired)
    bounded: set[str] = set()
    for table in desired.tables:  # parents first
        if any(
            (f.deferred and f.parent in restricted) or (not f.deferred and f.parent in bounded) for f in table.filters
        ):
            bounded.add(table.target)
    return bounded


def with_counts(desired: Desired, counts: Mapping[str, int]) -> Desired:
    """`desired` with the counts of the tables in `counts`, marked exact unless only an upper bound."""
    bounded = upper_bounds(desired)
    tables = tuple(
        t.model_copy(update={"estimated_rows": counts[t.target], "rows_exact": t.target not in bounded})
        if t.target in counts
        else t
        for t in desired.tables
    )
    return desired.model_copy(update={"tables": tables})
