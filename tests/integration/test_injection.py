"""Injection attempts on a real server: hostile names are quoted, hostile fragments and `--var`
values are refused before anything is written.

Names a manifest gives (databases, tables in rules, columns) must be plain names (check_name);
names moenv finds in a source catalog can be anything the server allows (backticks, quotes,
semicolons, spaces, unicode): those are quoted in one place (engines/base.py quote_ident) and
copied exactly. A canary database, named inside the hostile strings, proves nothing else ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.reliability_support import Bench, Run, ledger_status, no_traceback, q
from tests.support.mariadb import Sandbox

from moenv.engines.base import qualified, quote_ident


@pytest.fixture
def bench(sandbox: Sandbox, tmp_path: Path) -> Iterator[Bench]:
    with Bench.open(sandbox, tmp_path) as opened:
        canary = opened.database("canary")
        opened.probe.execute(f"CREATE DATABASE {quote_ident(canary)}")
        opened.probe.execute(f"CREATE TABLE {qualified(canary, 'alive')} (id INT PRIMARY KEY)")
        opened.probe.execute(f"INSERT INTO {qualified(canary, 'alive')} VALUES (1)")
        yield opened


def canary_alive(bench: Bench) -> bool:
    canary = bench.database("canary")
    return bench.exists(canary) and bench.probe.query(f"SELECT id FROM {qualified(canary, 'alive')}") == [(1,)]


def hostile_names(bench: Bench) -> list[str]:
    canary = bench.database("canary")
    return [
        "we`ird",
        "it's",
        'dq"table',
        "semi;colon",
        f"x`; DROP DATABASE `{canary}`; --",
        "sp ace",
        "ünï€中",  # identifiers are utf8mb3: no 4-byte characters
        "sl/ash\\back",
        "dash-name",
    ]


def test_hostile_source_names_are_quoted_and_copied_exactly(bench: Bench) -> None:
    src = bench.source
    bench.probe.execute(f"CREATE DATABASE {quote_ident(src)} CHARACTER SET utf8mb4")
    names = hostile_names(bench)
    parent = qualified(src, names[0])
    key, name_col, semi_col = quote_ident("i`d"), quote_ident("na'me"), quote_ident("c;ol")
    ref, value = quote_ident("ref`id"), quote_ident('v"al')
    bench.probe.execute(
        f"CREATE TABLE {parent} ({key} INT PRIMARY KEY, {name_col} VARCHAR(40), {semi_col} VARCHAR(40),"
        f" KEY {quote_ident('ix`; DROP')} ({name_col}))"
    )
    bench.probe.execute(f"INSERT INTO {parent} VALUES (1, 'a''b', 'x`y'), (2, '; DROP DATABASE x; --', NULL)")
    for name in names[1:]:
        bench.probe.execute(
            f"CREATE TABLE {qualified(src, name)} (id INT PRIMARY KEY, {ref} INT, {value} VARCHAR(40),"
            f" CONSTRAINT {quote_ident('fk`' + name[:20])} FOREIGN KEY ({ref}) REFERENCES {parent} ({key}))"
        )
        bench.probe.execute(f"INSERT INTO {qualified(src, name)} VALUES (1, 1, %s), (2, 2, NULL)", (name,))
    bench.probe.execute(f"CREATE VIEW {qualified(src, 'v`iew')} AS SELECT {name_col} FROM {parent}")
    path = bench.manifest("dev")
    target = bench.database("dev")

    run = bench.cli("apply", str(path), "--yes")

    assert run.code == 0, run
    source, copy = bench.content(src), bench.content(target)
    assert sorted(copy["tables"]) == sorted(names)
    assert copy == source
    assert bench.probe.query(f"SELECT {name_col} FROM {qualified(target, 'v`iew')} ORDER BY 1") == [
        ("; DROP DATABASE x; --",),
        ("a'b",),
    ]
    [(definition,)] = bench.probe.query(
        "SELECT VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s", (target,)
    )
    assert quote_ident(src) not in definition  # the copied view reads the copy
    assert bench.cli("plan", str(path), "--detailed-exitcode").code == 0
    assert bench.cli("destroy", bench.env("dev"), "--yes").code == 0
    assert not bench.exists(target)
    assert canary_alive(bench)


def refused_before_writing(bench: Bench, run: Run, *phrases: str, label: str = "") -> None:
    assert run.code == 1, f"{label}\n{run}"
    no_traceback(run)
    assert any(line.startswith("error:") and ".yaml:" in line for line in run.stderr.splitlines()), run
    for phrase in phrases:
        assert phrase in run.stderr, run
    assert not bench.exists(bench.ledger), "the ledger was created"
    assert not bench.exists(bench.database("dev"))
    assert canary_alive(bench)


def test_hostile_fragments_are_refused_before_anything_is_written(bench: Bench) -> None:
    bench.build_source()
    canary = bench.database("canary")
    attempts = {
        f"where: 1=1; DROP DATABASE {canary}": {"users": {"where": f"1=1; DROP DATABASE {canary}"}},
        "where: trailing comment": {"users": {"where": "1=1 -- and more"}},
        "where: union": {"users": {"where": "1 UNION SELECT 1"}},
        "where: union reading a system table": {"users": {"where": "id IN (SELECT 1 UNION SELECT 1 FROM mysql.user)"}},
        "where: other database": {"users": {"where": f"id IN (SELECT id FROM {canary}.alive)"}},
        "where: system schema": {"users": {"where": "id IN (SELECT 1 FROM mysql.user)"}},
        "where: sleep": {"users": {"where": "SLEEP(5) = 0"}},
        "where: user variable": {"users": {"where": "(@x := id) > 0"}},
        "where: locking read": {"users": {"where": "id IN (SELECT id FROM users FOR UPDATE)"}},
        "mask: subquery": {"users": {"mask": {"name": "(SELECT COUNT(*) FROM orders)"}}},
        "mask: load_file": {"users": {"mask": {"name": "LOAD_FILE('/etc/passwd')"}}},
        "mask: second statement": {"users": {"mask": {"name": f"'x'); DROP DATABASE {canary}; SELECT ('x"}}},
        "mask: unknown column": {"users": {"mask": {"name": "password"}}},
        "rules: hostile table name": {"us`ers": {"where": "1=1"}},
        "mask: hostile column name": {"users": {"mask": {"na`me": "NULL"}}},
    }
    for label, rules in attempts.items():
        path = bench.manifest("dev", rules=rules, file="attempt.yaml")
        refused_before_writing(bench, bench.cli("apply", str(path), "--yes"), label=label)
        if label != "mask: unknown column":  # only the catalog knows the columns: refused at plan time
            assert bench.cli("validate", str(path)).code == 1, f"validate accepts {label}"
    hostile_target = bench.manifest("dev", target=f"dev`; DROP DATABASE `{canary}", file="attempt.yaml")
    refused_before_writing(bench, bench.cli("apply", str(hostile_target), "--yes"), "not an accepted name")

    # Quotes inside a string literal are data, not SQL: accepted, and they only filter rows.
    literal = bench.manifest("dev", rules={"users": {"where": f"name = 'x''; DROP DATABASE {canary}; --'"}})
    run = bench.cli("apply", str(literal), "--yes")
    assert run.code == 0, run
    assert bench.content(bench.database("dev"))["tables"]["users"][1] == 0
    assert canary_alive(bench)


def test_hostile_var_values_are_refused_or_stay_data(bench: Bench) -> None:
    bench.build_source()
    canary = bench.database("canary")
    path = bench.directory / "templated.yaml"
    path.write_text(
        "apiVersion: moenv/v1\nkind: Environment\n"
        f"metadata: {{name: {bench.env('dev')}, description: \"for {{{{ vars.who }}}}\"}}\n"
        f"spec:\n  source: {{database: {bench.source}}}\n  target: {{database: \"{{{{ vars.db }}}}\"}}\n"
        "  rules:\n    users: {where: \"name = '{{ vars.who }}'\"}\n",
        encoding="utf-8",
    )
    target = bench.database("dev")
    for db, who in (
        (f"{target}`; DROP DATABASE `{canary}", "x"),
        (f"{target}; DROP DATABASE {canary}", "x"),
        (target, f"x'; DROP DATABASE {canary}; --"),
        (target, "x' OR 1=1 -- "),
        (target, "x' UNION SELECT password FROM mysql.user WHERE '1'='1"),
    ):
        run = bench.cli("apply", str(path), "--yes", "--var", f"db={db}", "--var", f"who={who}")
        refused_before_writing(bench, run)

    # A value that closes the quote yet stays one expression on the table's own columns is a filter:
    # it changes which rows are copied (the manifest's author put a variable there), nothing else.
    run = bench.cli("apply", str(path), "--yes", "--var", f"db={target}", "--var", "who=x' OR 'a'='a")
    assert run.code == 0, run
    assert bench.content(target)["tables"]["users"][1] == 30
    assert ledger_status(bench.probe, bench.ledger) == {bench.env("dev"): "ready"}
    assert canary_alive(bench)
    assert bench.probe.query(f"SELECT COUNT(*) FROM {q(bench.source)}.users") == [(30,)]
