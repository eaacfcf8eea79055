"""cli/output.py's reporters: the live display on a terminal, plain lines elsewhere (no server needed)."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from tests.unit.builders import create_action, desired

from moenv.cli.output import LiveReporter, TerminalReporter, progress_reporter

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_the_live_display_shows_the_running_step_and_rows_then_leaves_the_plain_lines() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    action = create_action(desired())
    copy = next(s for s in action.steps if s.kind == "copy_rows" and s.table == "orders")
    swap = next(s for s in action.steps if s.kind == "swap")
    total = sum(t.estimated_rows or 0 for t in action.desired.tables)

    with LiveReporter(console) as reporter:
        reporter.action_started(action)
        reporter.step_started(action, copy)
        [task] = reporter.progress.tasks
        assert task.description == "create: copying orders"
        assert (task.fields["environment"], task.total, task.completed) == ("dev", total, 0)
        reporter.progress.refresh()
        reporter.step_finished(action, copy, rows=100, seconds=0.5)
        assert reporter.progress.tasks[0].completed == 100
        reporter.progress.refresh()
        reporter.step_started(action, swap)
        assert reporter.progress.tasks[0].description == "create: publishing"
        reporter.step_finished(action, swap, rows=None, seconds=0.1)
        reporter.action_finished(action, error=None, seconds=1.2)
        assert reporter.progress.tasks == []

    text = ANSI.sub("", screen.getvalue())
    assert "copying orders" in text  # drawn while it ran
    assert f"100/~{total:,} rows" in text
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    assert "create dev …" in lines
    assert "copied orders: 100 rows in 0.50s" in lines
    assert "create dev: done in 1.2s" in lines


def test_a_failed_environment_says_so_and_leaves_the_display(capsys: pytest.CaptureFixture[str]) -> None:
    screen = io.StringIO()
    action = create_action(desired())
    with LiveReporter(Console(file=screen, force_terminal=True, width=100)) as reporter:
        reporter.action_started(action)
        reporter.action_finished(action, error="boom", seconds=0.3)
        assert reporter.progress.tasks == []
    assert "create dev: FAILED after 0.3s" in ANSI.sub("", screen.getvalue())


def test_without_a_terminal_the_reporter_prints_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert type(progress_reporter(tagged=False)) is TerminalReporter
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert type(progress_reporter(tagged=True)) is TerminalReporter


def test_a_streams_running_count_moves_the_bar_and_never_counts_a_finished_table_twice() -> None:
    action = create_action(desired())
    copy = next(s for s in action.steps if s.kind == "copy_rows" and s.table == "orders")
    with LiveReporter(Console(file=io.StringIO(), force_terminal=True, width=100)) as reporter:
        reporter.action_started(action)
        reporter.rows_copied(action, 40)  # in flight
        assert reporter.progress.tasks[0].completed == 40
        reporter.step_finished(action, copy, rows=100, seconds=0.5)  # the table done: 100 in all
        assert reporter.progress.tasks[0].completed == 100
        reporter.rows_copied(action, 100)  # the stream's count includes that table: not added again
        assert reporter.progress.tasks[0].completed == 100
        reporter.rows_copied(action, 160)
        assert reporter.progress.tasks[0].completed == 160
        reporter.action_finished(action, error=None, seconds=1.0)
