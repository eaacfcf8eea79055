"""Pure: desired environments + live state → Plan; policy checks; text and JSON rendering."""

from moenv.planner.build import build_plan

__all__ = ["build_plan"]
