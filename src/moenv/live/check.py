"""`moenv check`: what a server lets moenv do, tried the way an apply would (Findings: ok, warning,
failure, with what to do); does I/O: reads, plus a probe database created and dropped and a lock
taken and released on targets."""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from moenv.engines import matrixone as mo
from moenv.engines.base import qualified, quote_ident
from moenv.engines.mysql import drop_database, get_lock, lock_name, release_lock
from moenv.errors import DatabaseError
from moenv.live.catalog import read_catalogs
from moenv.live.connection import Connection
from moenv.live.ledger import read_ledger

Level = Literal["ok", "warning", "failure"]


@dataclass(frozen=True)
class Finding:
    server: str
    check: str
    level: Level
    detail: str = ""
    hint: str | None = None


def engine_finding(conn: Connection) -> Finding:
    text = conn.engine.text
    server = conn.server.name
    if conn.engine.kind == "matrixone":
        caps = mo.Capabilities.from_text(text)
        if not caps.supported:
            return Finding(server, "engine", "failure", text, f"moenv needs MatrixOne ≥ {mo.release_text(mo.MINIMUM)}")
        return Finding(server, "engine", "ok", f"{text} ({caps.describe()})")
    return Finding(server, "engine", "ok", text)


def source_findings(conn: Connection, databases: Collection[str], *, streamed: bool) -> list[Finding]:
    """Every source database exists and every table and view in it can be read; with `streamed`
    (a target on another server), whether several workers can share one snapshot."""
    server = conn.server.name
    found: list[Finding] = []
    catalogs = read_catalogs(conn, databases)
    for database in sorted(databases):
        catalog = catalogs.get(database)
        if catalog is None or not catalog.exists:
            found.append(
                Finding(
                    server,
                    f"read {database}",
                    "failure",
                    "the database does not exist (or is not visible)",
                    "check the manifest's source.database, and that this user may see it",
                )
            )
            continue
        refused: list[str] = []
        for name in sorted(catalog.tables):
            try:
                conn.query(f"SELECT 1 FROM {qualified(database, name)} LIMIT 0")
            except DatabaseError as exc:
                refused.append(f"{name} ({exc.code})")
        tables = sum(1 for t in catalog.tables.values() if t.kind == "table")
        views = len(catalog.tables) - tables
        if refused:
            found.append(
                Finding(
                    server,
                    f"read {database}",
                    "failure",
                    f"cannot read {', '.join(refused)}",
                    f"GRANT SELECT, SHOW VIEW ON {quote_ident(database)}.* TO the moenv user",
                )
            )
        else:
            found.append(Finding(server, f"read {database}", "ok", f"{tables} tables, {views} views"))
    if streamed and conn.engine.kind != "matrixone":
        found.append(_snapshot_finding(conn))
    return found


def _snapshot_finding(conn: Connection) -> Finding:
    server = conn.server.name
    grants = " ".join(str(row[0]).upper() for row in conn.query("SHOW GRANTS"))
    if "ALL PRIVILEGES ON *.*" in grants or "RELOAD" in grants:
        return Finding(server, "synchronized snapshot", "ok", "RELOAD: several workers read one point in time")
    return Finding(
        server,
        "synchronized snapshot",
        "warning",
        "no RELOAD: with --parallel > 1 the workers share one snapshot session (slower)",
        "GRANT RELOAD ON *.* TO the moenv user (BACKUP STAGE / FLUSH TABLES WITH READ LOCK for a moment)",
    )


def target_findings(conn: Connection, ledger: str, *, loads: bool) -> list[Finding]:
    """Databases can be created and dropped, the ledger read, environments locked; with `loads`
    (a source on another server), whether LOAD DATA LOCAL is allowed."""
    server = conn.server.name
    found: list[Finding] = []
    probe = f"_moenv_check_{secrets.token_hex(4)}"
    try:
        conn.execute(f"CREATE DATABASE {quote_ident(probe)}")
        conn.execute(f"CREATE TABLE {qualified(probe, 't')} (id INT PRIMARY KEY)")
        found.append(Finding(server, "create databases", "ok", "created and dropped a probe database"))
    except DatabaseError as exc:
        found.append(
            Finding(
                server,
                "create databases",
                "failure",
                exc.message,
                "GRANT ALL ON the target databases, `_moenv\\_%` and the ledger database TO the moenv user",
            )
        )
    finally:
        try:
            conn.execute(drop_database(probe))
        except DatabaseError as exc:
            found.append(Finding(server, "drop databases", "failure", exc.message, "GRANT DROP to the moenv user"))
    try:
        state = read_ledger(conn, ledger)
        environments = f"schema v{state.version}, {len(state.records)} environments"
        detail = environments if state.version else "created by the first apply"
        found.append(Finding(server, f"ledger {ledger}", "ok", detail))
    except DatabaseError as exc:
        hint = f"GRANT ALL ON {quote_ident(ledger)}.* TO the moenv user"
        found.append(Finding(server, f"ledger {ledger}", "failure", exc.message, hint))
    found.append(_lock_finding(conn))
    if loads and conn.engine.kind != "matrixone":
        found.append(_load_finding(conn))
    return found


def _lock_finding(conn: Connection) -> Finding:
    server = conn.server.name
    if conn.engine.kind == "matrixone" and not mo.Capabilities.from_text(conn.engine.text).get_lock:
        return Finding(server, "environment locks", "ok", "no GET_LOCK before MatrixOne 4.0: lease rows in the ledger")
    name = lock_name(f"moenv-check-{secrets.token_hex(4)}")
    try:
        if conn.scalar(get_lock(), (name, 0)) != 1:
            return Finding(server, "environment locks", "failure", "GET_LOCK did not grant a free lock")
        conn.scalar(release_lock(), (name,))
    except DatabaseError as exc:
        return Finding(server, "environment locks", "failure", exc.message)
    return Finding(server, "environment locks", "ok", "GET_LOCK")


def _load_finding(conn: Connection) -> Finding:
    server = conn.server.name
    if int(conn.scalar("SELECT @@GLOBAL.local_infile") or 0):
        return Finding(server, "LOAD DATA LOCAL", "ok", "local_infile = ON: streamed rows are loaded")
    return Finding(
        server,
        "LOAD DATA LOCAL",
        "warning",
        "local_infile = OFF: rows from another server go as multi-row INSERTs (slower)",
        "SET GLOBAL local_infile = 1 (and local-infile=1 in the server's configuration)",
    )


def unreachable(server: str, message: str) -> Finding:
    return Finding(server, "connect", "failure", message, "check the URL, the network and the credentials")


__all__ = [
    "Finding",
    "Level",
    "engine_finding",
    "source_findings",
    "target_findings",
    "unreachable",
]
