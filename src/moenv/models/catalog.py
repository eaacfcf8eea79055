"""What a server holds (databases, tables, columns, indexes, foreign keys, views), as values; pure."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    default: str | None = None
    extra: str = ""

    @property
    def generated(self) -> bool:
        """Generated columns are computed by the target and must not be inserted into."""
        return "GENERATED" in self.extra.upper()


@dataclass(frozen=True)
class Index:
    name: str
    columns: tuple[str, ...]
    unique: bool = False

    @property
    def primary(self) -> bool:
        return self.name == "PRIMARY"


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    ref_database: str
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    name: str
    kind: Literal["table", "view"] = "table"
    columns: tuple[Column, ...] = ()
    indexes: tuple[Index, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    engine: str | None = None
    rows_estimate: int | None = None
    data_bytes: int | None = None
    view_definition: str | None = None
    view_security: str | None = None

    @property
    def primary_key(self) -> tuple[str, ...]:
        for index in self.indexes:
            if index.primary:
                return index.columns
        return ()

    def column(self, name: str) -> Column | None:
        for column in self.columns:
            if column.name.lower() == name.lower():
                return column
        return None

    def shape(self) -> dict[str, object]:
        """The structure that decides how a copy is built: no row counts, no sizes."""
        return {
            "kind": self.kind,
            "columns": [[c.name, c.type, c.nullable, c.default, c.extra] for c in self.columns],
            "indexes": sorted([[i.name, list(i.columns), i.unique] for i in self.indexes]),
            "foreign_keys": sorted(
                [[f.name, list(f.columns), f.ref_database, f.ref_table, list(f.ref_columns)] for f in self.foreign_keys]
            ),
            "view": self.view_definition,
        }


@dataclass(frozen=True)
class Catalog:
    """One database on one server."""

    server: str
    database: str
    tables: Mapping[str, Table] = field(default_factory=dict)
    exists: bool = True
    engine: str | None = None
    """`SELECT version()` of the server it was read from, when the reader records it (feature gates)."""

    @property
    def base_tables(self) -> list[Table]:
        return [t for t in self.tables.values() if t.kind == "table"]

    @property
    def views(self) -> list[Table]:
        return [t for t in self.tables.values() if t.kind == "view"]

    def fingerprint(self, names: Iterable[str] | None = None) -> str:
        """Hash of the structure of `names` (default: every table and view); rows and sizes excluded."""
        chosen = sorted(self.tables) if names is None else sorted(set(names))
        shapes = {name: self.tables[name].shape() if name in self.tables else None for name in chosen}
        text = json.dumps(shapes, sort_keys=True, default=str)
        return hashlib.sha256(text.replace(f"`{self.database}`.", "`<db>`.").encode()).hexdigest()


@dataclass(frozen=True)
class TargetShape:
    """A target database as the planner checks it for drift: its tables and a digest of their structure."""

    database: str
    tables: Mapping[str, str] = field(default_factory=dict)
    """Name → "table" or "view"."""
    digest: str = ""
