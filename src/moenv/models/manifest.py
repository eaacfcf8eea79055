"""The manifest format (apiVersion moenv/v1) as pydantic models; pure values.

Field docstrings become the descriptions of the JSON Schema (`moenv schema`), so they are
written for the people who edit manifests.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# Names moenv puts into SQL are validated here, once, and quoted by the engines.
_NAME = re.compile(r"^[A-Za-z0-9_$][A-Za-z0-9_$\-]{0,63}$")
_ENV_NAME = re.compile(r"^[a-z0-9]([a-z0-9_.\-]{0,126}[a-z0-9])?$")
_RELATION_END = re.compile(r"^\s*([A-Za-z0-9_$]{1,64})\s*\(\s*([A-Za-z0-9_$,\s]+?)\s*\)\s*$")


def parse_duration(text: str) -> timedelta:
    """`90m`, `36h`, `7d`, `2w`, `30s` → timedelta; ValueError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration: use a number and a unit s, m, h, d or w (e.g. 36h, 7d)")
    amount, unit = int(match.group(1)), match.group(2)
    if amount <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return timedelta(**{_UNITS[unit]: amount})


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text.strip()


def check_name(text: str) -> str:
    """A database, table or column name moenv will accept (letters, digits, `_`, `$`, `-`; ≤ 64)."""
    if not _NAME.match(text):
        raise ValueError(
            f"{text!r} is not an accepted name: use letters, digits, '_', '$' or '-' (at most 64 characters)"
        )
    return text


Duration = Annotated[str, AfterValidator(_check_duration)]
Name = Annotated[str, AfterValidator(check_name)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, populate_by_name=True)


class MetadataSpec(_Spec):
    """Who this environment is and what it is for."""

    name: str
    """Unique name of the environment across every loaded manifest (lower case, digits, `-`, `_`, `.`)."""
    description: str | None = None
    """Free text shown by `moenv status` and `moenv show`."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Key/value labels for selection (`-l team=core`) and quotas."""

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid environment name: lower-case letters, digits, '-', '_' and '.', "
                "starting and ending with a letter or digit, at most 128 characters"
            )
        return value


class SourceSpec(_Spec):
    """The database moenv reads from. It is never written to."""

    server: Name = "default"
    """Server name from moenv.yaml (`default` is the server given by MOENV_URL)."""
    database: Name
    """Source database name."""
    snapshot: str | None = None
    """MatrixOne only: an existing snapshot to clone from (point-in-time copy)."""


class TargetSpec(_Spec):
    """The database moenv creates and owns."""

    server: Name | None = None
    """Server name from moenv.yaml; defaults to the source's server."""
    database: Name
    """Target database name. moenv refuses to touch it if it exists and moenv does not own it."""


class RelatedSpec(_Spec):
    """Foreign-key closure: start from root tables and follow references."""

    roots: list[Name] = Field(min_length=1)
    """Tables to start from."""
    max_depth: int = Field(default=1, ge=0, le=32)
    """How many levels of child tables to follow from the roots (parents are always followed)."""


class RelationSpec(_Spec):
    """A foreign key the schema does not declare, written `table(col, ...)`."""

    from_: str = Field(alias="from")
    """Referencing side, e.g. `orders(user_id)`."""
    to: str
    """Referenced side, e.g. `users(id)`."""

    @field_validator("from_", "to")
    @classmethod
    def _relation_end(cls, value: str) -> str:
        if not _RELATION_END.match(value):
            raise ValueError(f"{value!r} must look like table(column) or table(col1, col2)")
        return value


class TablesSpec(_Spec):
    """Which source tables are copied."""

    include: list[str] | None = None
    """Glob patterns matched against the source's table names (default: every table, or with `related`
    only the foreign-key closure; patterns given here are added to it)."""
    exclude: list[str] = Field(default_factory=list)
    """Glob patterns of tables to leave out."""
    related: RelatedSpec | None = None
    """Add the foreign-key closure of these root tables."""


