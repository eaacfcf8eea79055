"""Applies one action on a MatrixOne target: snapshot, CLONE or INSERT … SELECT per table, foreign
key fix-ups, publication without a half-built state, ledger writes (executor/ledger.py); does I/O.

The apply takes one database snapshot of the source (or checks the manifest's), reads every table
at it and drops it at the end, also on failure. Tables that need rows copied are built in the
staging database; then the environment is published in one step:

- new target: `CREATE DATABASE target CLONE staging` (or `… CLONE source {snapshot}` when the
  whole database is copied unchanged): zero-copy and atomic; a failed clone leaves nothing;
- existing target, ≥ v4.1: tables cloned into the target as `_moenv_n_…`, swapped in by one
  chained RENAME TABLE inside the target database, old ones dropped;
- existing target, < v4.1 (and grants): old tables dropped and new ones cloned in one transaction
  (table DDL and CLONE roll back there, notes §1.8).

Never a RENAME across databases (≤ v4.2.0 renames inside the source instead, #26856); never
`IF NOT EXISTS … CLONE` (#27039, #27040); the source's existence is checked first (#27041).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from moenv.engines import matrixone as sql
from moenv.engines import mysql
from moenv.errors import CloneError, ConflictError, DatabaseError, MoenvError
from moenv.executor.apply import Clock, _Run
from moenv.executor.ledger import actor, ensure_ledger
from moenv.executor.report import Reporter
from moenv.live import matrixone as live
from moenv.live.connection import Connection, transaction
from moenv.live.ledger import read_ledger
from moenv.models.config import Config
from moenv.models.desired import TableCopy
from moenv.models.ledger import LedgerRecord, TableStat
from moenv.models.plan import Action, Create, Plan, Rebuild, Refresh, Step

_CLONED = {"clone_table", "clone_database"}


def apply_matrixone_action(
    action: Action,
    plan: Plan,
    config: Config,
    out: Reporter,
    clock: Clock,
    *,
    conn: Connection,
    lock_conn: Connection,
) -> int:
    """The MatrixOne counterpart of executor/apply.py's `_apply_action` (same checks, same ledger)."""
    caps = live.capabilities(conn)
    if not caps.supported:
        raise ConflictError(
            f"moenv needs MatrixOne ≥ {sql.release_text(sql.MINIMUM)} (CREATE … CLONE);"
            f" server {conn.server.name} runs {caps.describe()}",
            hint="upgrade the server, or copy to a MySQL/MariaDB target",
        )
    ledger = plan.ledger_database
    ensure_ledger(conn, ledger)
    with environment_lock(lock_conn, ledger, action.environment, caps, timeout=config.lock_timeout) as lost:
        record = read_ledger(conn, ledger).records.get(action.environment)
        stamp = record.updated_at.isoformat() if record is not None else None
        if stamp != action.ledger_stamp:
            raise ConflictError(
                f"{action.environment} was changed by another moenv run after this plan was made; nothing done",
                hint="run `moenv plan` again",
            )
        return MatrixOneRun(action, conn, ledger, config, out, clock, record, caps=caps, lock_lost=lost).execute()


# -- locks -----------------------------------------------------------------------------------------


@contextmanager
def environment_lock(
    conn: Connection, ledger: str, environment: str, caps: sql.Capabilities, *, timeout: float
) -> Iterator[Callable[[], bool]]:
    """Hold the environment's lock on `conn`; yields a check that says whether it was lost."""
    if caps.get_lock:
        with _server_lock(conn, environment, timeout=timeout):
            yield lambda: False
    else:
        with _lease(conn, ledger, environment, timeout=timeout) as lost:
            yield lost


