"""The pure half of moenv.clone: environment names, the guide's parameters as manifest fields, merging table calls."""

from __future__ import annotations

import pytest
from tests.unit.builders import SRC, column, demo_catalog

from moenv.clone import NO_ROWS, build_spec, change_column, environment_name, mask_of, merge_specs
from moenv.errors import CloneError
from moenv.models.catalog import Table
from moenv.models.manifest import EnvironmentSpec
from moenv.resolve import resolve_environment


def spec_of(target: str, **body: object) -> EnvironmentSpec:
    return build_spec(
        environment_name(target),
        source_server="default",
        source_database=SRC,
        target_server=None,
        target_database=target,
        body=body,
    )


def test_environment_names_derive_from_the_target_and_never_collide() -> None:
    assert environment_name("test_db") == "py-test_db"
    assert environment_name("test_db", "backup") == "py-backup.test_db"
    upper = environment_name("Test_DB")
    assert upper.startswith("py-test_db-") and upper != environment_name("test_db")
    assert environment_name("Test_DB") != environment_name("TEST_db")
    assert environment_name("a$b").startswith("py-a-b-")


def test_the_guide_null_string_becomes_a_null_mask() -> None:
    assert mask_of({"email": "CONCAT('user_', id, '@example.com')", "phone": "NULL", "address": " null "}) == {
        "email": "CONCAT('user_', id, '@example.com')",
        "phone": None,
        "address": None,
    }


def test_a_clone_call_is_a_manifest_labelled_as_made_from_python() -> None:
    spec = spec_of("test_db", data="full", rules={"users": {"where": "id <= 1000"}})
    assert spec.name == "py-test_db"
    assert spec.metadata.labels == {"created-by": "python"}
    assert spec.spec.rules["users"].where == "id <= 1000"
    assert spec.spec.target.server is None


def test_an_unacceptable_name_is_a_clone_error_naming_the_field() -> None:
    with pytest.raises(CloneError, match=r"spec\.target\.database"):
        spec_of("test db")


def test_change_columns_prefer_the_one_the_server_updates() -> None:
    timed = Table(
        "t",
        columns=(
            column("id"),
            column("updated_at", "datetime"),
            column("touched", "timestamp", extra="on update current_timestamp()"),
        ),
    )
    assert change_column(timed) == "touched"
    named = Table("t", columns=(column("id"), column("Modified_At", "datetime(6)")))
    assert change_column(named) == "Modified_At"
    assert change_column(Table("t", columns=(column("id"), column("updated_at", "varchar(20)")))) is None


def test_merging_adds_a_table_and_keeps_the_others_rules() -> None:
    source = demo_catalog()
    first = spec_of("dev_db", tables={"include": ["users"]}, rules={"users": {"mask": {"email": "'x'"}}})
    second = spec_of("dev_db", tables={"include": ["orders"]}, rules={"orders": {"where": "total > 0"}})
    merged = merge_specs(
        first,
        resolve_environment(first, source),
        second,
        resolve_environment(second, source),
        explicit=["orders"],
    )
    assert merged.spec.tables.include == ["users", "orders"]
    assert merged.spec.rules["users"].mask == {"email": "'x'"}
    assert merged.spec.rules["orders"].where == "total > 0"
    assert merged.spec.data == "full"


def test_a_table_without_rows_next_to_tables_with_rows_gets_where_false() -> None:
    source = demo_catalog()
    schema = spec_of("dev_db", data="schema")
    users = spec_of("dev_db", tables={"include": ["users"]})
    merged = merge_specs(
        schema, resolve_environment(schema, source), users, resolve_environment(users, source), explicit=["users"]
    )
    assert merged.spec.data == "full"
    assert sorted(merged.spec.tables.include) == ["order_items", "orders", "products", "users"]
    assert {t: r.where for t, r in merged.spec.rules.items()} == {
        "order_items": NO_ROWS,
        "orders": NO_ROWS,
        "products": NO_ROWS,
    }
    want = resolve_environment(merged, source)
    assert {t.source: t.where for t in want.tables}["users"] is None


def test_tables_pulled_in_as_parents_do_not_replace_an_earlier_rule() -> None:
    source = demo_catalog()
    masked = spec_of("dev_db", tables={"include": ["users"]}, rules={"users": {"mask": {"email": "'x'"}}})
    related = spec_of("dev_db", tables={"include": ["orders"], "related": {"roots": ["orders"], "max_depth": 0}})
    merged = merge_specs(
        masked,
        resolve_environment(masked, source),
        related,
        resolve_environment(related, source),
        explicit=["orders"],
    )
    assert merged.spec.rules["users"].mask == {"email": "'x'"}
    assert merged.spec.tables.related is None


def test_a_second_copy_of_one_source_table_is_refused() -> None:
    source = demo_catalog()
    first = spec_of("test_db", tables={"include": ["users"]}, rules={"users": {"rename": "users_copy"}})
    second = spec_of("test_db", tables={"include": ["users"]}, rules={"users": {"rename": "users_essential"}})
    with pytest.raises(CloneError, match="copies each source table once"):
        merge_specs(
            first, resolve_environment(first, source), second, resolve_environment(second, source), explicit=["users"]
        )


def test_index_settings_are_per_target_database() -> None:
    source = demo_catalog()
    first = spec_of("test_db", tables={"include": ["users"]}, indexes=False)
    second = spec_of("test_db", tables={"include": ["orders"]})
    with pytest.raises(CloneError, match="include_indexes=False"):
        merge_specs(
            first,
            resolve_environment(first, source),
            second,
            resolve_environment(second, source),
            explicit=["orders"],
            indexes=True,
        )
