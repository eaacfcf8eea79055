"""build_gc_plan(live, now, options) → Plan: expired environments and leftovers of interrupted applies; pure."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from moenv.engines.matrixone import stale_snapshots
from moenv.models.plan import Action, Blocked, Cleanup, Live, Plan, PlanOptions, Step
from moenv.planner.build import delete_action
from moenv.planner.policy import check_deletes


def build_gc_plan(
    live: Live, *, now: datetime, options: PlanOptions, snapshots: Mapping[str, Sequence[str]] | None = None
) -> Plan:
    """What `moenv gc` removes: environments past their expiry, staging left by interrupted applies,
    and (MatrixOne) moenv's snapshots that no running apply holds (`snapshots`: names per server)."""
    actions: list[Action] = []
    blocked: list[Blocked] = []
    for record in sorted(live.records(), key=lambda r: r.name):
        busy = record.name in live.servers[record.target_server].busy
        if busy:
            continue  # an apply is running: its staging is in use
        if record.status in {"building", "deleting"}:
            actions.append(
                Cleanup(
                    environment=record.name,
                    target_server=record.target_server,
                    target_database=record.target_database,
                    ledger_stamp=record.updated_at.isoformat(),
                    staging_database=record.staging_database,
                    reasons=(
                        f"an apply was interrupted ({record.status} since {record.updated_at:%Y-%m-%d %H:%M} UTC)",
                    ),
                    steps=(
                        Step(kind="drop_leftovers", detail="drop the staging and old tables' databases"),
                        Step(
                            kind="ledger_interrupted", detail=f"mark {record.name} failed (the next apply rebuilds it)"
                        ),
                    ),
                )
            )
            continue
        if record.status == "expired" or record.expires_at is None or record.expires_at > now:
            continue
        why = (f"expired at {record.expires_at:%Y-%m-%d %H:%M} UTC",)
        if record.protect and not options.force:
            blocked.append(Blocked(environment=record.name, op="delete", reasons=(*why, "protect: true (use --force)")))
            continue
        actions.append(delete_action(record, why, expire=True))
    actions += snapshot_cleanups(live, snapshots or {}, handled={a.environment for a in actions})
    check_deletes(actions, options)
    return Plan(
        created_at=now,
        actions=tuple(actions),
        blocked=tuple(blocked),
        ledger_revisions=live.revisions,
        ledger_database=live.ledger_database,
    )


def snapshot_cleanups(
    live: Live, snapshots: Mapping[str, Sequence[str]], *, handled: Collection[str] = ()
) -> list[Cleanup]:
    """A cleanup per stale moenv snapshot (MatrixOne): its apply died, or its environment is gone.

    Environments that already get an action here drop their snapshot with it; a snapshot of an
    environment the ledger forgot is named by the snapshot itself.
    """
    cleanups: list[Cleanup] = []
    for server_name, names in sorted(snapshots.items()):
        server = live.servers.get(server_name)
        records = server.ledger.records if server is not None else {}
        busy = server.busy if server is not None else frozenset()
        for name, owner in stale_snapshots(names, ledger=live.ledger_database, environments=records, busy=busy):
            if owner in handled:
                continue
            record = records.get(owner) if owner is not None else None
            cleanups.append(
                Cleanup(
                    environment=owner or name,
                    target_server=server_name,
                    target_database=record.target_database if record is not None else "",
                    ledger_stamp=record.updated_at.isoformat() if record is not None else None,
                    reasons=(
                        f"snapshot {name} was left by an apply that did not finish"
                        if owner is not None
                        else f"snapshot {name} belongs to an environment that is no longer in the ledger",
                    ),
                    steps=(Step(kind="drop_leftovers", table=name, detail=f"DROP SNAPSHOT IF EXISTS {name}"),),
                )
            )
    return cleanups
