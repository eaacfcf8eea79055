"""The Reporter protocol: how the executor tells its caller what happens (the CLI draws it)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from moenv.models.plan import Action, Step


class Reporter(Protocol):
    def action_started(self, action: Action) -> None: ...

    def step_started(self, action: Action, step: Step) -> None: ...

    def rows_copied(self, action: Action, rows: int) -> None:
        """While a cross-server copy streams: the environment's rows copied so far (finished tables
        and those in flight), about twice a second."""
        ...

    def step_finished(self, action: Action, step: Step, *, rows: int | None, seconds: float) -> None: ...

    def action_finished(self, action: Action, *, error: str | None, seconds: float) -> None: ...


class SilentReporter:
    """Reports nothing."""

    def action_started(self, action: Action) -> None:
        pass

    def step_started(self, action: Action, step: Step) -> None:
        pass

    def rows_copied(self, action: Action, rows: int) -> None:
        pass

    def step_finished(self, action: Action, step: Step, *, rows: int | None, seconds: float) -> None:
        pass

    def action_finished(self, action: Action, *, error: str | None, seconds: float) -> None:
        pass


@dataclass
class RecordingReporter:
    """Keeps every report, for tests and for the Python API's results."""

    events: list[tuple[str, str, str | None]] = field(default_factory=list)

    def action_started(self, action: Action) -> None:
        self.events.append(("started", action.environment, action.op))

    def step_started(self, action: Action, step: Step) -> None:
        pass  # the finished step is recorded, with its rows

    def rows_copied(self, action: Action, rows: int) -> None:
        pass

    def step_finished(self, action: Action, step: Step, *, rows: int | None, seconds: float) -> None:
        self.events.append(("step", action.environment, f"{step.kind}:{step.table or ''}:{rows}"))

    def action_finished(self, action: Action, *, error: str | None, seconds: float) -> None:
        self.events.append(("finished", action.environment, error))


class LockedReporter:
    """Passes every report on to `inner`, one at a time: environments applied at once share it."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self._lock = threading.Lock()

    def action_started(self, action: Action) -> None:
        with self._lock:
            self.inner.action_started(action)

    def step_started(self, action: Action, step: Step) -> None:
        with self._lock:
            self.inner.step_started(action, step)

    def rows_copied(self, action: Action, rows: int) -> None:
        with self._lock:
            self.inner.rows_copied(action, rows)

    def step_finished(self, action: Action, step: Step, *, rows: int | None, seconds: float) -> None:
        with self._lock:
            self.inner.step_finished(action, step, rows=rows, seconds=seconds)

    def action_finished(self, action: Action, *, error: str | None, seconds: float) -> None:
        with self._lock:
            self.inner.action_finished(action, error=error, seconds=seconds)
