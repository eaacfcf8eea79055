"""An environment resolved against its source catalog: exact tables, order, columns, copy methods; pure."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from moenv.models.manifest import EnvironmentSpec


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Endpoint(_Value):
    """A database on a named server."""

    server: str
    database: str

    def __str__(self) -> str:
        return f"{self.server}:{self.database}"


class ParentFilter(_Value):
    """A reference from a copied table to a copied parent (declared or virtual foreign key).

    With `integrity: strict` a child row is kept only when its referenced parent row was kept
    (or its reference is NULL), so every foreign key in the target resolves.
    """

    name: str
    columns: tuple[str, ...]
    parent: str
    """Target name of the parent table."""
    ref_columns: tuple[str, ...]
    deferred: bool = False
    """True for self-references and edges cut from a cycle: enforced by deleting orphans after the copy."""
    virtual: bool = False


class TableCopy(_Value):
    """How one source table becomes one target table."""

    source: str
    target: str
    columns: tuple[str, ...]
    """Target columns filled by the copy (generated columns are left to the server)."""
    select: tuple[str, ...]
    """SQL expression over the source row for each column, in the same order."""
    where: str | None = None
    with_data: bool = True
    method: Literal["insert_select", "schema_only", "clone_database", "clone_table", "stream"] = "insert_select"
    """How the rows get there; the reason is in `notes` (MatrixOne: engines/plan_methods.py)."""
    parents: tuple[str, ...] = ()
    """Source names of the tables this one references (they are copied first)."""
    filters: tuple[ParentFilter, ...] = ()
    """Integrity filters against the copied parents (strict integrity)."""
    excluded_columns: tuple[str, ...] = ()
    """Source columns left out of the target table."""
    masked: tuple[str, ...] = ()
    """Target columns whose values are computed by a mask."""
    leak_check: bool = True
    """Check after the copy that no masked value equals a source value of its column."""
    row_checked: tuple[str, ...] = ()
    """Masked columns whose leak check compares each row with its own source row (by key), because
    their masks have few possible values (moenv.date_shift, moenv.number, ...)."""
    unique_checks: bool = False
    """Keep unique checks on while filling (masked values may collide; the source's did not)."""
    needs_salt: bool = False
    """A mask or filter uses a moenv.* helper: the session must set @moenv_salt."""
    dropped_foreign_keys: tuple[str, ...] = ()
    """Foreign keys of the source not created in the target (their reason is in `notes`)."""
    notes: tuple[str, ...] = ()
    estimated_rows: int | None = None
    rows_exact: bool = False
    """True when `estimated_rows` was counted with the filters at plan time; else the server's estimate."""
    estimated_bytes: int | None = None
    has_generated: bool = False
    """The table has generated columns (they are computed by the target, not copied)."""
    key: tuple[str, ...] = ()
    """Primary key (or first unique NOT NULL key) columns, for upserts and the deletion anti-join."""
    watermark: str | None = None
    """Column that grows when a row changes (incremental refresh), as in the source."""


class ViewCopy(_Value):
    """A view recreated in the target over the copied tables."""

    name: str
    definition: str
    """The SELECT as the source server stores it (qualified with the source database)."""
    security: str = "DEFINER"


class Desired(_Value):
    """What the target should hold, fully resolved; the planner compares it with the ledger."""

    environment: str
    manifest: EnvironmentSpec
    spec_hash: str
    source: Endpoint
    target: Endpoint
    tables: tuple[TableCopy, ...]
    """Parents before children."""
    views: tuple[ViewCopy, ...] = ()
    skipped_views: tuple[tuple[str, str], ...] = ()
    """(view, reason) for views that cannot be recreated."""
    source_fingerprint: str
    indexes: bool = True
    constraints: bool = True
    source_engine: str | None = None
    """`SELECT version()` of the source server: the copy methods and the plan's steps depend on it."""
    unmasked_personal: tuple[str, ...] = ()
    """`table.column` copied with its source values whose name looks like personal data (resolve/personal.py)."""

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(t.target for t in self.tables) + tuple(v.name for v in self.views)
