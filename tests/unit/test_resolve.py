"""moenv.resolve.resolve_environment: table set, parent-first order, dropped foreign keys, columns, views."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from tests.unit.builders import NOW, SRC, catalog, column, demo_catalog, desired, fk, spec, table, view

from moenv.errors import ManifestError
from moenv.manifest.loader import load_manifests
from moenv.models.catalog import Catalog, Column
from moenv.models.desired import Desired, Endpoint, ParentFilter, TableCopy, ViewCopy
from moenv.resolve import resolve_environment


def names(want: Desired) -> list[str]:
    return [t.source for t in want.tables]


def copy_of(want: Desired, name: str) -> TableCopy:
    (found,) = [t for t in want.tables if t.source == name]
    return found


# --- table selection -----------------------------------------------------------------------


def test_include_and_exclude_globs() -> None:
    source = catalog(
        SRC,
        table("users"),
        table("orders"),
        table("temp_import"),
        table("temp_2024"),
        table("audit_log"),
        table("audit_log_archive"),
    )

    want = desired(source=source, tables={"include": ["*"], "exclude": ["temp_*", "audit_log"]})

    assert sorted(names(want)) == ["audit_log_archive", "orders", "users"]


def test_include_patterns_are_unioned() -> None:
    source = catalog(SRC, table("users"), table("user_roles"), table("orders"), table("products"))

    want = desired(source=source, tables={"include": ["user*", "orders", "user_roles"]})

    assert sorted(names(want)) == ["orders", "user_roles", "users"]


def test_an_include_matching_nothing_names_the_pattern() -> None:
    source = catalog(SRC, table("users"))

    with pytest.raises(ManifestError) as caught:
        desired(source=source, tables={"include": ["users", "custmers*"]})

    (problem,) = caught.value.problems
    assert "'custmers*' matches no table in src" in problem.message
    assert problem.field is not None
    assert problem.field.startswith("spec.tables.include")


def test_an_include_matching_nothing_is_located_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dev.yaml"
    path.write_text(
        "apiVersion: moenv/v1\nkind: Environment\nmetadata:\n  name: dev\nspec:\n"
        "  source: {database: src}\n  target: {database: dev_db}\n"
        "  tables:\n    include:\n      - users\n      - custmers\n",
        encoding="utf-8",
    )
    (loaded,) = load_manifests([path], env={}, now=NOW)

    with pytest.raises(ManifestError) as caught:
        resolve_environment(loaded.spec, catalog(SRC, table("users")), problem=loaded.problem)

    (problem,) = caught.value.problems
    assert (problem.path, problem.line, problem.field) == (path, 11, "spec.tables.include[1]")


def test_every_unmatched_include_is_reported_at_once() -> None:
    with pytest.raises(ManifestError) as caught:
        desired(source=catalog(SRC, table("users")), tables={"include": ["a*", "users", "b*"]})

    assert [p.message for p in caught.value.problems] == [
        "'a*' matches no table in src",
        "'b*' matches no table in src",
    ]


def test_a_missing_source_database_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError) as caught:
        desired(source=catalog(SRC, exists=False))

    (problem,) = caught.value.problems
    assert problem.field == "spec.source.database"
    assert problem.message == "source database 'src' does not exist on server 'default'"


# --- order and foreign keys ----------------------------------------------------------------


def test_parents_come_first_over_a_three_level_chain() -> None:
    source = catalog(
        SRC,
        table("a_items", ("id", "order_id"), fks=(fk("fk_items_order", ["order_id"], "b_orders"),)),
        table("b_orders", ("id", "client_id"), fks=(fk("fk_orders_client", ["client_id"], "c_clients"),)),
        table("c_clients"),
    )

    want = desired(source=source)

    assert names(want) == ["c_clients", "b_orders", "a_items"]
    assert [t.parents for t in want.tables] == [(), ("c_clients",), ("b_orders",)]
    assert all(t.dropped_foreign_keys == () for t in want.tables)


def test_demo_schema_order() -> None:
    want = desired()

    assert names(want) == ["users", "orders", "products", "order_items"]
    assert copy_of(want, "order_items").parents == ("orders", "products")


def test_a_self_reference_is_kept_and_is_not_a_parent() -> None:
    source = catalog(
        SRC,
        table("categories", ("id", "parent_id"), fks=(fk("fk_categories_parent", ["parent_id"], "categories"),)),
    )

    (copy,) = desired(source=source).tables

    assert copy.source == "categories"
    assert copy.parents == ()
    assert copy.dropped_foreign_keys == ()
    assert copy.filters == (
        ParentFilter(
            name="fk_categories_parent", columns=("parent_id",), parent="categories", ref_columns=("id",), deferred=True
        ),
    )


def test_a_two_table_cycle_terminates_with_each_table_once() -> None:
    source = catalog(
        SRC,
        table("a", ("id", "b_id"), fks=(fk("fk_a_b", ["b_id"], "b"),)),
        table("b", ("id", "a_id"), fks=(fk("fk_b_a", ["a_id"], "a"),)),
        table("c", ("id", "a_id"), fks=(fk("fk_c_a", ["a_id"], "a"),)),
    )

    want = desired(source=source)

    assert sorted(names(want)) == ["a", "b", "c"]
    assert len(want.tables) == 3
    assert names(want).index("a") < names(want).index("c")
    assert copy_of(want, "a").parents == ("b",)
    assert copy_of(want, "b").parents == ("a",)
    deferred = [(t.source, f.parent) for t in want.tables for f in t.filters if f.deferred]
    # exactly the edge that closes the cycle is enforced after the copy: its child is copied before its parent
    assert len(deferred) == 1
    ((child, parent),) = deferred
    assert names(want).index(child) < names(want).index(parent)
    assert [(t.source, f.parent) for t in want.tables for f in t.filters if not f.deferred] == [
        (parent, child),
        ("c", "a"),
    ]


def test_a_foreign_key_to_a_table_not_copied_is_dropped_with_a_note() -> None:
    want = desired(tables={"exclude": ["users"]})

    orders = copy_of(want, "orders")
    assert orders.parents == ()
    assert orders.dropped_foreign_keys == ("fk_orders_user",)
    assert orders.filters == ()
    assert orders.notes == ("foreign key fk_orders_user references users, which is not copied: dropped",)
    assert copy_of(want, "order_items").dropped_foreign_keys == ()


def test_a_foreign_key_to_another_database_is_dropped_with_a_note() -> None:
    source = catalog(
        SRC,
        table("accounts"),
        table(
            "orders",
            ("id", "account_id", "crm_account_id"),
            fks=(
                fk("fk_orders_account", ["account_id"], "accounts"),
                fk("fk_orders_crm", ["crm_account_id"], "accounts", ref_database="crm"),
            ),
        ),
    )

    orders = copy_of(desired(source=source), "orders")

    assert orders.parents == ("accounts",)
    assert orders.dropped_foreign_keys == ("fk_orders_crm",)
    assert orders.notes == ("foreign key fk_orders_crm points outside the source (crm.accounts): dropped",)
    assert [f.name for f in orders.filters] == ["fk_orders_account"]


def test_without_constraints_no_foreign_key_is_listed_as_dropped() -> None:
    want = desired(tables={"exclude": ["users"]}, constraints=False)

    assert copy_of(want, "orders").dropped_foreign_keys == ()
    assert want.constraints is False


# --- columns -------------------------------------------------------------------------------


def test_generated_columns_are_left_out() -> None:
    source = catalog(
        SRC,
        table(
            "order_items",
            (
                "id",
                column("qty", "int(11)"),
                column("price", "decimal(10,2)"),
                column("total", "decimal(12,2)", nullable=True, extra="VIRTUAL GENERATED"),
                column("total_stored", "decimal(12,2)", nullable=True, extra="STORED GENERATED"),
                column("note", "varchar(20)", nullable=True, extra=""),
            ),
        ),
    )

    (copy,) = desired(source=source).tables

    assert copy.columns == ("id", "qty", "price", "note")
    assert copy.select == ("`id`", "`qty`", "`price`", "`note`")


def test_column_names_are_quoted_in_the_select() -> None:
    source = catalog(SRC, table("t", ("id", Column(name="odd`name", type="int"))))

    (copy,) = desired(source=source).tables

    assert copy.select == ("`id`", "`odd``name`")


def test_a_full_copy() -> None:
    want = desired()

    assert copy_of(want, "orders") == TableCopy(
        source="orders",
        target="orders",
        columns=("id", "user_id", "total"),
        select=("`id`", "`user_id`", "`total`"),
        with_data=True,
        method="insert_select",
        parents=("users",),
        filters=(ParentFilter(name="fk_orders_user", columns=("user_id",), parent="users", ref_columns=("id",)),),
        estimated_rows=100,
        estimated_bytes=copy_of(want, "orders").estimated_bytes,
        key=("id",),
    )
    assert want.source == Endpoint(server="default", database="src")
    assert want.target == Endpoint(server="default", database="dev_db")
    assert want.spec_hash == spec().content_hash()


def test_data_schema_copies_no_rows() -> None:
    want = desired(data="schema")

    assert {(t.with_data, t.method, t.estimated_rows) for t in want.tables} == {(False, "schema_only", 0)}


def with_column(source: Catalog, name: str, extra: Column) -> Catalog:
    """`source` with one more column in table `name`."""
    tables = dict(source.tables)
    tables[name] = dataclasses.replace(tables[name], columns=(*tables[name].columns, extra))
    return dataclasses.replace(source, tables=tables)


def test_the_source_fingerprint_covers_only_the_copied_tables() -> None:
    subset = {"exclude": ["products", "order_items"]}
    base = desired(tables=subset).source_fingerprint

    outside = desired(source=with_column(demo_catalog(), "products", column("weight", "float")), tables=subset)
    inside = desired(source=with_column(demo_catalog(), "users", column("phone", "varchar(32)")), tables=subset)

    assert outside.source_fingerprint == base
    assert inside.source_fingerprint != base


# --- views ---------------------------------------------------------------------------------

ORDER_TOTALS = (
    "select `u`.`id` AS `user_id`,`u`.`username` AS `username`,count(`o`.`id`) AS `order_count`,"
    "sum(`o`.`total`) AS `total_spent` from (`src`.`orders` `o` join `src`.`users` `u` "
    "on(`u`.`id` = `o`.`user_id`)) group by `u`.`id`,`u`.`username`"
)
ACTIVE_USERS = "select `src`.`users`.`id` AS `id`,`src`.`users`.`username` AS `username` from `src`.`users`"


def test_a_view_over_copied_tables_is_recreated() -> None:
    source = catalog(SRC, *demo_catalog().tables.values(), view("order_totals", ORDER_TOTALS, security="INVOKER"))

    want = desired(source=source)

    assert want.views == (ViewCopy(name="order_totals", definition=ORDER_TOTALS, security="INVOKER"),)
    assert want.skipped_views == ()
    assert "order_totals" not in names(want)
    assert want.table_names == ("users", "orders", "products", "order_items", "order_totals")


def test_a_view_over_an_excluded_table_is_skipped_with_a_reason() -> None:
    source = catalog(
        SRC,
        *demo_catalog().tables.values(),
        view("order_totals", ORDER_TOTALS),
        view("active_users", ACTIVE_USERS),
    )

    want = desired(source=source, tables={"exclude": ["users"]})

    assert want.views == ()
    assert want.skipped_views == (
        ("active_users", "reads users, which is not copied"),
        ("order_totals", "reads users, which is not copied"),
    )


def test_a_view_reading_another_database_is_skipped_with_a_reason() -> None:
    crm = (
        "select `src`.`users`.`id` AS `id`,`crm`.`accounts`.`tier` AS `tier` from (`src`.`users` join `crm`.`accounts`"
        " on(`crm`.`accounts`.`user_id` = `src`.`users`.`id`))"
    )
    source = catalog(SRC, *demo_catalog().tables.values(), view("user_tiers", crm))

    want = desired(source=source)

    assert want.views == ()
    assert want.skipped_views == (("user_tiers", "reads database crm outside the copy"),)


def test_a_view_over_another_view_is_ordered_after_it() -> None:
    top = (
        "select `src`.`order_totals`.`user_id` AS `user_id` from `src`.`order_totals`"
        " where `src`.`order_totals`.`total_spent` > 100"
    )
    source = catalog(
        SRC, *demo_catalog().tables.values(), view("a_big_spenders", top), view("order_totals", ORDER_TOTALS)
    )

    want = desired(source=source)

    assert [v.name for v in want.views] == ["order_totals", "a_big_spenders"]
    assert want.skipped_views == ()


def test_a_view_over_a_skipped_view_is_skipped_too() -> None:
    top = "select `src`.`order_totals`.`user_id` AS `user_id` from `src`.`order_totals`"
    source = catalog(
        SRC, *demo_catalog().tables.values(), view("a_big_spenders", top), view("order_totals", ORDER_TOTALS)
    )

    want = desired(source=source, tables={"exclude": ["orders", "order_items"]})

    assert want.views == ()
    assert dict(want.skipped_views) == {
        "order_totals": "reads orders, which is not copied",
        "a_big_spenders": "reads order_totals, which is not copied",
    }


def test_an_unparsable_view_is_skipped_with_a_reason() -> None:
    source = catalog(SRC, table("users"), view("weird", "select from where ((("))

    want = desired(source=source)

    assert want.skipped_views == (("weird", "its definition could not be parsed"),)


def test_an_excluded_view_is_neither_recreated_nor_reported() -> None:
    source = catalog(SRC, *demo_catalog().tables.values(), view("order_totals", ORDER_TOTALS))

    want = desired(source=source, tables={"exclude": ["order_totals"]})

    assert (want.views, want.skipped_views) == ((), ())
