"""The test servers themselves: the sandbox fixtures and the private MariaDB launcher."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pymysql
import pytest
from tests.support.mariadb import PrivateMariaDB, Sandbox, connect

pytestmark = pytest.mark.mariadb_only(
    "tests the private MariaDB launcher and the sandbox fixtures themselves"
)

REPO = Path(__file__).resolve().parents[2]


def test_sandbox_server_is_mariadb(sandbox: Sandbox) -> None:
    [(version,)] = sandbox.query("SELECT VERSION()")
    assert "MariaDB" in version


def test_every_integration_test_is_marked(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("integration") is not None


def test_sandbox_names_are_short_and_safe(sandbox: Sandbox) -> None:
    assert re.fullmatch(r"[a-z0-9_]{2,12}", sandbox.prefix)
    assert sandbox.prefix.endswith("_")
    assert re.fullmatch(r"moenv_[a-z0-9_]{1,12}", sandbox.ledger)
    assert sandbox.token in sandbox.ledger
    assert sandbox.databases() == []


def test_sandbox_helpers_round_trip_utf8mb4(sandbox: Sandbox) -> None:
    db = sandbox.prefix + "app"
    sandbox.execute(f"CREATE DATABASE `{db}`")
    sandbox.execute(f"CREATE TABLE `{db}`.t (id INT PRIMARY KEY, name VARCHAR(20)) CHARSET utf8mb4")
    assert sandbox.execute(f"INSERT INTO `{db}`.t VALUES (%s, %s), (%s, %s)", (1, "añb", 2, "🐬")) == 2
    assert sandbox.query(f"SELECT id, name FROM `{db}`.t ORDER BY id") == [(1, "añb"), (2, "🐬")]
    connection = sandbox.connect(db)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT DATABASE(), @@autocommit")
            assert cursor.fetchone() == (db, 1)
    finally:
        connection.close()
    assert sandbox.databases() == [db]


def test_sandbox_teardown_drops_its_databases(mariadb_url: str, tmp_path: Path) -> None:
    """Run the real fixture in a child pytest on this server, then look for what it left behind."""
    tokens = tmp_path / "tokens.txt"
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_child.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path

            def _fill(sandbox):
                Path({str(tokens)!r}).open("a").write(sandbox.token + "\\n")
                for name in (sandbox.prefix + "app", "_moenv_" + sandbox.prefix + "app", sandbox.ledger):
                    sandbox.execute(f"CREATE DATABASE `{{name}}`")
                    sandbox.execute(f"CREATE TABLE `{{name}}`.t (id INT)")
                assert len(sandbox.databases()) == 3

            def test_passes(sandbox):
                _fill(sandbox)

            def test_fails(sandbox):
                _fill(sandbox)
                raise AssertionError("teardown must clean up after a failed test too")
            """
        )
    )
    env = {
        **os.environ,
        "MOENV_TEST_URL": mariadb_url,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
    }
    isolated = ["-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), "-p", "no:cacheprovider"]
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", *isolated, "test_child.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "1 failed, 1 passed" in child.stdout, child.stdout + child.stderr
    assert "teardown must clean up" in child.stdout
    assert "error" not in child.stdout.splitlines()[-1]

    children = tokens.read_text().split()
    assert len(children) == 2
    assert len(set(children)) == 2
    connection = connect(mariadb_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW DATABASES")
            left = [name for (name,) in cursor.fetchall() if any(token in name for token in children)]
    finally:
        connection.close()
    assert left == []


def test_second_server_is_another_server(sandbox: Sandbox, second_sandbox: Sandbox) -> None:
    assert sandbox.url != second_sandbox.url
    marker = sandbox.prefix + "only_on_first"
    sandbox.execute(f"CREATE DATABASE `{marker}`")
    assert sandbox.query("SHOW DATABASES LIKE %s", (marker,)) == [(marker,)]
    assert second_sandbox.query("SHOW DATABASES LIKE %s", (marker,)) == []
    [(version,)] = second_sandbox.query("SELECT VERSION()")
    assert "MariaDB" in version


def _rows(server: PrivateMariaDB) -> list[tuple[int, str]]:
    connection = connect(server.url, "keep")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id, note FROM t ORDER BY id")
            return [(int(i), str(note)) for i, note in cursor.fetchall()]
    finally:
        connection.close()


def _insert(server: PrivateMariaDB, row_id: int, note: str) -> None:
    connection = connect(server.url, "keep")
    try:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO t VALUES (%s, %s)", (row_id, note))
    finally:
        connection.close()


def test_private_server_restart_and_kill_keep_committed_data(tmp_path: Path) -> None:
    server = PrivateMariaDB.start(tmp_path / "srv")
    try:
        assert server.url == f"mysql://root@127.0.0.1:{server.port}/"
        assert server.port != 3306
        first_pid = server.pid
        assert first_pid is not None
        connection = connect(server.url)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT @@datadir, @@character_set_server, @@local_infile")
                row = cursor.fetchone()
                assert row is not None
                datadir, charset, local_infile = row
                assert Path(datadir).resolve() == (tmp_path / "srv" / "data").resolve()
                assert (charset, local_infile) == ("utf8mb4", 1)
                cursor.execute("CREATE DATABASE keep")
                cursor.execute("CREATE TABLE keep.t (id INT PRIMARY KEY, note VARCHAR(20)) ENGINE=InnoDB")
                cursor.execute("INSERT INTO keep.t VALUES (1, 'before restart')")
        finally:
            connection.close()

        server.restart()
        assert server.pid not in (None, first_pid)
        assert server.url == f"mysql://root@127.0.0.1:{server.port}/"
        assert _rows(server) == [(1, "before restart")]

        _insert(server, 2, "before kill")
        server.kill()
        assert server.pid is None
        with pytest.raises(pymysql.err.OperationalError):
            connect(server.url).close()
        server.restart()  # crash recovery on the same datadir and port
        assert _rows(server) == [(1, "before restart"), (2, "before kill")]

        server.stop()
        assert not server.running
        server.stop()  # stopping twice is harmless
    finally:
        server.stop()

    again = PrivateMariaDB.start(tmp_path / "srv")  # an existing datadir is reused, not reinitialised
    try:
        assert _rows(again) == [(1, "before restart"), (2, "before kill")]
    finally:
        again.stop()
