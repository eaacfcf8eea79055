"""Pure: an EnvironmentSpec and its source Catalog → Desired (table set, order, columns, views)."""

from moenv.resolve.build import resolve_environment

__all__ = ["resolve_environment"]
