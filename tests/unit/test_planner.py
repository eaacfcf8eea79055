"""moenv.planner.build_plan: whole plans for create, rebuild, update, noop, prune; the safety rules; rendering."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from tests.unit.builders import (
    NOW,
    SRC,
    applied_catalog,
    catalog,
    column,
    demo_catalog,
    desired,
    live_with,
    record,
    table,
    view,
)

from moenv.errors import ConflictError
from moenv.models.catalog import Catalog
from moenv.models.desired import Desired
from moenv.models.ledger import LedgerRecord, staging_database
from moenv.models.plan import Blocked, Create, Delete, Live, Plan, PlanOptions, Rebuild, Step, Update
from moenv.planner import build_plan
from moenv.planner.build import build_steps, refresh_steps
from moenv.planner.render import render_json, render_text

OPTIONS = PlanOptions()


def plan_of(live: Live, *wants: Desired, options: PlanOptions = OPTIONS) -> Plan:
    return build_plan({w.environment: w for w in wants}, live, now=NOW, options=options)


def converged(want: Desired, *, target: Catalog | None = None, **fields: Any) -> tuple[LedgerRecord, Live]:
    """The ledger row and live state right after a successful apply of `want` (then `target` as it is now)."""
    applied = applied_catalog(want)
    rec = record(applied=want, target=applied, **fields)
    now_there = target if target is not None else applied
    return rec, live_with(databases={want.target.database}, ledger={want.environment: rec}, catalogs=[now_there])


def rebuild(want: Desired, rec: LedgerRecord, *reasons: str) -> Rebuild:
    return Rebuild(
        environment=want.environment,
        target_server=want.target.server,
        target_database=want.target.database,
        ledger_stamp=rec.updated_at.isoformat(),
        desired=want,
        reasons=reasons,
        steps=build_steps(want, rebuild=True),
    )


def only(plan: Plan, *reasons: str, want: Desired, rec: LedgerRecord) -> None:
    """`plan` is exactly one rebuild of `want` for `reasons`."""
    assert plan == Plan(created_at=NOW, actions=(rebuild(want, rec, *reasons),), ledger_revisions={"default": 0})


# --- create ----------------------------------------------------------------------------------


def test_create_when_there_is_no_record_and_no_database() -> None:
    want = desired()
    staging = staging_database("dev")

    plan = plan_of(live_with(revision=7), want)

    assert plan == Plan(
        created_at=NOW,
        actions=(
            Create(
                environment="dev",
                target_server="default",
                target_database="dev_db",
                ledger_stamp=None,
                desired=want,
                reasons=("not created yet",),
                steps=(
                    Step(kind="ledger_begin", detail=f"mark dev building (staging {staging})"),
                    Step(kind="prepare_staging", detail=f"create staging database {staging}"),
                    Step(kind="create_table", table="users", detail="from SHOW CREATE TABLE users"),
                    Step(kind="copy_rows", table="users", detail="INSERT … SELECT from users"),
                    Step(kind="create_table", table="orders", detail="from SHOW CREATE TABLE orders"),
                    Step(kind="copy_rows", table="orders", detail="INSERT … SELECT from orders"),
                    Step(kind="create_table", table="products", detail="from SHOW CREATE TABLE products"),
                    Step(kind="copy_rows", table="products", detail="INSERT … SELECT from products"),
                    Step(kind="create_table", table="order_items", detail="from SHOW CREATE TABLE order_items"),
                    Step(kind="copy_rows", table="order_items", detail="INSERT … SELECT from order_items"),
                    Step(
                        kind="delete_orphans",
                        detail="remove rows whose reference was not copied"
                        " (self-references, cycles, concurrent writes)",
                    ),
                    Step(kind="swap", detail="move tables in with one RENAME TABLE into dev_db"),
                    Step(kind="drop_leftovers", detail="drop the staging (and old tables') databases"),
                    Step(kind="ledger_commit", detail="mark dev ready"),
                ),
            ),
        ),
        ledger_revisions={"default": 7},
        ledger_database="moenv",
    )
    assert plan.has_changes
    assert not plan.destructive


def test_a_schema_only_create_copies_no_rows_and_recreates_views() -> None:
    source = catalog(
        SRC,
        table("users"),
        view("all_users", "select `src`.`users`.`id` AS `id` from `src`.`users`"),
    )
    want = desired(source=source, data="schema")

    (action,) = plan_of(live_with(), want).actions

    assert [(s.kind, s.table) for s in action.steps] == [
        ("ledger_begin", None),
        ("prepare_staging", None),
        ("create_table", "users"),
        ("swap", None),
        ("create_view", "all_users"),
        ("drop_leftovers", None),
        ("ledger_commit", None),
    ]


# --- targets that must not be touched --------------------------------------------------------


def test_an_existing_unmanaged_target_is_never_touched() -> None:
    with pytest.raises(ConflictError, match="not managed by moenv") as caught:
        plan_of(live_with(databases={"dev_db"}), desired())

    assert "dev_db" in str(caught.value)
    assert caught.value.hint is not None
    assert "--adopt" in caught.value.hint


def test_keep_going_reports_the_unmanaged_target_and_plans_the_others() -> None:
    dev, qa = desired(), desired("qa", target_db="qa_db")
    live = live_with(databases={"dev_db"})

    plan = build_plan({"dev": dev, "qa": qa}, live, now=NOW, options=PlanOptions(keep_going=True))

    assert [(a.op, a.environment) for a in plan.actions] == [("create", "qa")]
    [error] = plan.errors
    assert (error.environment, error.op) == ("dev", "plan")
    assert "dev_db" in error.reasons[0] and "not managed by moenv" in error.reasons[0]
    assert error.reasons[1].startswith("hint: ") and "--adopt" in error.reasons[1]
    with pytest.raises(ConflictError, match="not managed by moenv"):
        build_plan({"dev": dev, "qa": qa}, live, now=NOW, options=PlanOptions())


def test_adopt_takes_over_an_existing_target_with_a_rebuild() -> None:
    want = desired()

    plan = plan_of(live_with(databases={"dev_db"}), want, options=PlanOptions(adopt=True))

    assert plan == Plan(
        created_at=NOW,
        actions=(
            Rebuild(
                environment="dev",
                target_server="default",
                target_database="dev_db",
                ledger_stamp=None,
                desired=want,
                adopt=True,
                reasons=("adopting the existing database dev_db (--adopt)",),
                steps=build_steps(want, rebuild=True),
            ),
        ),
        ledger_revisions={"default": 0},
    )
    assert plan.destructive


def test_a_target_that_is_another_environments_source_is_refused() -> None:
    first = desired("a-first", SRC, "shared_db")
    second = desired("b-second", "shared_db", "second_db")

    with pytest.raises(ConflictError, match="is the source of b-second"):
        plan_of(live_with(), first, second)


def test_a_target_that_is_its_own_source_is_refused() -> None:
    with pytest.raises(ConflictError, match="moenv never writes to a source"):
        plan_of(live_with(), desired(target_db=SRC))


def test_a_target_that_is_the_ledger_database_is_refused() -> None:
    with pytest.raises(ConflictError, match="ledger database"):
        plan_of(live_with(), desired(target_db="moenv"))
    with pytest.raises(ConflictError, match="ledger database"):
        plan_of(live_with(ledger_database="ops_ledger"), desired(target_db="ops_ledger"))


@pytest.mark.parametrize(
    "database", ["mysql", "information_schema", "performance_schema", "sys", "mo_catalog", "MySQL"]
)
def test_a_system_database_target_is_refused(database: str) -> None:
    with pytest.raises(ConflictError, match="system database"):
        plan_of(live_with(), desired(target_db=database))


def test_a_target_named_like_moenv_work_databases_is_refused() -> None:
    with pytest.raises(ConflictError, match="reserved"):
        plan_of(live_with(), desired(target_db=staging_database("dev")))


def test_two_environments_with_one_target_are_refused() -> None:
    with pytest.raises(ConflictError, match="have the same target default:dev_db"):
        plan_of(live_with(), desired("a-one"), desired("b-two"))


def test_a_target_owned_by_another_environment_is_refused() -> None:
    other = record("old-dev", target_database="dev_db")

    with pytest.raises(ConflictError, match="already belongs to environment old-dev") as caught:
        plan_of(live_with(databases={"dev_db"}, ledger={"old-dev": other}), desired())

    assert caught.value.hint is not None
    assert "destroy old-dev" in caught.value.hint


# --- noop and rebuild ------------------------------------------------------------------------


def test_nothing_to_do_when_the_record_matches() -> None:
    want = desired()
    _, live = converged(want)

    plan = plan_of(live, want)

    assert plan == Plan(created_at=NOW, unchanged=("dev",), ledger_revisions={"default": 0})
    assert not plan.has_changes


def test_a_changed_spec_rebuilds_and_says_which_field_changed() -> None:
    before = desired(data="full")
    after = desired(data="schema")
    rec, live = converged(before)

    only(plan_of(live, after), 'spec.data: "full" → "schema"', want=after, rec=rec)


def test_a_changed_table_list_rebuilds_for_that_reason_only() -> None:
    """The target still holds the old table set and the source did not change: no drift is reported."""
    before = desired()
    after = desired(tables={"exclude": ["products", "order_items"]})
    rec, live = converged(before)

    only(plan_of(live, after), 'spec.tables.exclude: [] → ["products", "order_items"]', want=after, rec=rec)


def test_a_changed_source_schema_rebuilds() -> None:
    want = desired()
    rec, live = converged(want, source_fingerprint="0" * 64)

    only(plan_of(live, want), "the source schema of default:src changed since the last copy", want=want, rec=rec)


def test_an_interrupted_apply_is_rebuilt() -> None:
    want = desired()
    rec, live = converged(want, status="building")

    only(plan_of(live, want), "the last apply did not finish (status building)", want=want, rec=rec)


def test_a_failed_apply_is_rebuilt() -> None:
    want = desired()
    rec, live = converged(want, status="failed")

    only(plan_of(live, want), "the last apply did not finish (status failed)", want=want, rec=rec)


def test_a_table_dropped_from_the_target_rebuilds() -> None:
    want = desired()
    full = applied_catalog(want)
    target = dataclasses.replace(full, tables={k: v for k, v in full.tables.items() if k != "orders"})
    rec, live = converged(want, target=target)

    only(plan_of(live, want), "table orders was dropped from the target", want=want, rec=rec)


def test_a_table_added_to_the_target_by_hand_rebuilds() -> None:
    want = desired()
    full = applied_catalog(want)
    target = dataclasses.replace(full, tables={**full.tables, "scratch": table("scratch")})
    rec, live = converged(want, target=target)

    only(plan_of(live, want), "table scratch was added to the target by hand", want=want, rec=rec)


def test_a_table_altered_in_the_target_rebuilds() -> None:
    want = desired()
    full = applied_catalog(want)
    users = full.tables["users"]
    altered = dataclasses.replace(users, columns=(*users.columns, column("nickname", "varchar(20)")))
    rec, live = converged(want, target=dataclasses.replace(full, tables={**full.tables, "users": altered}))

    only(plan_of(live, want), "a table of the target was altered by hand", want=want, rec=rec)


def test_a_missing_target_database_rebuilds() -> None:
    want = desired()
    rec = record(applied=want)
    live = live_with(ledger={"dev": rec})

    only(plan_of(live, want), "the target database dev_db is missing", want=want, rec=rec)


def test_a_moved_target_rebuilds_and_drops_the_old_database() -> None:
    before = desired(target_db="dev_db")
    after = desired(target_db="dev2_db")
    _, live = converged(before)

    (action,) = plan_of(live, after).actions

    assert isinstance(action, Rebuild)
    assert action.old_database == "dev_db"
    assert action.target_database == "dev2_db"
    assert 'spec.target.database: "dev_db" → "dev2_db"' in action.reasons
    assert action.steps[-2] == Step(kind="drop_old_target", detail="drop the previous target database dev_db")


# --- bookkeeping only ------------------------------------------------------------------------


def test_a_changed_description_or_labels_only_updates_the_ledger() -> None:
    before = desired(description="old", labels={"team": "core"})
    after = desired(description="new", labels={"team": "data"})
    rec, live = converged(before)

    plan = plan_of(live, after)

    (action,) = plan.actions
    assert isinstance(action, Update)
    assert action.steps == (Step(kind="ledger_update", detail="update labels, description and lifecycle fields"),)
    assert (action.environment, action.target_database, action.ledger_stamp) == (
        "dev",
        "dev_db",
        rec.updated_at.isoformat(),
    )
    assert len(action.reasons) == 2
    assert not plan.destructive


def test_update_reasons_name_the_metadata_fields_by_their_manifest_path() -> None:
    before = desired(description="old", labels={"team": "core"})
    after = desired(description="new", labels={"team": "data"})
    _, live = converged(before)

    (action,) = plan_of(live, after).actions

    assert action.reasons == ('metadata.description: "old" → "new"', 'metadata.labels.team: "core" → "data"')


# --- prune and protect -----------------------------------------------------------------------


def test_prune_with_no_environments_is_refused() -> None:
    live = live_with(ledger={"dev": record("dev")})

    with pytest.raises(ConflictError, match="--prune with no environments loaded") as caught:
        build_plan({}, live, now=NOW, options=PlanOptions(prune=True))

    assert caught.value.hint is not None


def test_prune_deletes_records_in_no_manifest() -> None:
    want = desired()
    rec, live = converged(want)
    gone = record("old-pr", staging_database="_moenv_s_leftover")
    live = live_with(
        databases={"dev_db", "old_pr_db"}, ledger={"dev": rec, "old-pr": gone}, catalogs=[applied_catalog(want)]
    )

    plan = plan_of(live, want, options=PlanOptions(prune=True))

    assert plan == Plan(
        created_at=NOW,
        actions=(
            Delete(
                environment="old-pr",
                target_server="default",
                target_database="old_pr_db",
                ledger_stamp=gone.updated_at.isoformat(),
                staging_database="_moenv_s_leftover",
                reasons=("old-pr is in the ledger but in no loaded manifest (--prune)",),
                steps=(
                    Step(kind="ledger_begin", detail="mark old-pr deleting"),
                    Step(kind="drop_target", detail="DROP DATABASE old_pr_db"),
                    Step(kind="drop_leftovers", detail="drop staging leftovers, if any"),
                    Step(kind="ledger_forget", detail="remove old-pr from the ledger"),
                ),
            ),
        ),
        unchanged=("dev",),
        ledger_revisions={"default": 0},
    )
    assert plan.destructive


def test_without_prune_records_in_no_manifest_are_left_alone() -> None:
    want = desired()
    rec, live = converged(want)
    live = live_with(
        databases={"dev_db"}, ledger={"dev": rec, "old-pr": record("old-pr")}, catalogs=[applied_catalog(want)]
    )

    plan = plan_of(live, want)

    assert plan == Plan(created_at=NOW, unchanged=("dev",), ledger_revisions={"default": 0})


def test_protect_blocks_a_prune_delete_unless_forced() -> None:
    want = desired()
    rec, _ = converged(want)
    kept = record("keep-me", protect=True)
    live = live_with(databases={"dev_db"}, ledger={"dev": rec, "keep-me": kept}, catalogs=[applied_catalog(want)])

    plan = plan_of(live, want, options=PlanOptions(prune=True))
    forced = plan_of(live, want, options=PlanOptions(prune=True, force=True))

    assert plan.actions == ()
    assert plan.blocked == (
        Blocked(
            environment="keep-me",
            op="delete",
            reasons=("keep-me is in the ledger but in no loaded manifest (--prune)", "protect: true (use --force)"),
        ),
    )
    assert [(a.op, a.environment) for a in forced.actions] == [("delete", "keep-me")]
    assert forced.blocked == ()


def test_protect_blocks_a_rebuild_unless_forced() -> None:
    before = desired(data="full", protect=True)
    after = desired(data="schema", protect=True)
    rec, live = converged(before)

    plan = plan_of(live, after)
    forced = plan_of(live, after, options=PlanOptions(force=True))

    assert plan == Plan(
        created_at=NOW,
        blocked=(
            Blocked(
                environment="dev", op="rebuild", reasons=('spec.data: "full" → "schema"', "protect: true (use --force)")
            ),
        ),
        ledger_revisions={"default": 0},
    )
    assert forced.actions == (rebuild(after, rec, 'spec.data: "full" → "schema"'),)


def test_a_protected_record_blocks_a_rebuild_even_when_the_manifest_drops_protect() -> None:
    before = desired(data="full", protect=True)
    after = desired(data="schema")
    _, live = converged(before)

    plan = plan_of(live, after)

    assert plan.actions == ()
    assert [(b.environment, b.op) for b in plan.blocked] == [("dev", "rebuild")]


def test_max_deletes_caps_the_deletions_of_one_run() -> None:
    want = desired()
    rec, _ = converged(want)
    stale = {name: record(name) for name in ("pr-1", "pr-2", "pr-3")}
    live = live_with(databases={"dev_db"}, ledger={"dev": rec, **stale}, catalogs=[applied_catalog(want)])

    with pytest.raises(ConflictError, match=r"deletes 3 environments \(pr-1, pr-2, pr-3\), more than --max-deletes 2"):
        plan_of(live, want, options=PlanOptions(prune=True, max_deletes=2))
    allowed = plan_of(live, want, options=PlanOptions(prune=True, max_deletes=3))

    assert [a.environment for a in allowed.actions] == ["pr-1", "pr-2", "pr-3"]


# --- serialization and rendering -------------------------------------------------------------


def mixed_plan() -> Plan:
    """One of each: create, rebuild, update, unchanged, delete (prune) and a blocked delete."""
    source = catalog(
        SRC,
        *demo_catalog().tables.values(),
        view("all_users", "select `src`.`users`.`id` AS `id` from `src`.`users`"),
        view("elsewhere", "select `crm`.`t`.`id` AS `id` from `crm`.`t`"),
    )
    new = desired("a-new", target_db="a_db", source=source)
    changed_before = desired("b-changed", target_db="b_db", source=source)
    changed = desired(
        "b-changed",
        target_db="b_db",
        source=source,
        data="schema",
        relations=[{"from": "orders(user_id)", "to": "users(id)"}],
    )
    relabel_before = desired("c-relabel", target_db="c_db", source=source, labels={"team": "core"})
    relabel = desired("c-relabel", target_db="c_db", source=source, labels={"team": "data"})
    same = desired("d-same", target_db="d_db", source=source)
    records = {
        "b-changed": record(applied=changed_before, target=applied_catalog(changed_before, source)),
        "c-relabel": record(applied=relabel_before, target=applied_catalog(relabel_before, source)),
        "d-same": record(applied=same, target=applied_catalog(same, source)),
        "e-gone": record("e-gone"),
        "f-kept": record("f-kept", protect=True),
    }
    live = live_with(
        databases={"e_gone_db", "f_kept_db"},
        ledger=records,
        catalogs=[applied_catalog(w, source) for w in (changed_before, relabel_before, same)],
        revision=12,
    )
    return plan_of(live, new, changed, relabel, same, options=PlanOptions(prune=True))


def test_the_mixed_plan_has_one_of_each() -> None:
    plan = mixed_plan()

    assert [(a.op, a.environment) for a in plan.actions] == [
        ("create", "a-new"),
        ("rebuild", "b-changed"),
        ("update", "c-relabel"),
        ("delete", "e-gone"),
    ]
    assert plan.unchanged == ("d-same",)
    assert [(b.op, b.environment) for b in plan.blocked] == [("delete", "f-kept")]
    assert plan.ledger_revisions == {"default": 12}


def test_a_plan_survives_a_json_round_trip() -> None:
    plan = mixed_plan()

    assert Plan.model_validate_json(render_json(plan)) == plan


def test_render_text_mentions_every_action_its_reasons_and_the_counts() -> None:
    plan = mixed_plan()

    text = render_text(plan)

    summary = text.splitlines()[0]
    assert summary.startswith("Plan: ")
    for expected in (
        "1 to create",
        "1 to rebuild",
        "0 to refresh",
        "1 to update",
        "1 to delete",
        "1 unchanged",
        "1 blocked",
    ):
        assert re.search(rf"\b{re.escape(expected)}\b", summary), (expected, summary)
    assert "+ create a-new  default:src → default:a_db" in text
    assert "~ rebuild b-changed  default:src → default:b_db" in text
    assert "≈ update c-relabel  default:src → default:c_db" in text
    assert "- delete e-gone  default:e_gone_db" in text
    assert "! delete f-kept blocked" in text
    assert "= unchanged: d-same" in text
    for action in plan.actions:
        for reason in action.reasons:
            assert f"    why: {reason}" in text
    for reason in plan.blocked[0].reasons:
        assert f"    why: {reason}" in text
    assert "    views: all_users" in text
    assert "    skipped view elsewhere: reads database crm outside the copy" in text
    assert "      order_items          ~300  insert_select" in text
    assert "never in a source" in text


def test_render_text_lists_steps_on_request() -> None:
    text = render_text(plan_of(live_with(), desired()), steps=True)

    assert "    steps:\n      1. ledger_begin: mark dev building" in text
    assert "      3. create_table users: from SHOW CREATE TABLE users" in text


def test_an_incremental_refresh_across_servers_is_streamed_then_applied_in_place() -> None:
    """The in-place statements cannot read the source from the target's server: what they need is
    streamed first (the executor's business); the plan keeps the in-place shape and says so."""
    src = catalog(SRC, table("items", ("id", "name", "updated_at")), table("notes", ("id", "body")))
    fields: dict[str, Any] = {
        "refresh": {"every": "1h", "mode": "incremental", "fallback": "full"},
        "rules": {"items": {"watermark": "updated_at"}},
    }
    same = desired(source=src, **fields)
    across = desired(target={"server": "other", "database": "dev_db"}, source=src, **fields)
    rec = record(applied=same, target=src).model_copy(update={"watermarks": {"items": "2024-05-01 10:00:00"}})

    kinds = ["ledger_begin", "refresh_incremental", "ledger_commit"]
    assert [s.kind for s in refresh_steps(same, rec)] == kinds
    assert [s.kind for s in refresh_steps(across, rec)] == kinds
    assert refresh_steps(across, rec)[1].detail.startswith("streamed from server default: the changed rows")
    assert not refresh_steps(same, rec)[1].detail.startswith("streamed")
    # no stored watermark yet (the copy before this one had none): a full rebuild
    unmarked = rec.model_copy(update={"watermarks": {}})
    assert refresh_steps(across, unmarked) == build_steps(across, rebuild=True)
