"""Small typed factories for the unit tests: catalogs, specs, desired environments, ledger rows, live state."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from moenv.models.catalog import Catalog, Column, ForeignKey, Index, Table, TargetShape
from moenv.models.desired import Desired
from moenv.models.ledger import LedgerRecord, LedgerState
from moenv.models.manifest import EnvironmentSpec
from moenv.models.plan import Create, Live, ServerLive
from moenv.planner.build import build_steps
from moenv.resolve import resolve_environment

NOW = datetime(2025, 6, 2, 9, 30, tzinfo=UTC)
SRC = "src"
SERVER = "default"


def column(name: str, type_: str = "int(10) unsigned", *, nullable: bool = False, extra: str = "") -> Column:
    return Column(name=name, type=type_, nullable=nullable, extra=extra)


def fk(
    name: str,
    columns: Sequence[str],
    ref_table: str,
    ref_columns: Sequence[str] = ("id",),
    *,
    ref_database: str = SRC,
) -> ForeignKey:
    return ForeignKey(
        name=name,
        columns=tuple(columns),
        ref_database=ref_database,
        ref_table=ref_table,
        ref_columns=tuple(ref_columns),
    )


def table(
    name: str,
    columns: Sequence[str | Column] = ("id",),
    pk: Sequence[str] = ("id",),
    fks: Sequence[ForeignKey] = (),
    *,
    indexes: Sequence[Index] = (),
    rows: int | None = None,
) -> Table:
    """A base table; plain column names become `int(10) unsigned NOT NULL` columns."""
    cols = tuple(column(c) if isinstance(c, str) else c for c in columns)
    primary = (Index(name="PRIMARY", columns=tuple(pk), unique=True),) if pk else ()
    return Table(
        name=name,
        kind="table",
        columns=cols,
        indexes=primary + tuple(indexes),
        foreign_keys=tuple(fks),
        engine="InnoDB",
        rows_estimate=rows,
    )


def view(name: str, definition: str, *, security: str = "DEFINER") -> Table:
    """A view as the catalog reads it: its SELECT as the server stores it (qualified with the database)."""
    return Table(name=name, kind="view", view_definition=definition, view_security=security)


def catalog(db: str, *tables: Table, server: str = SERVER, exists: bool = True) -> Catalog:
    return Catalog(server=server, database=db, tables={t.name: t for t in tables}, exists=exists)


def demo_catalog(db: str = SRC) -> Catalog:
    """users ← orders ← order_items → products, with row estimates; listed children first on purpose."""
    return catalog(
        db,
        table(
            "order_items",
            ("order_id", "line_no", "product_id", "quantity"),
            pk=("order_id", "line_no"),
            fks=(
                fk("fk_order_items_order", ["order_id"], "orders", ref_database=db),
                fk("fk_order_items_product", ["product_id"], "products", ref_database=db),
            ),
            rows=300,
        ),
        table(
            "orders",
            ("id", "user_id", "total"),
            fks=(fk("fk_orders_user", ["user_id"], "users", ref_database=db),),
            rows=100,
        ),
        table("products", ("id", "sku", "price"), rows=20),
        table("users", ("id", "username", "email"), rows=50),
    )


def manifest_dict(
    name: str = "dev",
    source_db: str = SRC,
    target_db: str = "dev_db",
    *,
    description: str | None = None,
    labels: Mapping[str, str] | None = None,
    source_server: str = SERVER,
    **spec_fields: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if description is not None:
        metadata["description"] = description
    if labels is not None:
        metadata["labels"] = dict(labels)
    return {
        "apiVersion": "moenv/v1",
        "kind": "Environment",
        "metadata": metadata,
        "spec": {
            "source": {"server": source_server, "database": source_db},
            "target": {"database": target_db},
            **spec_fields,
        },
    }


def spec(
    name: str = "dev",
    source_db: str = SRC,
    target_db: str = "dev_db",
    *,
    description: str | None = None,
    labels: Mapping[str, str] | None = None,
    **spec_fields: Any,
) -> EnvironmentSpec:
    """An EnvironmentSpec as the loader would produce it from YAML."""
    return EnvironmentSpec.model_validate(
        manifest_dict(name, source_db, target_db, description=description, labels=labels, **spec_fields)
    )


def desired(
    name: str = "dev",
    source_db: str = SRC,
    target_db: str = "dev_db",
    *,
    source: Catalog | None = None,
    description: str | None = None,
    labels: Mapping[str, str] | None = None,
    **spec_fields: Any,
) -> Desired:
    """The environment resolved against `source` (default: the demo catalog of `source_db`)."""
    return resolve_environment(
        spec(name, source_db, target_db, description=description, labels=labels, **spec_fields),
        source if source is not None else demo_catalog(source_db),
    )


def applied_catalog(want: Desired, source: Catalog | None = None) -> Catalog:
    """The target database as a successful apply of `want` leaves it (same shapes, target names)."""
    src = source if source is not None else demo_catalog(want.source.database)
    tables = {t.target: dataclasses.replace(src.tables[t.source], name=t.target) for t in want.tables}
    tables.update({v.name: view(v.name, v.definition, security=v.security) for v in want.views})
    return Catalog(server=want.target.server, database=want.target.database, tables=tables)


def record(
    name: str = "dev",
    *,
    applied: Desired | None = None,
    target: Catalog | None = None,
    **fields: Any,
) -> LedgerRecord:
    """A ledger row. With `applied`, the row a finished apply of it writes (`target`: the catalog it left)."""
    values: dict[str, Any] = {
        "name": name,
        "target_server": SERVER,
        "target_database": f"{name.replace('-', '_')}_db",
        "source_server": SERVER,
        "source_database": SRC,
        "status": "ready",
        "created_at": NOW.replace(day=1),
        "updated_at": NOW.replace(day=1, hour=10),
        "refreshed_at": NOW.replace(day=1, hour=10),
    }
    if applied is not None:
        values.update(
            name=applied.environment,
            target_server=applied.target.server,
            target_database=applied.target.database,
            source_server=applied.source.server,
            source_database=applied.source.database,
            spec_hash=applied.spec_hash,
            spec=applied.manifest.model_dump(mode="json", by_alias=True),
            source_fingerprint=applied.source_fingerprint,
            target_fingerprint=(target if target is not None else applied_catalog(applied)).fingerprint(),
            protect=applied.manifest.spec.protect,
            tables_total=len(applied.tables),
            tables_done=len(applied.tables),
        )
    values.update(fields)
    return LedgerRecord(**values)


def live_with(
    databases: Iterable[str] = (),
    ledger: Mapping[str, LedgerRecord] | None = None,
    catalogs: Iterable[Catalog] = (),
    *,
    server: str = SERVER,
    revision: int = 0,
    ledger_database: str = "moenv",
) -> Live:
    """One target server holding `databases` (the catalogs' databases are added), with `ledger` records.

    Each target catalog is seen by the planner as its table names and a structure digest; here the
    digest is `Catalog.fingerprint()`, the same value `record()` stores as the applied one.
    """
    shapes = {
        c.database: TargetShape(c.database, {t.name: t.kind for t in c.tables.values()}, c.fingerprint())
        for c in catalogs
    }
    state = LedgerState(server=server, records=dict(ledger or {}), revision=revision, version=1)
    one = ServerLive(server=server, ledger=state, databases=frozenset(databases) | frozenset(shapes), targets=shapes)
    return Live(servers={server: one}, ledger_database=ledger_database)


def create_action(want: Desired) -> Create:
    """The action a plan makes for `want` when it does not exist yet, with its steps."""
    return Create(
        environment=want.environment,
        target_server=want.target.server,
        target_database=want.target.database,
        desired=want,
        reasons=("not created yet",),
        steps=build_steps(want, rebuild=False),
    )
