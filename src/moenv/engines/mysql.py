"""MySQL and MariaDB statements moenv issues, as exact text; pure.

Tables are built from `SHOW CREATE TABLE` (not `CREATE TABLE … LIKE`, which drops foreign
keys), re-pointed into the clone, filled with `INSERT … SELECT` in one transaction each with
foreign_key_checks and unique_checks off, then moved in with one multi-table RENAME TABLE.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence

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