@contextmanager
def _server_lock(conn: Connection, environment: str, *, timeout: float) -> Iterator[None]:
    """GET_LOCK (≥ v4.0): held by the session, released by the server when the session dies."""
    name = sql.lock_name(environment)
    if conn.scalar(sql.get_lock(), (name, max(0, round(timeout)))) != 1:
        holder = conn.scalar(sql.lock_holder(), (name,))
        who = f"connection {holder}" if holder is not None else "another session"
        raise ConflictError(
            f"environment {environment} is locked by {who}: another moenv run is applying it",
            hint="wait for it to finish, or raise --lock-timeout",
        )
    try:
        yield
    finally:
        with contextlib.suppress(DatabaseError):
            conn.query(sql.release_lock(), (name,))


class _Renewer(threading.Thread):
    """Renews a lease on its own connection while the apply works on another."""

    def __init__(self, conn: Connection, ledger: str, name: str, token: str) -> None:
        super().__init__(name=f"moenv-lease-{name}", daemon=True)
        self.conn = conn
        self.ledger = ledger
        self.lock = name
        self.token = token
        self.stopped = threading.Event()
        self.last_ok = time.monotonic()
        self.gone = False

    def run(self) -> None:
        while not self.stopped.wait(sql.RENEW_SECONDS):
            try:
                renewed = self.conn.execute(
                    sql.renew_lease(self.ledger), (sql.LEASE_SECONDS, self.lock, self.token), doing="renewing a lease"
                )
            except DatabaseError:
                continue  # transient; `lost` turns true when the lease may have run out meanwhile
            if renewed != 1:
                self.gone = True
                return
            self.last_ok = time.monotonic()

    def lost(self) -> bool:
        return self.gone or time.monotonic() - self.last_ok > sql.LEASE_SECONDS - sql.RENEW_SECONDS

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=sql.RENEW_SECONDS + 5)


@contextmanager
def _lease(conn: Connection, ledger: str, environment: str, *, timeout: float) -> Iterator[Callable[[], bool]]:
    """A lock row where GET_LOCK is missing (< v4.0); see engines.matrixone.create_lease_table.

    Crash behaviour: a dead apply stops renewing, its lease expires after LEASE_SECONDS, and the
    next apply takes it over (gc then sees the environment as not busy and cleans up). An apply
    that cannot renew in time stops at its next step instead of working on without the lock.
    """
    name = sql.lock_name(environment)
    token = uuid.uuid4().hex
    holder = actor()
    conn.execute(sql.create_lease_table(ledger))
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        if conn.execute(sql.take_lease(ledger), (name, token, holder, sql.LEASE_SECONDS)) == 1:
            break
        if conn.execute(sql.take_expired_lease(ledger), (token, holder, sql.LEASE_SECONDS, name)) == 1:
            break
        if time.monotonic() >= deadline:
            rows = conn.query(sql.lease_holder(ledger), (name,))
            who = f"{rows[0][0]} (since {rows[0][1]}, lease until {rows[0][2]} UTC)" if rows else "another session"
            raise ConflictError(
                f"environment {environment} is locked by {who}: another moenv run is applying it",
                hint="wait for it to finish, or raise --lock-timeout (a crashed run's lease expires by itself)",
            )
        time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
    renewer = _Renewer(conn, ledger, name, token)
    renewer.start()
    try:
        yield renewer.lost
    finally:
        renewer.stop()
        with contextlib.suppress(DatabaseError):
            conn.execute(sql.release_lease(ledger), (name, token))


# -- the run ---------------------------------------------------------------------------------------


