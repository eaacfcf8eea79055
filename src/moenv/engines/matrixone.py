"""MatrixOne statements moenv issues, as exact text, and what each server version can do; pure.

Facts come from reference/matrixone-notes.md (cited as §n). Released versions (≤ v4.2.0) have
CLONE bugs that are fixed only on main, so these statements defend against the released
behaviour: never `IF NOT EXISTS … CLONE`, existence checked in mo_catalog (filtered by account),
row counts from mo_table_rows, a named snapshot for every read, renames only inside one database.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import sqlglot
import sqlglot.errors
from sqlglot import exp

from moenv.engines import ledger as ledger_sql
from moenv.engines import mysql
from moenv.engines.base import qualified, quote_ident
from moenv.models.desired import TableCopy, ViewCopy

# -- versions and capabilities ---------------------------------------------------------------------

# `SELECT version()` says `8.0.30-MatrixOne-v3.0.0`, `…-v4.0.0-rc2`, or `8.0.30-MatrixOne-v` for a
# development build (§4.3).
_VERSION = re.compile(r"MatrixOne-v(?:(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z][0-9A-Za-z.]*))?)?", re.IGNORECASE)

Release = tuple[int, int, int]

CLONE: Release = (3, 0, 0)
"""CREATE DATABASE/TABLE … CLONE … {snapshot} (§1.2; absent from the v2.2.2 grammar)."""
SNAPSHOT_FOR_DATABASE: Release = (2, 1, 0)
"""CREATE SNAPSHOT … FOR DATABASE / FOR TABLE (§2.1; v1.2 and v2.0 had CLUSTER and ACCOUNT only)."""
GET_LOCK: Release = (4, 0, 0)
"""GET_LOCK / RELEASE_LOCK / IS_USED_LOCK: v4.0.0-rc1 and later, absent in v3.0.18 (§4.4)."""
SNAPSHOT_KIND: Release = (4, 0, 0)
"""mo_snapshots.kind (hidden `branch` snapshots share the table): since v4.0.0-rc1 (§2.1)."""
CHAINED_RENAME: Release = (4, 1, 0)
"""`RENAME TABLE a TO tmp, b TO a, tmp TO b` swaps within one database (§4.4, PR #24470)."""
COPY_GRANTS: Release = (4, 1, 2)
"""CREATE TABLE … CLONE … COPY GRANTS: in v4.1.4's grammar, not in v4.1.0's (§1.2)."""
MINIMUM: Release = CLONE
"""Every moenv apply on MatrixOne publishes with CLONE, so older servers are refused."""


@dataclass(frozen=True)
class MatrixOneVersion:
    """A MatrixOne version as `SELECT version()` reports it."""

    release: Release
    prerelease: str = ""
    dev_build: bool = False

    def __str__(self) -> str:
        if self.dev_build:
            return "a development build"
        text = ".".join(str(part) for part in self.release)
        return f"{text}-{self.prerelease}" if self.prerelease else text


def parse_version(text: str) -> MatrixOneVersion | None:
    """The MatrixOne version in a `SELECT version()` text; None when the server is not MatrixOne."""
    match = _VERSION.search(text)
    if match is None:
        return None
    if match[1] is None:
        return MatrixOneVersion((0, 0, 0), dev_build=True)
    return MatrixOneVersion((int(match[1]), int(match[2]), int(match[3])), match[4] or "")


@dataclass(frozen=True)
class Capabilities:
    """What one MatrixOne version can do, for moenv's purposes.

    A release candidate counts as its release (GET_LOCK and the snapshot `kind` column are in
    v4.0.0-rc1). A development build reports no number; it is built from main, which has every
    feature of the newest release, so it gets all of them.
    """

    version: Release
    dev_build: bool = False
    prerelease: str = ""

    @classmethod
    def from_version(cls, version: Release, *, dev_build: bool = False, prerelease: str = "") -> Capabilities:
        return cls(version, dev_build, prerelease)

    @classmethod
    def from_text(cls, text: str) -> Capabilities:
        """From `SELECT version()`; ValueError when the text is not MatrixOne's."""
        parsed = parse_version(text)
        if parsed is None:
            raise ValueError(f"not a MatrixOne version: {text!r}")
        return cls(parsed.release, parsed.dev_build, parsed.prerelease)

    def since(self, release: Release) -> bool:
        return self.dev_build or self.version >= release

    @property
    def clone(self) -> bool:
        return self.since(CLONE)

    @property
    def snapshot_for_database(self) -> bool:
        return self.since(SNAPSHOT_FOR_DATABASE)

    @property
    def get_lock(self) -> bool:
        return self.since(GET_LOCK)

    @property
    def snapshot_kind(self) -> bool:
        return self.since(SNAPSHOT_KIND)

    @property
    def chained_rename(self) -> bool:
        return self.since(CHAINED_RENAME)

    @property
    def copy_grants(self) -> bool:
        return self.since(COPY_GRANTS)

    @property
    def supported(self) -> bool:
        return self.since(MINIMUM)

    def describe(self) -> str:
        return str(MatrixOneVersion(self.version, self.prerelease, self.dev_build))

    def swap_strategy(self) -> str:
        """How a rebuild or refresh replaces the tables of an existing target (no DATABASE RENAME exists)."""
        return "rename" if self.chained_rename else "transaction"


def is_matrixone(version_text: str | None) -> bool:
    return version_text is not None and parse_version(version_text) is not None


def release_text(release: Release) -> str:
    return ".".join(str(part) for part in release)


# -- names -----------------------------------------------------------------------------------------

SNAPSHOT_PREFIX = "moenv_"
NEW_PREFIX = "_moenv_n_"
"""Tables cloned into the target under this prefix, swapped in by one chained RENAME TABLE."""
OLD_PREFIX = "_moenv_o_"
"""Tables swapped out of the target under this prefix, dropped right after."""
_BAD_SNAPSHOT_CHAR = re.compile(r"[\s'\"`{}\\;]")


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def snapshot_prefix(ledger: str) -> str:
    """`moenv_<8 hex of the ledger>_`: gc finds the snapshots of its own ledger, never another's."""
    return f"{SNAPSHOT_PREFIX}{_digest(ledger, 8)}_"


def snapshot_name(ledger: str, environment: str) -> str:
    """The snapshot an apply of `environment` takes: deterministic, 39 characters, `[a-z0-9_]` only.

    Names are ≤ 64 characters without spaces or quotes (§2.1); one name per environment means a
    leftover from a crashed apply is dropped by the next apply before it takes its own.
    """
    return snapshot_prefix(ledger) + _digest(environment, 24)


def check_snapshot_name(name: str) -> str:
    """A snapshot name MatrixOne accepts: 1-64 characters, no spaces, quotes or backticks (§2.1)."""
    if not 0 < len(name) <= 64 or _BAD_SNAPSHOT_CHAR.search(name):
        raise ValueError(f"{name!r} is not a MatrixOne snapshot name (1-64 characters, no spaces or quotes)")
    return name


def snapshot_hint(name: str) -> str:
    """The time-travel hint; it belongs to the source name, so it precedes COPY GRANTS (§1.1)."""
    return f"{{snapshot = '{check_snapshot_name(name)}'}}"


def temporary_table(prefix: str, table: str) -> str:
    """A table's name while it waits in the target to be swapped in (or out): ≤ 25 characters."""
    return prefix + _digest(table, 16)


# -- snapshots -------------------------------------------------------------------------------------


def create_snapshot(name: str, database: str) -> str:
    """A database-level snapshot: it covers every table of `database` and pins its files (§1.6)."""
    return f"CREATE SNAPSHOT {check_snapshot_name(name)} FOR DATABASE {quote_ident(database)}"


def drop_snapshot(name: str) -> str:
    return f"DROP SNAPSHOT IF EXISTS {check_snapshot_name(name)}"


def _kind_filter(caps: Capabilities) -> str:
    # DATA BRANCH writes hidden kind='branch' rows into the same table from v4.0 on (§2.1).
    return " AND `kind` = 'user'" if caps.snapshot_kind else ""


def select_snapshot(caps: Capabilities) -> str:
    """One snapshot's scope, with the session's account for comparison (args: name)."""
    return (
        "SELECT `level`, `account_name`, `database_name`, `table_name`, current_account_name()"
        " FROM `mo_catalog`.`mo_snapshots` WHERE `sname` = %s" + _kind_filter(caps)
    )


def list_snapshots(caps: Capabilities) -> str:
    """Snapshot names starting with a prefix (args: the LIKE pattern; `_` matches any character,
    so callers check the prefix again)."""
    return "SELECT `sname` FROM `mo_catalog`.`mo_snapshots` WHERE `sname` LIKE %s" + _kind_filter(caps)


def snapshot_problem(
    row: Sequence[object] | None,
    *,
    name: str,
    database: str,
    tables: Collection[str],
    whole_database: bool,
) -> str | None:
    """Why the snapshot `name` (its `select_snapshot` row) cannot serve this copy; None when it can.

    A snapshot must cover what is cloned (§1.6): cluster and own-account snapshots cover
    everything; a database snapshot only its database; a table snapshot only its table, and
    never a database clone. An account snapshot of another account would resolve the source
    inside that account.
    """
    if row is None:
        return f"snapshot {name!r} does not exist"
    level, account, snap_database, snap_table, current = (None if v is None else str(v) for v in row[:5])
    level = (level or "").lower()
    if level == "cluster":
        return None
    if level == "account":
        if not account or account == current:
            return None
        return f"snapshot {name!r} belongs to account {account}: the source would be read in that account"
    if level == "database":
        if snap_database == database:
            return None
        return f"snapshot {name!r} covers database {snap_database}, not the source {database}"
    if level == "table":
        if whole_database:
            return f"snapshot {name!r} covers one table: a table-level snapshot cannot clone a database"
        if snap_database == database and set(tables) == {snap_table}:
            return None
        return (
            f"snapshot {name!r} covers only the table {snap_database}.{snap_table};"
            f" the environment copies {len(tables)} table(s) of {database}"
        )
    return f"snapshot {name!r} has a level moenv does not know: {level!r}"


def stale_snapshots(
    names: Iterable[str], *, ledger: str, environments: Iterable[str], busy: Collection[str]
) -> list[tuple[str, str | None]]:
    """(snapshot, environment or None) for moenv's snapshots of `ledger` that no running apply holds.

    An apply writes its ledger record before it takes its snapshot, so a snapshot whose
    environment is in no record (None) was left by an environment deleted since.
    """
    prefix = snapshot_prefix(ledger)
    owners = {snapshot_name(ledger, env): env for env in environments}
    stale: list[tuple[str, str | None]] = []
    for name in sorted(set(names)):
        if not name.startswith(prefix) or len(name) != len(prefix) + 24:
            continue
        owner = owners.get(name)
        if owner is not None and owner in busy:
            continue
        stale.append((name, owner))
    return stale


# -- catalog reads (mo_catalog, filtered by account) --------------------------------------------------

# As `sys`, mo_catalog.mo_database/mo_tables show the rows of every account (§4.2): every read
# is filtered by the session's account, and hidden index tables are left out.
_ACCOUNT = "`account_id` = current_account_id()"
_NOT_INDEX_TABLE = "`relname` NOT LIKE '__mo_index_%%'"  # `%%`: these statements always get args


def _marks(count: int) -> str:
    if count < 1:
        raise ValueError("at least one database is needed")
    return ", ".join(["%s"] * count)


def database_exists() -> str:
    """1 when the database exists in this account (args: name). Checked before every CLONE:
    a clone of a missing source silently creates an empty database ≤ v4.2.0 (#27041)."""
    return f"SELECT COUNT(*) FROM `mo_catalog`.`mo_database` WHERE {_ACCOUNT} AND `datname` = %s"


def list_databases() -> str:
    return f"SELECT `datname` FROM `mo_catalog`.`mo_database` WHERE {_ACCOUNT}"


def catalog_tables(databases: int) -> str:
    """Base tables and views (relkind r, v) with their CREATE text (args: database names)."""
    return (
        "SELECT `reldatabase`, `relname`, `relkind`, `rel_createsql` FROM `mo_catalog`.`mo_tables`"
        f" WHERE {_ACCOUNT} AND `reldatabase` IN ({_marks(databases)}) AND `relkind` IN ('r', 'v')"
        f" AND {_NOT_INDEX_TABLE}"
    )


def catalog_sizes(databases: int) -> str:
    """Rows and bytes per base table: information_schema.TABLES says 0 for both (§4.1, §4.3)."""
    return (
        "SELECT `reldatabase`, `relname`, mo_table_rows(`reldatabase`, `relname`),"
        " mo_table_size(`reldatabase`, `relname`) FROM `mo_catalog`.`mo_tables`"
        f" WHERE {_ACCOUNT} AND `reldatabase` IN ({_marks(databases)}) AND `relkind` = 'r'"
        f" AND {_NOT_INDEX_TABLE}"
    )


def catalog_columns(databases: int) -> str:
    """Columns: mo_columns stores types encoded (atttyp); the COLUMNS view over it decodes them and
    filters by account (§4.1), so it is read instead."""
    return (
        "SELECT `TABLE_SCHEMA`, `TABLE_NAME`, `COLUMN_NAME`, `COLUMN_TYPE`, `IS_NULLABLE`, `COLUMN_DEFAULT`,"
        f" `EXTRA` FROM `information_schema`.`COLUMNS` WHERE `TABLE_SCHEMA` IN ({_marks(databases)})"
        " ORDER BY `TABLE_SCHEMA`, `TABLE_NAME`, `ORDINAL_POSITION`"
    )


def catalog_indexes(databases: int) -> str:
    """Index parts; DISTINCT because vector and fulltext indexes have a row per hidden table (§4.1)."""
    return (
        "SELECT DISTINCT `t`.`reldatabase`, `t`.`relname`, `i`.`name`, `i`.`type`, `i`.`column_name`,"
        " `i`.`ordinal_position` FROM `mo_catalog`.`mo_indexes` AS `i`"
        " JOIN `mo_catalog`.`mo_tables` AS `t` ON `t`.`rel_id` = `i`.`table_id`"
        f" WHERE `t`.{_ACCOUNT} AND `t`.`reldatabase` IN ({_marks(databases)})"
    )


def catalog_foreign_keys(databases: int) -> str:
    """Foreign keys from mo_foreign_keys: KEY_COLUMN_USAGE is an empty stub ≤ v4.2.0 (§4.1).

    mo_foreign_keys has no account column; the semi-join on this account's tables keeps
    another account's same-named tables out, as MatrixOne's own views do.
    """
    return (
        "SELECT `fk`.`db_name`, `fk`.`table_name`, `fk`.`constraint_name`, `fk`.`column_name`,"
        " `fk`.`refer_db_name`, `fk`.`refer_table_name`, `fk`.`refer_column_name`, `fk`.`on_delete`,"
        " `fk`.`on_update` FROM `mo_catalog`.`mo_foreign_keys` AS `fk`"
        f" WHERE `fk`.`db_name` IN ({_marks(databases)}) AND EXISTS (SELECT 1 FROM `mo_catalog`.`mo_tables` AS `t`"
        f" WHERE `t`.{_ACCOUNT} AND `t`.`reldatabase` = `fk`.`db_name` AND `t`.`relname` = `fk`.`table_name`)"
        " ORDER BY `fk`.`db_name`, `fk`.`table_name`, `fk`.`constraint_name`, `fk`.`column_id`"
    )


def list_tables() -> str:
    """Base tables and views of one database, hidden tables excluded (args: database)."""
    return (
        "SELECT `relname`, `relkind` FROM `mo_catalog`.`mo_tables`"
        f" WHERE {_ACCOUNT} AND `reldatabase` = %s AND `relkind` IN ('r', 'v') AND {_NOT_INDEX_TABLE}"
    )


def table_rows() -> str:
    """Row count of one table from the storage layer (args: database, table)."""
    return "SELECT mo_table_rows(%s, %s)"


def view_select(create_sql: str) -> str | None:
    """The SELECT of a view from its `CREATE VIEW` text (mo_tables.rel_createsql); None if unparsable."""
    try:
        tree = sqlglot.parse_one(create_sql, read="mysql")
    except sqlglot.errors.SqlglotError:
        tree = None
    if isinstance(tree, exp.Create) and isinstance(tree.expression, exp.Query):
        return tree.expression.sql(dialect="mysql")
    match = re.search(r"\bAS\s+((?:SELECT|WITH|\()[\s\S]*)$", create_sql, re.IGNORECASE)
    return match.group(1).strip().rstrip(";") if match else None


# -- copies ----------------------------------------------------------------------------------------

COPY_SESSION = ("SET foreign_key_checks = 0",)
"""Tables are created and filled in any order (FK cycles); MatrixOne honours the variable (§4.4)."""


def create_database(name: str) -> str:
    """Never IF NOT EXISTS: moenv checks existence itself (§1.5)."""
    return f"CREATE DATABASE {quote_ident(name)}"


def drop_database(name: str) -> str:
    return f"DROP DATABASE IF EXISTS {quote_ident(name)}"


def drop_table(database: str, table: str) -> str:
    return f"DROP TABLE IF EXISTS {qualified(database, table)}"


def clone_database(target: str, source: str, snapshot: str | None = None) -> str:
    """`CREATE DATABASE dst CLONE src {snapshot}`: zero-copy, atomic (a failed clone leaves nothing,
    §1.8), intra-database foreign keys re-pointed into the copy (§1.4). Never IF NOT EXISTS (§1.5)."""
    sql = f"CREATE DATABASE {quote_ident(target)} CLONE {quote_ident(source)}"
    return f"{sql} {snapshot_hint(snapshot)}" if snapshot else sql


def clone_table(
    database: str,
    table: str,
    *,
    source_database: str,
    source_table: str,
    snapshot: str | None = None,
    copy_grants: bool = False,
) -> str:
    """`CREATE TABLE db.dst CLONE db.src {snapshot} [COPY GRANTS]`: both names qualified (§1.1).

    The clone keeps its foreign keys pointing at the source's parents (§1.4); `foreign_key_fixups`
    re-points or drops them.
    """
    sql = f"CREATE TABLE {qualified(database, table)} CLONE {qualified(source_database, source_table)}"
    if snapshot:
        sql += f" {snapshot_hint(snapshot)}"
    return sql + " COPY GRANTS" if copy_grants else sql


def show_create_table(database: str, table: str) -> str:
    return mysql.show_create_table(database, table)


def adapt_create_table(
    ddl: str,
    copy: TableCopy,
    *,
    database: str,
    renames: Mapping[str, str],
    indexes: bool = True,
    constraints: bool = True,
) -> str:
    """SHOW CREATE TABLE → the DDL of a filtered, trimmed or masked table inside `database`.

    Built from SHOW CREATE TABLE, not `CREATE TABLE … LIKE`: LIKE rebuilds the source's DDL too
    (PR #27143) but keeps every column and the foreign keys pointing at the source's parents,
    which two ALTERs per table would then have to undo. MatrixOne prints the same shape as MySQL
    (`CREATE TABLE \\`t\\` (`, one item a line, `)` last; clone_reference.result), so the MySQL
    rewrite applies: columns left out, foreign keys re-pointed into `database`.
    """
    return mysql.adapt_create_table(
        ddl,
        copy,
        database=database,
        renames=renames,
        indexes=indexes,
        constraints=constraints,
        keep_auto_increment=copy.with_data,
    )


def insert_select(copy: TableCopy, *, source_database: str, into_database: str, snapshot: str) -> str:
    """One table filled inside the server at the snapshot: masks in the SELECT, filters in the WHERE.

    Reads at a snapshot take no locks, so the source is never blocked.
    """
    columns = ", ".join(quote_ident(c) for c in copy.columns)
    alias = quote_ident(mysql.SOURCE_ALIAS)
    sql = (
        f"INSERT INTO {qualified(into_database, copy.target)} ({columns})"
        f" SELECT {', '.join(copy.select)} FROM {qualified(source_database, copy.source)}"
        f" {snapshot_hint(snapshot)} AS {alias}"
    )
    conditions = [copy.where] if copy.where else []
    conditions += [
        mysql.integrity_condition(f, database=into_database, alias=alias) for f in copy.filters if not f.deferred
    ]
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    return sql


def count_leaks(copy: TableCopy, column: str, *, source_database: str, database: str, snapshot: str) -> str:
    """Rows whose masked value equals a value of the same source column at the snapshot."""
    col = quote_ident(column)
    return (
        f"SELECT COUNT(*) FROM {qualified(database, copy.target)} AS `t` WHERE `t`.{col} IS NOT NULL"
        f" AND `t`.{col} IN (SELECT `s`.{col} FROM {qualified(source_database, copy.source)}"
        f" {snapshot_hint(snapshot)} AS `s` WHERE `s`.{col} IS NOT NULL)"
    )


# -- foreign keys ----------------------------------------------------------------------------------

_ACTIONS = {"RESTRICT", "CASCADE", "SET NULL", "NO ACTION", "SET DEFAULT"}


@dataclass(frozen=True)
class ForeignKeyRow:
    """A foreign key of a copied table as mo_foreign_keys describes it."""

    table: str
    name: str
    columns: tuple[str, ...]
    ref_database: str
    ref_table: str
    ref_columns: tuple[str, ...]
    on_delete: str = ""
    on_update: str = ""


def drop_foreign_key(database: str, table: str, name: str) -> str:
    return f"ALTER TABLE {qualified(database, table)} DROP FOREIGN KEY {quote_ident(name)}"


def add_foreign_key(database: str, fk: ForeignKeyRow, *, parent: str) -> str:
    """The foreign key again, pointing at `database`.`parent` (BVT clone_fk_after_alter uses this form)."""
    columns = ", ".join(quote_ident(c) for c in fk.columns)
    refs = ", ".join(quote_ident(c) for c in fk.ref_columns)
    sql = (
        f"ALTER TABLE {qualified(database, fk.table)} ADD CONSTRAINT {quote_ident(fk.name)}"
        f" FOREIGN KEY ({columns}) REFERENCES {qualified(database, parent)} ({refs})"
    )
    for clause, action in (("ON DELETE", fk.on_delete), ("ON UPDATE", fk.on_update)):
        if action.upper() in _ACTIONS:
            sql += f" {clause} {action.upper()}"
    return sql


def foreign_key_fixups(
    fks: Iterable[ForeignKeyRow],
    *,
    database: str,
    source_database: str,
    renames: Mapping[str, str],
    dropped: Collection[str],
    constraints: bool,
    copied: Collection[str],
) -> list[str]:
    """ALTERs that leave every foreign key of `database` pointing inside it, or gone.

    A table clone keeps its foreign keys pointing at the parents it was cloned from (the source,
    or a staging database; §1.4): each such key is dropped and added again over the copied parent
    (`renames`: source name → target name). Keys the manifest drops (`constraints: false`, parents
    not copied, keys over columns left out) are only dropped.
    """
    statements: list[str] = []
    for fk in sorted(fks, key=lambda f: (f.table, f.name)):
        parent = renames.get(fk.ref_table, fk.ref_table) if fk.ref_database == source_database else fk.ref_table
        if not constraints or fk.name in dropped or parent not in copied:
            statements.append(drop_foreign_key(database, fk.table, fk.name))
        elif fk.ref_database != database:
            statements.append(drop_foreign_key(database, fk.table, fk.name))
            statements.append(add_foreign_key(database, fk, parent=parent))
    return statements


# -- publishing: make the new tables visible at once ---------------------------------------------


def swap_tables(database: str, new_tables: Sequence[str], old_tables: Sequence[str]) -> str:
    """One chained RENAME TABLE inside `database` (≥ v4.1): old tables out to `_moenv_o_…`, new ones
    in from `_moenv_n_…`. Never across databases: ≤ v4.2.0 silently renames inside the source
    database instead (#26856), and there is no RENAME DATABASE (§4.4)."""
    pairs = [f"{qualified(database, t)} TO {qualified(database, temporary_table(OLD_PREFIX, t))}" for t in old_tables]
    pairs += [f"{qualified(database, temporary_table(NEW_PREFIX, t))} TO {qualified(database, t)}" for t in new_tables]
    if not pairs:
        raise ValueError("nothing to swap")
    return "RENAME TABLE " + ", ".join(pairs)



def create_view(view: ViewCopy, *, source_database: str, target: str, renames: Mapping[str, str]) -> str:
    """A view over the copy: every table it reads is qualified with the target (renames applied).

    MatrixOne keeps a view's text as written, so its tables may be unqualified (read from the
    view's database) or qualified; both are pointed at the copy. v3.0 database clones keep views
    reading the source, and ≤ v4.1 ones could drop or corrupt them (#26070): moenv always
    recreates them itself.
    """
    try:
        tree = sqlglot.parse_one(view.definition, read="mysql")
    except sqlglot.errors.SqlglotError as exc:  # the resolver skips views it cannot parse
        raise ValueError(f"the definition of view {view.name} cannot be parsed: {exc}") from exc
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        if not table.name or (not table.db and table.name in ctes):
            continue
        if table.db and table.db != source_database:
            continue
        table.set("db", exp.to_identifier(target))
        table.set("this", exp.to_identifier(renames.get(table.name, table.name)))
    return f"CREATE OR REPLACE VIEW {qualified(target, view.name)} AS {tree.sql(dialect='mysql', identify=True)}"


# -- locks -----------------------------------------------------------------------------------------

LEASE_TABLE = "leases"
LEASE_SECONDS = 120
"""A lease not renewed for this long belongs to a dead apply and may be taken over."""
RENEW_SECONDS = 20


def lock_name(environment: str) -> str:
    """The same name as on MySQL: one environment, one lock, whatever the mechanism."""
    return mysql.lock_name(environment)


def get_lock() -> str:
    """≥ v4.0 (rc counts): GET_LOCK, held by the session; a lost session releases it."""
    return mysql.get_lock()


def release_lock() -> str:
    return mysql.release_lock()


def lock_holder() -> str:
    """The connection holding a lock (args: name); MatrixOne's PROCESSLIST has no `ID` column."""
    return "SELECT IS_USED_LOCK(%s)"


def create_lease_table(ledger: str) -> str:
    """Locks where GET_LOCK is missing (< v4.0): a row per held environment, with an expiry.

    A lease, not a `SELECT … FOR UPDATE` held open: its holder and expiry are readable by
    `status`/`gc` without blocking, a wait can be bounded by --lock-timeout, and no transaction
    stays open for the length of an apply. A crashed apply stops renewing; its lease expires
    after LEASE_SECONDS and the next apply (or gc) takes over.
    """
    return (
        f"CREATE TABLE IF NOT EXISTS {quote_ident(ledger)}.`{LEASE_TABLE}` (\n"
        "  `name` VARCHAR(64) NOT NULL PRIMARY KEY,\n"
        "  `token` VARCHAR(64) NOT NULL,\n"
        "  `holder` VARCHAR(255) NOT NULL,\n"
        "  `acquired_at` DATETIME(6) NOT NULL,\n"
        "  `expires_at` DATETIME(6) NOT NULL\n"
        ")"
    )


def take_lease(ledger: str) -> str:
    """1 row when the lease was free (args: name, token, holder, seconds); the server's clock decides."""
    return (
        f"INSERT IGNORE INTO {quote_ident(ledger)}.`{LEASE_TABLE}` (`name`, `token`, `holder`, `acquired_at`,"
        " `expires_at`) VALUES (%s, %s, %s, UTC_TIMESTAMP(), DATE_ADD(UTC_TIMESTAMP(), INTERVAL %s SECOND))"
    )


def take_expired_lease(ledger: str) -> str:
    """1 row when the lease had expired and is ours now (args: token, holder, seconds, name)."""
    return (
        f"UPDATE {quote_ident(ledger)}.`{LEASE_TABLE}` SET `token` = %s, `holder` = %s,"
        " `acquired_at` = UTC_TIMESTAMP(), `expires_at` = DATE_ADD(UTC_TIMESTAMP(), INTERVAL %s SECOND)"
        " WHERE `name` = %s AND `expires_at` < UTC_TIMESTAMP()"
    )


def renew_lease(ledger: str) -> str:
    """Args: seconds, name, token; 0 rows means the lease was lost."""
    return (
        f"UPDATE {quote_ident(ledger)}.`{LEASE_TABLE}` SET `expires_at` = DATE_ADD(UTC_TIMESTAMP(),"
        " INTERVAL %s SECOND) WHERE `name` = %s AND `token` = %s"
    )


def release_lease(ledger: str) -> str:
    """Args: name, token."""
    return f"DELETE FROM {quote_ident(ledger)}.`{LEASE_TABLE}` WHERE `name` = %s AND `token` = %s"


def lease_holder(ledger: str) -> str:
    """Args: name."""
    return f"SELECT `holder`, `acquired_at`, `expires_at` FROM {quote_ident(ledger)}.`{LEASE_TABLE}` WHERE `name` = %s"


def held_leases(ledger: str, count: int) -> str:
    """Names among `count` lock names whose lease has not expired (args: the names)."""
    return (
        f"SELECT `name` FROM {quote_ident(ledger)}.`{LEASE_TABLE}`"
        f" WHERE `name` IN ({_marks(count)}) AND `expires_at` >= UTC_TIMESTAMP()"
    )


def used_locks(count: int) -> str:
    """≥ v4.0: which of `count` lock names are held (args: the names)."""
    return "SELECT " + ", ".join(["IS_USED_LOCK(%s)"] * count)


# -- the ledger on MatrixOne -----------------------------------------------------------------------


def insert_record(ledger: str) -> str:
    """A ledger record written as DELETE + INSERT in one transaction on MatrixOne.

    `INSERT … ON DUPLICATE KEY UPDATE` there may not assign a unique-key column (the BVT suite
    for it states the limit; a unique-key conflict without a primary-key conflict errors), and
    `environments.target_database` is UNIQUE and changes when a rebuild moves the target.
    INSERT IGNORE and ODKU on plain columns (meta.v) work as on MySQL and stay.
    """
    cols = ", ".join(quote_ident(c) for c in ledger_sql.RECORD_COLUMNS)
    marks = ", ".join(["%s"] * len(ledger_sql.RECORD_COLUMNS))
    return f"INSERT INTO {quote_ident(ledger)}.`environments` ({cols}) VALUES ({marks})"


def record_statements(ledger: str) -> tuple[str, str]:
    """(delete, insert) replacing one record (args: (name,), the record's values)."""
    return ledger_sql.delete_record(ledger), insert_record(ledger)
