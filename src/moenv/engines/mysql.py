"""MySQL and MariaDB statements moenv issues, as exact text; pure.

Tables are built from `SHOW CREATE TABLE` (not `CREATE TABLE … LIKE`, which drops foreign
keys), re-pointed into the clone, filled with `INSERT … SELECT` in one transaction each with
foreign_key_checks and unique_checks off, then moved in with one multi-table RENAME TABLE.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from moenv.engines.base import qualified, quote_ident
from moenv.models.desired import ParentFilter, TableCopy, ViewCopy

# The copying session reads the source with non-locking consistent reads: under the default
# REPEATABLE READ, INSERT … SELECT takes shared locks on every source row it reads (measured on
# MariaDB 10.11: a concurrent UPDATE then hit a lock-wait timeout). READ COMMITTED does not.
COPY_SESSION = (
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "SET SESSION foreign_key_checks = 0",
    "SET SESSION unique_checks = 0",
)

_CREATE_HEAD = re.compile(r"^CREATE TABLE `(?:[^`]|``)+` \($")
_REFERENCES = re.compile(r"REFERENCES (`(?:[^`]|``)+`\.)?`((?:[^`]|``)+)` \(")
_CONSTRAINT = re.compile(r"^\s*CONSTRAINT `((?:[^`]|``)+)` (FOREIGN KEY|CHECK)\b")
_SECONDARY = re.compile(
    r"^\s*(UNIQUE KEY|UNIQUE INDEX|KEY|INDEX|FULLTEXT KEY|FULLTEXT INDEX|SPATIAL KEY|SPATIAL INDEX)\b"
)
_AUTO_INCREMENT = re.compile(r" AUTO_INCREMENT=\d+")
_COLUMN_LINE = re.compile(r"^\s*`((?:[^`]|``)+)` ")
_NAMES_IN_LINE = re.compile(r"`((?:[^`]|``)+)`")
SOURCE_ALIAS = "s"


def lock_name(environment: str) -> str:
    """GET_LOCK names are limited to 64 characters: a digest keeps any environment name within it."""
    return "moenv:" + hashlib.sha256(environment.encode()).hexdigest()[:40]


def get_lock() -> str:
    return "SELECT GET_LOCK(%s, %s)"


def release_lock() -> str:
    return "SELECT RELEASE_LOCK(%s)"


def lock_holder() -> str:
    return "SELECT p.ID, p.USER, p.HOST FROM information_schema.PROCESSLIST p WHERE p.ID = IS_USED_LOCK(%s)"


def create_database(name: str, charset: str | None = None, collation: str | None = None) -> str:
    sql = f"CREATE DATABASE {quote_ident(name)}"
    if charset:
        sql += f" CHARACTER SET {charset}"
    if collation:
        sql += f" COLLATE {collation}"
    return sql


def drop_database(name: str) -> str:
    return f"DROP DATABASE IF EXISTS {quote_ident(name)}"


def database_charset() -> str:
    return (
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA"
        " WHERE SCHEMA_NAME = %s"
    )


def show_create_table(database: str, table: str) -> str:
    return f"SHOW CREATE TABLE {qualified(database, table)}"


def adapt_create_table(
    ddl: str,
    copy: TableCopy,
    *,
    database: str,
    renames: Mapping[str, str],
    indexes: bool = True,
    constraints: bool = True,
    keep_auto_increment: bool = True,
) -> str:
    """SHOW CREATE TABLE output → the DDL of the copy inside `database`.

    Foreign keys to copied tables are re-pointed into `database` (under their target names);
    the ones listed in `copy.dropped_foreign_keys` are removed, and so are all foreign keys and
    checks when `constraints` is off, and secondary indexes when `indexes` is off.
    """
    lines = ddl.split("\n")
    excluded = {c.lower() for c in copy.excluded_columns}
    if not lines or not _CREATE_HEAD.match(lines[0]):
        raise ValueError(f"unexpected SHOW CREATE TABLE output for {copy.source}: {lines[0][:80]!r}")
    head = f"CREATE TABLE {qualified(database, copy.target)} ("
    body: list[str] = []
    tail: list[str] = []
    dropped = set(copy.dropped_foreign_keys)
    for index, line in enumerate(lines[1:], start=1):
        if line.startswith(")"):
            tail = lines[index:]
            break
        text = line.rstrip(",")
        if column := _COLUMN_LINE.match(text):
            name = column.group(1).replace("``", "`").lower()
            if name in excluded:
                continue
            check = text.rfind(" CHECK (")
            if check > 0 and (not constraints or _mentions(text[check:], excluded, skip_first=False)):
                text = text[:check]  # MariaDB prints a column's CHECK inline, last
            if " GENERATED ALWAYS AS " in text and _mentions(text, excluded):
                excluded.add(name)  # computed from a column that is not copied: it goes too
                continue
        elif excluded and _mentions(text, excluded):
            continue  # an index or check on a column that is not copied
        if constraint := _CONSTRAINT.match(text):
            name, kind = constraint.group(1).replace("``", "`"), constraint.group(2)
            if not constraints or (kind == "FOREIGN KEY" and name in dropped):
                continue
            if kind == "FOREIGN KEY":
                text = _repoint(text, database, renames)
        elif not indexes and _SECONDARY.match(text):
            continue
        body.append(text)
    if not tail:
        raise ValueError(f"unexpected SHOW CREATE TABLE output for {copy.source}: no closing line")
    closing = "\n".join(tail)
    if not keep_auto_increment:
        closing = _AUTO_INCREMENT.sub("", closing)
    return head + "\n" + ",\n".join(body) + "\n" + closing


def _mentions(text: str, columns: set[str], *, skip_first: bool = True) -> bool:
    body = text.split(" REFERENCES ", maxsplit=1)[0]
    names = _NAMES_IN_LINE.findall(body)
    if skip_first and not body.lstrip().startswith("PRIMARY KEY"):
        names = names[1:]  # the first name is the column's, the index's or the constraint's own
    return any(name.replace("``", "`").lower() in columns for name in names)


def _repoint(text: str, database: str, renames: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        parent = match.group(2).replace("``", "`")
        return f"REFERENCES {qualified(database, renames.get(parent, parent))} ("

    return _REFERENCES.sub(one, text)


def _null_or(columns: Sequence[str], alias: str) -> str:
    return " OR ".join(f"{alias}.{quote_ident(c)} IS NULL" for c in columns)


def _matches(filter_: ParentFilter, *, child: str, parent: str) -> str:
    return " AND ".join(
        f"{parent}.{quote_ident(r)} = {child}.{quote_ident(c)}"
        for c, r in zip(filter_.columns, filter_.ref_columns, strict=True)
    )


def integrity_condition(filter_: ParentFilter, *, database: str, alias: str) -> str:
    """True for a row whose reference is NULL or found among the parent rows already copied."""
    parent = qualified(database, filter_.parent)
    return (
        f"({_null_or(filter_.columns, alias)} OR EXISTS (SELECT 1 FROM {parent} AS `p`"
        f" WHERE {_matches(filter_, child=alias, parent='`p`')}))"
    )


def insert_select(copy: TableCopy, *, source_database: str, into_database: str) -> str:
    """The copy of one table inside the server: masks in the SELECT, filters in the WHERE."""
    columns = ", ".join(quote_ident(c) for c in copy.columns)
    select = ", ".join(copy.select)
    alias = quote_ident(SOURCE_ALIAS)
    sql = (
        f"INSERT INTO {qualified(into_database, copy.target)} ({columns})"
        f" SELECT {select} FROM {qualified(source_database, copy.source)} AS {alias}"
    )
    conditions = [copy.where] if copy.where else []
    conditions += [integrity_condition(f, database=into_database, alias=alias) for f in copy.filters if not f.deferred]
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    return sql


def delete_orphans(copy: TableCopy, filter_: ParentFilter, *, database: str) -> str:
    """Remove rows whose reference was not copied (self-references, cycles: checked after the copy)."""
    child = qualified(database, copy.target)
    parent = qualified(database, filter_.parent)
    not_null = " AND ".join(f"{child}.{quote_ident(c)} IS NOT NULL" for c in filter_.columns)
    # The parent is read through a derived table: MySQL refuses a DELETE whose subquery reads the
    # same table directly (error 1093), and a self-reference does exactly that. Single-table
    # DELETE with qualified columns: aliases there need MySQL 8.0.16+ / MariaDB 11.
    refs = ", ".join(quote_ident(r) for r in filter_.ref_columns)
    return (
        f"DELETE FROM {child} WHERE {not_null}"
        f" AND NOT EXISTS (SELECT 1 FROM (SELECT {refs} FROM {parent}) AS `p`"
        f" WHERE {_matches(filter_, child=child, parent='`p`')})"
    )


def count_leaks(copy: TableCopy, column: str, *, source_database: str, database: str) -> str:
    """Rows of the copy whose masked value still equals a value of the same source column."""
    target = qualified(database, copy.target)
    source = qualified(source_database, copy.source)
    col = quote_ident(column)
    return (
        f"SELECT COUNT(*) FROM {target} AS `t` WHERE `t`.{col} IS NOT NULL"
        f" AND `t`.{col} IN (SELECT `s`.{col} FROM {source} AS `s` WHERE `s`.{col} IS NOT NULL)"
    )


def count_row_leaks(copy: TableCopy, column: str, *, source_database: str, database: str) -> str:
    """Rows of the copy whose masked value equals the value of its own source row (joined by key)."""
    target = qualified(database, copy.target)
    source = qualified(source_database, copy.source)
    col = quote_ident(column)
    match = " AND ".join(f"`t`.{quote_ident(k)} = `s`.{quote_ident(k)}" for k in copy.key)
    return f"SELECT COUNT(*) FROM {target} AS `t` JOIN {source} AS `s` ON {match} WHERE `t`.{col} = `s`.{col}"


def rename_into(tables: Iterable[str], *, staging: str, target: str) -> str:
    """Move freshly built tables into an empty target in one atomic statement."""
    pairs = [f"{qualified(staging, t)} TO {qualified(target, t)}" for t in tables]
    return "RENAME TABLE " + ", ".join(pairs)


def swap_tables(
    new_tables: Sequence[str], old_tables: Sequence[str], *, staging: str, target: str, holding: str
) -> str:
    """Old tables out to `holding` and new ones in from `staging`, in one atomic RENAME TABLE."""
    pairs = [f"{qualified(target, t)} TO {qualified(holding, t)}" for t in old_tables]
    pairs += [f"{qualified(staging, t)} TO {qualified(target, t)}" for t in new_tables]
    return "RENAME TABLE " + ", ".join(pairs)


def drop_view(database: str, name: str) -> str:
    return f"DROP VIEW IF EXISTS {qualified(database, name)}"


def create_view(view: ViewCopy, *, source_database: str, target: str, renames: Mapping[str, str]) -> str:
    """Recreate a view in the target: its reads of the source are pointed at the copies.

    The definition is the server's normalised text, where every table is written as
    `db`.`table`; those qualifiers are rewritten. No DEFINER clause: the view belongs to moenv's user.
    """
    prefix = re.escape(quote_ident(source_database)) + r"\.`((?:[^`]|``)+)`"

    def one(match: re.Match[str]) -> str:
        table = match.group(1).replace("``", "`")
        return qualified(target, renames.get(table, table))

    definition = re.sub(prefix, one, view.definition)
    security = "INVOKER" if view.security.upper() == "INVOKER" else "DEFINER"
    return f"CREATE OR REPLACE SQL SECURITY {security} VIEW {qualified(target, view.name)} AS {definition}"


def count_rows(database: str, table: str) -> str:
    return f"SELECT COUNT(*) FROM {qualified(database, table)}"


def list_tables() -> str:
    return "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s"


# -- incremental refresh (in place, inside one transaction on the target) ----------------------


def max_watermark(copy: TableCopy, *, source_database: str) -> str:
    """The highest watermark at the source, read before the changed rows are copied."""
    assert copy.watermark is not None
    return f"SELECT MAX({quote_ident(copy.watermark)}) FROM {qualified(source_database, copy.source)}"


def _placeholder_safe(sql: str) -> str:
    """Fragments may hold `%` (LIKE patterns): doubled, so the driver's `%s` substitution leaves them be."""
    return sql.replace("%", "%%")


