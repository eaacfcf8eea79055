"""apply_plan(plan, config, reporter): runs each action's steps under its environment lock.

One code path for every action: the steps the planner wrote are executed in order. A failure
stops that environment (its staging is dropped, the ledger says `failed`), never the others.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from moenv.engines import mysql
from moenv.errors import CloneError, ConflictError, MoenvError
from moenv.executor.ledger import (
    ensure_ledger,
    event_values,
    forget_record,
    write_progress,
    write_record,
)
from moenv.executor.locks import environment_lock
from moenv.executor.report import LockedReporter, Reporter, SilentReporter
from moenv.executor.stream import CrossServerCopy, TableResult
from moenv.live.catalog import read_databases, read_target_shapes
from moenv.live.connection import Connection, connect, transaction
from moenv.live.ledger import read_ledger
from moenv.manifest.fragments import SET_SALT_SQL
from moenv.models.config import Config
from moenv.models.desired import Desired, ParentFilter, TableCopy
from moenv.models.ledger import LedgerRecord, TableStat, holding_database, staging_database
from moenv.models.manifest import parse_duration
from moenv.models.plan import Action, Cleanup, Create, Delete, Plan, Rebuild, Refresh, Step, Update
from moenv.resolve.estimate import restricted_tables

Clock = Callable[[], datetime]

PROGRESS_SECONDS = 2.0
"""How often a running apply writes its progress (tables done, rows copied) to the ledger."""
MISSING_LIMIT = 200_000
"""Rows an incremental refresh across servers fetches by key list (rows that qualify again); more: --full."""
MISSING_ROUNDS = 8
"""Rounds of rows that qualify again through a self-reference (a manager's reports, theirs...)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ActionResult:
    environment: str
    op: str
    ok: bool
    error: str | None = None
    rows: int = 0
    seconds: float = 0.0


@dataclass
class ApplyResult:
    results: list[ActionResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failed(self) -> list[ActionResult]:
        return [r for r in self.results if not r.ok]


def check_fresh(plan: Plan, config: Config) -> None:
    """A saved plan is applied only while every target ledger is at the revision it was made against."""
    for server_name, revision in plan.ledger_revisions.items():
        with connect(config.server(server_name), read_only=True) as conn:
            now = read_ledger(conn, plan.ledger_database).revision
        if now != revision:
            raise ConflictError(
                f"stale plan: the ledger on server {server_name} is at revision {now}, the plan was made at {revision}",
                hint="run `moenv plan` again and review the new plan",
            )


def apply_plan(
    plan: Plan,
    config: Config,
    *,
    reporter: Reporter | None = None,
    clock: Clock = utc_now,
    check_revisions: bool = True,
    parallel: int = 1,
    jobs: int = 1,
) -> ApplyResult:
    """Apply every action; a failing environment is reported and the others still run.

    `parallel`: tables copied at once by a cross-server copy (streamed through this process).
    `jobs`: environments applied at once, each on its own connections and under its own lock
    (the planner makes actions independent: no target is another environment's source, and no
    two environments share a target). Results keep the plan's order.
    """
    out = reporter or SilentReporter()
    if check_revisions:
        check_fresh(plan, config)
    if jobs <= 1 or len(plan.actions) <= 1:
        return ApplyResult([_apply_one(action, plan, config, out, clock, parallel) for action in plan.actions])
    shared = LockedReporter(out)
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="moenv-apply") as pool:
        futures = [pool.submit(_apply_one, a, plan, config, shared, clock, parallel) for a in plan.actions]
        try:
            return ApplyResult([future.result() for future in futures])
        except BaseException:  # Ctrl-C: start nothing more; the running ones finish (or fail) cleanly
            for future in futures:
                future.cancel()
            raise


def _apply_one(action: Action, plan: Plan, config: Config, out: Reporter, clock: Clock, parallel: int) -> ActionResult:
    started = time.monotonic()
    out.action_started(action)
    try:
        rows = _apply_action(action, plan, config, out, clock, parallel)
    except MoenvError as exc:
        seconds = time.monotonic() - started
        message = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
        out.action_finished(action, error=message, seconds=seconds)
        return ActionResult(action.environment, action.op, False, message, 0, seconds)
    seconds = time.monotonic() - started
    out.action_finished(action, error=None, seconds=seconds)
    return ActionResult(action.environment, action.op, True, None, rows, seconds)


def check_ownership(action: Action, record: LedgerRecord | None, databases: frozenset[str]) -> None:
    """Under the lock, again: the plan may be old (a saved plan.json), and a database may have been
    created by hand since. Only what the ledger says moenv owns is ever replaced or dropped."""
    owned = {record.target_database} if record is not None and record.status != "expired" else set()
    if isinstance(action, Create | Rebuild | Refresh):
        target = action.target_database
        adopting = isinstance(action, Rebuild) and action.adopt
        if target in databases and target not in owned and not adopting:
            raise ConflictError(
                f"{action.environment}: database {target} exists and is not managed by moenv; it is never touched",
                hint="it appeared after the plan was made: review it, then plan again (with --adopt to replace it)",
            )
        old = action.old_database if isinstance(action, Rebuild) else None
        if old is not None and old not in owned:
            raise ConflictError(f"{action.environment}: the plan would drop {old}, which the ledger does not own")
    if isinstance(action, Delete) and (record is None or record.target_database != action.target_database):
        raise ConflictError(
            f"{action.environment}: the plan would drop {action.target_database}, which the ledger does not own"
        )


def _apply_action(action: Action, plan: Plan, config: Config, out: Reporter, clock: Clock, parallel: int = 1) -> int:
    server = config.server(action.target_server)
    ledger = plan.ledger_database
    with ExitStack() as stack:
        lock_conn = stack.enter_context(connect(server))
        conn = stack.enter_context(connect(server, counted=True))
        if conn.engine.kind == "matrixone":  # CLONE, snapshots, version gates: executor/matrixone.py
            from moenv.executor.matrixone import apply_matrixone_action

            return apply_matrixone_action(action, plan, config, out, clock, conn=conn, lock_conn=lock_conn)
        ensure_ledger(conn, ledger)
        stack.enter_context(environment_lock(lock_conn, action.environment, timeout=config.lock_timeout))
        record = read_ledger(conn, ledger).records.get(action.environment)
        stamp = record.updated_at.isoformat() if record is not None else None
        if stamp != action.ledger_stamp:
            raise ConflictError(
                f"{action.environment} was changed by another moenv run after this plan was made; nothing done",
                hint="run `moenv plan` again",
            )
        check_ownership(action, record, read_databases(conn))
        run = _Run(action, conn, ledger, config, out, clock, record, parallel=parallel)
        return run.execute()
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack never swallows


class _Run:
    """The execution of one action's steps on its target server."""

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
        parallel: int = 1,
    ) -> None:
        self.action = action
        self.conn = conn
        self.ledger = ledger
        self.config = config
        self.out = out
        self.clock = clock
        self.record = record
        self.staging = staging_database(action.environment)
        self.holding = holding_database(action.environment)
        self.stats: list[TableStat] = []
        self.rows = 0
        self.tables_done = 0
        self.started_at = clock()
        self.last_progress = time.monotonic()
        self.session_ready = False
        self.undo: Callable[[], object] | None = None
        self.stale_views: list[str] = []
        self.watermarks: dict[str, str] = {}
        self.salted = False
        self.parallel = parallel
        self.cross: CrossServerCopy | None = None  # the target is on another server than the source
        self.orphans_removed: int | None = None
        self.changes_only: set[str] = set()  # tables refreshed by their changes (incremental refresh)

    @property
    def desired(self) -> Desired:
        assert isinstance(self.action, Create | Rebuild | Refresh | Update)
        return self.action.desired

    def handlers(self) -> dict[str, Callable[[Step], int | None]]:
        """Step kind → the method that runs it (an engine's subclass may replace some)."""
        return {
            "ledger_begin": self.ledger_begin,
            "prepare_staging": self.prepare_staging,
            "create_table": self.create_table,
            "copy_rows": self.copy_rows,
            "refresh_incremental": self.refresh_incremental,
            "delete_orphans": self.delete_orphans,
            "check_leaks": self.check_leaks,
            "swap": self.swap,
            "create_view": self.create_view,
            "drop_leftovers": self.drop_leftovers,
            "drop_old_target": self.drop_old_target,
            "ledger_commit": self.ledger_commit,
            "ledger_update": self.ledger_update,
            "drop_target": self.drop_target,
            "ledger_forget": self.ledger_forget,
            "ledger_expire": self.ledger_expire,
            "ledger_interrupted": self.ledger_interrupted,
        }

    def before_step(self, step: Step) -> None:
        """Called before each step (the MatrixOne run checks its lock lease here)."""

    def release(self) -> None:
        """Called once the steps are done or failed, before a failure is recorded: workers stop
        before the staging they load is dropped."""
        if self.cross is not None:
            self.cross.close()

    def finish(self) -> None:
        """Called last, whatever happened (the MatrixOne run drops its snapshot here)."""
        self.release()

    def execute(self) -> int:
        handlers = self.handlers()
        began = False
        try:
            for step in self.action.steps:
                self.before_step(step)
                handler = handlers.get(step.kind)
                if handler is None:
                    raise CloneError(f"step {step.kind} is not supported on this server's engine")
                self.out.step_started(self.action, step)
                started = time.monotonic()
                rows = handler(step)
                began = began or step.kind == "ledger_begin"
                self.out.step_finished(self.action, step, rows=rows, seconds=time.monotonic() - started)
        except MoenvError as exc:
            self.release()
            if began:
                self._fail(exc)
            raise CloneError(exc.message, environment=self.action.environment, hint=exc.hint) from exc
        finally:
            self.finish()
        return self.rows

    # -- bookkeeping -------------------------------------------------------------------------

    def _record(self, status: str, **changes: object) -> LedgerRecord:
        now = self.clock()
        if isinstance(self.action, Delete | Cleanup):
            assert self.record is not None
            return self.record.model_copy(update={"status": status, "updated_at": now, **changes})
        want = self.desired
        spec = want.manifest
        ttl = spec.spec.ttl
        created = self.record.created_at if self.record is not None else now
        base = LedgerRecord(
            name=want.environment,
            target_server=want.target.server,
            target_database=want.target.database,
            source_server=want.source.server,
            source_database=want.source.database,
            status="building",
            spec_hash=self.record.spec_hash if self.record is not None else "",
            spec=self.record.spec if self.record is not None else {},
            source_fingerprint=self.record.source_fingerprint if self.record is not None else "",
            target_fingerprint=self.record.target_fingerprint if self.record is not None else "",
            staging_database=self.staging,
            created_at=created,
            updated_at=now,
            refreshed_at=self.record.refreshed_at if self.record is not None else None,
            expires_at=created + parse_duration(ttl) if ttl else None,
            protect=spec.spec.protect,
            tables_total=len(want.tables),
            tables_done=0,
            rows_copied=0,
            stats=self.record.stats if self.record is not None else (),
            watermarks=self.record.watermarks if self.record is not None else {},
        )
        return base.model_copy(update={"status": status, **changes})

    def _event(self, result: str, message: str | None = None, rows: int | None = None) -> tuple[object, ...]:
        duration = int((self.clock() - self.started_at) / timedelta(milliseconds=1))
        return event_values(
            self.clock(),
            self.action.environment,
            self.action.op,
            result,
            rows=rows,
            duration_ms=duration if result != "started" else None,
            message=message,
        )

    def ledger_begin(self, step: Step) -> None:
        record = self._record("deleting" if isinstance(self.action, Delete) else "building")
        write_record(self.conn, self.ledger, record, self._event("started", "; ".join(self.action.reasons)[:1000]))
        self.record = record

    def ledger_commit(self, step: Step) -> None:
        want = self.desired
        shape = read_target_shapes(self.conn, [want.target.database])[want.target.database]
        now = self.clock()
        record = self._record(
            "ready",
            spec_hash=want.spec_hash,
            spec=want.manifest.model_dump(mode="json", by_alias=True),
            source_fingerprint=want.source_fingerprint,
            target_fingerprint=shape.digest,
            staging_database=None,
            refreshed_at=now,
            tables_done=self.tables_done,
            rows_copied=self.rows,
            stats=tuple(self.stats),
            message=None,
            watermarks=dict(self.watermarks),
        )
        notes = "; ".join(self.cross.notes)[:2000] if self.cross is not None else ""
        write_record(self.conn, self.ledger, record, self._event("succeeded", notes or None, rows=self.rows))
        self.record = record

    def ledger_update(self, step: Step) -> None:
        assert self.record is not None
        want = self.desired
        ttl = want.manifest.spec.ttl
        record = self.record.model_copy(
            update={
                "spec": want.manifest.model_dump(mode="json", by_alias=True),
                "protect": want.manifest.spec.protect,
                "expires_at": self.record.created_at + parse_duration(ttl) if ttl else None,
                "updated_at": self.clock(),
            }
        )
        write_record(self.conn, self.ledger, record, self._event("succeeded", "; ".join(self.action.reasons)[:1000]))

    def ledger_expire(self, step: Step) -> None:
        assert self.record is not None
        record = self.record.model_copy(
            update={"status": "expired", "updated_at": self.clock(), "staging_database": None, "tables_done": 0}
        )
        write_record(self.conn, self.ledger, record, self._event("succeeded", "; ".join(self.action.reasons)[:1000]))

    def ledger_interrupted(self, step: Step) -> None:
        assert self.record is not None
        record = self.record.model_copy(
            update={
                "status": "failed",
                "updated_at": self.clock(),
                "staging_database": None,
                "message": "an apply was interrupted; moenv gc removed its leftovers",
            }
        )
        write_record(
            self.conn, self.ledger, record, self._event("succeeded", "removed leftovers of an interrupted apply")
        )

    def ledger_forget(self, step: Step) -> None:
        forget_record(self.conn, self.ledger, self.action.environment, self._event("succeeded"))

    def _fail(self, exc: MoenvError) -> None:
        """Leave nothing half-built visible and say so in the ledger; never raises over `exc`."""
        try:
            if self.undo is not None:  # failed after the swap: the old environment (or none) comes back
                self.undo()
            self.conn.execute(mysql.drop_database(self.staging))
            self.conn.execute(mysql.drop_database(self.holding))
            if self.record is not None:
                failed = self.record.model_copy(
                    update={"status": "failed", "updated_at": self.clock(), "message": exc.message[:2000]}
                )
                write_record(self.conn, self.ledger, failed, self._event("failed", exc.message[:2000]))
        except MoenvError:
            pass  # the server is gone: the ledger still says building, and the next apply cleans up

    # -- building ----------------------------------------------------------------------------

    def prepare_staging(self, step: Step) -> None:
        # The staging name is reserved for moenv and recorded in the ledger before this runs.
        self.conn.execute(mysql.drop_database(self.staging))
        self.conn.execute(mysql.drop_database(self.holding))
        charset = self._source_conn().query(mysql.database_charset(), (self.desired.source.database,))
        cs, coll = (str(charset[0][0]), str(charset[0][1])) if charset else (None, None)
        self.conn.execute(mysql.create_database(self.staging, cs, coll))

    def _renames(self) -> dict[str, str]:
        return {t.source: t.target for t in self.desired.tables}

    def create_table(self, step: Step) -> None:
        copy = self._copy(step)
        want = self.desired
        rows = self._source_conn().query(mysql.show_create_table(want.source.database, copy.source))
        try:
            ddl = mysql.adapt_create_table(
                str(rows[0][1]),
                copy,
                database=self.staging,
                renames=self._renames(),
                indexes=want.indexes,
                constraints=want.constraints,
                keep_auto_increment=copy.with_data,
            )
        except ValueError as exc:
            raise CloneError(str(exc), environment=want.environment, table=copy.source) from exc
        if self.cross is not None and copy.with_data:
            ddl = self.cross.deferring(copy, ddl)
        self._copy_session()  # foreign_key_checks off: FK cycles and any creation order work
        self.conn.execute(ddl, doing=f"creating table {copy.target}")

    def _copy_session(self) -> None:
        if not self.session_ready:
            for statement in mysql.COPY_SESSION:
                self.conn.execute(statement)
            self.session_ready = True

    def _salt(self) -> None:
        if self.salted:
            return
        if self.config.salt is None:
            raise CloneError(
                "a mask uses a moenv.* helper but no salt is configured",
                environment=self.action.environment,
                hint="set MOENV_SALT (or `salt:` in moenv.yaml); the salt never comes from a manifest",
            )
        self.conn.execute(SET_SALT_SQL, (self.config.salt,), doing="setting the pseudonym salt")
        self.salted = True

    # -- cross-server: tables streamed through this process (executor/stream.py) -------------

    def _cross(self) -> CrossServerCopy | None:
        if self.cross is None and isinstance(self.action, Create | Rebuild | Refresh):
            want = self.desired
            if want.source.server != want.target.server:
                self.cross = CrossServerCopy(
                    self.config.server(want.source.server),
                    self.config.server(want.target.server),
                    source_database=want.source.database,
                    staging=self.staging,
                    salt=self.config.salt,
                    parallel=self.parallel,
                    retries=self.config.retries,
                )
        return self.cross

    def _source_conn(self) -> Connection:
        """Where the source database is read outside the copy itself (DDL, character set)."""
        cross = self._cross()
        return cross.source if cross is not None else self.conn

    def _stream(self, cross: CrossServerCopy, copy: TableCopy) -> int | None:
        """One worker: copied now, its rows reported by this step; more: copied together later."""
        if copy.needs_salt:
            self._salt_configured()
        cross.submit(copy)
        if self.parallel > 1:
            return None
        before = self.rows
        cross.wait(self._stream_progress, self._streamed)
        return self.rows - before

    def _salt_configured(self) -> None:
        if self.config.salt is None:
            raise CloneError(
                "a mask uses a moenv.* helper but no salt is configured",
                environment=self.action.environment,
                hint="set MOENV_SALT (or `salt:` in moenv.yaml); the salt never comes from a manifest",
            )

    def _streamed(self, result: TableResult) -> None:
        self.rows += result.rows
        self.tables_done += 1
        self.stats.append(
            TableStat(table=result.copy.target, rows=result.rows, method="stream", seconds=result.seconds)
        )

    def _stream_progress(self, in_flight: int) -> None:
        self.out.rows_copied(self.action, self.rows + in_flight)
        if time.monotonic() - self.last_progress > PROGRESS_SECONDS:
            write_progress(
                self.conn, self.ledger, self.action.environment, self.tables_done, self.rows + in_flight, self.clock()
            )
            self.last_progress = time.monotonic()

    def _streams_done(self) -> int:
        """Every streamed table loaded; then every integrity filter enforced on the target (the
        source cannot see the parents copied there): the orphan fixpoint over all filters."""
        if self.cross is None:
            return 0
        if self.orphans_removed is None:
            self.cross.wait(self._stream_progress, self._streamed)
            tables = self.desired.tables
            every = [(t, f) for t in tables for f in t.filters]
            self.orphans_removed = self._orphan_fixpoint(every, self.staging, probe=True)
        return self.orphans_removed

    def copy_rows(self, step: Step) -> int | None:
        copy = self._copy(step)
        if (cross := self._cross()) is not None:
            self._remember_watermark(copy)  # read before the stream's snapshot: what changes later comes next time
            return self._stream(cross, copy)
        self._copy_session()
        if copy.needs_salt:
            self._salt()
        started = time.monotonic()
        self._remember_watermark(copy)
        statement = mysql.insert_select(
            self._filtered_at_insert(copy), source_database=self.desired.source.database, into_database=self.staging
        )
        if copy.unique_checks:  # masked values may collide where the source's could not
            self.conn.execute("SET SESSION unique_checks = 1")
        try:
            with transaction(self.conn):
                rows = self.conn.execute(statement, doing=f"copying {copy.source}")
        finally:
            if copy.unique_checks:
                self.conn.execute("SET SESSION unique_checks = 0")
        return self._copied(copy, rows, started)

    def _copied(self, copy: TableCopy, rows: int, started: float) -> int:
        """Count one copied table, and write progress to the ledger every few seconds (`moenv status`)."""
        self.rows += rows
        self.tables_done += 1
        self.stats.append(
            TableStat(table=copy.target, rows=rows, method=copy.method, seconds=time.monotonic() - started)
        )
        if time.monotonic() - self.last_progress > PROGRESS_SECONDS:
            write_progress(self.conn, self.ledger, self.action.environment, self.tables_done, self.rows, self.clock())
            self.last_progress = time.monotonic()
        return rows

    def _remember_watermark(self, copy: TableCopy) -> None:
        """Read before the copy: rows changed while it runs are copied again by the next refresh (upserts)."""
        if copy.watermark is None:
            return
        mark = self._source_conn().scalar(mysql.max_watermark(copy, source_database=self.desired.source.database))
        if mark is not None:
            self.watermarks[copy.source] = str(mark)
        else:
            self.watermarks.pop(copy.source, None)

    def _filtered_at_insert(self, copy: TableCopy) -> TableCopy:
        """Integrity filters run inside the INSERT … SELECT only against restricted parents (a where
        of theirs, or of an ancestor): there they keep most rows out. Against a parent copied whole
        they would cost an EXISTS per row for the few orphans concurrent writes can leave (measured:
        2x the source's CPU on 1 M rows); those are found after the copy by one anti-join instead."""
        applied = tuple(f for f in copy.filters if not f.deferred and f.parent in self.restricted)
        return copy.model_copy(update={"filters": applied})

    @functools.cached_property
    def restricted(self) -> set[str]:
        return restricted_tables(self.desired)

    def delete_orphans(self, step: Step) -> int:
        """The filters not applied inside the copies (self-references, cycle edges, parents copied
        whole) are enforced now, until no row is removed; a read-only probe first, since most find none."""
        if self.cross is not None:
            return self._streams_done()
        tables = self.desired.tables
        later = [(t, f) for t in tables for f in t.filters if f.deferred or f.parent not in self.restricted]
        return self._orphan_fixpoint(later, self.staging, probe=True)

    def _orphan_fixpoint(
        self,
        pending: list[tuple[TableCopy, ParentFilter]],
        database: str,
        *,
        probe: bool = False,
        tables: Sequence[TableCopy] | None = None,
    ) -> int:
        """Delete orphans until none is left: rows removed from a parent make its children's rows
        orphans in turn. `tables`: those that may hold orphans (default: all copied ones).
        `probe`: look for one orphan (read-only) before deleting: where most checks find none,
        a DELETE scanning the whole child costs far more (1 M rows: 11 s against 0.9 s)."""
        tables = self.desired.tables if tables is None else tables
        removed = 0
        for _round in range(1000):
            touched: set[str] = set()
            for table, filter_ in pending:
                if probe and self.conn.scalar(mysql.find_orphan(table, filter_, database=database)) is None:
                    continue
                count = self.conn.execute(mysql.delete_orphans(table, filter_, database=database))
                if count:
                    touched.add(table.target)
                    removed += count
                    self._uncount(table.target, count)
            if not touched:
                break
            pending = [(t, f) for t in tables for f in t.filters if f.parent in touched]
        return removed

    def _uncount(self, table: str, rows: int) -> None:
        """Orphans removed from a table copied now: fewer rows copied. A table refreshed by its
        changes counts the rows that came in, not the older ones its parents' changes removed."""
        if table in self.changes_only:
            return
        self.rows -= rows
        self.stats = [
            s.model_copy(update={"rows": (s.rows or 0) - rows}) if s.table == table else s for s in self.stats
        ]

    def check_leaks(self, step: Step) -> int:
        self._streams_done()
        self._check_leaks(self._copy(step), self.staging)
        return 0

    def _check_leaks(self, copy: TableCopy, database: str) -> None:
        self._raise_leaks(copy, self._leak_counts(copy, database))

    def _leak_counts(self, copy: TableCopy, database: str) -> dict[str, int]:
        """Masked column → rows of database.<copy.target> whose value a source row of it holds."""
        leaks = {}
        for column in copy.masked:
            if column in copy.row_checked and self.cross is None:
                count = int(
                    self.conn.scalar(
                        mysql.count_row_leaks(
                            copy, column, source_database=self.desired.source.database, database=database
                        )
                    )
                    or 0
                )
            elif self.cross is not None:  # no anti-join across servers: source values loaded next to the copy
                count = self.cross.count_leaks(copy, column)
            else:
                count = int(
                    self.conn.scalar(
                        mysql.count_leaks(copy, column, source_database=self.desired.source.database, database=database)
                    )
                    or 0
                )
            if count:
                leaks[column] = count
        return leaks

    def _raise_leaks(self, copy: TableCopy, leaks: Mapping[str, int]) -> None:
        if leaks:
            found = ", ".join(f"{copy.target}.{c}: {n:,} rows" for c, n in leaks.items())
            raise CloneError(
                f"leak check failed: masked values equal to source values remain ({found})",
                environment=self.action.environment,
                table=copy.target,
                hint="make the mask change every value (e.g. moenv.email(email)); nothing was made visible",
            )

    def refresh_incremental(self, step: Step) -> int:
        """Changed rows replaced and vanished ones removed, in place, in one transaction: readers see
        the environment before or after the refresh, never between.

        What the refresh reads of the source is first copied into the staging database: the rows
        changed since the stored watermark, and the key (with the columns the integrity filters
        read) of every source row through `where`; tables without a watermark or key whole. On one
        server by INSERT … SELECT (at READ COMMITTED a consistent read: no lock on the source),
        across servers by a stream. The transaction then reads only staging and the target: a
        DELETE … WHERE [NOT] EXISTS (SELECT … FROM source) would hold shared locks on every source
        row it read until the COMMIT (measured on MariaDB 10.11: production writes time out).
        """
        want = self.desired
        target, scratch = want.target.database, self.staging
        assert self.record is not None
        self.changes_only = {t.target for t in want.tables}  # rows counted: those that came in
        cross = self._cross()
        since = dict(self.record.watermarks)
        self.watermarks = dict(since)
        self._copy_session()
        if any(t.needs_salt for t in want.tables):
            if cross is not None:
                self._salt_configured()
            else:
                self._salt()
        self.conn.execute(mysql.drop_database(scratch))
        self.conn.execute(mysql.create_database(scratch))
        try:
            parts: list[TableCopy] = []
            for index, copy in enumerate(want.tables):
                self._remember_watermark(copy)  # before the changes are read: later ones come next time
                if self._by_changes(copy, since):
                    delta, keys = mysql.scratch_table("d", index), mysql.scratch_table("k", index)
                    # every table DDL now: inside the transaction it would commit it
                    for name in (delta, *self._missing_tables(copy, index)):
                        like = mysql.create_like(scratch, name, like_database=target, like_table=copy.target)
                        self.conn.execute(like)
                    for statement in mysql.create_keys_table(copy, scratch, keys, like_database=target):
                        self.conn.execute(statement)
                    parts.append(mysql.changed_rows(copy, since[copy.source], into=delta))
                    parts.append(mysql.source_keys(copy, into=keys))
                else:
                    whole = mysql.scratch_table("w", index)
                    self.conn.execute(mysql.create_like(scratch, whole, like_database=target, like_table=copy.target))
                    parts.append(mysql.whole_rows(copy, into=whole))
            self._load(cross, parts)
            for index, copy in enumerate(want.tables):
                if self._by_changes(copy, since):
                    indexing = mysql.index_keys_table(copy, scratch, mysql.scratch_table("k", index))
                    if indexing is not None:
                        self.conn.execute(indexing)
            self._merge_loaded(cross, since)
        finally:
            with contextlib.suppress(MoenvError):  # a failure's own error matters more; gc drops it too
                self.conn.execute(mysql.drop_database(scratch))
        return self.rows

    def _load(self, cross: CrossServerCopy | None, parts: Sequence[TableCopy]) -> None:
        """Source rows into staging tables: streamed across servers, INSERT … SELECT on one server."""
        if cross is not None:
            cross.copy_now(parts, self._stream_progress)
            return
        for part in parts:
            self.conn.execute(
                mysql.insert_select(part, source_database=self.desired.source.database, into_database=self.staging),
                doing=f"reading {part.source} into staging",
            )

    def _by_changes(self, copy: TableCopy, since: Mapping[str, str]) -> bool:
        return copy.watermark is not None and bool(copy.key) and copy.source in since

    def _missing_tables(self, copy: TableCopy, index: int) -> list[str]:
        """Scratch tables for the rows that qualify again: one per round (a self-reference may
        bring rows whose own children qualify again in the next one)."""
        rounds = MISSING_ROUNDS if any(f.parent == copy.target for f in copy.filters) else 1
        return [mysql.scratch_table("m", index, part) for part in range(rounds)]

    def _merge_loaded(self, cross: CrossServerCopy | None, since: Mapping[str, str]) -> None:
        """The one transaction of an incremental refresh (what it reads of the source is in staging)."""
        want = self.desired
        self.conn.execute("SET SESSION unique_checks = 1")  # rows go into live tables: every check stays on
        try:
            with transaction(self.conn):
                touched: set[str] = set()
                newcomers: dict[str, list[str]] = {}  # target table → scratch tables of the rows copied in now
                for index, copy in enumerate(want.tables):
                    if self._merge_table(cross, copy, index, since, newcomers):
                        touched.add(copy.target)
                filters = [(t, f) for t in want.tables for f in t.filters if f.deferred or f.parent in touched]
                self._orphan_fixpoint(filters, want.target.database, probe=True)
                for copy in want.tables:  # the rows that came in; the others were checked when they did
                    if copy.leak_check and copy.masked and newcomers.get(copy.target):
                        self._check_loaded_leaks(copy, newcomers[copy.target])
        finally:
            self.conn.execute("SET SESSION unique_checks = 0")

    def _merge_table(
        self,
        cross: CrossServerCopy | None,
        copy: TableCopy,
        index: int,
        since: Mapping[str, str],
        newcomers: dict[str, list[str]],
    ) -> bool:
        """One table of the refresh's transaction: its staged rows in, the rows it lost out; counted.
        Returns whether rows were removed (their children may be orphans now)."""
        target, scratch = self.desired.target.database, self.staging
        started = time.monotonic()
        if self._by_changes(copy, since):
            delta, keys = mysql.scratch_table("d", index), mysql.scratch_table("k", index)
            gone = self.conn.execute(
                mysql.delete_matching(copy, database=target, keys_database=scratch, keys_table=delta),
                doing=f"removing the changed rows of {copy.target}",
            )
            gone += self.conn.execute(
                mysql.delete_unmatched(copy, database=target, keys_database=scratch, keys_table=keys),
                doing=f"removing the rows of {copy.target} that left the source",
            )
            changed = self.conn.execute(
                mysql.insert_loaded(copy, from_database=scratch, from_table=delta, into_database=target),
                doing=f"copying the changed rows of {copy.source}",
            )
            if changed:
                newcomers[copy.target] = [delta]
            changed += self._fetch_missing(cross, copy, index, keys, newcomers)
            method = "incremental (streamed)" if cross is not None else "incremental"
        else:
            whole = mysql.scratch_table("w", index)
            gone = self.conn.execute(mysql.delete_all(target, copy.target))
            changed = self.conn.execute(
                mysql.insert_loaded(copy, from_database=scratch, from_table=whole, into_database=target),
                doing=f"copying {copy.source}",
            )
            newcomers[copy.target] = [whole]
            method = "full (streamed)" if cross is not None else "full (no watermark)"
        self.rows += changed
        self.tables_done += 1
        self.stats.append(TableStat(table=copy.target, rows=changed, method=method, seconds=time.monotonic() - started))
        return bool(gone)

    def _fetch_missing(
        self, cross: CrossServerCopy | None, copy: TableCopy, index: int, keys: str, newcomers: dict[str, list[str]]
    ) -> int:
        """Source rows that qualify again (their own watermark did not move): children of parent rows
        copied in this refresh (`newcomers`), found by key through the keys table's reference
        index, streamed by key list, inserted; repeated while a self-reference brings more. A
        `where` with a subquery may let any row in again: then every key is compared."""
        target, scratch = self.desired.target.database, self.staging
        every_key = bool(copy.where and "SELECT" in copy.where.upper())
        fetched = 0
        for missing in self._missing_tables(copy, index):
            if every_key:
                statement = mysql.missing_keys(copy, database=target, keys_database=scratch, keys_table=keys)
                found = {tuple(row) for row in self.conn.query(statement)}
                every_key = False
            else:
                found = set()
                for filter_ in copy.filters:
                    for table in newcomers.get(filter_.parent, []):
                        statement = mysql.missing_keys(
                            copy, database=target, keys_database=scratch, keys_table=keys, via=(filter_, table)
                        )
                        found |= {tuple(row) for row in self.conn.query(statement)}
            if not found:
                break
            if len(found) > MISSING_LIMIT:
                raise CloneError(
                    f"{len(found):,} rows of {copy.target} qualify again (their parents did): more than an"
                    f" incremental refresh fetches by key ({MISSING_LIMIT:,})",
                    table=copy.target,
                    hint=f"refresh it fully: `moenv refresh {self.action.environment} --full`",
                )
            self._load(cross, [mysql.rows_with_keys(copy, sorted(found), into=missing)])
            inserted = self.conn.execute(
                mysql.insert_loaded(copy, from_database=scratch, from_table=missing, into_database=target),
                doing=f"copying the rows of {copy.source} that qualify again",
            )
            fetched += inserted
            newcomers.setdefault(copy.target, []).append(missing)
            if not inserted:
                break
        return fetched

    def _check_loaded_leaks(self, copy: TableCopy, tables: Sequence[str]) -> None:
        """The leak check of the rows that came in (in their staging tables); across servers one
        load of the source's values per masked column, counted against every staging table."""
        leaks: dict[str, int] = {}
        if self.cross is not None:
            leaks = {c: n for c in copy.masked if (n := self.cross.count_leaks(copy, c, tables=tables))}
        else:
            for table in tables:
                for column, count in self._leak_counts(copy.model_copy(update={"target": table}), self.staging).items():
                    leaks[column] = leaks.get(column, 0) + count
        self._raise_leaks(copy, leaks)

    def _copy(self, step: Step) -> TableCopy:
        for copy in self.desired.tables:
            if copy.target == step.table:
                return copy
        raise CloneError(f"the plan names table {step.table}, which its environment does not copy")

    def swap(self, step: Step) -> None:
        self._streams_done()
        want = self.desired
        target = want.target.database
        new_tables = [t.target for t in want.tables]
        for copy in want.tables:
            if not copy.with_data:
                self.stats.append(TableStat(table=copy.target, rows=0, method=copy.method))
                self.tables_done += 1
        # Every view is first created over the staging tables: one that cannot be recreated fails
        # the apply here, before anything is visible.
        for view in want.views:
            self.conn.execute(
                mysql.create_view(
                    view, source_database=want.source.database, target=self.staging, renames=self._renames()
                ),
                doing=f"checking view {view.name} over the copy",
            )
        existing = read_databases(self.conn)
        if target not in existing:
            charset = self.conn.query(mysql.database_charset(), (self.staging,))
            cs, coll = (str(charset[0][0]), str(charset[0][1])) if charset else (None, None)
            self.conn.execute(mysql.create_database(target, cs, coll))
            self.undo = lambda: self.conn.execute(mysql.drop_database(target))
            if new_tables:
                self.conn.execute(mysql.rename_into(new_tables, staging=self.staging, target=target))
            return
        present = self.conn.query(mysql.list_tables(), (target,))
        old_tables = sorted(str(name) for name, kind in present if kind != "VIEW")
        wanted_views = {v.name for v in want.views}
        self.stale_views = sorted(str(name) for name, kind in present if kind == "VIEW" and name not in wanted_views)
        self.conn.execute(mysql.create_database(self.holding))
        if old_tables or new_tables:
            self.conn.execute(
                mysql.swap_tables(new_tables, old_tables, staging=self.staging, target=target, holding=self.holding)
            )
            # Undone by the same swap the other way round: the old tables come back from holding.
            self.undo = lambda: self.conn.execute(
                mysql.swap_tables(old_tables, new_tables, staging=self.holding, target=target, holding=self.staging)
            )

    def create_view(self, step: Step) -> None:
        want = self.desired
        for view in want.views:
            if view.name == step.table:
                self.conn.execute(
                    mysql.create_view(
                        view, source_database=want.source.database, target=want.target.database, renames=self._renames()
                    ),
                    doing=f"creating view {view.name}",
                )
                return
        raise CloneError(f"the plan names view {step.table}, which its environment does not have")

    def drop_leftovers(self, step: Step) -> None:
        for view in self.stale_views:
            self.conn.execute(mysql.drop_view(self.desired.target.database, view))
        self.undo = None
        self.conn.execute(mysql.drop_database(self.staging))
        self.conn.execute(mysql.drop_database(self.holding))

    def drop_old_target(self, step: Step) -> None:
        assert isinstance(self.action, Rebuild) and self.action.old_database
        self.conn.execute(mysql.drop_database(self.action.old_database))

    def drop_target(self, step: Step) -> None:
        assert self.record is not None
        self.conn.execute(mysql.drop_database(self.record.target_database))
