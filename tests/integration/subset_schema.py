"""The source schema of tests/integration/test_subsets.py, and probes that read targets back.

    build_subset_source(world)          # {prefix}src, deterministic, a few hundred rows

Foreign keys (child → parent):

    customers.region_id          → regions.id                 ┐
    orders.customer_id           → customers.id               │ a 4-level chain
    order_lines.order_id         → orders.id                  │ (order_lines: composite PK)
    line_notes(order_id,line_no) → order_lines(order_id,line_no) ┘ (a composite FK)
    order_lines.product_id       → products.id                  (a second parent of order_lines)
    employees.manager_id         → employees.id                 (self-reference: a binary tree, id DIV 2)
    employees.department_id      → departments.id             ┐ a cycle
    departments.head_id          → employees.id               ┘
    audit_log.customer_id           (no FK declared: a virtual relation in the tests; no primary key,
                                     duplicate rows, references to customers that do not exist)
    settings                        (related to nothing)

Views: customer_orders (customers ⋈ orders), region_names (regions), staff_directory (employees ⟕ departments).
Personal data: customers/employees name, email (UNIQUE), phone; persons 1-10 are customers and employees
with the same email.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.integration.helpers import World, q

CUSTOMERS = 40
ORDERS = 120
EMPLOYEES = 30
SHARED_PERSONS = 10  # customers 1..10 and employees 1..10 have the same email

BASE_TABLES = (
    "audit_log",
    "customers",
    "departments",
    "employees",
    "line_notes",
    "order_lines",
    "orders",
    "products",
    "regions",
    "settings",
)
VIEWS = ("customer_orders", "region_names", "staff_directory")

# Declared foreign keys of the source: constraint → (child, columns, parent, referenced columns).
DECLARED_FKS: dict[str, tuple[str, tuple[str, ...], str, tuple[str, ...]]] = {
    "fk_customers_region": ("customers", ("region_id",), "regions", ("id",)),
    "fk_orders_customer": ("orders", ("customer_id",), "customers", ("id",)),
    "fk_lines_order": ("order_lines", ("order_id",), "orders", ("id",)),
    "fk_lines_product": ("order_lines", ("product_id",), "products", ("id",)),
    "fk_notes_line": ("line_notes", ("order_id", "line_no"), "order_lines", ("order_id", "line_no")),
    "fk_employees_manager": ("employees", ("manager_id",), "employees", ("id",)),
    "fk_employees_department": ("employees", ("department_id",), "departments", ("id",)),
    "fk_departments_head": ("departments", ("head_id",), "employees", ("id",)),
}
AUDIT_RELATION = {"from": "audit_log(customer_id)", "to": "customers(id)"}


def subset_statements(db: str) -> list[str]:
    d = q(db)
    return [
        f"CREATE DATABASE {d} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        f"CREATE TABLE {d}.regions (id INT NOT NULL PRIMARY KEY, name VARCHAR(50) NOT NULL) ENGINE=InnoDB",
        f"CREATE TABLE {d}.products (id INT NOT NULL PRIMARY KEY, name VARCHAR(100) NOT NULL) ENGINE=InnoDB",
        f"CREATE TABLE {d}.settings (k VARCHAR(20) NOT NULL PRIMARY KEY, v VARCHAR(100) NULL) ENGINE=InnoDB",
        f"""CREATE TABLE {d}.customers (
            id INT NOT NULL PRIMARY KEY,
            region_id INT NOT NULL,
            name VARCHAR(100) NOT NULL,
            email VARCHAR(255) NOT NULL,
            phone VARCHAR(32) NULL,
            created_at DATETIME NOT NULL,
            UNIQUE KEY uq_customers_email (email),
            CONSTRAINT fk_customers_region FOREIGN KEY (region_id) REFERENCES regions (id)
        ) ENGINE=InnoDB""",
        f"""CREATE TABLE {d}.orders (
            id INT NOT NULL PRIMARY KEY,
            customer_id INT NOT NULL,
            status VARCHAR(16) NOT NULL,
            placed_at DATETIME NOT NULL,
            note VARCHAR(100) NULL,
            CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id)
        ) ENGINE=InnoDB""",
        f"""CREATE TABLE {d}.order_lines (
            order_id INT NOT NULL,
            line_no SMALLINT NOT NULL,
            product_id INT NOT NULL,
            qty INT NOT NULL,
            PRIMARY KEY (order_id, line_no),
            CONSTRAINT fk_lines_order FOREIGN KEY (order_id) REFERENCES orders (id),
            CONSTRAINT fk_lines_product FOREIGN KEY (product_id) REFERENCES products (id)
        ) ENGINE=InnoDB""",
        f"""CREATE TABLE {d}.line_notes (
            order_id INT NOT NULL,
            line_no SMALLINT NOT NULL,
            note_no INT NOT NULL,
            body VARCHAR(100) NOT NULL,
            PRIMARY KEY (order_id, line_no, note_no),
            CONSTRAINT fk_notes_line FOREIGN KEY (order_id, line_no) REFERENCES order_lines (order_id, line_no)
        ) ENGINE=InnoDB""",
        f"""CREATE TABLE {d}.departments (
            id INT NOT NULL PRIMARY KEY,
            name VARCHAR(50) NOT NULL,
            head_id INT NULL
        ) ENGINE=InnoDB""",
        f"""CREATE TABLE {d}.employees (
            id INT NOT NULL PRIMARY KEY,
            department_id INT NULL,
            manager_id INT NULL,
            name VARCHAR(100) NOT NULL,
            email VARCHAR(255) NOT NULL,
            phone VARCHAR(32) NULL,
            UNIQUE KEY uq_employees_email (email),
            CONSTRAINT fk_employees_department FOREIGN KEY (department_id) REFERENCES departments (id),
            CONSTRAINT fk_employees_manager FOREIGN KEY (manager_id) REFERENCES employees (id)
        ) ENGINE=InnoDB""",
        f"""ALTER TABLE {d}.departments
            ADD CONSTRAINT fk_departments_head FOREIGN KEY (head_id) REFERENCES employees (id)""",
        f"""CREATE TABLE {d}.audit_log (
            customer_id INT NULL,
            action VARCHAR(20) NOT NULL,
            at DATETIME NOT NULL,
            KEY ix_audit_customer (customer_id)
        ) ENGINE=InnoDB""",
        # -- data ---------------------------------------------------------------------------------
        f"INSERT INTO {d}.regions VALUES (1, 'north'), (2, 'south'), (3, 'east'), (4, 'west')",
        f"INSERT INTO {d}.products SELECT seq, CONCAT('Product ', seq) FROM {d}.seq_1_to_10",
        f"INSERT INTO {d}.settings VALUES ('theme', 'dark'), ('lang', 'de'), ('tz', NULL)",
        f"""INSERT INTO {d}.customers
            SELECT seq, 1 + seq % 4, CONCAT('Customer ', seq), CONCAT('person', seq, '@example.com'),
                   IF(seq % 6 = 0, NULL, CONCAT('+49 30 ', LPAD(seq % 25, 7, '0'))),
                   '2024-01-01' + INTERVAL seq DAY
            FROM {d}.seq_1_to_{CUSTOMERS}""",
        f"""INSERT INTO {d}.orders
            SELECT seq, 1 + seq % {CUSTOMERS}, ELT(1 + seq % 3, 'new', 'paid', 'shipped'),
                   '2024-03-01' + INTERVAL seq HOUR, IF(seq % 5 = 0, 'ring twice', NULL)
            FROM {d}.seq_1_to_{ORDERS}""",
        f"""INSERT INTO {d}.order_lines
            SELECT o.seq, l.seq, 1 + (o.seq * 3 + l.seq) % 10, 1 + (o.seq + l.seq) % 4
            FROM {d}.seq_1_to_{ORDERS} o JOIN {d}.seq_1_to_3 l ON l.seq <= 1 + o.seq % 3""",
        f"""INSERT INTO {d}.line_notes
            SELECT l.order_id, l.line_no, n.seq, CONCAT('note ', l.order_id, '/', l.line_no, '/', n.seq)
            FROM {d}.order_lines l JOIN {d}.seq_1_to_2 n ON n.seq <= 1 + l.order_id % 2
            WHERE (l.order_id + l.line_no) % 3 = 0""",
        f"INSERT INTO {d}.departments SELECT seq, CONCAT('Department ', seq), NULL FROM {d}.seq_1_to_5",
        f"""INSERT INTO {d}.employees
            SELECT seq, IF(seq % 7 = 0, NULL, 1 + (seq + 1) % 5), IF(seq = 1, NULL, seq DIV 2),
                   CONCAT('Employee ', seq),
                   IF(seq <= {SHARED_PERSONS}, CONCAT('person', seq, '@example.com'),
                      CONCAT('staff', seq, '@corp.example')),
                   IF(seq % 4 = 0, NULL, CONCAT('+1 202 ', LPAD(seq, 7, '0')))
            FROM {d}.seq_1_to_{EMPLOYEES} ORDER BY seq""",
        f"UPDATE {d}.departments SET head_id = ELT(id, 3, 5, 13, 20, NULL)",
        f"""INSERT INTO {d}.audit_log
            SELECT IF(seq % 10 = 0, NULL, 1 + seq % 45), ELT(1 + seq % 3, 'login', 'logout', 'purchase'),
                   '2024-04-01' + INTERVAL (seq % 20) MINUTE
            FROM {d}.seq_1_to_60""",
        f"INSERT INTO {d}.audit_log SELECT * FROM {d}.audit_log WHERE at < '2024-04-01 00:05:00'",  # duplicates
        f"""CREATE VIEW {d}.customer_orders AS
            SELECT c.id AS customer_id, c.name, c.email, o.id AS order_id, o.status
            FROM {d}.customers c JOIN {d}.orders o ON o.customer_id = c.id""",
        f"CREATE VIEW {d}.region_names AS SELECT id, name FROM {d}.regions",
        f"""CREATE VIEW {d}.staff_directory AS
            SELECT e.id, e.name, d.name AS department
            FROM {d}.employees e LEFT JOIN {d}.departments d ON d.id = e.department_id""",
    ]


def build_subset_source(world: World) -> str:
    db = world.source
    for statement in subset_statements(db):
        world.run(statement)
    world.run(f"ANALYZE TABLE {', '.join(f'{q(db)}.{q(t)}' for t in BASE_TABLES)}")
    return db


# -- probes ----------------------------------------------------------------------------------------


def column_names(world: World, db: str, table: str) -> list[str]:
    rows = world.query(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
        " ORDER BY ORDINAL_POSITION",
        (db, table),
    )
    return [str(name) for (name,) in rows]


def column_type(world: World, db: str, table: str, column: str) -> tuple[Any, ...]:
    """(type, nullable, character set, collation) of one column."""
    [row] = world.query(
        "SELECT COLUMN_TYPE, IS_NULLABLE, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND COLUMN_NAME = %s",
        (db, table, column),
    )
    return row


def rows(world: World, db: str, table: str, columns: list[str] | None = None) -> list[tuple[Any, ...]]:
    """Every row (of `columns`, default all), sorted (NULLs first), duplicates kept."""
    cols = columns or column_names(world, db, table)
    listed = ", ".join(q(c) for c in cols)
    return world.query(f"SELECT {listed} FROM {q(db)}.{q(table)} ORDER BY {listed}")


def multiset(values: list[tuple[Any, ...]]) -> Counter[tuple[Any, ...]]:
    return Counter(values)


def target_foreign_keys(world: World, db: str) -> dict[str, tuple[str, tuple[str, ...], str, str, tuple[str, ...]]]:
    """constraint → (child, columns, parent schema, parent, referenced columns) of every FK in `db`.

    MatrixOne's KEY_COLUMN_USAGE is an empty stub on released versions: mo_foreign_keys there.
    """
    if world.engine == "matrixone":
        found = world.query(
            "SELECT constraint_name, table_name, column_name, refer_db_name, refer_table_name, refer_column_name"
            " FROM mo_catalog.mo_foreign_keys WHERE db_name = %s ORDER BY constraint_name, column_id",
            (db,),
        )
    else:
        found = world.query(
                "SELECT CONSTRAINT_NAME, TABLE_NAME, COLUMN_NAME, REFERENCED_TABLE_SCHEMA, REFERENCED_TABLE_NAME,"
            " REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE"
            " WHERE TABLE_SCHEMA = %s AND REFERENCED_TABLE_NAME IS NOT NULL"
            " ORDER BY CONSTRAINT_NAME, ORDINAL_POSITION",
            (db,),
        )
    fks: dict[str, tuple[str, tuple[str, ...], str, str, tuple[str, ...]]] = {}
    for name, table, column, ref_schema, ref_table, ref_column in found:
        child, cols, schema, parent, refs = fks.get(str(name), (str(table), (), str(ref_schema), str(ref_table), ()))
        fks[str(name)] = (child, (*cols, str(column)), schema, parent, (*refs, str(ref_column)))
    return fks


def orphan_count(
    world: World, db: str, child: str, columns: tuple[str, ...], parent: str, ref_columns: tuple[str, ...]
) -> int:
    """Rows of db.child whose (non-NULL) reference finds no row in db.parent."""
    join = " AND ".join(f"p.{q(r)} = c.{q(col)}" for col, r in zip(columns, ref_columns, strict=True))
    not_null = " AND ".join(f"c.{q(col)} IS NOT NULL" for col in columns)
    [(count,)] = world.query(
        f"SELECT COUNT(*) FROM {q(db)}.{q(child)} c LEFT JOIN {q(db)}.{q(parent)} p ON {join}"
        f" WHERE p.{q(ref_columns[0])} IS NULL AND {not_null}"
    )
    return int(count)


def count(world: World, db: str, table: str) -> int:
    return int(world.query(f"SELECT COUNT(*) FROM {q(db)}.{q(table)}")[0][0])