def _key_match(copy: TableCopy, *, left: str, right: str) -> str:
    return " AND ".join(f"{left}.{quote_ident(k)} = {right}.{quote_ident(k)}" for k in copy.key)


def delete_all(database: str, table: str) -> str:
    return f"DELETE FROM {qualified(database, table)}"


# -- incremental refresh (executor/apply.py refresh_incremental) ---------------------------------
#
# What a refresh reads of the source is first copied into scratch tables in the staging database
# (INSERT … SELECT on one server: a consistent read at READ COMMITTED; a stream across servers):
# the rows changed since the stored watermark, and the key (with the columns the integrity
# filters read) of every source row through `where`. Then, in one transaction on the target, only
# staging and the target are read: changed rows replaced, vanished ones deleted, rows that qualify
# again (a parent came back) fetched by key. A DELETE … WHERE [NOT] EXISTS (SELECT … FROM source)
# would hold shared locks on the source rows it read until the COMMIT.


def scratch_table(kind: str, index: int, part: int | None = None) -> str:
    """`_moenv_d3` (changed rows of table 3), `_moenv_k3` (its keys), `_moenv_m3_0` (rows it lacks,
    round 0), `_moenv_w3` (a table copied whole)."""
    return f"_moenv_{kind}{index}" + (f"_{part}" if part is not None else "")


