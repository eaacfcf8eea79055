"""Plans as text (for people) and JSON (for tools); pure, no colour."""

from __future__ import annotations

from moenv.models.plan import Action, Create, Delete, Plan, Rebuild, Refresh, Update

SYMBOL = {"create": "+", "rebuild": "~", "refresh": "↻", "update": "≈", "delete": "-", "cleanup": "×"}
ORDER = ("create", "rebuild", "refresh", "update", "delete", "cleanup")


def render_summary(plan: Plan) -> str:
    counts = {op: sum(1 for a in plan.actions if a.op == op) for op in ORDER}
    parts = [f"{counts[op]} to {op}" for op in ORDER if op != "cleanup" or counts[op]]
    text = f"Plan: {', '.join(parts)}; {len(plan.unchanged)} unchanged"
    if plan.blocked:
        text += f"; {len(plan.blocked)} blocked"
    if plan.errors:
        text += f"; {len(plan.errors)} in error"
    return text + "."


def _rows(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def render_action(action: Action, *, steps: bool = False) -> list[str]:
    head = f"{SYMBOL[action.op]} {action.op} {action.environment}"
    lines: list[str] = []
    if isinstance(action, Create | Rebuild | Refresh | Update):
        want = action.desired
        head += f"  {want.source} → {want.target}"
        lines.append(head)
        lines += [f"    why: {reason}" for reason in action.reasons]
        if not isinstance(action, Update):
            total = sum(t.estimated_rows or 0 for t in want.tables)
            exact = all(t.rows_exact for t in want.tables)
            how = (
                "counted"
                if exact
                else (
                    "estimates; filtered tables counted"
                    if any(t.rows_exact for t in want.tables)
                    else "server estimates"
                )
            )
            mode = (
                "schema only"
                if want.manifest.spec.data == "schema"
                else f"{'' if exact else '~'}{total:,} rows ({how})"
            )
            consistency = want.manifest.spec.consistency
            lines.append(f"    tables: {len(want.tables)}, parents first; {mode}; consistency: {consistency}")
            width = max((len(t.target) for t in want.tables), default=0)
            for table in want.tables:
                name = table.target if table.target == table.source else f"{table.target} (from {table.source})"
                rows = _rows(table.estimated_rows) if table.with_data else "-"
                rows = rows if table.rows_exact or not table.with_data else f"~{rows}"
                lines.append(f"      {name:<{width}}  {rows:>12}  {table.method}")
                if table.where:
                    lines.append(f"        where: {table.where}")
                if table.excluded_columns:
                    lines.append(f"        columns left out: {', '.join(table.excluded_columns)}")
                masked = [c for c, s in zip(table.columns, table.select, strict=True) if s != f"`{c}`"]
                if masked:
                    lines.append(f"        masked: {', '.join(masked)}")
                live_filters = [f.parent for f in table.filters if not f.deferred]
                if live_filters:
                    lines.append(f"        integrity: only rows whose {', '.join(live_filters)} row was copied")
                lines += [f"        note: {note}" for note in table.notes]
            if want.views:
                lines.append(f"    views: {', '.join(v.name for v in want.views)}")
            for view, reason in want.skipped_views:
                lines.append(f"    skipped view {view}: {reason}")
            if want.unmasked_personal:
                lines.append(
                    f"    ! personal data? copied unmasked: {', '.join(want.unmasked_personal)}"
                    " (mask it, or leave it out with exclude_columns)"
                )
    else:
        head += f"  {action.target_server}:{action.target_database}"
        lines.append(head)
        lines += [f"    why: {reason}" for reason in action.reasons]
    if steps:
        lines.append("    steps:")
        lines += [
            f"      {i}. {s.kind}{f' {s.table}' if s.table else ''}: {s.detail}" for i, s in enumerate(action.steps, 1)
        ]
    return lines


def render_text(plan: Plan, *, steps: bool = False) -> str:
    lines = [render_summary(plan)]
    for action in plan.actions:
        lines.append("")
        lines += render_action(action, steps=steps)
    for blocked in plan.blocked:
        lines.append("")
        lines.append(f"! {blocked.op} {blocked.environment} blocked")
        lines += [f"    why: {reason}" for reason in blocked.reasons]
    for error in plan.errors:
        lines.append("")
        what = "could not be planned" if error.op == "plan" else f"{error.op} held back"
        lines.append(f"✗ {error.environment} {what}")
        lines += [f"    {line}" for reason in error.reasons for line in reason.splitlines()]
    if plan.unchanged:
        lines.append("")
        lines.append(f"= unchanged: {', '.join(plan.unchanged)}")
    if any(isinstance(a, Delete | Rebuild | Refresh) for a in plan.actions):
        lines.append("")
        lines.append("This plan replaces or deletes data in the targets named above (never in a source).")
    return "\n".join(lines)


def render_json(plan: Plan) -> str:
    return plan.model_dump_json(indent=2)
