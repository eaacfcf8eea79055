"""`import moenv`: the public names are pinned, and every clone call has its async twin with the same parameters."""

from __future__ import annotations

import inspect

import moenv
from moenv.clone import AsyncCloneManager, CloneManager

# Not operations of the guide: helpers every CloneManager has, without an async twin.
SYNC_ONLY = {"config", "server", "environment_name"}


def test_all_is_pinned() -> None:
    assert moenv.__all__ == [
        "AsyncClient",
        "AsyncCloneManager",
        "Client",
        "CloneError",
        "CloneManager",
        "ConfigError",
        "ConflictError",
        "DatabaseError",
        "ManifestError",
        "MoenvError",
        "__version__",
        "connect",
        "connect_async",
    ]
    for name in moenv.__all__:
        assert hasattr(moenv, name), name


def test_the_errors_the_guide_catches_are_moenv_errors() -> None:
    assert issubclass(moenv.CloneError, moenv.MoenvError)
    assert issubclass(moenv.DatabaseError, moenv.MoenvError)


def test_every_guide_operation_has_an_async_twin_with_the_same_parameters() -> None:
    operations = sorted(n for n in vars(CloneManager) if not n.startswith("_") and n not in SYNC_ONLY)
    assert operations == [
        "cleanup_old_clones",
        "clone_cross_database",
        "clone_cross_server",
        "clone_database",
        "clone_database_incremental",
        "clone_database_schema",
        "clone_related_tables",
        "clone_table",
        "clone_table_schema",
        "clone_tables",
        "delete_clone",
        "get_clone",
        "get_clone_statistics",
        "get_clone_status",
        "get_database_tables",
        "list_clones",
    ]
    for name in operations:
        twin = getattr(AsyncCloneManager, f"{name}_async")
        assert inspect.iscoroutinefunction(twin), name
        sync_params = inspect.signature(getattr(CloneManager, name)).parameters
        async_params = inspect.signature(twin).parameters
        assert [(p.name, p.default) for p in sync_params.values()] == [
            (p.name, p.default) for p in async_params.values()
        ], name


def test_connect_and_connect_async_take_the_same_options() -> None:
    assert not inspect.iscoroutinefunction(moenv.connect)
    assert inspect.iscoroutinefunction(moenv.connect_async)
    assert list(inspect.signature(moenv.connect).parameters) == list(inspect.signature(moenv.connect_async).parameters)