def value_literal(value: object) -> str:
    """A key value read back from a server, as a literal any character set reads the same (no escaping)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return f"X'{bytes(value).hex()}'" if value else "''"
    text = str(value)
    return f"CONVERT(X'{text.encode().hex()}' USING utf8mb4)" if text else "''"


def changed_rows(copy: TableCopy, since: str, *, into: str) -> TableCopy:
    """The rows changed since `since`, the stored watermark: `>=`, so that a row committed in the same
    instant as the stored maximum (read before the changes) is not lost."""
    assert copy.watermark is not None
    mark = f"{quote_ident(SOURCE_ALIAS)}.{quote_ident(copy.watermark)} >= {value_literal(since)}"
    where = f"({copy.where}) AND {mark}" if copy.where else mark
    return copy.model_copy(update={"target": into, "where": where, "filters": (), "leak_check": False})


def key_columns(copy: TableCopy) -> tuple[str, ...]:
    """The key, then the columns the live integrity filters read: what finds vanished and missing rows."""
    found = list(copy.key)
    for filter_ in copy.filters:
        found += [c for c in filter_.columns if c not in found]
    return tuple(found)


def source_keys(copy: TableCopy, *, into: str) -> TableCopy:
    """The stream of key_columns of every source row through `where` (masked where the copy masks them)."""
    chosen = key_columns(copy)
    select = tuple(copy.select[copy.columns.index(c)] for c in chosen)
    return copy.model_copy(
        update={"target": into, "columns": chosen, "select": select, "filters": (), "masked": (), "leak_check": False}
    )


def whole_rows(copy: TableCopy, *, into: str) -> TableCopy:
    """The stream of a table copied whole (no watermark, or no key), through `where`."""
    return copy.model_copy(update={"target": into, "filters": (), "leak_check": False})


def create_like(database: str, table: str, *, like_database: str, like_table: str) -> str:
    return f"CREATE TABLE {qualified(database, table)} LIKE {qualified(like_database, like_table)}"


def create_keys_table(copy: TableCopy, database: str, table: str, *, like_database: str) -> list[str]:
    """An empty table of key_columns (the copy's column types) with the key as primary key (loaded
    in key order: appended); its reference indexes come after the load (index_keys_table)."""
    columns = ", ".join(quote_ident(c) for c in key_columns(copy))
    key = ", ".join(quote_ident(k) for k in copy.key)
    return [
        f"CREATE TABLE {qualified(database, table)} AS SELECT {columns}"
        f" FROM {qualified(like_database, copy.target)} WHERE FALSE",
        f"ALTER TABLE {qualified(database, table)} ADD PRIMARY KEY ({key})",
    ]


def index_keys_table(copy: TableCopy, database: str, table: str) -> str | None:
    """An index per reference of the loaded keys table, by which the children of newly copied
    parents are found (missing_keys); built by sorting, after the load (cheaper, as for staging)."""
    indexes = sorted({", ".join(quote_ident(c) for c in f.columns) for f in copy.filters})
    if not indexes:
        return None
    return f"ALTER TABLE {qualified(database, table)} " + ", ".join(f"ADD KEY ({columns})" for columns in indexes)


def insert_loaded(copy: TableCopy, *, from_database: str, from_table: str, into_database: str) -> str:
    """Loaded rows into the copy, through its live integrity filters against the parents there."""
    columns = ", ".join(quote_ident(c) for c in copy.columns)
    alias = quote_ident(SOURCE_ALIAS)
    sql = (
        f"INSERT INTO {qualified(into_database, copy.target)} ({columns})"
        f" SELECT {', '.join(f'{alias}.{quote_ident(c)}' for c in copy.columns)}"
        f" FROM {qualified(from_database, from_table)} AS {alias}"
    )
    conditions = [integrity_condition(f, database=into_database, alias=alias) for f in copy.filters if not f.deferred]
    return sql + (" WHERE " + " AND ".join(conditions) if conditions else "")


def delete_matching(copy: TableCopy, *, database: str, keys_database: str, keys_table: str) -> str:
    """Rows of the copy whose key is in `keys_table` (the changed ones: replaced next). A multi-table
    DELETE, driven by the few loaded rows (a WHERE EXISTS would scan the whole copy on MariaDB
    10.x); the deleted table is named in full, not by alias (MariaDB wants a default database then).
    It reads staging, never the source."""
    table = qualified(database, copy.target)
    keys = qualified(keys_database, keys_table)
    return f"DELETE {table} FROM {keys} JOIN {table} ON {_key_match(copy, left=keys, right=table)}"


def delete_unmatched(copy: TableCopy, *, database: str, keys_database: str, keys_table: str) -> str:
    """Rows of the copy whose key is not in `keys_table` (deleted at the source, or out of `where`)."""
    table = qualified(database, copy.target)
    return (
        f"DELETE FROM {table} WHERE NOT EXISTS (SELECT 1 FROM {qualified(keys_database, keys_table)} AS `k`"
        f" WHERE {_key_match(copy, left='`k`', right=table)})"
    )


def missing_keys(
    copy: TableCopy,
    *,
    database: str,
    keys_database: str,
    keys_table: str,
    via: tuple[ParentFilter, str] | None = None,
) -> str:
    """Keys of source rows the copy lacks that its live integrity filters let in: rows whose parent
    qualifies again (their own watermark did not move). Rows kept out by a parent stay out.

    via: (a reference, a table of the parent's newly copied rows in keys_database): only the
    children of those rows are looked at, found through the keys table's index on the reference.
    """
    alias = quote_ident(SOURCE_ALIAS)
    key = ", ".join(f"{alias}.{quote_ident(k)}" for k in copy.key)
    conditions = [
        f"NOT EXISTS (SELECT 1 FROM {qualified(database, copy.target)} AS `x`"
        f" WHERE {_key_match(copy, left='`x`', right=alias)})",
        *(integrity_condition(f, database=database, alias=alias) for f in copy.filters if not f.deferred),
    ]
    source = f"{qualified(keys_database, keys_table)} AS {alias}"
    if via is not None:
        filter_, newcomers = via
        source = (
            f"{qualified(keys_database, newcomers)} AS `n` STRAIGHT_JOIN {source}"
            f" ON {_matches(filter_, child=alias, parent='`n`')}"
        )
        key = "DISTINCT " + key
    return f"SELECT {key} FROM {source} WHERE " + " AND ".join(conditions)


def rows_with_keys(copy: TableCopy, keys: Sequence[Sequence[object]], *, into: str) -> TableCopy:
    """The stream of the source rows with these keys (through `where`)."""
    alias = quote_ident(SOURCE_ALIAS)
    columns = [f"{alias}.{quote_ident(k)}" for k in copy.key]
    values = ", ".join(
        "(" + ", ".join(value_literal(v) for v in row) + ")" if len(columns) > 1 else value_literal(row[0])
        for row in keys
    )
    listed = f"({', '.join(columns)}) IN ({values})" if len(columns) > 1 else f"{columns[0]} IN ({values})"
    where = f"({copy.where}) AND {listed}" if copy.where else listed
    return copy.model_copy(update={"target": into, "where": where, "filters": (), "leak_check": False})


def drop_table(database: str, table: str) -> str:
    return f"DROP TABLE IF EXISTS {qualified(database, table)}"


# -- cross-server streaming (executor/stream.py) ------------------------------------------------
#
# Rows travel as LOAD DATA text formatted by the *source* server, so no value is decoded or
# re-encoded in Python (PyMySQL decodes ~150 k rows/s; SPEC §5). Every value is sent as the bytes
# the target column must hold (`CAST(… AS BINARY)`, read back with `CHARACTER SET binary`), with
# LOAD DATA's escaping (backslash, tab, newline) and `\N` for NULL. FLOAT/DOUBLE go as the text
# of a DOUBLE (it round-trips; a FLOAT's own text is rounded to 6 digits, as in mysqldump), BIT as
# its number, TIMESTAMP as UNIX_TIMESTAMP (its text would depend on both sessions' time zones).
# Separators and escapes are hex literals: the text means the same under NO_BACKSLASH_ESCAPES.

_AS_NUMBER = frozenset(
    {"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "decimal", "numeric", "year"}
    | {"date", "datetime", "time"}
)
_FLOATS = frozenset({"float", "double", "real", "double precision"})
_CHARSET_NAME = re.compile(r"^[A-Za-z0-9_]+$")
NULL_TEXT = "X'5C4E'"
FIELD_SEPARATOR = "X'09'"
LINE_SEPARATOR = "X'0A'"

# The source sessions of a cross-server copy: one snapshot for every read (REPEATABLE READ is
# where a consistent snapshot means something; plain SELECTs there never lock), results as the
# bytes the server holds, and GROUP_CONCAT chunks that are never cut (a cut row is detected too).
STREAM_SOURCE_SESSION = (
    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "SET SESSION group_concat_max_len = 4294967295",
    "SET SESSION character_set_results = binary",
    "SET SESSION net_write_timeout = 3600",
)
START_SNAPSHOT = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"
# The loading sessions: COPY_SESSION, plus UTC (TIMESTAMP values arrive as epoch seconds) and
# NO_AUTO_VALUE_ON_ZERO (a source row whose AUTO_INCREMENT column holds 0 keeps its 0). A load
# may wait for its next chunk while the source evaluates a slow `where`, or while another table
# holds a shared snapshot session: longer network timeouts than the default 30/60 s, both sides.
# unique_checks back on: the staging table has no secondary index while it loads (defer_indexes),
# and with both checks off MariaDB 10.11's bulk-insert mode took twice the target CPU for the
# same LOAD DATA (1 M rows: 10.2-11.3 s against 5.0-5.7 s, the same wall time on an idle server).
STREAM_TARGET_SESSION = (
    *COPY_SESSION,
    "SET SESSION unique_checks = 1",
    "SET SESSION time_zone = '+00:00'",
    "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'NO_AUTO_VALUE_ON_ZERO')",
    "SET SESSION net_read_timeout = 3600",
)


def global_read_lock(engine: str) -> tuple[str, ...]:
    """Held for the moment all snapshot sessions start, so they all see the same commits.

    MariaDB: BACKUP STAGE BLOCK_COMMIT only blocks commits (FLUSH TABLES WITH READ LOCK waited
    4.2 s behind a long UPDATE and stalled every writer meanwhile, SPEC §5). Both need RELOAD.
    """
    if engine == "mariadb":
        return ("BACKUP STAGE START", "BACKUP STAGE BLOCK_COMMIT")
    return ("FLUSH TABLES WITH READ LOCK",)


def global_read_unlock(engine: str) -> tuple[str, ...]:
    return ("BACKUP STAGE END",) if engine == "mariadb" else ("UNLOCK TABLES",)


@dataclass(frozen=True)
class LoadColumn:
    """A column of a staging table, as information_schema.COLUMNS describes it."""

    name: str
    data_type: str
    """DATA_TYPE, lower case (`varchar`, `float`, `inet6`, ...)."""
    charset: str | None = None
    """CHARACTER_SET_NAME; None for columns that are not character columns."""

    @property
    def via_variable(self) -> bool:
        """Loaded through a user variable and a SET clause (BIT, TIMESTAMP)."""
        return self.data_type in {"bit", "timestamp"}


def staging_columns() -> str:
    return (
        "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_SET_NAME FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION"
    )


def primary_key_columns() -> str:
    return (
        "SELECT COLUMN_NAME FROM information_schema.STATISTICS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX"
    )


def _escaped(expression: str) -> str:
    return f"REPLACE(REPLACE(REPLACE({expression}, X'5C', X'5C5C'), X'09', X'5C74'), X'0A', X'5C6E')"


def stream_value(column: LoadColumn, expression: str, *, plain: bool) -> str:
    """One value as LOAD DATA text; `plain` when `expression` is the column itself (not masked)."""
    kind = column.data_type.lower()
    if kind in _FLOATS:
        value = f"CAST({expression} AS DOUBLE)"
    elif kind == "bit":
        value = f"CAST({expression} AS UNSIGNED)"
    elif kind == "timestamp":
        value = f"UNIX_TIMESTAMP({expression})"
    elif kind in _AS_NUMBER and plain:
        value = expression  # digits, signs, dots, dashes and colons: nothing to escape
    elif column.charset and not plain:
        # a mask's result is converted to the column's character set, as INSERT … SELECT would
        if not _CHARSET_NAME.match(column.charset):
            raise ValueError(f"unexpected character set name {column.charset!r}")
        value = _escaped(f"CAST(CONVERT({expression} USING {column.charset}) AS BINARY)")
    else:
        value = _escaped(f"CAST({expression} AS BINARY)")
    return f"IFNULL({value}, {NULL_TEXT})"


def stream_line(copy: TableCopy, columns: Sequence[LoadColumn]) -> str:
    """The LOAD DATA line of one source row: its values (masks applied) joined by tabs."""
    if len(columns) != len(copy.select):
        raise ValueError(f"{copy.target}: {len(columns)} staging columns for {len(copy.select)} select expressions")
    values = [
        stream_value(column, expression, plain=expression == quote_ident(column.name))
        for column, expression in zip(columns, copy.select, strict=True)
    ]
    return f"CONCAT_WS({FIELD_SEPARATOR}, " + ", ".join(values) + ")"


def key_after(key: Sequence[str], variables: Sequence[str], *, alias: str = SOURCE_ALIAS) -> str:
    """Rows whose key sorts after the values in `variables` (keyset paging, composite keys too)."""
    return _key_compare(key, variables, alias=alias, last=">")


def key_up_to(key: Sequence[str], variables: Sequence[str], *, alias: str = SOURCE_ALIAS) -> str:
    """Rows whose key sorts before or at the values in `variables`."""
    return _key_compare(key, variables, alias=alias, last="<=")


def _key_compare(key: Sequence[str], variables: Sequence[str], *, alias: str, last: str) -> str:
    # Spelled out as OR-ed prefixes, not as a row comparison `(a, b) > (x, y)`: the range
    # optimizer turns this form into index ranges on MariaDB as well as MySQL.
    if not key or len(key) != len(variables):
        raise ValueError("a key and one variable per key column are needed")
    a = quote_ident(alias)
    strict = last.replace("=", "")
    terms = []
    for index, column in enumerate(key):
        equal = [f"{a}.{quote_ident(k)} = {v}" for k, v in zip(key[:index], variables[:index], strict=True)]
        compare = last if index == len(key) - 1 else strict
        terms.append(" AND ".join([*equal, f"{a}.{quote_ident(column)} {compare} {variables[index]}"]))
    return terms[0] if len(terms) == 1 else "(" + " OR ".join(f"({t})" for t in terms) + ")"


def _stream_from(copy: TableCopy, source_database: str, conditions: Sequence[str]) -> str:
    sql = f" FROM {qualified(source_database, copy.source)} AS {quote_ident(SOURCE_ALIAS)}"
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    return sql


def stream_bound(
    copy: TableCopy,
    key: Sequence[str],
    *,
    source_database: str,
    after: Sequence[str] | None,
    into: Sequence[str],
    rows: int,
) -> str:
    """Store the key of the `rows`-th row after `after` in the variables `into` (none: fewer rows remain).

    The bound stays in the server: a key read back into Python and sent again could compare
    differently (a case-insensitive key sent as bytes compares byte by byte).
    """
    a = quote_ident(SOURCE_ALIAS)
    keys = ", ".join(f"{a}.{quote_ident(k)}" for k in key)
    where = [key_after(key, after)] if after else []
    return (
        f"SELECT {keys} INTO {', '.join(into)}"
        + _stream_from(copy, source_database, where)
        + f" ORDER BY {keys} LIMIT 1 OFFSET {max(rows, 1) - 1}"
    )


def _row_conditions(
    copy: TableCopy, key: Sequence[str], after: Sequence[str] | None, up_to: Sequence[str] | None
) -> list[str]:
    """The key range (with `where`) of a chunk; without a key, `where` alone."""
    return _range(copy, key, after, up_to) if key else ([copy.where] if copy.where else [])


def _range(copy: TableCopy, key: Sequence[str], after: Sequence[str] | None, up_to: Sequence[str] | None) -> list[str]:
    conditions = [key_after(key, after)] if after else []
    if up_to:
        conditions.append(key_up_to(key, up_to))
    if copy.where:
        conditions.append(copy.where)
    return conditions


def stream_chunk(
    copy: TableCopy,
    columns: Sequence[LoadColumn],
    key: Sequence[str],
    *,
    source_database: str,
    after: Sequence[str] | None,
    up_to: Sequence[str] | None,
) -> str:
    """A key range's lines in one value (one round trip, one decode) and how many rows they are.

    `where` is evaluated here, on the source; integrity filters cannot be (their parents are on
    the target) and are enforced there after loading.
    """
    line = stream_line(copy, columns)
    return f"SELECT COUNT(*), GROUP_CONCAT({line} SEPARATOR {LINE_SEPARATOR})" + _stream_from(
        copy, source_database, _range(copy, key, after, up_to)
    )


def stream_rows(
    copy: TableCopy,
    columns: Sequence[LoadColumn],
    key: Sequence[str] = (),
    *,
    source_database: str,
    after: Sequence[str] | None = None,
    up_to: Sequence[str] | None = None,
) -> str:
    """One line per row: for tables without a primary key (read unbuffered) and for a chunk whose
    GROUP_CONCAT was cut."""
    return f"SELECT {stream_line(copy, columns)}" + _stream_from(
        copy, source_database, _row_conditions(copy, key, after, up_to)
    )


def _file_literal(path: str) -> str:
    if "'" in path or "\\" in path or "\x00" in path:
        raise ValueError(f"unusable path for LOAD DATA: {path!r}")
    return f"'{path}'"


def load_data(copy: TableCopy, columns: Sequence[LoadColumn], *, database: str, path: str) -> str:
    """LOAD DATA LOCAL of stream lines into the staging table (`CHARACTER SET binary`: no conversion)."""
    targets: list[str] = []
    sets: list[str] = []
    for index, column in enumerate(columns):
        name = quote_ident(column.name)
        if not column.via_variable:
            targets.append(name)
            continue
        variable = f"@moenv_v{index}"
        targets.append(variable)
        if column.data_type == "bit":
            sets.append(f"{name} = CAST({variable} AS UNSIGNED)")
        else:  # epoch 0 is the zero TIMESTAMP, which FROM_UNIXTIME cannot give back
            sets.append(
                f"{name} = IF({variable} = 0, '0000-00-00 00:00:00', FROM_UNIXTIME(CAST({variable} AS DECIMAL(20,6))))"
            )
    sql = (
        f"LOAD DATA LOCAL INFILE {_file_literal(path)} INTO TABLE {qualified(database, copy.target)}"
        f" CHARACTER SET binary FIELDS TERMINATED BY {FIELD_SEPARATOR} ESCAPED BY X'5C'"
        f" LINES TERMINATED BY {LINE_SEPARATOR} ({', '.join(targets)})"
    )
    if sets:
        sql += " SET " + ", ".join(sets)
    return sql


# Multi-row INSERT, the measured alternative to LOAD DATA: the source formats whole VALUES tuples.
# The loading session reads them as bytes (SET NAMES binary) with backslash escapes on (QUOTE()).
STREAM_INSERT_SESSION = (
    *COPY_SESSION,
    "SET SESSION unique_checks = 1",
    "SET SESSION time_zone = '+00:00'",
    "SET SESSION net_read_timeout = 3600",
    "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,STRICT_ALL_TABLES'",
    "SET NAMES binary",
)


def insert_value(column: LoadColumn, expression: str, *, plain: bool) -> str:
    """One value as an SQL literal (QUOTE() spells NULL as NULL)."""
    kind = column.data_type.lower()
    if kind in _FLOATS:
        return f"IFNULL(CAST({expression} AS DOUBLE), 'NULL')"
    if kind == "bit":
        return f"IFNULL(CAST({expression} AS UNSIGNED), 'NULL')"
    if kind == "timestamp":
        epoch = f"UNIX_TIMESTAMP({expression})"
        return f"IFNULL(IF({epoch} = 0, '''0000-00-00 00:00:00''', CONCAT('FROM_UNIXTIME(', {epoch}, ')')), 'NULL')"
    if kind in _AS_NUMBER and plain:
        return f"QUOTE({expression})"
    if column.charset and not plain:
        if not _CHARSET_NAME.match(column.charset):
            raise ValueError(f"unexpected character set name {column.charset!r}")
        return f"QUOTE(CAST(CONVERT({expression} USING {column.charset}) AS BINARY))"
    return f"QUOTE(CAST({expression} AS BINARY))"


def _insert_tuple(copy: TableCopy, columns: Sequence[LoadColumn]) -> str:
    values = [
        insert_value(column, expression, plain=expression == quote_ident(column.name))
        for column, expression in zip(columns, copy.select, strict=True)
    ]
    return "CONCAT('(', CONCAT_WS(',', " + ", ".join(values) + "), ')')"


def insert_chunk(
    copy: TableCopy,
    columns: Sequence[LoadColumn],
    key: Sequence[str],
    *,
    source_database: str,
    after: Sequence[str] | None,
    up_to: Sequence[str] | None,
) -> str:
    """A key range as `(…),(…)` VALUES text, and its row count."""
    return f"SELECT COUNT(*), GROUP_CONCAT({_insert_tuple(copy, columns)} SEPARATOR ',')" + _stream_from(
        copy, source_database, _range(copy, key, after, up_to)
    )


def insert_rows(
    copy: TableCopy,
    columns: Sequence[LoadColumn],
    key: Sequence[str] = (),
    *,
    source_database: str,
    after: Sequence[str] | None = None,
    up_to: Sequence[str] | None = None,
) -> str:
    """One VALUES tuple per row (tables without a primary key, chunks cut short)."""
    return f"SELECT {_insert_tuple(copy, columns)}" + _stream_from(
        copy, source_database, _row_conditions(copy, key, after, up_to)
    )


def insert_head(copy: TableCopy, columns: Sequence[LoadColumn], *, database: str) -> str:
    names = ", ".join(quote_ident(c.name) for c in columns)
    return f"INSERT INTO {qualified(database, copy.target)} ({names}) VALUES "


_DEFERRABLE_KEY = re.compile(r"^\s*(?:UNIQUE KEY|UNIQUE INDEX|KEY|INDEX) `((?:[^`]|``)+)` \(`((?:[^`]|``)+)`")
_PRIMARY_FIRST = re.compile(r"^\s*PRIMARY KEY \(`((?:[^`]|``)+)`")


@dataclass(frozen=True)
class DeferredIndexes:
    """Secondary B-tree indexes and foreign keys taken out of a CREATE TABLE, to add after the load."""

    names: tuple[str, ...]
    """Index and constraint names, in the order of `clauses`."""
    clauses: tuple[str, ...]
    """`ADD KEY …` / `ADD CONSTRAINT … FOREIGN KEY …`, as SHOW CREATE TABLE spelled them."""


def defer_indexes(ddl: str) -> tuple[str, DeferredIndexes]:
    """The CREATE TABLE of a staging table with its primary key only, and what to add after loading.

    Measured on MariaDB 10.11 (1 M rows, 2 secondary indexes, 1 foreign key): LOAD DATA into the
    bare table then one ALTER TABLE … ADD (indexes built by sorting) took 27% less target CPU
    than loading with the indexes in place, bulk-insert mode included. FULLTEXT and SPATIAL
    indexes stay (InnoDB builds one FULLTEXT index per ALTER, rebuilding the table for the first),
    and so does a key that an AUTO_INCREMENT column needs (error 1075 without it).
    """
    lines = ddl.split("\n")
    closing = next((i for i, line in enumerate(lines) if line.startswith(")")), None)
    if not lines or closing is None:
        raise ValueError(f"unexpected CREATE TABLE text: {lines[0][:80]!r}")
    body = [line.rstrip(",") for line in lines[1:closing]]
    auto = next((m.group(1) for line in body if " AUTO_INCREMENT" in line and (m := _COLUMN_LINE.match(line))), None)
    primary = next((m.group(1) for line in body if (m := _PRIMARY_FIRST.match(line))), None)
    kept: list[str] = []
    names: list[str] = []
    clauses: list[str] = []
    for line in body:
        key = _DEFERRABLE_KEY.match(line)
        constraint = _CONSTRAINT.match(line)
        if key and not (auto is not None and auto != primary and key.group(2) == auto):
            names.append(key.group(1).replace("``", "`"))
            clauses.append("ADD " + line.strip())
        elif constraint and constraint.group(2) == "FOREIGN KEY":
            names.append(constraint.group(1).replace("``", "`"))
            clauses.append("ADD " + line.strip())
        else:
            kept.append(line)
    create = lines[0] + "\n" + ",\n".join(kept) + "\n" + "\n".join(lines[closing:])
    return create, DeferredIndexes(tuple(names), tuple(clauses))


def add_deferred_indexes(database: str, table: str, clauses: Sequence[str]) -> str:
    """One ALTER: every index is built by one sort of the loaded rows; foreign keys are not
    checked (the session has foreign_key_checks off, as while loading)."""
    return f"ALTER TABLE {qualified(database, table)} " + ", ".join(clauses)


def index_and_constraint_names() -> str:
    """What a staging table has already (a retried ALTER adds only what is missing)."""
    return (
        "SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
        " UNION SELECT CONSTRAINT_NAME FROM information_schema.TABLE_CONSTRAINTS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
    )


def find_orphan(copy: TableCopy, filter_: ParentFilter, *, database: str) -> str:
    """One row whose reference was not copied, if any (read-only: the probe before delete_orphans)."""
    child = quote_ident("c")
    not_null = " AND ".join(f"{child}.{quote_ident(c)} IS NOT NULL" for c in filter_.columns)
    return (
        f"SELECT 1 FROM {qualified(database, copy.target)} AS {child} WHERE {not_null}"
        f" AND NOT EXISTS (SELECT 1 FROM {qualified(database, filter_.parent)} AS `p`"
        f" WHERE {_matches(filter_, child=child, parent='`p`')}) LIMIT 1"
    )


def sessions_alive(count: int) -> str:
    """Which of `count` session ids (given as parameters) still exist."""
    marks = ", ".join(["%s"] * count)
    return f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({marks})"


def truncate_table(database: str, table: str) -> str:
    return f"TRUNCATE TABLE {qualified(database, table)}"


# The leak check of a cross-server copy: the source's values of a masked column are streamed
# into a temporary table on the target that has the column's own type and collation, and the
# same-server check runs there (equality by the column's collation, as on one server).
LEAK_TABLE = "_moenv_leak_values"


def create_leak_table(database: str, table: str, column: str) -> str:
    col = quote_ident(column)
    return (
        f"CREATE TEMPORARY TABLE {qualified(database, LEAK_TABLE)}"
        f" SELECT {col} FROM {qualified(database, table)} WHERE 1 = 0"
    )


def drop_leak_table(database: str) -> str:
    return f"DROP TEMPORARY TABLE IF EXISTS {qualified(database, LEAK_TABLE)}"


def _leak_conditions(
    column: LoadColumn, key: Sequence[str], after: Sequence[str] | None, up_to: Sequence[str] | None
) -> list[str]:
    a = quote_ident(SOURCE_ALIAS)
    conditions = [key_after(key, after)] if key and after else []
    if key and up_to:
        conditions.append(key_up_to(key, up_to))
    return [*conditions, f"{a}.{quote_ident(column.name)} IS NOT NULL"]


def _leak_value(column: LoadColumn, *, insert: bool) -> str:
    source = f"{quote_ident(SOURCE_ALIAS)}.{quote_ident(column.name)}"
    if insert:
        return f"CONCAT('(', {insert_value(column, source, plain=True)}, ')')"
    return stream_value(column, source, plain=True)


def leak_chunk(
    copy: TableCopy,
    column: LoadColumn,
    key: Sequence[str],
    *,
    source_database: str,
    after: Sequence[str] | None,
    up_to: Sequence[str] | None,
    insert: bool = False,
) -> str:
    """A key range of the source's non-NULL values of a masked column, as stream lines (or VALUES tuples)."""
    separator = "','" if insert else LINE_SEPARATOR
    return f"SELECT COUNT(*), GROUP_CONCAT({_leak_value(column, insert=insert)} SEPARATOR {separator})" + (
        _stream_from(copy, source_database, _leak_conditions(column, key, after, up_to))
    )


def leak_rows(
    copy: TableCopy,
    column: LoadColumn,
    key: Sequence[str] = (),
    *,
    source_database: str,
    after: Sequence[str] | None = None,
    up_to: Sequence[str] | None = None,
    insert: bool = False,
) -> str:
    """The same values one per row (tables without a primary key, chunks cut short)."""
    value = _leak_value(column, insert=insert)
    return f"SELECT {value}" + _stream_from(copy, source_database, _leak_conditions(column, key, after, up_to))


def insert_leak_values(column: LoadColumn, *, database: str) -> str:
    """The head of the multi-row INSERTs that fill the leak table where LOAD DATA LOCAL is refused."""
    return f"INSERT INTO {qualified(database, LEAK_TABLE)} ({quote_ident(column.name)}) VALUES "


def load_leak_values(column: LoadColumn, *, database: str, path: str) -> str:
    copy = TableCopy(source=LEAK_TABLE, target=LEAK_TABLE, columns=(column.name,), select=(quote_ident(column.name),))
    return load_data(copy, [column], database=database, path=path)


def count_leaks_loaded(copy: TableCopy, column: str, *, database: str) -> str:
    """Rows of the copy whose masked value equals one of the source values loaded next to it."""
    target = qualified(database, copy.target)
    col = quote_ident(column)
    return (
        f"SELECT COUNT(*) FROM {target} AS `t` WHERE `t`.{col} IS NOT NULL"
        f" AND `t`.{col} IN (SELECT `l`.{col} FROM {qualified(database, LEAK_TABLE)} AS `l`)"
    )


def checksum_table(database: str, table: str) -> str:
    return f"CHECKSUM TABLE {qualified(database, table)}"
