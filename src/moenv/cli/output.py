"""Terminal output: the Reporter that prints progress, and status / history tables."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from moenv.api import EnvironmentDetail, ServerRoles, Status
from moenv.live.check import Finding
from moenv.models.ledger import Event
from moenv.models.plan import Action, Step


def _age(delta_seconds: float) -> str:
    seconds = int(abs(delta_seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


_DOING = {
    "ledger_begin": "starting",
    "prepare_staging": "preparing",
    "create_table": "creating {table}",
    "copy_rows": "copying {table}",
    "delete_orphans": "removing rows whose parent was not copied",
    "check_leaks": "checking the masks of {table}",
    "swap": "publishing",
    "create_view": "recreating view {table}",
    "drop_leftovers": "cleaning up",
    "drop_old_target": "dropping the previous target",
    "refresh_incremental": "refreshing in place",
    "drop_target": "dropping the target",
    "ledger_commit": "recording",
}


class TerminalReporter:
    """One line per finished step on stderr (quiet for bookkeeping steps): for logs and pipes.

    tagged: environments are applied at once, so every step line names its environment.
    """

    def __init__(self, *, tagged: bool = False) -> None:
        self.stream = sys.stderr
        self.tagged = tagged

    def __enter__(self) -> TerminalReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def echo(self, text: str) -> None:
        click.echo(text, err=True)

    def _indent(self, action: Action) -> str:
        return f"  [{action.environment}] " if self.tagged else "  "

    def action_started(self, action: Action) -> None:
        self.echo(f"{action.op} {action.environment} …")

    def step_started(self, action: Action, step: Step) -> None:
        pass

    def rows_copied(self, action: Action, rows: int) -> None:
        pass  # logs get a line per finished table

    def step_finished(self, action: Action, step: Step, *, rows: int | None, seconds: float) -> None:
        if step.kind == "copy_rows":
            self.echo(f"{self._indent(action)}copied {step.table}: {rows or 0:,} rows in {seconds:.2f}s")
        elif step.kind in {"swap", "drop_target"}:
            self.echo(f"{self._indent(action)}{step.detail} ({seconds:.2f}s)")

    def action_finished(self, action: Action, *, error: str | None, seconds: float) -> None:
        if error is None:
            self.echo(f"{action.op} {action.environment}: done in {seconds:.1f}s")
        else:
            self.echo(f"{action.op} {action.environment}: FAILED after {seconds:.1f}s")


class _RowsColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        if not task.total:
            return Text("")
        return Text(f"{int(task.completed):,}/~{int(task.total):,} rows", style="progress.download")


class LiveReporter(TerminalReporter):
    """On a terminal: a live line per running environment (spinner, current step, rows copied of
    the plan's estimate, elapsed time) above which the same lines as TerminalReporter scroll."""

    def __init__(self, console: Console | None = None, *, tagged: bool = False) -> None:
        super().__init__(tagged=tagged)
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[environment]}"),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            _RowsColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.tasks: dict[str, TaskID] = {}
        self.finished: dict[str, int] = {}  # rows of the finished copy steps, per environment
        self.streamed: dict[str, int] = {}  # the running count of a cross-server stream

    def __enter__(self) -> LiveReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def echo(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def action_started(self, action: Action) -> None:
        super().action_started(action)
        desired = getattr(action, "desired", None)
        total = sum(t.estimated_rows or 0 for t in desired.tables if t.with_data) if desired is not None else 0
        self.tasks[action.environment] = self.progress.add_task(
            action.op, total=total or None, environment=action.environment
        )

    def step_started(self, action: Action, step: Step) -> None:
        task = self.tasks.get(action.environment)
        if task is not None:
            doing = _DOING.get(step.kind, step.kind.replace("_", " ")).format(table=step.table or "")
            self.progress.update(task, description=f"{action.op}: {doing}")

    def rows_copied(self, action: Action, rows: int) -> None:
        """A stream's running count (finished tables and those in flight): never below what the
        finished steps reported."""
        task = self.tasks.get(action.environment)
        if task is not None:
            self.streamed[action.environment] = max(self.streamed.get(action.environment, 0), rows)
            self._show(action.environment, task)

    def step_finished(self, action: Action, step: Step, *, rows: int | None, seconds: float) -> None:
        super().step_finished(action, step, rows=rows, seconds=seconds)
        task = self.tasks.get(action.environment)
        if task is not None and step.kind == "copy_rows" and rows:
            self.finished[action.environment] = self.finished.get(action.environment, 0) + rows
            self._show(action.environment, task)

    def _show(self, environment: str, task: TaskID) -> None:
        done = max(self.finished.get(environment, 0), self.streamed.get(environment, 0))
        self.progress.update(task, completed=done)

    def action_finished(self, action: Action, *, error: str | None, seconds: float) -> None:
        task = self.tasks.pop(action.environment, None)
        if task is not None:
            self.progress.remove_task(task)
        super().action_finished(action, error=error, seconds=seconds)


def progress_reporter(*, tagged: bool) -> TerminalReporter:
    """LiveReporter on an interactive terminal, else one line per step (CI logs, pipes, TERM=dumb)."""
    if sys.stderr.isatty() and os.environ.get("TERM", "") != "dumb":
        return LiveReporter(tagged=tagged)
    return TerminalReporter(tagged=tagged)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def render_status(status: Status, now: datetime) -> str:
    rows = []
    for r in status.records:
        progress: str = r.status
        if r.status == "building" and r.tables_total:
            progress = f"building {100 * r.tables_done // r.tables_total}% ({r.tables_done}/{r.tables_total})"
        expires = (
            "-"
            if r.expires_at is None
            else ("expired" if r.expires_at <= now else "in " + _age((r.expires_at - now).total_seconds()))
        )
        rows.append(
            [
                r.name,
                f"{r.target_server}:{r.target_database}",
                f"{r.source_server}:{r.source_database}",
                str(r.spec.get("spec", {}).get("data", "full")),
                str(len(r.stats) or r.tables_total),
                f"{r.rows_copied:,}",
                _age((now - r.created_at).total_seconds()),
                expires,
                progress + (" (protected)" if r.protect else ""),
            ]
        )
    text = _table(["NAME", "TARGET", "SOURCE", "DATA", "TABLES", "ROWS", "AGE", "EXPIRES", "STATUS"], rows)
    if not status.records:
        text = "No environments."
    for server, message in status.unreachable.items():
        text += f"\nwarning: server {server} unreachable: {message}"
    return text


def status_json(status: Status) -> dict[str, Any]:
    return {
        "environments": [r.model_dump(mode="json", exclude={"spec"}) for r in status.records],
        "unreachable": status.unreachable,
    }


def render_events(events: list[Event]) -> str:
    if not events:
        return "No events."
    rows = [
        [
            f"{e.at:%Y-%m-%d %H:%M:%S}",
            e.environment,
            e.action,
            e.result,
            e.actor,
            "" if e.rows is None else f"{e.rows:,}",
            "" if e.duration_ms is None else f"{e.duration_ms / 1000:.1f}s",
            (e.message or "")[:80],
        ]
        for e in events
    ]
    return _table(["WHEN (UTC)", "ENVIRONMENT", "ACTION", "RESULT", "WHO", "ROWS", "TOOK", "MESSAGE"], rows)


def render_show(detail: EnvironmentDetail, now: datetime) -> str:
    r = detail.record
    spec = r.spec.get("spec", {}) if r.spec else {}
    lines = [
        f"environment  {r.name}  ({r.status}{', protected' if r.protect else ''})",
        f"description  {r.spec.get('metadata', {}).get('description') or '-'}",
        f"source       {r.source_server}:{r.source_database}",
        f"target       {r.target_server}:{r.target_database}",
        f"data         {spec.get('data', 'full')}",
        f"created      {r.created_at:%Y-%m-%d %H:%M:%S} UTC ({_age((now - r.created_at).total_seconds())} ago)",
        f"refreshed    {f'{r.refreshed_at:%Y-%m-%d %H:%M:%S} UTC' if r.refreshed_at else '-'}",
        f"expires      {f'{r.expires_at:%Y-%m-%d %H:%M:%S} UTC' if r.expires_at else '-'}",
        f"rows copied  {r.rows_copied:,}",
    ]
    if r.message:
        lines.append(f"message      {r.message}")
    rows = [
        [
            t.name,
            t.kind,
            "-" if t.rows is None else f"{t.rows:,}",
            "-" if t.bytes is None else f"{t.bytes / 1048576:.2f}",
            str(t.indexes),
            t.method,
            "-" if t.seconds is None else f"{t.seconds:.2f}s",
        ]
        for t in detail.tables
    ]
    total = sum(t.bytes or 0 for t in detail.tables)
    lines += ["", _table(["TABLE", "KIND", "ROWS (est.)", "SIZE MB", "INDEXES", "METHOD", "TOOK"], rows)]
    lines.append(f"total size {total / 1048576:.2f} MB, {sum(t.indexes for t in detail.tables)} indexes")
    return "\n".join(lines)


def show_json(detail: EnvironmentDetail) -> dict[str, Any]:
    return {
        "environment": detail.record.model_dump(mode="json"),
        "tables": [vars(t) for t in detail.tables],
    }


_MARK = {"ok": "✓", "warning": "!", "failure": "✗"}


def _roles_text(role: ServerRoles) -> str:
    parts = []
    if role.sources:
        parts.append("source: " + ", ".join(sorted(role.sources)))
    if role.targets:
        parts.append("target of: " + ", ".join(sorted(role.targets)))
    return "; ".join(parts) or "configured"


def _finding_lines(findings: list[Finding]) -> list[str]:
    width = max((len(f.check) for f in findings), default=0)
    lines: list[str] = []
    for finding in findings:
        lines.append(f"  {_MARK[finding.level]} {finding.check.ljust(width)}  {finding.detail}".rstrip())
        if finding.hint and finding.level != "ok":
            lines.append(f"    {' ' * width}  → {finding.hint}")
    return lines


def render_check(roles: dict[str, ServerRoles], findings: list[Finding]) -> str:
    lines: list[str] = []
    for server in sorted(roles):
        lines.append(f"server {server}  ({_roles_text(roles[server])})")
        lines += [*_finding_lines([f for f in findings if f.server == server]), ""]
    planned = [f for f in findings if f.server == ""]
    if planned:
        lines.append("environments  (as `moenv plan --keep-going` sees them)")
        lines += [*_finding_lines(planned), ""]
    counts = {level: sum(1 for f in findings if f.level == level) for level in _MARK}
    lines.append(
        f"Checked {len(roles)} server(s): {counts['ok']} ok, {counts['warning']} warning(s),"
        f" {counts['failure']} failure(s)."
    )
    return "\n".join(lines)


def check_json(roles: dict[str, ServerRoles], findings: list[Finding]) -> dict[str, Any]:
    return {
        "servers": {
            name: {
                "sources": sorted(role.sources),
                "targets": sorted(role.targets),
                "findings": [
                    {"check": f.check, "level": f.level, "detail": f.detail, "hint": f.hint}
                    for f in findings
                    if f.server == name
                ],
            }
            for name, role in sorted(roles.items())
        },
        "environments": [
            {"environment": f.check, "level": f.level, "detail": f.detail, "hint": f.hint}
            for f in findings
            if f.server == ""
        ],
        "ok": not any(f.level == "failure" for f in findings),
    }
