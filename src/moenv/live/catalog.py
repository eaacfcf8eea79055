"""Bulk catalog reads of MySQL/MariaDB: one query per information_schema view for many databases.

Never one round trip per table: the planner's cost must not grow with the schema's size.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Collection

from moenv.live import matrixone
from moenv.live.connection import Connection
from moenv.models.catalog import Catalog, Column, ForeignKey, Index, Table, TargetShape


def _in(values: Collection[str]) -> str:
    return ", ".join(["%s"] * len(values))


def read_databases(conn: Connection) -> frozenset[str]:
    if conn.engine.kind == "matrixone":  # mo_catalog, filtered by account: live/matrixone.py
        return matrixone.read_databases(conn)
    return frozenset(str(row[0]) for row in conn.query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA"))


def read_catalogs(conn: Connection, databases: Collection[str]) -> dict[str, Catalog]:
    """Catalogs of `databases` (missing ones come back empty) in five queries, whatever their size."""
    if conn.engine.kind == "matrixone":  # TABLE_ROWS is 0 and KEY_COLUMN_USAGE empty there
        return matrixone.read_catalogs(conn, databases)
    names = sorted(set(databases))
    if not names:
        return {}
    args = tuple(names)
    tables: dict[tuple[str, str], dict[str, object]] = {}
    for schema, name, kind, engine, rows, data_len in conn.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, ENGINE, TABLE_ROWS, DATA_LENGTH"
        f" FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({_in(names)})",
        args,
    ):
        tables[(schema, name)] = {
            "kind": "view" if kind == "VIEW" else "table",
            "engine": engine,
            "rows": int(rows) if rows is not None else None,
            "bytes": int(data_len) if data_len is not None else None,
        }
    columns: dict[tuple[str, str], list[Column]] = defaultdict(list)
    for schema, table, name, ctype, nullable, default, extra in conn.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA"
        f" FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN ({_in(names)})"
        " ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
        args,
    ):
        columns[(schema, table)].append(
            Column(
                str(name), str(ctype), nullable == "YES", None if default is None else str(default), str(extra or "")
            )
        )
    index_parts: dict[tuple[str, str, str], list[tuple[int, str, bool]]] = defaultdict(list)
    for schema, table, index, seq, column, non_unique in conn.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, NON_UNIQUE"
        f" FROM information_schema.STATISTICS WHERE TABLE_SCHEMA IN ({_in(names)})",
        args,
    ):
        index_parts[(schema, table, index)].append((int(seq), str(column), not int(non_unique)))
    indexes: dict[tuple[str, str], list[Index]] = defaultdict(list)
    for (schema, table, index), parts in sorted(index_parts.items()):
        parts.sort()
        indexes[(schema, table)].append(Index(index, tuple(p[1] for p in parts), parts[0][2]))
    fk_parts: dict[tuple[str, str, str], list[tuple[int, str, str, str, str]]] = defaultdict(list)
    for schema, table, name, column, position, ref_schema, ref_table, ref_column in conn.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, ORDINAL_POSITION,"
        " REFERENCED_TABLE_SCHEMA, REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME"
        f" FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA IN ({_in(names)})"
        " AND REFERENCED_TABLE_NAME IS NOT NULL",
        args,
    ):
        fk_parts[(schema, table, name)].append((int(position), str(column), ref_schema, ref_table, str(ref_column)))
    foreign_keys: dict[tuple[str, str], list[ForeignKey]] = defaultdict(list)
    for (schema, table, name), fk_cols in sorted(fk_parts.items()):
        fk_cols.sort()
        foreign_keys[(schema, table)].append(
            ForeignKey(
                name,
                tuple(p[1] for p in fk_cols),
                str(fk_cols[0][2]),
                str(fk_cols[0][3]),
                tuple(p[4] for p in fk_cols),
            )
        )
    views: dict[tuple[str, str], tuple[str, str]] = {}
    for schema, name, definition, security in conn.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION, SECURITY_TYPE"
        f" FROM information_schema.VIEWS WHERE TABLE_SCHEMA IN ({_in(names)})",
        args,
    ):
        views[(schema, name)] = (str(definition), str(security))
    by_db: dict[str, dict[str, Table]] = {name: {} for name in names}
    for (schema, name), info in tables.items():
        key = (schema, name)
        view = views.get(key)
        by_db[schema][name] = Table(
            name=name,
            kind="view" if info["kind"] == "view" else "table",
            columns=tuple(columns.get(key, ())),
            indexes=tuple(indexes.get(key, ())),
            foreign_keys=tuple(foreign_keys.get(key, ())),
            engine=str(info["engine"]) if info["engine"] else None,
            rows_estimate=info["rows"] if isinstance(info["rows"], int) else None,
            data_bytes=info["bytes"] if isinstance(info["bytes"], int) else None,
            view_definition=view[0] if view else None,
            view_security=view[1] if view else None,
        )
    present = read_databases(conn) if any(not t for t in by_db.values()) else frozenset(names)
    return {db: Catalog(conn.server.name, db, dict(sorted(t.items())), exists=db in present) for db, t in by_db.items()}


# Structure digests computed by the server: one short row per database instead of one row per
# column, so checking hundreds of targets for drift stays cheap (benchmarks/fleet_plan.py).
_DIGESTS = (
    "SELECT TABLE_SCHEMA, MD5(GROUP_CONCAT(CONCAT_WS('|', TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE,"
    " IFNULL(COLUMN_DEFAULT, '-'), EXTRA) ORDER BY TABLE_NAME, ORDINAL_POSITION SEPARATOR '/'))"
    " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN ({}) GROUP BY TABLE_SCHEMA",
    "SELECT TABLE_SCHEMA, MD5(GROUP_CONCAT(CONCAT_WS('|', TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME,"
    " NON_UNIQUE) ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX SEPARATOR '/'))"
    " FROM information_schema.STATISTICS WHERE TABLE_SCHEMA IN ({}) GROUP BY TABLE_SCHEMA",
    "SELECT TABLE_SCHEMA, MD5(GROUP_CONCAT(CONCAT_WS('|', TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME,"
    " REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME) ORDER BY TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION"
    " SEPARATOR '/')) FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA IN ({})"
    " AND REFERENCED_TABLE_NAME IS NOT NULL GROUP BY TABLE_SCHEMA",
    "SELECT TABLE_SCHEMA, MD5(GROUP_CONCAT(CONCAT_WS('|', TABLE_NAME, VIEW_DEFINITION) ORDER BY TABLE_NAME"
    " SEPARATOR '/')) FROM information_schema.VIEWS WHERE TABLE_SCHEMA IN ({}) GROUP BY TABLE_SCHEMA",
)


def read_target_shapes(conn: Connection, databases: Collection[str]) -> dict[str, TargetShape]:
    """Table names and a structure digest of each database, in five queries whatever their number."""
    if conn.engine.kind == "matrixone":  # no group_concat_max_len, no FK rows in its information_schema
        return matrixone.read_target_shapes(conn, databases)
    names = sorted(set(databases))
    if not names:
        return {}
    args = tuple(names)
    conn.execute("SET SESSION group_concat_max_len = 1073741824")
    tables: dict[str, dict[str, str]] = {name: {} for name in names}
    for schema, table, kind in conn.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES"
        f" WHERE TABLE_SCHEMA IN ({_in(names)})",
        args,
    ):
        tables[str(schema)][str(table)] = "view" if kind == "VIEW" else "table"
    parts: dict[str, list[str]] = {name: [] for name in names}
    for statement in _DIGESTS:
        found = dict(conn.query(statement.format(_in(names)), args))
        for name in names:
            parts[name].append(str(found.get(name, "")))
    return {
        name: TargetShape(
            name,
            dict(sorted(tables[name].items())),
            hashlib.sha256("\n".join([",".join(sorted(tables[name])), *parts[name]]).encode()).hexdigest(),
        )
        for name in names
    }
