"""Reads of MatrixOne servers: bulk catalog reads from mo_catalog (filtered by account), row counts
from mo_table_rows, snapshots, foreign keys, held locks. The SQL text is in engines/matrixone.py.

A fixed number of queries per call, whatever the schema's size: information_schema.TABLES has
zero row counts there and KEY_COLUMN_USAGE is an empty stub (notes §4.1), so it is not used.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable

from moenv.engines import matrixone as sql
from moenv.errors import DatabaseError
from moenv.live.connection import Connection
from moenv.models.catalog import Catalog, Column, ForeignKey, Index, Table, TargetShape

_NO_TABLE = {1146, 1049}
_HIDDEN_COLUMN = "__mo_"


def capabilities(conn: Connection) -> sql.Capabilities:
    return sql.Capabilities.from_text(conn.engine.text)


def read_databases(conn: Connection) -> frozenset[str]:
    """This account's databases (as sys, mo_database holds every account's)."""
    return frozenset(str(row[0]) for row in conn.query(sql.list_databases()))


def database_exists(conn: Connection, name: str) -> bool:
    return int(conn.scalar(sql.database_exists(), (name,)) or 0) > 0


def read_catalogs(conn: Connection, databases: Collection[str]) -> dict[str, Catalog]:
    """Catalogs of `databases` (missing ones come back empty, `exists=False`) in five queries."""
    names = sorted(set(databases))
    if not names:
        return {}
    args = tuple(names)
    count = len(names)
    kinds: dict[tuple[str, str], str] = {}
    views: dict[tuple[str, str], str | None] = {}
    for schema, name, kind, create_sql in conn.query(sql.catalog_tables(count), args):
        key = (str(schema), str(name))
        kinds[key] = "view" if kind == "v" else "table"
        if kind == "v":
            views[key] = sql.view_select(str(create_sql or ""))
    sizes: dict[tuple[str, str], tuple[int | None, int | None]] = {}
    if any(kind == "table" for kind in kinds.values()):
        for schema, name, rows, size in conn.query(sql.catalog_sizes(count), args):
            sizes[(str(schema), str(name))] = (_int(rows), _int(size))
    columns: dict[tuple[str, str], list[Column]] = defaultdict(list)
    for schema, table, name, ctype, nullable, default, extra in conn.query(sql.catalog_columns(count), args):
        columns[(str(schema), str(table))].append(
            Column(
                str(name), str(ctype), nullable == "YES", None if default is None else str(default), str(extra or "")
            )
        )
    index_parts: dict[tuple[str, str, str], list[tuple[int, str, bool]]] = defaultdict(list)
    for schema, table, index, kind, column, position in conn.query(sql.catalog_indexes(count), args):
        if str(column).startswith(_HIDDEN_COLUMN):
            continue  # the hidden composite-key column (__mo_cpkey_…) stands for the real ones
        name = "PRIMARY" if str(kind).upper() == "PRIMARY" else str(index)
        part = (int(position or 0), str(column), str(kind).upper() in {"PRIMARY", "UNIQUE"})
        if part not in index_parts[(str(schema), str(table), name)]:
            index_parts[(str(schema), str(table), name)].append(part)
    indexes: dict[tuple[str, str], list[Index]] = defaultdict(list)
    for (schema, table, index), parts in sorted(index_parts.items()):
        parts.sort()
        indexes[(schema, table)].append(Index(index, tuple(p[1] for p in parts), parts[0][2]))
    fks: dict[tuple[str, str], list[ForeignKey]] = defaultdict(list)
    for row in _foreign_key_rows(conn.query(sql.catalog_foreign_keys(count), args)):
        database, fk = row
        fks[(database, fk.table)].append(ForeignKey(fk.name, fk.columns, fk.ref_database, fk.ref_table, fk.ref_columns))
    by_db: dict[str, dict[str, Table]] = {name: {} for name in names}
    for (schema, name), kind in kinds.items():
        key = (schema, name)
        rows, size = sizes.get(key, (None, None))
        by_db[schema][name] = Table(
            name=name,
            kind="view" if kind == "view" else "table",
            columns=tuple(columns.get(key, ())),
            indexes=tuple(indexes.get(key, ())),
            foreign_keys=tuple(fks.get(key, ())),
            rows_estimate=rows,
            data_bytes=size,
            view_definition=views.get(key) if kind == "view" else None,
            view_security="DEFINER" if kind == "view" else None,
        )
    present = read_databases(conn) if any(not t for t in by_db.values()) else frozenset(names)
    return {
        db: Catalog(conn.server.name, db, dict(sorted(t.items())), exists=db in present, engine=conn.engine.text)
        for db, t in by_db.items()
    }


def _int(value: object) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


def _foreign_key_rows(rows: Iterable[tuple[object, ...]]) -> list[tuple[str, sql.ForeignKeyRow]]:
    """mo_foreign_keys has a row per column pair; one ForeignKeyRow per constraint, pairs in order."""
    grouped: dict[tuple[str, str, str], list[tuple[object, ...]]] = defaultdict(list)
    for row in rows:
        grouped[(str(row[0]), str(row[1]), str(row[2]))].append(row)
    found: list[tuple[str, sql.ForeignKeyRow]] = []
    for (database, table, name), parts in sorted(grouped.items()):
        first = parts[0]
        found.append(
            (
                database,
                sql.ForeignKeyRow(
                    table=table,
                    name=name,
                    columns=tuple(str(p[3]) for p in parts),
                    ref_database=str(first[4]),
                    ref_table=str(first[5]),
                    ref_columns=tuple(str(p[6]) for p in parts),
                    on_delete=str(first[7] or ""),
                    on_update=str(first[8] or ""),
                ),
            )
        )
    return found


def read_foreign_keys(conn: Connection, database: str) -> list[sql.ForeignKeyRow]:
    """Every foreign key of the tables of `database`, with its actions (for re-pointing)."""
    return [fk for _db, fk in _foreign_key_rows(conn.query(sql.catalog_foreign_keys(1), (database,)))]


def read_tables(conn: Connection, database: str) -> list[tuple[str, str]]:
    """(name, 'table' | 'view') for the tables of `database`, hidden index tables excluded."""
    return sorted(
        (str(name), "view" if kind == "v" else "table") for name, kind in conn.query(sql.list_tables(), (database,))
    )


def read_table_rows(conn: Connection, database: str, table: str) -> int:
    return int(conn.scalar(sql.table_rows(), (database, table)) or 0)


def read_snapshot(conn: Connection, name: str) -> tuple[object, ...] | None:
    """The scope of the snapshot `name` (see engines.matrixone.snapshot_problem), None if absent."""
    rows = conn.query(sql.select_snapshot(capabilities(conn)), (name,))
    return rows[0] if rows else None


def read_moenv_snapshots(conn: Connection, ledger: str) -> list[str]:
    """Names of the snapshots moenv took for the environments of `ledger`."""
    prefix = sql.snapshot_prefix(ledger)
    rows = conn.query(sql.list_snapshots(capabilities(conn)), (prefix + "%",))
    return sorted(str(row[0]) for row in rows if str(row[0]).startswith(prefix))


def read_busy(conn: Connection, ledger: str, environments: list[str]) -> frozenset[str]:
    """Which of `environments` an apply holds now: GET_LOCK from v4.0, the lease table before."""
    if not environments:
        return frozenset()
    names = [sql.lock_name(e) for e in environments]
    if capabilities(conn).get_lock:
        row = conn.query(sql.used_locks(len(names)), names)[0]
        return frozenset(e for e, holder in zip(environments, row, strict=True) if holder is not None)
    try:
        held = {str(row[0]) for row in conn.query(sql.held_leases(ledger, len(names)), names)}
    except DatabaseError as exc:
        if exc.code in _NO_TABLE:
            return frozenset()  # no apply has ever taken a lease here
        raise
    return frozenset(e for e, name in zip(environments, names, strict=True) if name in held)


def read_target_shapes(conn: Connection, databases: Collection[str]) -> dict[str, TargetShape]:
    """Table names and a structure digest per database, from the same bulk reads as the catalogs
    (information_schema's views are not complete enough there to digest, notes §4.1)."""
    return {
        name: TargetShape(name, {t.name: t.kind for t in catalog.tables.values()}, catalog.fingerprint())
        for name, catalog in read_catalogs(conn, databases).items()
    }
