"""Ledger writes: creation and migration, records, events, revision; every write bumps the revision."""

from __future__ import annotations

import getpass
import json
import os
import socket
from datetime import datetime

from moenv.engines import ledger as sql
from moenv.engines import matrixone
from moenv.engines.mysql import get_lock, release_lock
from moenv.errors import ConflictError, DatabaseError
from moenv.live.connection import Connection, transaction
from moenv.models.ledger import LedgerRecord


def actor() -> str:
    """Who runs moenv, for the event log (MOENV_ACTOR overrides, e.g. the CI job)."""
    if name := os.environ.get("MOENV_ACTOR"):
        return name[:255]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:255]


_ALREADY_DONE = {1050, 1060, 1061}  # table exists, duplicate column, duplicate key name


def ensure_ledger(conn: Connection, ledger: str) -> None:
    """Create or migrate the ledger to the current schema version (serialized by a server lock)."""
    try:
        current = int(conn.scalar(sql.select_schema_version(ledger)) or 0)
    except DatabaseError as exc:
        if exc.code not in {1049, 1146}:
            raise
        current = 0
    if current >= sql.SCHEMA_VERSION:
        return
    name = f"moenv-ledger:{ledger}"[:64]
    # MatrixOne < 4.0 has no GET_LOCK; every migration statement is idempotent (IF NOT EXISTS,
    # INSERT IGNORE), so two concurrent creations there converge without it.
    lockable = conn.engine.kind != "matrixone" or matrixone.Capabilities.from_text(conn.engine.text).get_lock
    if lockable and conn.scalar(get_lock(), (name, 60)) != 1:
        raise ConflictError(f"could not lock the ledger {ledger} for its creation within 60 s")
    try:
        conn.execute(sql.create_ledger_database(ledger))
        try:
            current = int(conn.scalar(sql.select_schema_version(ledger)) or 0)
        except DatabaseError as exc:
            if exc.code != 1146:
                raise
            current = 0
        reached = current
        for version, statement in sql.migration_statements(ledger, current):
            if version != reached and reached > current:
                conn.execute(sql.set_schema_version(ledger), (str(reached),))
            try:
                conn.execute(statement)
            except DatabaseError as exc:
                # DDL is not transactional: a run killed after a migration's ALTER and before the
                # version was written meets its own change again. That one is done already.
                if exc.code not in _ALREADY_DONE:
                    raise
            reached = version
        conn.execute(sql.set_schema_version(ledger), (str(sql.SCHEMA_VERSION),))
    finally:
        if lockable:
            conn.query(release_lock(), (name,))


def _dt(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=None) if value is not None else None


def record_values(record: LedgerRecord) -> tuple[object, ...]:
    stats = json.dumps([s.model_dump(mode="json") for s in record.stats]) if record.stats else None
    return (
        record.name,
        record.target_database,
        record.source_server,
        record.source_database,
        record.status,
        record.spec_hash,
        json.dumps(record.spec, sort_keys=True) if record.spec else None,
        record.source_fingerprint,
        record.target_fingerprint,
        record.staging_database,
        _dt(record.created_at),
        _dt(record.updated_at),
        _dt(record.refreshed_at),
        _dt(record.expires_at),
        int(record.protect),
        record.tables_total,
        record.tables_done,
        record.rows_copied,
        stats,
        record.message,
        json.dumps(record.watermarks, sort_keys=True) if record.watermarks else None,
    )


def _in_transaction(conn: Connection, statements: list[tuple[str, tuple[object, ...]]]) -> None:
    with transaction(conn):
        for statement, args in statements:
            conn.execute(statement, args)


def write_record(conn: Connection, ledger: str, record: LedgerRecord, event: tuple[object, ...] | None = None) -> None:
    """Upsert a record (and log an event) and bump the revision, atomically."""
    statements: list[tuple[str, tuple[object, ...]]] = [(sql.upsert_record(ledger), record_values(record))]
    if conn.engine.kind == "matrixone":  # its ODKU may not assign the UNIQUE target_database column
        delete, insert = matrixone.record_statements(ledger)
        statements = [(delete, (record.name,)), (insert, record_values(record))]
    if event is not None:
        statements.append((sql.insert_event(ledger), event))
    statements.append((sql.bump_revision(ledger), ()))
    _in_transaction(conn, statements)


def forget_record(conn: Connection, ledger: str, name: str, event: tuple[object, ...]) -> None:
    _in_transaction(
        conn,
        [(sql.delete_record(ledger), (name,)), (sql.insert_event(ledger), event), (sql.bump_revision(ledger), ())],
    )


def event_values(
    at: datetime,
    environment: str,
    action: str,
    result: str,
    *,
    rows: int | None = None,
    duration_ms: int | None = None,
    message: str | None = None,
) -> tuple[object, ...]:
    return (_dt(at), environment, action, result, actor(), rows, duration_ms, message)


def write_event(conn: Connection, ledger: str, event: tuple[object, ...]) -> None:
    conn.execute(sql.insert_event(ledger), event)


def write_progress(conn: Connection, ledger: str, name: str, tables_done: int, rows: int, at: datetime) -> None:
    """Progress is not a change of ownership: it does not bump the revision."""
    conn.execute(sql.update_progress(ledger), (tables_done, rows, _dt(at), name))
