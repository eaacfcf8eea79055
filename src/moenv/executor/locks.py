"""Per-environment advisory locks on the target server (GET_LOCK), with a clear 'locked by' message."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager

from moenv.engines import mysql
from moenv.errors import ConflictError, DatabaseError
from moenv.live.connection import Connection


@contextmanager
def environment_lock(conn: Connection, environment: str, *, timeout: float) -> Iterator[None]:
    """Hold the environment's lock on `conn`'s session; ConflictError naming the holder on timeout."""
    name = mysql.lock_name(environment)
    got = conn.scalar(mysql.get_lock(), (name, max(0, round(timeout))))
    if got != 1:
        holder = conn.query(mysql.lock_holder(), (name,))
        who = f"{holder[0][1]}@{holder[0][2]} (connection {holder[0][0]})" if holder else "another session"
        raise ConflictError(
            f"environment {environment} is locked by {who}: another moenv run is applying it",
            hint="wait for it to finish, or raise --lock-timeout",
        )
    try:
        yield
    finally:
        # A session that died (server restarted) released its lock with it; failing here would
        # hide the error that ended the work.
        with contextlib.suppress(DatabaseError):
            conn.query(mysql.release_lock(), (name,))
