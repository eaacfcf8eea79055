"""Shared pytest setup: servers per engine, per-test sandboxes, the hypothesis profile, the markers.

Servers: MOENV_TEST_URL / MOENV_TEST_URL2 (mysql://user[:password]@host:port/) when set,
otherwise private throw-away MariaDB servers started for the session (tests/support/mariadb.py).

Engines: every integration test that works in a `sandbox` runs once per engine of
tests/support/dialect.py ENGINES (test ids `[mariadb]`, `[matrixone]`), unless it is marked
`mariadb_only("why")`. The MatrixOne runs use MOENV_TEST_MATRIXONE_URL; without it they are
skipped with a reason that says they were not run, and the summary counts them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from tests.support.dialect import ENGINES, MATRIXONE_NOT_RUN, MATRIXONE_URL_ENV, matrixone_url
from tests.support.mariadb import PrivateMariaDB, Sandbox, open_sandbox

__all__ = ["Sandbox"]

settings.register_profile("ci", deadline=None, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: needs a real database server (every test under tests/integration/)"
    )
    config.addinivalue_line(
        "markers",
        "mariadb_only(reason): runs on MariaDB only, never parametrized by engine; the reason says why",
    )


def _in_integration(path: Path | str) -> bool:
    return Path(path).resolve().is_relative_to(INTEGRATION_DIR)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One run per engine for every integration test whose fixtures ask for the `engine`."""
    if "engine" not in metafunc.fixturenames or not _in_integration(metafunc.definition.path):
        return
    only = metafunc.definition.get_closest_marker("mariadb_only")
    if only is not None and not (only.args or only.kwargs.get("reason")):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: mariadb_only needs a reason")
    engines = ["mariadb"] if only is not None else list(ENGINES)
    metafunc.parametrize("engine", engines, indirect=True, ids=engines)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _in_integration(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Fold the MatrixOne not-run skips into one summary line (they are one cause, not N findings)."""
    outcome: Any = yield
    report = outcome.get_result()
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and MATRIXONE_NOT_RUN in str(longrepr[2]):
        report.longrepr = (os.path.relpath(__file__), 0, longrepr[2])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many engine runs were not run, so a skip is never read as a pass."""
    skipped = terminalreporter.stats.get("skipped", [])
    # every skip for want of the URL: the engine runs, and test_matrixone.py as a module
    not_run = sum(1 for report in skipped if MATRIXONE_URL_ENV in str(getattr(report, "longrepr", "")))
    if not_run:
        terminalreporter.write_line(
            f"MatrixOne: {not_run} integration test runs NOT RUN (no server; set {MATRIXONE_URL_ENV})",
            yellow=True,
        )


def _server_url(env: str, name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get(env)
    if url:
        yield url
        return
    server = PrivateMariaDB.start(tmp_path_factory.mktemp(name, numbered=True))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mariadb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the session's server: MOENV_TEST_URL, or a private MariaDB started for the session."""
    yield from _server_url("MOENV_TEST_URL", "mariadb", tmp_path_factory)


@pytest.fixture(scope="session")
def second_mariadb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a second, different server for cross-server tests: MOENV_TEST_URL2, or a private one."""
    yield from _server_url("MOENV_TEST_URL2", "mariadb2", tmp_path_factory)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    """The engine this run of the test is for (`mariadb` unless parametrized by pytest_generate_tests)."""
    return str(getattr(request, "param", "mariadb"))


@pytest.fixture
def server_url(engine: str, request: pytest.FixtureRequest) -> str:
    """The URL of the server for `engine`: the session's MariaDB, or MOENV_TEST_MATRIXONE_URL."""
    if engine == "mariadb":
        return str(request.getfixturevalue("mariadb_url"))
    return matrixone_url()




@pytest.fixture
def sandbox(server_url: str) -> Iterator[Sandbox]:
    """A unique prefix and ledger name on the engine's server; their databases are dropped at teardown."""
    box = open_sandbox(server_url)
    try:
        yield box
    finally:
        box.drop_all()


@pytest.fixture
def second_sandbox(second_mariadb_url: str) -> Iterator[Sandbox]:
    """Like sandbox, on the second server."""
    box = open_sandbox(second_mariadb_url)
    try:
        yield box
    finally:
        box.drop_all()
