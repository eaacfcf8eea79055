"""Shared pytest setup: MariaDB servers, per-test sandboxes, the hypothesis profile, the integration marker.

Servers: MOENV_TEST_URL / MOENV_TEST_URL2 (mysql://user[:password]@host:port/) when set,
otherwise private throw-away servers started for the session (tests/support/mariadb.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from tests.support.mariadb import PrivateMariaDB, Sandbox, open_sandbox

__all__ = ["Sandbox"]

settings.register_profile("ci", deadline=None, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: needs a real MariaDB server (every test under tests/integration/)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.path).resolve().is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


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
def sandbox(mariadb_url: str) -> Iterator[Sandbox]:
    """A unique prefix and ledger name on the main server; their databases are dropped at teardown."""
    box = open_sandbox(mariadb_url)
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
