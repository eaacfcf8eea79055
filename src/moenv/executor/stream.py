"""Cross-server copies: tables streamed from the source server into staging on another server,
with constant client memory, read at one point in time, retried on transient errors; I/O.

The source server formats the rows (engines/mysql.py `stream_chunk`: masks and `where` in its
SELECT, LOAD DATA escaping, one GROUP_CONCAT value per primary-key range) and the client only
moves bytes: a feeder thread writes the chunks into a named pipe that one `LOAD DATA LOCAL
INFILE` per table reads on the target (PyMySQL opens LOCAL files by name; a pipe lets one
statement, so one transaction, take a whole table while the source keeps formatting). Rows
decoded by PyMySQL were 2.3x slower than mysqldump (SPEC §5); see benchmarks/README.md for
this design's figures. A target that refuses LOAD DATA LOCAL gets multi-row INSERTs instead.

Tables are copied by `parallel` worker threads (the client does no per-row work: no GIL
contention). Every source read runs inside `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ
ONLY`; with several workers their snapshots start while a global lock is held for about a
millisecond (MariaDB BACKUP STAGE BLOCK_COMMIT, MySQL FLUSH TABLES WITH READ LOCK), which needs
the RELOAD privilege. Without it the workers share one snapshot session chunk by chunk: still
one point in time, the source side serialized (noted in the ledger's event). The source user
needs SELECT (and SHOW VIEW for views) otherwise. Integrity filters are enforced on the target
after loading (the parents they name are there); a transient error reloads that table, and a
lost source session is replaced by a newer snapshot, which the ledger's event says.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal

from moenv.engines import mysql
from moenv.errors import CloneError, DatabaseError, MoenvError
from moenv.live.connection import TRANSIENT, Connection, connect
from moenv.manifest.fragments import SET_SALT_SQL
from moenv.models.config import Server
from moenv.models.desired import TableCopy

# MariaDB answers a statement of a KILLed session with 1927 ("Connection was killed") before it
# closes it: as transient as a lost connection.
RETRIED = frozenset(TRANSIENT | {1927})
# The global lock refused (no RELOAD privilege, no BACKUP STAGE before MariaDB 10.4) or waited
# too long: the copy falls back to one shared snapshot session.
_NO_GLOBAL_LOCK = frozenset({1044, 1045, 1064, 1142, 1227, 1205})
# LOAD DATA LOCAL refused by the target (local_infile=OFF: MariaDB 10.11 says 4166, older ones
# 1148; MySQL 8, where it is off by default, 3948): the copy goes on with multi-row INSERTs.
LOAD_REFUSED = frozenset({1148, 3948, 4166})
CHUNK_BYTES = 2 << 20
"""Aim of one GROUP_CONCAT chunk; client memory is a few of these per table being copied."""
FIRST_CHUNK_ROWS = 1000
MAX_CHUNK_ROWS = 100_000
BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
LOCK_WAIT_SECONDS = 5
"""How long the global lock may wait for in-flight commits before the shared-snapshot fallback."""
_PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031  # Linux fcntl: a bigger pipe means fewer wake-ups per chunk

Transport = Literal["load", "insert"]
DEFAULT_TRANSPORT: Transport = "load"
"""LOAD DATA LOCAL of source-formatted lines; "insert" (multi-row INSERTs of source-formatted
tuples) is the measured alternative (benchmarks/cross_server.py --transports)."""
Progress = Callable[[int], None]
PROGRESS_POLL = 0.5
"""Seconds between two progress reports of the tables in flight (while `wait` waits)."""
"""Called about every half second while tables stream, with the rows sent by unfinished tables."""


@dataclass(frozen=True)
class TableResult:
    """One table, copied."""

    copy: TableCopy
    rows: int
    seconds: float
    attempts: int


class _StoppedError(MoenvError):
    """Another table of the environment failed: this one gave up (never reported by itself)."""


@dataclass
class _Task:
    copy: TableCopy
    index: int
    rows: int = 0
    """Rows sent by the current attempt (progress)."""
    done: threading.Event = field(default_factory=threading.Event)
    result: TableResult | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class _Shape:
    columns: tuple[mysql.LoadColumn, ...]
    key: tuple[str, ...]


class _Snapshot:
    """The source sessions of one cross-server copy, all inside one consistent snapshot."""

    def __init__(self, server: Server, *, salt: str | None, notes: list[str]) -> None:
        self.server = server
        self.salt = salt
        self.notes = notes
        self.sessions: list[Connection] = []
        self.locks: list[threading.Lock] = []
        self.generations: list[int] = []

    def session(self) -> Connection:
        """A source session set up for streaming (outside any snapshot until one is started)."""
        conn = connect(self.server, read_only=True)
        for statement in mysql.STREAM_SOURCE_SESSION:
            conn.execute(statement)
        if self.salt is not None:
            conn.execute(SET_SALT_SQL, (self.salt,), doing="setting the pseudonym salt")
        return conn

    def open(self, count: int) -> None:
        """`count` sessions whose snapshots start at the same moment (one, when the lock is refused)."""
        sessions = [self.session() for _ in range(max(count, 1))]
        try:
            if len(sessions) > 1 and not self._start_together(sessions):
                for extra in sessions[1:]:
                    extra.close()
                sessions = sessions[:1]
            if len(sessions) == 1:
                sessions[0].execute(mysql.START_SNAPSHOT, doing="starting the source snapshot")
        except BaseException:
            for conn in sessions:
                conn.close()
            raise
        self.sessions = sessions
        self.locks = [threading.Lock() for _ in sessions]
        self.generations = [0 for _ in sessions]

    def _start_together(self, sessions: list[Connection]) -> bool:
        engine = sessions[0].engine.kind
        with connect(self.server, read_only=True) as lock:
            try:
                lock.execute(f"SET SESSION lock_wait_timeout = {LOCK_WAIT_SECONDS}")
                for statement in mysql.global_read_lock(engine):
                    lock.execute(statement, doing="taking the global lock that synchronizes the source snapshots")
            except DatabaseError as exc:
                if exc.code not in _NO_GLOBAL_LOCK:
                    raise
                self.notes.append(
                    f"the source sessions share one snapshot ({exc.message}; with the RELOAD privilege"
                    " each worker reads the source in its own snapshot)"
                )
                return False
            try:
                for conn in sessions:
                    conn.execute(mysql.START_SNAPSHOT, doing="starting the source snapshot")
            finally:
                for statement in mysql.global_read_unlock(engine):
                    with contextlib.suppress(DatabaseError):  # closing the session releases it anyway
                        lock.execute(statement)
        return True

    def leaser(self, slot: int) -> Callable[[], AbstractContextManager[Connection]]:
        """Leases of worker `slot`'s session (the shared one when there is only one). A lease fails
        as a lost connection once the session was replaced: the keyset position, kept in its
        user variables, went with it, so the table is read again."""
        index = slot % len(self.sessions)
        generation = self.generations[index]

        @contextlib.contextmanager
        def lease() -> Iterator[Connection]:
            with self.locks[index]:
                if self.generations[index] != generation:
                    raise DatabaseError("the source session was replaced by one with a newer snapshot", code=2013)
                yield self.sessions[index]

        return lease

    def check(self, slot: int, table: str) -> None:
        """After a transient error: a lost session is replaced by one with a newer snapshot."""
        index = slot % len(self.sessions)
        with self.locks[index]:
            try:
                self.sessions[index].execute("DO 1")
                return
            except DatabaseError:
                self.sessions[index].close()
            conn = self.session()
            conn.execute(mysql.START_SNAPSHOT, doing="starting a new source snapshot")
            self.sessions[index] = conn
            self.generations[index] += 1
        self.notes.append(
            f"the source session reading {table} was lost: it and the tables read after it in that session"
            " come from a later snapshot (integrity filters still hold: they are enforced on the target)"
        )

    def close(self) -> None:
        for conn in self.sessions:
            conn.close()
        self.sessions = []


class _Feeder(threading.Thread):
    """Writes chunks into a named pipe that LOAD DATA LOCAL INFILE reads on the target."""

    def __init__(self, path: str, chunks: Generator[tuple[bytes, int]], task: _Task | None) -> None:
        super().__init__(name=f"moenv-feed-{os.path.basename(os.path.dirname(path))}", daemon=True)
        self.path = path
        self.chunks = chunks
        self.task = task
        self.rows = 0
        self.error: BaseException | None = None
        self.abandon = threading.Event()
        """Set once the LOAD statement returned: stop waiting for it to open the pipe."""

    def _open(self) -> int | None:
        # Non-blocking open: a blocking one would wait forever for a LOAD that failed before
        # asking for its file. The reader, once it asked, waits for this open in turn.
        while not self.abandon.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet
                time.sleep(0.002)
                continue
            os.set_blocking(fd, True)
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
            return fd
        return None

    def run(self) -> None:
        fd = self._open()
        if fd is None:
            return
        try:
            for data, rows in self.chunks:
                _write_all(fd, data)
                _write_all(fd, b"\n")
                self.rows += rows
                if self.task is not None:
                    self.task.rows = self.rows
        except BrokenPipeError:
            pass  # the load stopped reading: its own error says why
        except BaseException as exc:  # noqa: BLE001 - handed to the loading thread, which raises it
            self.error = exc
        finally:
            os.close(fd)
            self.chunks.close()

    def finish(self) -> None:
        self.abandon.set()
        self.join()


class _Watchdog(threading.Thread):
    """Aborts a load whose target session is gone from the process list (KILLed). MariaDB 10.11
    stops reading a KILLed LOAD DATA LOCAL but keeps its socket open for minutes (measured: about
    2 min with bulk inserts, unique_checks=0), so the client would block in a send until then."""

    def __init__(self, server: Server, *, every: float = 1.0) -> None:
        super().__init__(name="moenv-watchdog", daemon=True)
        self.server = server
        self.every = every
        self.loads: dict[int, Connection] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    @contextlib.contextmanager
    def watch(self, conn: Connection) -> Iterator[None]:
        with self.lock:
            self.loads[conn.thread_id] = conn
        try:
            yield
        finally:
            with self.lock:
                self.loads.pop(conn.thread_id, None)

    def run(self) -> None:
        monitor: Connection | None = None
        try:
            while not self.stop.wait(self.every):
                with self.lock:
                    loads = dict(self.loads)
                if not loads:
                    continue
                try:
                    monitor = monitor or connect(self.server)
                    alive = {int(row[0]) for row in monitor.query(mysql.sessions_alive(len(loads)), tuple(loads))}
                except DatabaseError:  # the target is unreachable: the loads find out by themselves
                    if monitor is not None:
                        monitor.close()
                    monitor = None
                    continue
                for thread_id, conn in loads.items():
                    if thread_id not in alive:
                        conn.abort()
        finally:
            if monitor is not None:
                monitor.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def load_through_pipe(
    target: Connection,
    statement: Callable[[str], str],
    chunks: Generator[tuple[bytes, int]],
    *,
    doing: str,
    task: _Task | None = None,
) -> tuple[int, int]:
    """Run `statement(path)` (a LOAD DATA LOCAL of `path`) while `chunks` are written to that pipe.

    Returns (rows loaded, rows sent); a failure of the feeding side is raised here.
    """
    with tempfile.TemporaryDirectory(prefix="moenv-stream-") as directory:
        path = os.path.join(directory, "rows")
        try:
            os.mkfifo(path, 0o600)
        except OSError as exc:
            raise CloneError(
                f"{doing}: cannot create a named pipe in {directory}: {exc}",
                hint="point TMPDIR at a local file system that supports named pipes (POSIX)",
            ) from exc
        feeder = _Feeder(path, chunks, task)
        feeder.start()
        try:
            loaded = target.load_local(statement(path), doing=doing)
        finally:
            feeder.finish()
        if isinstance(feeder.error, OSError):
            raise CloneError(f"{doing}: writing to the pipe failed: {feeder.error}") from feeder.error
        if feeder.error is not None:
            raise feeder.error
        return loaded, feeder.rows


class CrossServerCopy:
    """The streamed tables of one environment: submitted as the plan's copy steps run, copied by
    `parallel` workers, waited for before the first step that needs them all."""

    def __init__(
        self,
        source: Server,
        target: Server,
        *,
        source_database: str,
        staging: str,
        salt: str | None,
        parallel: int = 1,
        retries: int = 3,
        transport: Transport | None = None,
        backoff: float = BACKOFF_SECONDS,
    ) -> None:
        self.source_server = source
        self.target_server = target
        self.source_database = source_database
        self.staging = staging
        self.salt = salt
        self.parallel = max(parallel, 1)
        self.retries = max(retries, 0)
        self.transport: Transport = transport or DEFAULT_TRANSPORT
        self.backoff = backoff
        self.notes: list[str] = []
        """What the user should know about this copy (a fallback taken, a snapshot renewed)."""
        self._source: Connection | None = None
        self._leak_source: Connection | None = None
        self._snapshot = _Snapshot(source, salt=salt, notes=self.notes)
        self._tasks: list[_Task] = []
        self._deferred: dict[str, mysql.DeferredIndexes] = {}
        self._reported: set[int] = set()
        self._queue: queue.Queue[_Task | None] = queue.Queue()
        self._workers: list[threading.Thread] = []
        self._stop = threading.Event()
        self._switch = threading.Lock()
        self._watchdog = _Watchdog(target)

    # -- the source, outside the snapshot (DDL, character sets, leak checks) ------------------

    @property
    def source(self) -> Connection:
        """A read-only session on the source server, for reads outside the copy's snapshot."""
        if self._source is None:
            self._source = connect(self.source_server, read_only=True)
        return self._source

    # -- copying -----------------------------------------------------------------------------

    def deferring(self, copy: TableCopy, ddl: str) -> str:
        """The staging table's CREATE TABLE without the indexes and foreign keys that are added
        after its rows are loaded (engines/mysql.py `defer_indexes`: measured cheaper)."""
        create, later = mysql.defer_indexes(ddl)
        self._deferred[copy.target] = later
        return create

    def submit(self, copy: TableCopy) -> None:
        """Queue a table; workers start with the first `wait` (all staging tables exist by then)."""
        task = _Task(copy, len(self._tasks))
        self._tasks.append(task)
        self._queue.put(task)

    def wait(self, progress: Progress, on_table: Callable[[TableResult], None]) -> None:
        """Copy what was submitted; `on_table` as each table is done, then the first error is raised."""
        if not self._tasks:
            return
        if not self._workers:
            self._start(len([t for t in self._tasks if not t.done.is_set()]))
        while True:
            pending = [t for t in self._tasks if not t.done.is_set()]
            for task in self._tasks:
                if task.done.is_set() and task.result is not None and task.index not in self._reported:
                    self._reported.add(task.index)
                    on_table(task.result)
            if not pending:
                break
            progress(sum(t.rows for t in pending))
            pending[0].done.wait(PROGRESS_POLL)
        failures = [t.error for t in self._tasks if t.error is not None and not isinstance(t.error, _StoppedError)]
        if failures:
            raise failures[0]

    def _start(self, count: int) -> None:
        workers = min(self.parallel, max(count, 1))
        self._snapshot.open(workers)
        if not self._watchdog.is_alive():
            self._watchdog.start()
        for slot in range(workers):
            worker = threading.Thread(target=self._work, args=(slot,), name=f"moenv-copy-{slot}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def _work(self, slot: int) -> None:
        target: list[Connection | None] = [None]
        try:
            while (task := self._queue.get()) is not None:
                try:
                    if self._stop.is_set():
                        raise _StoppedError("stopped: another table failed")
                    task.result = self._copy(task, slot, target)
                except BaseException as exc:  # noqa: BLE001 - handed to `wait`, which raises it in the main thread
                    task.error = exc
                    self._stop.set()
                finally:
                    task.rows = 0
                    task.done.set()
        finally:
            if target[0] is not None:
                target[0].close()

    def _target(self) -> Connection:
        conn = connect(self.target_server, local_infile=True)
        for statement in mysql.STREAM_TARGET_SESSION:
            conn.execute(statement)
        return conn

    def _refused(self, exc: DatabaseError) -> bool:
        """LOAD DATA LOCAL refused: switch to multi-row INSERTs (once, for every table) and say so."""
        if exc.code not in LOAD_REFUSED:
            return False
        with self._switch:
            if self.transport == "load":
                self.transport = "insert"
                self.notes.append(
                    f"the target refused LOAD DATA LOCAL ({exc.message}): rows were sent as multi-row INSERTs,"
                    " which is slower; enable local_infile on the target server to load them"
                )
        return True

    def _copy(self, task: _Task, slot: int, target: list[Connection | None]) -> TableResult:
        copy = task.copy
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                conn = target[0]
                if conn is None:
                    conn = target[0] = self._target()
                shape = self._shape(conn, copy)
                if attempt:
                    conn.execute(mysql.truncate_table(self.staging, copy.target), doing=f"emptying {copy.target}")
                rows = self._load(task, slot, conn, shape)
                self._add_indexes(conn, copy)
                return TableResult(copy, rows, time.monotonic() - started, attempt + 1)
            except DatabaseError as exc:
                if self._refused(exc):
                    continue
                if exc.code not in RETRIED or attempt >= self.retries or self._stop.is_set():
                    raise
                if target[0] is not None:
                    target[0].close()
                    target[0] = None
                self._snapshot.check(slot, copy.source)
                time.sleep(min(self.backoff * 2**attempt, MAX_BACKOFF_SECONDS))
                attempt += 1

    def add_indexes(self, target: Connection, copy: TableCopy) -> None:
        """The indexes and foreign keys `deferring` held back, added to a table filled another way."""
        self._add_indexes(target, copy)

    def copy_now(self, copies: Sequence[TableCopy], progress: Progress) -> int:
        """Stream these parts (changed rows, keys) into the staging database and wait for them; they
        are not tables of the environment, so they are not reported. Returns the rows loaded.
        Call it after `wait`: a table submitted before and not yet reported would be counted here."""
        for copy in copies:
            self.submit(copy)
        loaded = 0

        def count(result: TableResult) -> None:
            nonlocal loaded
            loaded += result.rows

        self.wait(progress, count)
        return loaded

    def _add_indexes(self, target: Connection, copy: TableCopy) -> None:
        later = self._deferred.get(copy.target)
        if later is None or not later.clauses:
            return
        names = (self.staging, copy.target, self.staging, copy.target)
        present = {_text(name) for (name,) in target.query(mysql.index_and_constraint_names(), names)}
        missing = [c for name, c in zip(later.names, later.clauses, strict=True) if name not in present]
        if not missing:
            return
        try:
            target.execute(
                mysql.add_deferred_indexes(self.staging, copy.target, missing), doing=f"indexing {copy.target}"
            )
        except DatabaseError as exc:
            if exc.code != 1062:
                raise
            raise CloneError(exc.message, table=copy.target, hint=_COLLISION) from exc

    def _shape(self, target: Connection, copy: TableCopy) -> _Shape:
        rows = target.query(mysql.staging_columns(), (self.staging, copy.target))
        by_name = {
            _text(name).lower(): mysql.LoadColumn(_text(name), _text(kind).lower(), cs and _text(cs))
            for name, kind, cs in rows
        }
        missing = [c for c in copy.columns if c.lower() not in by_name]
        if missing:
            raise CloneError(f"the staging table {copy.target} has no column {', '.join(missing)}", table=copy.target)
        key = tuple(_text(name) for (name,) in target.query(mysql.primary_key_columns(), (self.staging, copy.target)))
        return _Shape(tuple(by_name[c.lower()] for c in copy.columns), key)

    def _load(self, task: _Task, slot: int, target: Connection, shape: _Shape) -> int:
        # Loading sessions keep unique_checks on (STREAM_TARGET_SESSION): masked values that
        # collide in a unique index fail the load, or the ALTER that adds a deferred index.
        copy = task.copy
        if self.transport == "insert":
            return self._insert(task, slot, target, shape)
        chunks = self._chunks(task, slot, shape, insert=False)
        with self._watchdog.watch(target):
            loaded, sent = load_through_pipe(
                target,
                lambda path: mysql.load_data(copy, shape.columns, database=self.staging, path=path),
                chunks,
                doing=f"loading {copy.target}",
                task=task,
            )
        if self._stop.is_set():
            raise _StoppedError("stopped: another table failed")
        _check_warnings(target, copy)
        if loaded != sent:
            raise CloneError(f"{copy.target}: {sent:,} rows were sent but {loaded:,} loaded", table=copy.target)
        return loaded

    def _insert(self, task: _Task, slot: int, target: Connection, shape: _Shape) -> int:
        """The measured alternative: multi-row INSERTs of tuples the source formatted, one transaction."""
        copy = task.copy
        for statement in mysql.STREAM_INSERT_SESSION:
            target.execute(statement)
        head = mysql.insert_head(copy, shape.columns, database=self.staging).encode()
        chunks: queue.Queue[tuple[bytes, int] | BaseException | None] = queue.Queue(maxsize=2)
        done = threading.Event()

        def offer(item: tuple[bytes, int] | BaseException | None) -> bool:
            while not done.is_set():
                with contextlib.suppress(queue.Full):
                    chunks.put(item, timeout=0.2)
                    return True
            return False

        def produce() -> None:
            source = self._chunks(task, slot, shape, insert=True)
            try:
                for chunk in source:
                    if not offer(chunk):
                        return
                offer(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the inserting thread, which raises it
                offer(exc)
            finally:
                source.close()

        producer = threading.Thread(target=produce, name="moenv-insert-feed", daemon=True)
        producer.start()
        rows = 0
        try:
            target.execute("START TRANSACTION")
            while (item := chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                data, count = item
                inserted = target.execute_bytes(head + data, doing=f"inserting into {copy.target}")
                if inserted != count:
                    raise CloneError(f"{copy.target}: {count:,} rows were sent but {inserted:,} inserted")
                rows += inserted
                task.rows = rows
                if self._stop.is_set():
                    raise _StoppedError("stopped: another table failed")
            target.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(DatabaseError):
                target.execute("ROLLBACK")
            raise
        finally:
            done.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    chunks.get_nowait()
            producer.join()
        _check_warnings(target, copy)
        return rows

    def _chunks(self, task: _Task, slot: int, shape: _Shape, *, insert: bool) -> Generator[tuple[bytes, int]]:
        """The table's rows as (lines, count) chunks of about CHUNK_BYTES, read in the snapshot."""
        copy = task.copy
        source = self.source_database
        chunk = mysql.insert_chunk if insert else mysql.stream_chunk
        rows = mysql.insert_rows if insert else mysql.stream_rows
        reader = _Reader(
            bound=lambda after, into, count: mysql.stream_bound(
                copy, shape.key, source_database=source, after=after, into=into, rows=count
            ),
            chunk=lambda after, up_to: chunk(
                copy, shape.columns, shape.key, source_database=source, after=after, up_to=up_to
            ),
            rows=lambda after, up_to: rows(
                copy, shape.columns, shape.key, source_database=source, after=after, up_to=up_to
            ),
            separator=b"," if insert else b"\n",
            doing=f"reading {copy.source}",
            countable=not insert,
        )
        return _read(self._snapshot.leaser(slot), shape.key, f"moenv_{task.index}", reader, self._stop)

    # -- leak check --------------------------------------------------------------------------

    def count_leaks(self, copy: TableCopy, column: str, *, tables: Sequence[str] = ()) -> int:
        """Rows of the copy whose masked `column` equals a value the source column holds.

        The source's values are streamed into a temporary table on the target with the column's
        own type and collation, and the same-server check runs there: memory stays on the
        servers, equality is the column's collation, as on one server. `tables`: staging tables
        of the copy's shape to count in instead of the copy's own (an incremental refresh's new rows).
        """
        target = self._target()
        shaped = copy.model_copy(update={"target": tables[0]}) if tables else copy
        try:
            shape = self._shape(target, shaped)
            index = [c.lower() for c in copy.columns].index(column.lower())
            load_column = shape.columns[index]
            target.execute(mysql.drop_leak_table(self.staging))
            target.execute(mysql.create_leak_table(self.staging, shaped.target, load_column.name))
            doing = f"loading the source values of {copy.target}.{column} for the leak check"
            if self.transport == "load":
                try:
                    load_through_pipe(
                        target,
                        lambda path: mysql.load_leak_values(load_column, database=self.staging, path=path),
                        self._leak_chunks(copy, load_column, shape.key, insert=False),
                        doing=doing,
                    )
                except DatabaseError as exc:
                    if not self._refused(exc):
                        raise
            if self.transport == "insert":
                for statement in mysql.STREAM_INSERT_SESSION:
                    target.execute(statement)
                head = mysql.insert_leak_values(load_column, database=self.staging).encode()
                for data, _count in self._leak_chunks(copy, load_column, shape.key, insert=True):
                    target.execute_bytes(head + data, doing=doing)
            counted = [copy.model_copy(update={"target": t}) for t in tables] if tables else [copy]
            return sum(
                int(target.scalar(mysql.count_leaks_loaded(c, load_column.name, database=self.staging)) or 0)
                for c in counted
            )
        finally:
            with contextlib.suppress(DatabaseError):
                target.execute(mysql.drop_leak_table(self.staging))
            target.close()

    def _leak_chunks(
        self, copy: TableCopy, column: mysql.LoadColumn, key: Sequence[str], *, insert: bool
    ) -> Generator[tuple[bytes, int]]:
        source = self.source_database
        reader = _Reader(
            bound=lambda after, into, count: mysql.stream_bound(
                copy, key, source_database=source, after=after, into=into, rows=count
            ),
            chunk=lambda after, up_to: mysql.leak_chunk(
                copy, column, key, source_database=source, after=after, up_to=up_to, insert=insert
            ),
            rows=lambda after, up_to: mysql.leak_rows(
                copy, column, key, source_database=source, after=after, up_to=up_to, insert=insert
            ),
            separator=b"," if insert else b"\n",
            doing=f"reading {copy.source}.{column.name} for the leak check",
            countable=not insert,
        )
        if self._leak_source is None:
            self._leak_source = self._snapshot.session()
        conn = self._leak_source
        return _read(lambda: contextlib.nullcontext(conn), key, "moenv_leak", reader, None)

    # -- the end -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the workers (an unfinished table gives up at its next chunk) and close every session."""
        self._stop.set()
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join()
        self._workers = []
        if self._watchdog.is_alive():
            self._watchdog.stop.set()
            self._watchdog.join()
        self._snapshot.close()
        for conn in (self._source, self._leak_source):
            if conn is not None:
                conn.close()
        self._source = self._leak_source = None


Range = Sequence[str] | None


@dataclass(frozen=True)
class _Reader:
    """The statements that read one table: key bounds, key-range chunks, and rows one by one."""

    bound: Callable[[Range, Sequence[str], int], str]
    chunk: Callable[[Range, Range], str]
    rows: Callable[[Range, Range], str]
    separator: bytes
    doing: str
    countable: bool = True
    """The separator appears exactly between rows (LOAD DATA lines), so a cut chunk shows."""


def _read(
    lease: Callable[[], AbstractContextManager[Connection]],
    key: Sequence[str],
    prefix: str,
    reader: _Reader,
    stop: threading.Event | None,
) -> Generator[tuple[bytes, int]]:
    """A table's lines in chunks of about CHUNK_BYTES: key ranges of GROUP_CONCAT (one value per
    round trip, nothing decoded per row), or row by row where there is no primary key.

    Each range ends at the key of its n-th row, kept in server-side variables named from
    `prefix`; n adapts to the bytes a row takes, so memory stays flat whatever the table's size.
    """
    if not key:
        yield from _read_rows(lease, reader, None, None, stop)
        return
    names = [[f"@{prefix}_{side}_{i}" for i in range(len(key))] for side in "ab"]
    after: list[str] | None = None
    rows = FIRST_CHUNK_ROWS
    turn = 0
    while stop is None or not stop.is_set():
        upper = names[turn % 2]
        with lease() as source:
            found = source.execute(reader.bound(after, upper, rows), doing=reader.doing)
            [(count, data)] = source.query(reader.chunk(after, upper if found else None), doing=reader.doing)
        count = int(count or 0)
        if count:
            if not isinstance(data, bytes) or (reader.countable and data.count(reader.separator) + 1 < count):
                # cut short (over max_allowed_packet, or group_concat_max_len): row by row instead
                yield from _read_rows(lease, reader, after, upper if found else None, stop)
            else:
                yield data, count
                rows = max(1, min(MAX_CHUNK_ROWS, 4 * rows, CHUNK_BYTES * rows // max(len(data), 1)))
        if not found:
            return
        after = upper
        turn += 1


def _read_rows(
    lease: Callable[[], AbstractContextManager[Connection]],
    reader: _Reader,
    after: Range,
    up_to: Range,
    stop: threading.Event | None,
) -> Generator[tuple[bytes, int]]:
    """Rows one by one (unbuffered), batched into chunks. The session stays leased until the
    last row: tables sharing it wait meanwhile."""
    with lease() as source:
        batch: list[bytes] = []
        size = 0
        for (line,) in source.stream(reader.rows(after, up_to), doing=reader.doing):
            value = _as_bytes(line)
            batch.append(value)
            size += len(value) + 1
            if size >= CHUNK_BYTES:
                yield reader.separator.join(batch), len(batch)
                batch, size = [], 0
                if stop is not None and stop.is_set():
                    return
        if batch:
            yield reader.separator.join(batch), len(batch)


def _text(value: object) -> str:
    """A catalog name as text (sessions that read results as bytes get bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


_COLLISION = "masked values collide in a unique index: make the mask unique (e.g. include the key)"


def _check_warnings(target: Connection, copy: TableCopy) -> None:
    """LOAD DATA LOCAL turns errors into warnings (it cannot stop the client mid-file): any
    warning means a value did not arrive as it was, so the table fails instead."""
    found = [(str(level), code, str(message)) for level, code, message in target.query("SHOW WARNINGS")]
    problems = [f for f in found if f[0] != "Note"]
    if problems:
        level, code, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        hint = _COLLISION if code == 1062 else None
        raise CloneError(
            f"{copy.target}: the target changed a value while loading it: {level} {code}: {message}{more}",
            table=copy.target,
            hint=hint,
        )
