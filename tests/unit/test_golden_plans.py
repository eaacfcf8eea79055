"""Rendered plans pinned as text (tests/golden/*.txt): what a reviewer reads in a pull request.

Each case builds a whole plan from values (no server) and compares `render_text` with its file.
After an intended change of the output, regenerate with `MOENV_UPDATE_GOLDEN=1` and review the
diff of tests/golden/ like any other change.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.unit.builders import NOW, applied_catalog, demo_catalog, desired, live_with, record

from moenv.models.catalog import TargetShape
from moenv.models.desired import Desired
from moenv.models.plan import Live, Plan, PlanOptions
from moenv.planner import build_plan
from moenv.planner.render import render_text

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def subset_create() -> Plan:
    want = desired(
        tables={"related": {"roots": ["users"], "max_depth": 1}},
        rules={
            "users": {"where": "id > 10", "mask": {"email": "moenv.email(email)"}},
            "orders": {"exclude_columns": ["total"]},
        },
    )
    return build_plan({"dev": want}, live_with(), now=NOW, options=PlanOptions())


def rebuild_blocked_and_unchanged() -> Plan:
    old = desired("dev", rules={"users": {"where": "id > 10"}})
    changed = desired("dev", rules={"users": {"where": "id > 20"}})
    kept = desired("qa", target_db="qa_db")
    guarded_old = desired("prod-like", target_db="pl_db", protect=True)
    guarded_new = desired("prod-like", target_db="pl_db", protect=True, data="schema")
    ledger = {
        "dev": record(applied=old),
        "qa": record(applied=kept),
        "prod-like": record(applied=guarded_old),
    }
    live = live_with(ledger=ledger, databases={"dev_db", "qa_db", "pl_db"})
    live = _with_targets(live, old, kept, guarded_old)
    return build_plan({"dev": changed, "qa": kept, "prod-like": guarded_new}, live, now=NOW, options=PlanOptions())


def keep_going_errors() -> Plan:
    free = desired("ok")
    taken = desired("taken", target_db="taken_db")
    live = live_with(databases={"taken_db"})
    return build_plan({"ok": free, "taken": taken}, live, now=NOW, options=PlanOptions(keep_going=True))


def matrixone_steps() -> Plan:
    mo = dataclasses.replace(demo_catalog(), engine="8.0.30-MatrixOne-v4.1.2")
    want = desired(source=mo, rules={"users": {"where": "id > 10"}})
    return build_plan({"dev": want}, live_with(), now=NOW, options=PlanOptions())


def _with_targets(live: Live, *wants: Desired) -> Live:
    """`live` where each environment's target holds what its last apply left (not drifted)."""
    server = live.servers["default"]
    shapes = dict(server.targets)
    for want in wants:
        catalog = applied_catalog(want)
        shapes[want.target.database] = TargetShape(
            want.target.database, {t.name: t.kind for t in catalog.tables.values()}, catalog.fingerprint()
        )
    return dataclasses.replace(live, servers={"default": dataclasses.replace(server, targets=shapes)})


CASES: dict[str, tuple[Callable[[], Plan], bool]] = {
    "subset_create": (subset_create, True),
    "rebuild_blocked_and_unchanged": (rebuild_blocked_and_unchanged, False),
    "keep_going_errors": (keep_going_errors, False),
    "matrixone_steps": (matrixone_steps, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_rendered_plan_reads_as_its_golden_file(case: str) -> None:
    build, steps = CASES[case]
    text = render_text(build(), steps=steps) + "\n"
    path = GOLDEN / f"{case}.txt"
    if os.environ.get("MOENV_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with MOENV_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(encoding="utf-8")
