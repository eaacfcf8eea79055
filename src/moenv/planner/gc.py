"""build_gc_plan(live, now, options) → Plan: expired environments and leftovers of interrupted applies; pure."""

from __future__ import annotations

from datetime import datetime

from moenv.models.plan import Action, Blocked, Cleanup, Live, Plan, PlanOptions, Step
from moenv.planner.build import delete_action
from moenv.planner.policy import check_deletes


def build_gc_plan(live: Live, *, now: datetime, options: PlanOptions) -> Plan:
    """What `moenv gc` removes: environments past their expiry, staging left by interrupted applies."""
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
    check_deletes(actions, options)
    return Plan(
        created_at=now,
        actions=tuple(actions),
        blocked=tuple(blocked),
        ledger_revisions=live.revisions,
        ledger_database=live.ledger_database,
    )
