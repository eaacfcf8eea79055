"""Reads of moenv's ledger on a target server (records, revision, events); a missing ledger is empty."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from moenv.engines import ledger as sql
from moenv.engines.mysql import lock_name
from moenv.errors import ConflictError, DatabaseError
from moenv.live import matrixone
from moenv.live.connection import Connection
from moenv.models.ledger import Event, LedgerRecord, LedgerState, TableStat

_NO_TABLE = {1146, 1049}


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def record_from_row(server: str, row: tuple[Any, ...], version: int = sql.SCHEMA_VERSION) -> LedgerRecord:
    values = dict(zip(sql.record_columns(version), row, strict=True))
    stats = json.loads(values["stats_json"]) if values["stats_json"] else []
    return LedgerRecord(
        name=values["name"],
        target_server=server,
        target_database=values["target_database"],
        source_server=values["source_server"],
        source_database=values["source_database"],
        status=values["status"],
        spec_hash=values["spec_hash"] or "",
        spec=json.loads(values["spec_json"]) if values["spec_json"] else {},
        source_fingerprint=values["source_fingerprint"] or "",
        target_fingerprint=values["target_fingerprint"] or "",
        staging_database=values["staging_database"],
        created_at=_utc(values["created_at"]),
        updated_at=_utc(values["updated_at"]),
        refreshed_at=_utc(values["refreshed_at"]),
        expires_at=_utc(values["expires_at"]),
        protect=bool(values["protect"]),
        tables_total=int(values["tables_total"] or 0),
        tables_done=int(values["tables_done"] or 0),
        rows_copied=int(values["rows_copied"] or 0),
        stats=tuple(TableStat.model_validate(s) for s in stats),
        message=values["message"],
        watermarks=json.loads(values["watermarks_json"]) if values.get("watermarks_json") else {},
    )


def read_ledger(conn: Connection, ledger: str) -> LedgerState:
    """Every record and the revision, in two queries; an absent ledger reads as empty."""
    try:
        meta = dict(conn.query(sql.select_meta(ledger)))
        version = int(meta.get("schema_version", 1))
        if version > sql.SCHEMA_VERSION:
            raise ConflictError(
                f"the ledger {ledger} on server {conn.server.name} has schema version {version};"
                f" this moenv knows up to {sql.SCHEMA_VERSION}",
                hint="upgrade moenv: an older one must not write a newer ledger",
            )
        rows = conn.query(sql.select_records(ledger, version))
    except DatabaseError as exc:
        if exc.code in _NO_TABLE:
            return LedgerState(conn.server.name)
        raise
    records = {str(row[0]): record_from_row(conn.server.name, row, version) for row in rows}
    return LedgerState(conn.server.name, records, revision=int(meta.get("revision", 0)), version=version)


def read_events(conn: Connection, ledger: str, environment: str | None = None, limit: int = 100) -> list[Event]:
    try:
        rows = conn.query(
            sql.select_events(ledger, environment=environment is not None, limit=limit),
            (environment,) if environment is not None else None,
        )
    except DatabaseError as exc:
        if exc.code in _NO_TABLE:
            return []
        raise
    events = []
    for row in rows:
        values = dict(zip(sql.EVENT_COLUMNS, row, strict=True))
        values["at"] = _utc(values["at"])
        values["rows"] = values.pop("rows_copied")
        events.append(Event.model_validate(values))
    return events


def read_busy(conn: Connection, environments: list[str], ledger: str = "moenv") -> frozenset[str]:
    """Which of `environments` have their lock held by some session now (one query)."""
    if not environments:
        return frozenset()
    if conn.engine.kind == "matrixone":  # GET_LOCK only from v4.0; a lease row in `ledger` before
        return matrixone.read_busy(conn, ledger, environments)
    names = [lock_name(e) for e in environments]
    row = conn.query("SELECT " + ", ".join(["IS_USED_LOCK(%s)"] * len(names)), names)[0]
    return frozenset(e for e, holder in zip(environments, row, strict=True) if holder is not None)
