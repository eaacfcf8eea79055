"""Subsets on a real MariaDB (issue 3): table selection and FK closure, strict and loose integrity,
filters and column subsets, masks and the leak check, salted pseudonyms, renames, views, plan-time
counts and budgets, and the refusals of bad rules before anything is written.

The source (tests/integration/subset_schema.py) has a 4-level FK chain with a composite key and a
composite FK, a self-referencing table, a FK cycle, a table without a primary key, views and
personal data. Everything is driven through moenv.api and read back over plain connections.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tests.integration.helpers import World, q
from tests.integration.subset_schema import (
    AUDIT_RELATION,
    CUSTOMERS,
    DECLARED_FKS,
    EMPLOYEES,
    SHARED_PERSONS,
    build_subset_source,
    column_names,
    column_type,
    count,
    orphan_count,
    rows,
    target_foreign_keys,
)
from tests.support.mariadb import Sandbox

from moenv import api
from moenv.errors import ConflictError, ManifestError
from moenv.models.config import Config, Server
from moenv.models.desired import Desired, TableCopy
from moenv.models.ledger import holding_database, staging_database
from moenv.models.plan import Create, Plan


@pytest.fixture
def world(sandbox: Sandbox, tmp_path: Path) -> Iterator[World]:
    with World.open(sandbox, tmp_path) as opened:
        build_subset_source(opened)
        yield opened


def config(world: World, salt: str = "s1") -> Config:
    return Config(
        servers={"default": Server.from_url("default", world.sandbox.url)},
        ledger_database=world.sandbox.ledger,
        salt=salt,
    )


def make_plan(world: World, path: Path, salt: str = "s1") -> Plan:
    return api.plan([path], config=config(world, salt))


def desired_of(plan: Plan) -> Desired:
    [action] = plan.actions
    assert isinstance(action, Create)
    return action.desired


def apply_ok(world: World, path: Path, salt: str = "s1") -> Desired:
    plan = make_plan(world, path, salt)
    result = api.apply(plan, config=config(world, salt))
    assert result.ok, result.failed
    return desired_of(plan)


def destroy(world: World, environment: str, salt: str = "s1") -> None:
    cfg = config(world, salt)
    result = api.apply(api.destroy_plan(cfg, environment), config=cfg)
    assert result.ok, result.failed


def copies(desired: Desired) -> dict[str, TableCopy]:
    return {t.target: t for t in desired.tables}


def views_of(world: World, db: str) -> set[str]:
    found = world.query(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'VIEW'", (db,)
    )
    return {str(name) for (name,) in found}


def nothing_visible(world: World, environment: str, target: str) -> None:
    """No target database, no staging or holding database of the environment."""
    present = {str(name) for (name,) in world.query("SHOW DATABASES")}
    assert target not in present
    assert staging_database(environment) not in present
    assert holding_database(environment) not in present
    assert world.work_databases() == []


def assert_every_fk_resolves(world: World, db: str) -> dict[str, int]:
    """Every FK constraint of `db` points into `db` and has no orphan; returns orphans per constraint."""
    orphans = {}
    for name, (child, cols, schema, parent, refs) in target_foreign_keys(world, db).items():
        assert schema == db, (name, schema)
        orphans[name] = orphan_count(world, db, child, cols, parent, refs)
    assert orphans == dict.fromkeys(orphans, 0), orphans
    return orphans


def assert_exact_counts_hold(world: World, desired: Desired) -> None:
    """Every count the plan marks exact is the number of rows the copy holds."""
    for table in desired.tables:
        if table.rows_exact:
            assert table.estimated_rows == count(world, desired.target.database, table.target), table.target


# -- 1. table selection: the FK closure -----------------------------------------------------------

CHAIN_UP = {"customers", "regions"}
CLOSURES: list[tuple[list[str], int, list[dict[str, str]], dict[str, Any], set[str]]] = [
    # roots, max_depth, relations, other `tables` fields, expected table set
    (["regions"], 0, [], {}, {"regions"}),
    (["regions"], 1, [], {}, {"regions", "customers"}),
    (["regions"], 2, [], {}, {"regions", "customers", "orders"}),
    # order_lines' other parent (products) comes with it: parents of every copied row are followed
    (["regions"], 3, [], {}, {"regions", "customers", "orders", "order_lines", "products"}),
    # a root in the middle of the chain: all its parents, children only down to max_depth
    (["orders"], 0, [], {}, {"orders", *CHAIN_UP}),
    (["orders"], 1, [], {}, {"orders", "order_lines", "products", *CHAIN_UP}),
    (["orders"], 2, [], {}, {"orders", "order_lines", "line_notes", "products", *CHAIN_UP}),
    (["orders"], 32, [], {}, {"orders", "order_lines", "line_notes", "products", *CHAIN_UP}),
    # the leaf of the chain, through the composite FK, pulls every ancestor
    (["line_notes"], 0, [], {}, {"line_notes", "order_lines", "orders", "products", *CHAIN_UP}),
    (["products"], 1, [], {}, {"products", "order_lines", "orders", *CHAIN_UP}),
    # virtual relations count like declared ones
    (["customers"], 1, [], {}, {"customers", "orders", "regions"}),
    (["customers"], 1, [AUDIT_RELATION], {}, {"customers", "orders", "regions", "audit_log"}),
    (["audit_log"], 0, [AUDIT_RELATION], {}, {"audit_log", "customers", "regions"}),
    # the cycle and the self-reference terminate, whatever the depth
    (["employees"], 0, [], {}, {"employees", "departments"}),
    (["departments"], 0, [], {}, {"employees", "departments"}),
    (["departments"], 32, [], {}, {"employees", "departments"}),
    (["settings", "employees"], 5, [], {}, {"settings", "employees", "departments"}),
    # exclude applies after the closure; include adds to it
    (["orders"], 2, [], {"exclude": ["line_notes"]}, {"orders", "order_lines", "products", *CHAIN_UP}),
    (["regions"], 0, [], {"include": ["settings"]}, {"regions", "settings"}),
]


def test_the_fk_closure_picks_the_right_tables_for_each_root_and_depth(world: World) -> None:
    for index, (roots, depth, relations, other, expected) in enumerate(CLOSURES):
        tables = {"related": {"roots": roots, "max_depth": depth}, **other}
        extra: dict[str, Any] = {"tables": tables}
        if relations:
            extra["relations"] = relations
        path = world.manifest("closure", file=f"closure{index}.yaml", **extra)
        desired = desired_of(make_plan(world, path))
        found = [t.source for t in desired.tables]
        case = f"roots={roots} max_depth={depth} relations={relations} {other}"
        assert set(found) == expected, case
        assert len(found) == len(set(found)), case
        # parents are created and filled before their children (cycle and self edges aside)
        position = {name: i for i, name in enumerate(found)}
        for name, (child, _, parent, _) in DECLARED_FKS.items():
            if name in {"fk_employees_manager", "fk_employees_department", "fk_departments_head"}:
                continue
            if child in position and parent in position:
                assert position[parent] < position[child], (case, name)
        assert desired.views == ()  # `related` without include selects tables only
    assert world.ledger_names() == []
    assert not world.exists(world.target)


# -- 2. integrity ---------------------------------------------------------------------------------


def _cycle_fixpoint(world: World, kept_departments: set[int]) -> tuple[set[int], set[int]]:
    """The employees and departments a strict copy keeps: remove rows whose reference is gone, until stable."""
    src = q(world.source)
    staff = {int(i): (d, m) for i, d, m in world.query(f"SELECT id, department_id, manager_id FROM {src}.employees")}
    heads = {int(i): h for i, h in world.query(f"SELECT id, head_id FROM {src}.departments")}
    employees = set(staff)
    departments = set(kept_departments)
    while True:
        kept_e = {e for e in employees if (staff[e][0] is None or staff[e][0] in departments)}
        kept_e = {e for e in kept_e if staff[e][1] is None or staff[e][1] in kept_e}
        kept_d = {d for d in departments if heads[d] is None or heads[d] in kept_e}
        if (kept_e, kept_d) == (employees, departments):
            return employees, departments
        employees, departments = kept_e, kept_d


def test_strict_integrity_keeps_every_reference_resolvable_with_filtered_parents(world: World) -> None:
    path = world.manifest(
        "strict",
        relations=[AUDIT_RELATION],
        rules={
            "regions": {"where": "id <= 2"},
            "customers": {"where": "created_at < '2024-02-01'"},
            "departments": {"where": "id <> 2"},
        },
    )
    desired = apply_ok(world, path)
    src, dst = world.source, world.target

    # the expected rows, computed on the source
    regions = {1, 2}
    customers = {
        int(i)
        for i, region, created in world.query(f"SELECT id, region_id, created_at FROM {q(src)}.customers")
        if created < datetime(2024, 2, 1) and region in regions
    }
    orders = {int(i) for i, c in world.query(f"SELECT id, customer_id FROM {q(src)}.orders") if c in customers}
    lines = {(o, n) for o, n in world.query(f"SELECT order_id, line_no FROM {q(src)}.order_lines") if o in orders}
    employees, departments = _cycle_fixpoint(world, {1, 3, 4, 5})
    # the cascade crosses the cycle both ways and follows the manager tree (see subset_schema's data)
    assert employees == {1, 3, 6, 7, 13, 14, 26, 28, 29}
    assert departments == {1, 3, 5}
    keys: dict[str, tuple[int, set[Any] | None]] = {
        "regions": (1, {(r,) for r in regions}),
        "customers": (1, {(c,) for c in customers}),
        "orders": (1, {(o,) for o in orders}),
        "order_lines": (2, lines),
        "line_notes": (2, lines),  # kept when its (composite) parent line is
        "employees": (1, {(e,) for e in employees}),
        "departments": (1, {(d,) for d in departments}),
        "products": (1, None),
        "settings": (1, None),
    }
    for table, (width, kept) in keys.items():
        expected = [r for r in rows(world, src, table) if kept is None or tuple(r[:width]) in kept]
        assert rows(world, dst, table) == expected, table
        assert expected, table
    assert 0 < len(orders) < count(world, src, "orders")
    audit = [r for r in rows(world, src, "audit_log") if r[0] is None or r[0] in customers]
    assert rows(world, dst, "audit_log") == audit  # duplicates kept, NULL references kept

    # every declared FK is in the target, points into it, and resolves; so does the virtual one
    fks = target_foreign_keys(world, dst)
    assert set(fks) == set(DECLARED_FKS)
    assert {name: (c, cols, p, refs) for name, (c, cols, _, p, refs) in fks.items()} == DECLARED_FKS
    assert_every_fk_resolves(world, dst)
    assert orphan_count(world, src, "audit_log", ("customer_id",), "customers", ("id",)) > 0
    assert orphan_count(world, dst, "audit_log", ("customer_id",), "customers", ("id",)) == 0

    # plan-time counts: the restricted tables are counted exactly, and the counts hold
    tables = copies(desired)
    exact = {name for name, t in tables.items() if t.rows_exact}
    assert {"regions", "customers", "orders", "order_lines", "line_notes", "audit_log"} <= exact
    assert not tables["products"].rows_exact and not tables["settings"].rows_exact
    for name in ("regions", "customers", "orders", "order_lines", "line_notes", "audit_log"):
        assert tables[name].estimated_rows == count(world, dst, name), name
    # (the cycle's tables: test_counts_marked_exact_hold_across_a_cycle_and_a_self_reference)


def test_loose_integrity_drops_the_constraints_that_would_fail_and_says_so(world: World) -> None:
    path = world.manifest(
        "loose",
        integrity="loose",
        rules={"regions": {"where": "id <= 2"}, "departments": {"where": "id <> 2"}},
    )
    desired = apply_ok(world, path)
    tables = copies(desired)
    dropped = {name: t.dropped_foreign_keys for name, t in tables.items() if t.dropped_foreign_keys}
    assert dropped == {"customers": ("fk_customers_region",), "employees": ("fk_employees_department",)}
    for table, fk, parent in (
        ("customers", "fk_customers_region", "regions"),
        ("employees", "fk_employees_department", "departments"),
    ):
        notes = tables[table].notes
        assert any(fk in note and "loose" in note and parent in note for note in notes), notes
        assert tables[table].filters == ()

    dst = world.target
    fks = target_foreign_keys(world, dst)
    assert set(fks) == set(DECLARED_FKS) - {"fk_customers_region", "fk_employees_department"}
    assert_every_fk_resolves(world, dst)  # the constraints that remain all hold
    # children were copied unfiltered: the dropped references really do dangle
    assert count(world, dst, "customers") == CUSTOMERS
    assert count(world, dst, "employees") == EMPLOYEES
    assert orphan_count(world, dst, "customers", ("region_id",), "regions", ("id",)) > 0
    assert orphan_count(world, dst, "employees", ("department_id",), "departments", ("id",)) > 0


# -- 3. filters and column subsets ------------------------------------------------------------------

KEPT_CUSTOMERS = "created_at >= '2024-01-15' AND phone IS NOT NULL"


def test_filters_and_column_subsets_give_exactly_the_expected_rows_and_columns(world: World) -> None:
    path = world.manifest(
        "filters",
        tables={"include": ["regions", "customers", "orders", "order_lines", "products", "audit_log"]},
        relations=[AUDIT_RELATION],
        rules={
            "customers": {"where": KEPT_CUSTOMERS, "columns": ["id", "region_id", "name", "email"]},
            "orders": {"where": "status <> 'new'", "exclude_columns": ["note"]},
            "audit_log": {"where": "action = 'login'", "columns": ["customer_id", "action"]},
        },
    )
    desired = apply_ok(world, path)
    src, dst = q(world.source), world.target
    tables = copies(desired)
    assert tables["customers"].excluded_columns == ("phone", "created_at")
    assert tables["orders"].excluded_columns == ("note",)
    assert tables["audit_log"].excluded_columns == ("at",)

    expected_columns = {
        "customers": ["id", "region_id", "name", "email"],
        "orders": ["id", "customer_id", "status", "placed_at"],
        "order_lines": ["order_id", "line_no", "product_id", "qty"],
        "audit_log": ["customer_id", "action"],
        "regions": ["id", "name"],
        "products": ["id", "name"],
    }
    assert set(world.base_tables(dst)) == set(expected_columns)
    for table, cols in expected_columns.items():
        assert column_names(world, dst, table) == cols, table

    kept_customers = f"SELECT id FROM {src}.customers WHERE {KEPT_CUSTOMERS}"
    kept_orders = f"SELECT id FROM {src}.orders WHERE status <> 'new' AND customer_id IN ({kept_customers})"
    expected_sql = {
        "customers": f"SELECT id, region_id, name, email FROM {src}.customers WHERE {KEPT_CUSTOMERS}",
        "orders": f"SELECT id, customer_id, status, placed_at FROM {src}.orders WHERE id IN ({kept_orders})",
        "order_lines": f"SELECT * FROM {src}.order_lines WHERE order_id IN ({kept_orders})",
        "audit_log": f"SELECT customer_id, action FROM {src}.audit_log WHERE action = 'login'"
        f" AND (customer_id IS NULL OR customer_id IN ({kept_customers}))",
        "regions": f"SELECT * FROM {src}.regions",
        "products": f"SELECT * FROM {src}.products",
    }
    for table, sql in expected_sql.items():
        width = len(expected_columns[table])
        expected = world.query(f"{sql} ORDER BY {', '.join(str(i + 1) for i in range(width))}")
        assert rows(world, dst, table) == expected, table
        assert expected, table
    [(duplicates,)] = world.query(
        f"SELECT COUNT(*) - COUNT(DISTINCT customer_id, action) FROM {q(dst)}.audit_log WHERE customer_id IS NOT NULL"
    )
    assert duplicates > 0  # the table without a primary key keeps its duplicate rows

    # indexes on kept columns survive; those on dropped columns go with them
    indexes = {(t, i) for t, i, *_ in world.indexes(dst)}
    assert {("customers", "uq_customers_email"), ("audit_log", "ix_audit_customer")} <= indexes
    assert_every_fk_resolves(world, dst)
    assert set(target_foreign_keys(world, dst)) == {
        "fk_customers_region",
        "fk_orders_customer",
        "fk_lines_order",
        "fk_lines_product",
    }
    assert {t for t, c in tables.items() if c.rows_exact} == {"customers", "orders", "order_lines", "audit_log"}
    assert_exact_counts_hold(world, desired)


# -- 4. masks, the leak check, pseudonyms -------------------------------------------------------------

ORDERS_NEW = 40  # ELT(1 + id % 3, ...) over 120 orders: 40 of each status
PERSONAL_RULES = {
    "customers": {"mask": {"email": "moenv.email(email)", "phone": "moenv.phone(phone)", "name": "moenv.name(name)"}},
    "employees": {
        "mask": {
            "email": "moenv.email(email)",
            "phone": "moenv.keep_last(phone, 4)",
            "name": "CONCAT('Employee #', id)",
        }
    },
}
PERSONAL_TABLES = {"include": ["regions", "customers", "departments", "employees"]}


def test_masked_columns_keep_no_source_value_their_type_and_their_unique_index(world: World) -> None:
    path = world.manifest("masks", tables=PERSONAL_TABLES, rules=PERSONAL_RULES)
    desired = apply_ok(world, path)
    src, dst = world.source, world.target
    tables = copies(desired)
    assert tables["customers"].masked == ("name", "email", "phone")
    assert tables["customers"].needs_salt and tables["customers"].unique_checks

    for table, rule in PERSONAL_RULES.items():
        for column in rule["mask"]:
            # anti-join: no masked value equals any source value of its column
            [(leaks,)] = world.query(
                f"SELECT COUNT(*) FROM {q(dst)}.{q(table)} t WHERE t.{q(column)} IN"
                f" (SELECT s.{q(column)} FROM {q(src)}.{q(table)} s WHERE s.{q(column)} IS NOT NULL)"
            )
            assert leaks == 0, (table, column)
            assert column_type(world, dst, table, column) == column_type(world, src, table, column)
            [(kept,)] = world.query(f"SELECT COUNT({q(column)}) FROM {q(dst)}.{q(table)}")
            assert kept == world.query(f"SELECT COUNT({q(column)}) FROM {q(src)}.{q(table)}")[0][0]  # NULL stays NULL
    # no email of either source table survives in either target table
    [(anywhere,)] = world.query(
        f"SELECT COUNT(*) FROM (SELECT email FROM {q(dst)}.customers UNION ALL SELECT email FROM {q(dst)}.employees) t"
        f" WHERE email IN (SELECT email FROM {q(src)}.customers UNION SELECT email FROM {q(src)}.employees)"
    )
    assert anywhere == 0

    # the UNIQUE email indexes survive moenv.email, and every row was copied
    indexes = world.indexes(dst)
    assert ("customers", "uq_customers_email", 1, "email", 0) in indexes
    assert ("employees", "uq_employees_email", 1, "email", 0) in indexes
    for table, total in (("customers", CUSTOMERS), ("employees", EMPLOYEES)):
        [(n, distinct)] = world.query(f"SELECT COUNT(*), COUNT(DISTINCT email) FROM {q(dst)}.{q(table)}")
        assert n == distinct == total

    # what the helpers produce
    for email, phone, name in world.query(f"SELECT email, phone, name FROM {q(dst)}.customers"):
        assert re.fullmatch(r"u[0-9a-f]{16}@example\.invalid", email)
        assert phone is None or re.fullmatch(r"\+1555\d{7}", phone)
        assert re.fullmatch(r"Name-[0-9a-f]{8}", name)
    expected_employees = [
        (i, "Employee #" + str(i), None if p is None else "x" * (len(p) - 4) + p[-4:])
        for i, p in world.query(f"SELECT id, phone FROM {q(src)}.employees ORDER BY id")
    ]
    assert world.query(f"SELECT id, name, phone FROM {q(dst)}.employees ORDER BY id") == expected_employees
    # unmasked columns are untouched
    assert rows(world, dst, "customers", ["id", "region_id", "created_at"]) == rows(
        world, src, "customers", ["id", "region_id", "created_at"]
    )

    # the same source email maps to the same pseudonym in both tables, and only then
    customers = dict(world.query(f"SELECT id, email FROM {q(dst)}.customers"))
    employees = dict(world.query(f"SELECT id, email FROM {q(dst)}.employees"))
    for person in range(1, SHARED_PERSONS + 1):
        assert customers[person] == employees[person]
    assert set(customers.values()) & set(employees.values()) == {customers[p] for p in range(1, SHARED_PERSONS + 1)}


def test_pseudonyms_are_stable_for_a_salt_and_change_with_another(world: World) -> None:
    env = world.env("pseudo")
    path = world.manifest("pseudo", tables=PERSONAL_TABLES, rules=PERSONAL_RULES)
    probe = f"SELECT id, email, phone, name FROM {q(world.target)}.customers ORDER BY id"

    apply_ok(world, path, salt="s1")
    first = world.query(probe)
    destroy(world, env)
    assert not world.exists(world.target)

    apply_ok(world, path, salt="s1")
    assert world.query(probe) == first
    destroy(world, env)

    apply_ok(world, path, salt="s2")
    other = world.query(probe)
    assert len(other) == len(first) == CUSTOMERS
    for (i, email, phone, name), (j, email2, phone2, name2) in zip(first, other, strict=True):
        assert i == j
        assert email != email2 and name != name2
        assert (phone is None and phone2 is None) or phone != phone2
    assert not {e for _, e, _, _ in first} & {e for _, e, _, _ in other}


def test_a_mask_that_leaves_source_values_fails_the_apply_and_nothing_becomes_visible(world: World) -> None:
    src = q(world.source)
    [(phones,)] = world.query(f"SELECT COUNT(phone) FROM {src}.customers")
    [(open_orders,)] = world.query(f"SELECT COUNT(*) FROM {src}.orders WHERE status <> 'new'")
    renamed_status = "CASE status WHEN 'new' THEN 'open' ELSE status END"
    cases = [
        ("customers", {"phone": "phone"}, f"customers.phone: {phones} rows"),
        (
            "customers",
            {"email": "IF(MOD(id, 2) = 0, email, CONCAT('x', email))"},
            f"customers.email: {CUSTOMERS // 2} rows",
        ),
        ("orders", {"status": renamed_status}, f"orders.status: {open_orders} rows"),
    ]
    for index, (table, mask, figure) in enumerate(cases):
        env = world.env(f"leak{index}")
        target = f"{world.prefix}leak{index}"
        path = world.manifest(
            f"leak{index}",
            target=target,
            tables={"include": ["regions", "customers", "orders"]},
            rules={table: {"mask": mask}},
        )
        plan = make_plan(world, path)
        result = api.apply(plan, config=config(world))
        assert not result.ok, mask
        [failure] = result.failed
        assert "leak check failed" in (failure.error or ""), failure.error
        assert figure in (failure.error or ""), failure.error
        nothing_visible(world, env, target)
        record = world.ledger_row(env)
        assert record is not None and record["status"] == "failed"

    # a mask that transforms rather than anonymizes goes through with leak_check: false
    target = f"{world.prefix}transform"
    path = world.manifest(
        "transform",
        target=target,
        tables={"include": ["regions", "customers", "orders"]},
        rules={"orders": {"mask": {"status": renamed_status}, "leak_check": False}},
    )
    desired = apply_ok(world, path)
    assert not copies(desired)["orders"].leak_check
    assert dict(world.query(f"SELECT status, COUNT(*) FROM {q(target)}.orders GROUP BY status")) == {
        "open": ORDERS_NEW,
        "paid": 40,
        "shipped": 40,
    }


# -- 5. refusals before anything is written -------------------------------------------------------------


def line_of(path: Path, needle: str) -> int:
    """The 1-based line of the one line of `path` containing `needle`."""
    found = [i + 1 for i, line in enumerate(path.read_text().splitlines()) if needle in line]
    assert len(found) == 1, (needle, found, path.read_text())
    return found[0]


def rename_line(path: Path, field: str) -> int:
    """The line of `rename:` under the table a field path `spec.rules.<table>.rename` names (0: none)."""
    parts = field.split(".")
    if len(parts) != 4:
        return 0
    text = path.read_text().splitlines()
    start = next((i for i, line in enumerate(text) if line.strip() == f"{parts[2]}:"), None)
    if start is None or not text[start + 1].strip().startswith("rename:"):
        return 0
    return start + 2


REFUSALS: list[tuple[str, dict[str, Any], str, set[str], str]] = [
    # name, spec fields, the line the problem must point at, acceptable field paths, a word of the message
    ("typo-table", {"rules": {"custmers": {"where": "id > 1"}}}, "custmers:", {"spec.rules.custmers"}, "custmers"),
    (
        "two-statements",
        {"rules": {"customers": {"where": "id > 1; DROP TABLE x"}}},
        "where:",
        {"spec.rules.customers.where"},
        "where",
    ),
    (
        "comment-dash",
        {"rules": {"customers": {"where": "id > 1 -- "}}},
        "where:",
        {"spec.rules.customers.where"},
        "comment",
    ),
    (
        "comment-block",
        {"rules": {"customers": {"where": "id > 1 /* and more */"}}},
        "where:",
        {"spec.rules.customers.where"},
        "comment",
    ),
    (
        "where-unknown-column",
        {"rules": {"customers": {"where": "nosuch > 1"}}},
        "where:",
        {"spec.rules.customers.where"},
        "nosuch",
    ),
    (
        "where-other-database",
        {"rules": {"customers": {"where": "id IN (SELECT user_id FROM otherdb.t)"}}},
        "where:",
        {"spec.rules.customers.where"},
        "otherdb",
    ),
    (
        "mask-unknown-column",
        {"rules": {"customers": {"mask": {"nosuch": "'x'"}}}},
        "nosuch:",
        {"spec.rules.customers.mask.nosuch"},
        "nosuch",
    ),
    (
        "mask-expression-unknown-column",
        {"rules": {"customers": {"mask": {"email": "CONCAT(nosuch, 'x')"}}}},
        "email:",
        {"spec.rules.customers.mask.email"},
        "nosuch",
    ),
    (
        "columns-unknown-column",
        {"rules": {"customers": {"columns": ["id", "nosuch"]}}},
        "- nosuch",
        {"spec.rules.customers.columns[1]"},
        "nosuch",
    ),
    (
        "null-mask-on-not-null",
        {"rules": {"customers": {"mask": {"name": None}}}},
        "name: null",
        {"spec.rules.customers.mask.name"},
        "NOT NULL",
    ),
    (
        "rename-onto-a-copied-table",
        {"rules": {"customers": {"rename": "orders"}}},
        "rename: orders",
        {"spec.rules.customers.rename"},
        "orders",
    ),
    (
        "two-renames-one-name",
        {"rules": {"customers": {"rename": "people"}, "employees": {"rename": "people"}}},
        "rename: people",  # the line is checked against whichever rename the field names
        {"spec.rules.customers.rename", "spec.rules.employees.rename"},
        "people",
    ),
    (
        "exclude-primary-key",
        {"rules": {"customers": {"exclude_columns": ["id"]}}},
        "exclude_columns:",
        {"spec.rules.customers.exclude_columns", "spec.rules.customers.exclude_columns[0]"},
        "primary key",
    ),
    (
        "exclude-part-of-composite-key",
        {"rules": {"line_notes": {"exclude_columns": ["note_no"]}}},
        "exclude_columns:",
        {"spec.rules.line_notes.exclude_columns", "spec.rules.line_notes.exclude_columns[0]"},
        "primary key",
    ),
    (
        "columns-without-primary-key",
        {"rules": {"line_notes": {"columns": ["order_id", "line_no", "body"]}}},
        "columns:",
        {"spec.rules.line_notes.columns"},
        "primary key",
    ),
    (
        "rule-outside-include",
        {"tables": {"include": ["regions", "customers"]}, "rules": {"orders": {"where": "id > 1"}}},
        "orders:",
        {"spec.rules.orders"},
        "not in the table set",
    ),
    (
        "rule-on-excluded-table",
        {"tables": {"exclude": ["audit_*"]}, "rules": {"audit_log": {"mask": {"action": "'x'"}}}},
        "audit_log:",
        {"spec.rules.audit_log"},
        "not in the table set",
    ),
    (
        "rule-outside-the-closure",
        {"tables": {"related": {"roots": ["regions"], "max_depth": 0}}, "rules": {"customers": {"where": "id > 1"}}},
        "customers:",
        {"spec.rules.customers"},
        "not in the table set",
    ),
]


@pytest.mark.parametrize(("spec", "needle", "fields", "word"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_bad_rules_are_refused_with_file_and_line_before_anything_is_written(
    world: World, spec: dict[str, Any], needle: str, fields: set[str], word: str
) -> None:
    name = next(r[0] for r in REFUSALS if r[1] == spec)
    path = world.manifest(name, file=f"{name}.yaml", **spec)
    with pytest.raises(ManifestError) as refused:
        make_plan(world, path)
    problem = refused.value.problems[0]
    field = problem.field or ""
    assert field in fields, str(refused.value)
    # both renames of two-renames-one-name read `rename: people`: the line under the table named
    expected_line = rename_line(path, field) if name == "two-renames-one-name" else line_of(path, needle)
    assert (problem.path, problem.line) == (path, expected_line), str(refused.value)
    assert word.lower() in str(refused.value).lower()
    assert not world.exists(world.target)
    assert world.ledger_names() == []
    assert world.work_databases() == []


# -- 6. renames and views -------------------------------------------------------------------------------


def test_a_renamed_table_gets_its_foreign_keys_and_views_repointed(world: World) -> None:
    include = ["regions", "customers", "orders", "order_lines", "products", "customer_orders", "region_names"]
    path = world.manifest("rename", tables={"include": include}, rules={"customers": {"rename": "clients"}})
    desired = apply_ok(world, path)
    src, dst = world.source, world.target
    assert {t.target for t in desired.tables} == {"regions", "clients", "orders", "order_lines", "products"}
    assert {v.name for v in desired.views} == {"customer_orders", "region_names"}
    assert desired.skipped_views == ()

    assert set(world.base_tables(dst)) == {"regions", "clients", "orders", "order_lines", "products"}
    assert rows(world, dst, "clients") == rows(world, src, "customers")
    fks = target_foreign_keys(world, dst)
    assert fks["fk_orders_customer"] == ("orders", ("customer_id",), dst, "clients", ("id",))
    assert fks["fk_customers_region"] == ("clients", ("region_id",), dst, "regions", ("id",))
    assert_every_fk_resolves(world, dst)

    assert views_of(world, dst) == {"customer_orders", "region_names"}
    definition = world.view_definition(dst, "customer_orders")
    assert f"{q(dst)}.`clients`" in definition and q(src) not in definition, definition
    assert rows(world, dst, "customer_orders") == rows(world, src, "customer_orders")

    # the same rename with the view's column trimmed away: the view is skipped, with the reason
    target = f"{world.prefix}trimmed"
    path = world.manifest(
        "trimmed",
        target=target,
        tables={"include": include},
        rules={"customers": {"rename": "clients", "exclude_columns": ["email"]}},
    )
    desired = apply_ok(world, path)
    assert {v.name for v in desired.views} == {"region_names"}
    [(view, reason)] = desired.skipped_views
    assert view == "customer_orders"
    assert "customers" in reason and "trimmed" in reason, reason
    assert views_of(world, target) == {"region_names"}
    assert "email" not in column_names(world, target, "clients")


def test_views_are_recreated_when_every_table_they_read_is_copied_and_skipped_otherwise(world: World) -> None:
    path = world.manifest("views", tables={"exclude": ["employees"]})
    desired = apply_ok(world, path)
    src, dst = world.source, world.target
    assert {v.name for v in desired.views} == {"customer_orders", "region_names"}
    [(view, reason)] = desired.skipped_views
    assert view == "staff_directory"
    assert "employees" in reason and "not copied" in reason, reason
    departments = copies(desired)["departments"]
    assert departments.dropped_foreign_keys == ("fk_departments_head",)
    assert any("employees" in note and "not copied" in note for note in departments.notes), departments.notes

    assert views_of(world, dst) == {"customer_orders", "region_names"}
    for name in ("customer_orders", "region_names"):
        definition = world.view_definition(dst, name)
        assert q(dst) in definition and q(src) not in definition, definition
        assert rows(world, dst, name) == rows(world, src, name)
    assert "fk_departments_head" not in target_foreign_keys(world, dst)
    assert_every_fk_resolves(world, dst)


# -- 7. plan-time counts and the budget -----------------------------------------------------------------


def test_counts_marked_exact_hold_across_a_cycle_and_a_self_reference(world: World) -> None:
    """A count the plan marks exact must be what the copy holds, also where strict integrity removes
    rows after the copy (self-references and cycle edges, enforced by the orphan fixpoint)."""
    cases = {
        "cycle": {"departments": {"where": "id <> 2"}},  # employees of department 2 go, then department 4
        "self": {"employees": {"where": "id <> 2"}},  # employee 2 goes, then everyone who reports to them
    }
    wrong = []
    for short, rules in cases.items():
        target = f"{world.prefix}{short}"
        path = world.manifest(short, target=target, tables={"include": ["departments", "employees"]}, rules=rules)
        desired = apply_ok(world, path)
        assert_every_fk_resolves(world, target)
        for table in desired.tables:
            copied = count(world, target, table.target)
            if table.rows_exact and table.estimated_rows != copied:
                wrong.append(f"{short}: {table.target} counted {table.estimated_rows} (exact), copied {copied}")
    assert not wrong, "\n".join(wrong)


def test_plan_time_counts_are_exact_for_filtered_tables_and_the_budget_refuses_more(world: World) -> None:
    src = q(world.source)
    [(total,)] = world.query(
        f"SELECT (SELECT COUNT(*) FROM {src}.regions WHERE id <= 2)"
        f" + (SELECT COUNT(*) FROM {src}.customers WHERE region_id <= 2)"
        f" + (SELECT COUNT(*) FROM {src}.orders WHERE customer_id IN (SELECT id FROM {src}.customers"
        f" WHERE region_id <= 2))"
    )
    spec: dict[str, Any] = {
        "tables": {"include": ["regions", "customers", "orders"]},
        "rules": {"regions": {"where": "id <= 2"}},
    }

    over = world.manifest("budget", file="over.yaml", budget={"max_rows": total - 1}, **spec)
    with pytest.raises(ConflictError) as refused:
        make_plan(world, over)
    message = str(refused.value)
    assert f"would hold {total:,} rows" in message and f"budget.max_rows {total - 1:,}" in message, message
    assert not world.exists(world.target)
    assert world.ledger_names() == []

    within = world.manifest("budget", file="within.yaml", budget={"max_rows": total}, **spec)
    plan = make_plan(world, within)
    desired = desired_of(plan)
    assert all(t.rows_exact for t in desired.tables)
    assert sum(t.estimated_rows or 0 for t in desired.tables) == total
    result = api.apply(plan, config=config(world))
    assert result.ok, result.failed
    assert_exact_counts_hold(world, desired)
    assert sum(count(world, world.target, t.target) for t in desired.tables) == total
