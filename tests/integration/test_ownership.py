"""Ownership: moenv never drops, alters or writes a database its ledger does not own, even when a
manifest names it; a target equal to a source is refused; source sessions are read-only at the
server, and a whole lifecycle works for a user that may only read the source.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pymysql
import pytest
from tests.reliability_support import Bench, Run, ledger_status, no_traceback, q
from tests.support.mariadb import Sandbox

from moenv.errors import DatabaseError
from moenv.live.connection import connect
from moenv.models.config import Server
from moenv.models.ledger import staging_database


@pytest.fixture
def bench(sandbox: Sandbox, tmp_path: Path) -> Iterator[Bench]:
    with Bench.open(sandbox, tmp_path) as opened:
        opened.build_source()
        yield opened


def unmanaged_database(bench: Bench, db: str) -> dict[str, object]:
    """A database someone made by hand (a table with rows, a view); returns what a reader sees in it."""
    d = q(db)
    bench.probe.execute(f"CREATE DATABASE {d}")
    bench.probe.execute(f"CREATE TABLE {d}.precious (id INT PRIMARY KEY, note VARCHAR(40))")
    bench.probe.execute(f"INSERT INTO {d}.precious VALUES (1, 'keep me'), (2, 'and me')")
    bench.probe.execute(f"CREATE VIEW {d}.precious_view AS SELECT note FROM {d}.precious")
    return bench.content(db)


def refused(run: Run, *phrases: str) -> None:
    assert run.code == 1, run
    no_traceback(run)
    for phrase in phrases:
        assert phrase in run.stderr, run


def test_an_unmanaged_target_is_refused_and_left_alone_until_adopted(bench: Bench) -> None:
    path = bench.manifest("dev")
    env, target = bench.env("dev"), bench.database("dev")
    before = unmanaged_database(bench, target)
    source = bench.content(bench.source)

    refused(bench.cli("plan", str(path)), "not managed by moenv", "--adopt")
    for flags in ((), ("--force",), ("--prune",), ("--force", "--prune")):
        refused(bench.cli("apply", str(path), "--yes", *flags), "not managed by moenv", "--adopt")
    refused(bench.cli("destroy", env, "--yes"), f"no environment named {env!r}")
    assert bench.cli("gc", "--yes").code == 0
    assert bench.content(target) == before
    assert env not in ledger_status(bench.probe, bench.ledger)

    adopted = bench.cli("apply", str(path), "--yes", "--adopt")  # explicit, after review
    assert adopted.code == 0, adopted
    assert "adopting the existing database" in adopted.stdout
    assert bench.content(target)["tables"] == source["tables"]
    assert ledger_status(bench.probe, bench.ledger)[env] == "ready"
    assert bench.cli("plan", str(path), "--detailed-exitcode").code == 0
    assert bench.content(bench.source) == source


def test_a_database_created_by_hand_after_the_plan_is_not_replaced_by_its_apply(bench: Bench) -> None:
    """A saved plan says `create`; before it is applied someone creates that database by hand.
    Applying the plan must refuse (the database is not moenv's), not move its tables away and drop them."""
    path = bench.manifest("dev")
    target = bench.database("dev")
    saved = bench.cli("plan", str(path), "-o", "plan.json")
    assert saved.code == 0, saved
    before = unmanaged_database(bench, target)

    run = bench.cli("apply", "plan.json", "--yes")

    assert bench.content(target) == before, f"an unmanaged database was changed by:\n{run}"
    refused(run, "not managed by moenv")


def test_a_target_owned_by_another_environment_is_refused(bench: Bench) -> None:
    first = bench.manifest("dev", file="one/dev.yaml")
    assert bench.cli("apply", str(first), "--yes").code == 0
    before = bench.content(bench.database("dev"))
    other = bench.manifest("other", target=bench.database("dev"), file="two/other.yaml")

    refused(bench.cli("apply", str(other), "--yes", "--force"), f"already belongs to environment {bench.env('dev')}")
    refused(bench.cli("apply", str(other), "--yes", "--adopt"), f"already belongs to environment {bench.env('dev')}")
    assert bench.content(bench.database("dev")) == before


def test_a_target_that_is_a_source_or_a_reserved_database_is_refused(bench: Bench) -> None:
    source = bench.content(bench.source)
    onto_itself = bench.manifest("self", target=bench.source, file="self/self.yaml")
    refused(bench.cli("apply", str(onto_itself), "--yes", "--adopt", "--force"), "moenv never writes to a source")

    # Two environments: the second one's target is the first one's source.
    other = bench.database("other")
    bench.probe.execute(f"CREATE DATABASE {q(other)}")
    bench.probe.execute(f"CREATE TABLE {q(other)}.t (id INT PRIMARY KEY)")
    bench.manifest("reader", file="pair/reader.yaml")
    bench.manifest("writer", source=other, target=bench.source, file="pair/writer.yaml")
    refused(bench.cli("apply", "pair", "--yes", "--adopt", "--force"), "moenv never writes to a source")

    for short, target, why in (
        ("ledger", bench.ledger, "is moenv's ledger database"),
        ("system", "mysql", "is a system database"),
        ("staging", staging_database("x"), "reserved"),
    ):
        path = bench.manifest(short, target=target, file=f"reserved/{short}.yaml")
        refused(bench.cli("apply", str(path), "--yes", "--adopt", "--force"), why)

    assert bench.content(bench.source) == source
    assert not bench.exists(bench.database("reader"))
    assert ledger_status(bench.probe, bench.ledger) == {}


def test_prune_and_gc_delete_only_what_the_ledger_owns(bench: Bench) -> None:
    kept = bench.manifest("old", file="before/old.yaml")
    assert bench.cli("apply", str(kept), "--yes").code == 0
    stray = bench.database("stray")
    stray_before = unmanaged_database(bench, stray)
    # A database named like moenv's staging, of an environment that is in no ledger: not moenv's either.
    lookalike = staging_database(f"{bench.box.token}-unknown")
    bench.probe.execute(f"CREATE DATABASE {q(lookalike)}")
    bench.probe.execute(f"CREATE TABLE {q(lookalike)}.t (id INT PRIMARY KEY)")
    try:
        (bench.directory / "empty").mkdir()
        refused(bench.cli("apply", "empty", "--prune", "--yes"), "--prune with no environments loaded")
        assert ledger_status(bench.probe, bench.ledger) == {bench.env("old"): "ready"}

        bench.manifest("new", file="after/new.yaml")
        pruned = bench.cli("apply", "after", "--prune", "--yes")
        assert pruned.code == 0, pruned
        assert ledger_status(bench.probe, bench.ledger) == {bench.env("new"): "ready"}
        assert not bench.exists(bench.database("old"))
        assert bench.cli("gc", "--yes", "--force").code == 0
        assert bench.content(stray) == stray_before
        assert bench.exists(lookalike)
        assert bench.probe.query(f"SHOW TABLES FROM {q(lookalike)}") == [("t",)]
    finally:
        bench.probe.execute(f"DROP DATABASE IF EXISTS {q(lookalike)}")


@pytest.mark.mariadb_only("a read-only session is MariaDB/MySQL's SET SESSION TRANSACTION READ ONLY")
def test_source_sessions_are_read_only_at_the_server(bench: Bench) -> None:
    before = bench.content(bench.source)
    s = q(bench.source)
    with connect(Server.from_url("default", bench.url), read_only=True) as session:
        assert session.scalar("SELECT @@session.tx_read_only") == 1
        for statement in (
            f"INSERT INTO {s}.users VALUES (999, 'intruder', NULL)",
            f"UPDATE {s}.users SET name = 'changed'",
            f"DELETE FROM {s}.orders",
            f"CREATE TABLE {s}.new_table (id INT)",
            f"DROP TABLE {s}.orders",
            f"TRUNCATE TABLE {s}.orders",
        ):
            with pytest.raises(DatabaseError) as caught:
                session.execute(statement)
            assert caught.value.code == 1792, (statement, caught.value)
            assert caught.value.hint and "read-only" in caught.value.hint
    assert bench.content(bench.source) == before


@pytest.mark.mariadb_only("MariaDB users and grants (user@host); MatrixOne's accounts and roles differ")
def test_a_whole_lifecycle_needs_no_write_privilege_on_the_source(bench: Bench) -> None:
    """A user that may only read the source (and owns the target, the ledger and moenv's work
    databases) creates, refreshes and destroys an environment: moenv never needs to write a source."""
    s = q(bench.source)
    bench.probe.execute(f"CREATE VIEW {s}.order_totals AS SELECT user_id, SUM(total) AS total FROM {s}.orders"
                        " GROUP BY user_id")
    before = bench.content(bench.source)
    user, password = f"ro_{bench.box.token}", secrets.token_hex(8)
    path = bench.manifest("dev")
    env = bench.env("dev")
    bench.probe.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
    try:
        grants = [
            f"GRANT SELECT, SHOW VIEW ON {s}.* TO %s@'%%'",
            f"GRANT ALL ON {q(bench.database('dev'))}.* TO %s@'%%'",
            f"GRANT ALL ON {q(bench.ledger)}.* TO %s@'%%'",
            "GRANT ALL ON `\\_moenv\\_%%`.* TO %s@'%%'",
        ]
        for grant in grants:
            bench.probe.execute(grant, (user,))
        url = f"mysql://{user}:{quote(password, safe='')}@{bench.url.split('@', 1)[1]}"
        # The user really cannot write the source.
        host, port = bench.url.split("@", 1)[1].rstrip("/").split(":")
        with pytest.raises(pymysql.MySQLError) as denied:
            raw = pymysql.connect(host=host, port=int(port), user=user, password=password)
            try:
                raw.cursor().execute(f"INSERT INTO {s}.users VALUES (999, 'intruder', NULL)")
            finally:
                raw.close()
        assert denied.value.args[0] == 1142

        for args in (("apply", str(path), "--yes"), ("refresh", env, str(path), "--yes"), ("destroy", env, "--yes")):
            run = bench.cli(*args, url=url)
            assert run.code == 0, run
            if args[0] == "refresh":
                seen = bench.content(bench.database("dev"))
                assert seen["tables"] == before["tables"] and seen["views"] == ["order_totals"]
        assert not bench.exists(bench.database("dev"))
        assert bench.content(bench.source) == before
    finally:
        bench.probe.execute("DROP USER IF EXISTS %s@'%%'", (user,))