class RuleSpec(_Spec):
    """How one table is copied."""

    where: str | None = None
    """SQL condition on the source table's columns; only matching rows are copied."""
    columns: list[Name] | None = None
    """Copy only these columns (the primary key must be among them)."""
    exclude_columns: list[Name] | None = None
    """Copy every column but these."""
    mask: dict[Name, str | None] = Field(default_factory=dict)
    """Column → SQL expression computed on the source row (null: the column becomes NULL)."""
    rename: Name | None = None
    """Name of the table in the target (default: the source name)."""
    watermark: Name | None = None
    """Column that grows when a row changes (e.g. updated_at), for incremental refresh."""
    leak_check: bool = True
    """After the copy, fail when a masked value still equals a source value of its column. Turn it
    off only for masks that transform rather than anonymize (e.g. renaming a status)."""

    @model_validator(mode="after")
    def _one_column_list(self) -> RuleSpec:
        if self.columns is not None and self.exclude_columns is not None:
            raise ValueError("give either columns or exclude_columns, not both")
        return self


class RefreshSpec(_Spec):
    """When and how the environment is refreshed from its source."""

    every: Duration
    """Refresh when this long has passed since the last one (e.g. 24h)."""
    mode: Literal["full", "incremental"] = "full"
    """full: rebuild and swap in; incremental: copy changed rows by watermark."""
    fallback: Literal["refuse", "full"] = "refuse"
    """incremental only: a table without a watermark (or a key) is refused, or copied in full each time."""


class VerifySpec(_Spec):
    """Extra checks after each apply."""

    content: bool = False
    """Compare row counts (and checksums of unfiltered, unmasked tables) with the source."""


class BudgetSpec(_Spec):
    """Limits the plan must respect."""

    max_rows: int | None = Field(default=None, ge=0)
    """Refuse a plan whose copy would hold more rows than this."""


class CloneSpec(_Spec):
    """What to copy, where, and how long to keep it."""

    source: SourceSpec
    target: TargetSpec
    data: Literal["full", "schema"] = "full"
    """full: tables with their rows; schema: structure only."""
    tables: TablesSpec = Field(default_factory=TablesSpec)
    relations: list[RelationSpec] = Field(default_factory=list)
    """Foreign keys the source schema does not declare."""
    rules: dict[Name, RuleSpec] = Field(default_factory=dict)
    """Per source table: filters, column subsets, masks, rename."""
    integrity: Literal["strict", "loose"] = "strict"
    """strict: keep only child rows whose parents were kept; loose: copy children as filtered."""
    indexes: bool = True
    """Create the source's secondary indexes in the target."""
    constraints: bool = True
    """Create foreign keys and checks in the target."""
    grants: bool = False
    """Copy table-level grants."""
    ttl: Duration | None = None
    """The environment expires this long after it was created (e.g. 7d)."""
    refresh: RefreshSpec | None = None
    protect: bool = False
    """Never deleted or rebuilt by moenv without --force."""
    consistency: Literal["table", "snapshot"] = "table"
    """table: each table read at its own moment; snapshot: all tables at one point in time."""
    verify: VerifySpec = Field(default_factory=VerifySpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)

    @property
    def target_server(self) -> str:
        return self.target.server or self.source.server


# Fields whose change alters what the target holds; the rest is bookkeeping (ttl, protect, ...).
CONTENT_FIELDS = (
    "source",
    "target",
    "data",
    "tables",
    "relations",
    "rules",
    "integrity",
    "indexes",
    "constraints",
    "grants",
    "consistency",
)


class EnvironmentSpec(_Spec):
    """One clone environment (one YAML document)."""

    api_version: Literal["moenv/v1"] = Field(alias="apiVersion")
    """Always moenv/v1."""
    kind: Literal["Environment"]
    """Always Environment."""
    metadata: MetadataSpec
    spec: CloneSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    def content(self) -> dict[str, Any]:
        """The fields that decide what the target holds, as plain JSON values."""
        dumped = self.spec.model_dump(mode="json", by_alias=True)
        return {key: dumped[key] for key in CONTENT_FIELDS}

    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.content(), sort_keys=True).encode()).hexdigest()