class MatrixOneRun(_Run):
    """The steps of one action, the MatrixOne way; bookkeeping is inherited unchanged."""

    def __init__(
        self,
        action: Action,
        conn: Connection,
        ledger: str,
        config: Config,
        out: Reporter,
        clock: Clock,
        record: LedgerRecord | None,
        *,
        caps: sql.Capabilities,
        lock_lost: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(action, conn, ledger, config, out, clock, record)
        self.caps = caps
        self.lock_lost = lock_lost
        self.snapshot: str | None = None
        self.own_snapshot = False
        self.staged = False

    # -- the loop ------------------------------------------------------------------------------

    def handlers(self) -> dict[str, Callable[[Step], int | None]]:
        found = super().handlers()
        del found["refresh_incremental"]  # in-place upserts are MySQL/MariaDB's; here a refresh re-clones
        return found

    def before_step(self, step: Step) -> None:
        if self.lock_lost():
            raise ConflictError(
                f"the lock of {self.action.environment} could not be renewed: stopped before {step.kind}",
                hint="the next apply rebuilds it",
            )

    def finish(self) -> None:
        self._drop_own_snapshot()
        super().finish()

    @property
    def _building(self) -> bool:
        return isinstance(self.action, Create | Rebuild | Refresh)

    @property
    def direct(self) -> bool:
        """Tables are cloned straight from the source at publication (no staging): when the whole
        database is copied unchanged, or for grants (COPY GRANTS copies the source table's)."""
        want = self.desired
        tables = want.tables
        grants = want.manifest.spec.grants
        return bool(tables) and (grants or all(t.method == "clone_database" for t in tables))

    def _drop_own_snapshot(self) -> None:
        if self.own_snapshot and self.snapshot is not None:
            with contextlib.suppress(MoenvError):  # gc drops it when the server is gone now
                self.conn.execute(sql.drop_snapshot(self.snapshot))
            self.own_snapshot = False

    def _fail(self, exc: MoenvError) -> None:
        if self._building:
            with contextlib.suppress(MoenvError):
                self._drop_temporary_tables(self.desired.target.database)
        super()._fail(exc)

    def _copy_session(self) -> None:
        if not self.session_ready:
            for statement in sql.COPY_SESSION:
                self.conn.execute(statement)
            self.session_ready = True

    # -- preparing -----------------------------------------------------------------------------

    def prepare_staging(self, step: Step) -> None:
        want = self.desired
        source = want.source.database
        if want.manifest.spec.grants and not self.caps.copy_grants:
            raise ConflictError(
                f"grants: true needs MatrixOne ≥ {sql.release_text(sql.COPY_GRANTS)} (CLONE … COPY GRANTS);"
                f" server {self.conn.server.name} runs {self.caps.describe()}"
            )
        if any(t.method == "stream" for t in want.tables):
            raise CloneError(
                "streaming from MatrixOne to another server is not implemented yet", environment=want.environment
            )
        if not live.database_exists(self.conn, source):
            # ≤ v4.2.0, CREATE DATABASE … CLONE of a missing source creates an empty database (#27041).
            raise CloneError(
                f"the source database {source} does not exist on server {self.conn.server.name}",
                environment=want.environment,
            )
        self._take_snapshot()
        self.conn.execute(sql.drop_database(self.staging))
        self.conn.execute(sql.drop_database(self.holding))
        self._drop_temporary_tables(want.target.database)
        self._copy_session()
        if not self.direct:
            self.conn.execute(sql.create_database(self.staging))
            self.staged = True

    def _take_snapshot(self) -> None:
        want = self.desired
        if not any(t.with_data for t in want.tables):
            return  # structure only: nothing is read at a point in time
        given = want.manifest.spec.source.snapshot
        if given is not None:
            problem = sql.snapshot_problem(
                live.read_snapshot(self.conn, given),
                name=given,
                database=want.source.database,
                tables=[t.source for t in want.tables],
                whole_database=all(t.method == "clone_database" for t in want.tables),
            )
            if problem:
                raise CloneError(problem, environment=want.environment, hint="name a snapshot that covers the source")
            self.snapshot = given
            return
        name = sql.snapshot_name(self.ledger, want.environment)
        self.conn.execute(sql.drop_snapshot(name))  # left by a crashed apply of this environment
        try:
            self.conn.execute(sql.create_snapshot(name, want.source.database), doing="taking the source snapshot")
        except DatabaseError as exc:
            raise DatabaseError(
                exc.message,
                code=exc.code,
                hint="non-sys accounts may hold 50 snapshots per level (v4.0+): `moenv gc` drops moenv's leftovers",
            ) from exc
        self.snapshot, self.own_snapshot = name, True

    def _require_snapshot(self) -> str:
        if self.snapshot is None:
            raise CloneError("no snapshot was taken for this apply", environment=self.action.environment)
        return self.snapshot

    # -- building ------------------------------------------------------------------------------

    def create_table(self, step: Step) -> None:
        copy = self._copy(step)
        want = self.desired
        if self.direct:
            return  # cloned from the source at publication
        if copy.method in _CLONED:
            self.conn.execute(
                sql.clone_table(
                    self.staging,
                    copy.target,
                    source_database=want.source.database,
                    source_table=copy.source,
                    snapshot=self._require_snapshot(),
                ),
                doing=f"cloning {copy.source}",
            )
            return
        rows = self.conn.query(sql.show_create_table(want.source.database, copy.source))
        try:
            ddl = sql.adapt_create_table(
                str(rows[0][1]),
                copy,
                database=self.staging,
                renames=self._renames(),
                indexes=want.indexes,
                constraints=want.constraints,
            )
        except ValueError as exc:
            raise CloneError(str(exc), environment=want.environment, table=copy.source) from exc
        self.conn.execute(ddl, doing=f"creating table {copy.target}")

    def copy_rows(self, step: Step) -> int:
        copy = self._copy(step)
        if copy.method != "insert_select":
            return 0  # a clone: its rows are counted after publication
        if copy.needs_salt:
            self._salt()
        started = time.monotonic()
        statement = sql.insert_select(
            copy,
            source_database=self.desired.source.database,
            into_database=self.staging,
            snapshot=self._require_snapshot(),
        )
        rows = self.conn.execute(statement, doing=f"copying {copy.source}")
        return self._copied(copy, rows, started)

    def delete_orphans(self, step: Step) -> int:
        """Only tables filled by INSERT … SELECT can hold orphans: a clone is the source at the snapshot."""
        tables = [t for t in self.desired.tables if t.method == "insert_select"]
        pending = [(t, f) for t in tables for f in t.filters if f.deferred]
        return self._orphan_fixpoint(pending, self.staging, tables=tables)

    def check_leaks(self, step: Step) -> int:
        copy = self._copy(step)
        leaks = {}
        for column in copy.masked:
            statement = sql.count_leaks(
                copy,
                column,
                source_database=self.desired.source.database,
                database=self.staging,
                snapshot=self._require_snapshot(),
            )
            if count := int(self.conn.scalar(statement) or 0):
                leaks[column] = count
        self._raise_leaks(copy, leaks)
        return 0

    # -- publishing ----------------------------------------------------------------------------

    def _clone_into(self, database: str, name: str, copy: TableCopy) -> str:
        """The CLONE that puts one new table into the target under `name`."""
        want = self.desired
        if self.direct:
            return sql.clone_table(
                database,
                name,
                source_database=want.source.database,
                source_table=copy.source,
                snapshot=self._require_snapshot() if copy.with_data else None,
                copy_grants=want.manifest.spec.grants,
            )
        return sql.clone_table(database, name, source_database=self.staging, source_table=copy.target)

    def swap(self, step: Step) -> None:
        want = self.desired
        target = want.target.database
        exists = live.database_exists(self.conn, target)
        moved = isinstance(self.action, Rebuild) and self.action.old_database is not None
        if exists and (isinstance(self.action, Create) or moved):
            raise ConflictError(
                f"the target database {target} appeared after this plan was made: moenv does not own it",
                hint="review it, then run `moenv plan` again (--adopt takes it over)",
            )
        if not exists and not want.manifest.spec.grants:
            origin = want.source.database if self.direct else self.staging
            snapshot = self._require_snapshot() if self.direct else None
            self.conn.execute(sql.clone_database(target, origin, snapshot), doing=f"cloning {origin} into {target}")
        else:
            if not exists:
                self.conn.execute(sql.create_database(target))
            present = live.read_tables(self.conn, target)
            old_tables = [n for n, kind in present if kind == "table" and not _temporary(n)]
            if self.caps.chained_rename and exists:
                self._swap_by_rename(target, old_tables)
            else:
                self._swap_in_transaction(target, old_tables)
            wanted_views = {v.name for v in want.views}
            for view, kind in present:
                if kind == "view" and view not in wanted_views:
                    self.conn.execute(mysql.drop_view(target, view))
        for statement in sql.foreign_key_fixups(
            live.read_foreign_keys(self.conn, target),
            database=target,
            source_database=want.source.database,
            renames=self._renames(),
            dropped={name for t in want.tables for name in t.dropped_foreign_keys},
            constraints=want.constraints,
            copied={t.target for t in want.tables},
        ):
            self.conn.execute(statement, doing="re-pointing a foreign key into the copy")
        self._count_clones(target)

    def _swap_by_rename(self, target: str, old_tables: list[str]) -> None:
        """≥ v4.1: new tables cloned in under temporary names, one chained RENAME inside the target."""
        new_tables = [t.target for t in self.desired.tables]
        for copy in self.desired.tables:
            name = sql.temporary_table(sql.NEW_PREFIX, copy.target)
            self.conn.execute(self._clone_into(target, name, copy), doing=f"cloning {copy.target} into {target}")
        self.conn.execute(sql.swap_tables(target, new_tables, old_tables), doing=f"swapping the tables of {target}")
        for old in old_tables:
            self.conn.execute(sql.drop_table(target, sql.temporary_table(sql.OLD_PREFIX, old)))

    def _swap_in_transaction(self, target: str, old_tables: list[str]) -> None:
        """< v4.1 (and grants): old tables out, new ones cloned in, one transaction (§1.8)."""
        with transaction(self.conn):
            for old in old_tables:
                self.conn.execute(sql.drop_table(target, old))
            for copy in self.desired.tables:
                self.conn.execute(self._clone_into(target, copy.target, copy), doing=f"cloning {copy.target}")

    def _count_clones(self, target: str) -> None:
        """Rows of the cloned tables, from mo_table_rows of the target (one query)."""
        clones = {t.target: t for t in self.desired.tables if t.method != "insert_select"}
        if not clones:
            return
        counts = {
            str(name): int(rows or 0) for _db, name, rows, _size in self.conn.query(sql.catalog_sizes(1), (target,))
        }
        for name, copy in clones.items():
            rows = counts.get(name, 0) if copy.with_data else 0
            self.rows += rows
            self.tables_done += 1
            self.stats.append(TableStat(table=name, rows=rows, method=copy.method))

    def create_view(self, step: Step) -> None:
        want = self.desired
        for view in want.views:
            if view.name == step.table:
                try:
                    statement = sql.create_view(
                        view, source_database=want.source.database, target=want.target.database, renames=self._renames()
                    )
                except ValueError as exc:
                    raise CloneError(str(exc), environment=want.environment, table=view.name) from exc
                self.conn.execute(statement, doing=f"creating view {view.name}")
                return
        raise CloneError(f"the plan names view {step.table}, which its environment does not have")

    # -- cleaning up ---------------------------------------------------------------------------

    def _drop_temporary_tables(self, database: str) -> None:
        """`_moenv_n_…` / `_moenv_o_…` tables a crashed swap left in a target moenv owns."""
        for name, kind in live.read_tables(self.conn, database):
            if kind == "table" and _temporary(name):
                self.conn.execute(sql.drop_table(database, name))

    def drop_leftovers(self, step: Step) -> None:
        super().drop_leftovers(step)
        if self.record is not None and self.record.target_database:
            self._drop_temporary_tables(self.record.target_database)
        own = sql.snapshot_name(self.ledger, self.action.environment)
        names = {own}
        if step.table and step.table.startswith(sql.snapshot_prefix(self.ledger)):
            names.add(step.table)  # gc: a snapshot left by an environment the ledger forgot
        given = None if self.own_snapshot else self.snapshot
        for name in sorted(names - {given}):
            self.conn.execute(sql.drop_snapshot(name))
        if self.snapshot == own:
            self.own_snapshot = False


def _temporary(name: str) -> bool:
    return name.startswith((sql.NEW_PREFIX, sql.OLD_PREFIX))
