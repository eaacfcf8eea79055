"""The MoenvError tree; stdlib only, so every layer may import it.

MoenvError(message, hint)
├── ManifestError     fix the file: one or more Problems, each with path, line, field
│   └── ConfigError   fix moenv.yaml / the server URL
├── ConflictError     the world is not as expected: unmanaged target, stale plan, lock held
├── DatabaseError     the server said no: carries the server's error code
└── CloneError        a copy failed: carries the environment and the table
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class MoenvError(Exception):
    """Root of every error moenv raises on purpose; the CLI prints it without a traceback."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file, located as precisely as we know."""

    message: str
    path: Path | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}" if self.line is not None else f"{self.path}"
        field = f"{self.field}: " if self.field else ""
        return f"{where}: {field}{self.message}" if where else f"{field}{self.message}"


class ManifestError(MoenvError):
    """A manifest (or its template, or a SQL fragment in it) is wrong; carries every problem found."""

    def __init__(self, problems: Problem | list[Problem], *, hint: str | None = None) -> None:
        self.problems: tuple[Problem, ...] = (problems,) if isinstance(problems, Problem) else tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems), hint=hint)

    @property
    def path(self) -> Path | None:
        return self.problems[0].path if self.problems else None

    @property
    def line(self) -> int | None:
        return self.problems[0].line if self.problems else None

    @property
    def field(self) -> str | None:
        return self.problems[0].field if self.problems else None


class ConfigError(ManifestError):
    """moenv.yaml, a server URL or a --var is wrong."""


class ConflictError(MoenvError):
    """The servers are not in the state the action needs (unmanaged target, stale plan, lock held)."""


class DatabaseError(MoenvError):
    """A server refused a statement; `code` is the server's error number when it gave one."""

    def __init__(self, message: str, *, code: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class CloneError(MoenvError):
    """Copying an environment (or one of its tables) failed."""

    def __init__(
        self,
        message: str,
        *,
        environment: str | None = None,
        table: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.environment = environment
        self.table = table
