"""The deepdiff seam: what changed between the applied spec and the desired one, as readable lines; pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from deepdiff import DeepDiff


def _path(parts: list[Any], root: str = "spec") -> str:
    out = root
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _show(value: Any) -> str:
    if value is None:
        return "null"
    return json.dumps(value, sort_keys=True, default=str)


def diff_specs(old: Mapping[str, Any], new: Mapping[str, Any], *, root: str = "spec") -> list[str]:
    """`field: old → new` for every change (added and removed fields included), sorted."""
    if old == new:
        return []
    diff = DeepDiff(dict(old), dict(new), ignore_order=False, verbose_level=2)
    lines: list[str] = []
    for key in ("values_changed", "type_changes"):
        for item in diff.tree.get(key, []):
            lines.append(f"{_path(item.path(output_format='list'), root)}: {_show(item.t1)} → {_show(item.t2)}")
    for item in diff.tree.get("dictionary_item_added", []):
        lines.append(f"{_path(item.path(output_format='list'), root)}: (unset) → {_show(item.t2)}")
    for item in diff.tree.get("dictionary_item_removed", []):
        lines.append(f"{_path(item.path(output_format='list'), root)}: {_show(item.t1)} → (unset)")
    for key in ("iterable_item_added", "iterable_item_removed"):
        for item in diff.tree.get(key, []):
            parent = item.path(output_format="list")[:-1]
            before = _lookup(old, parent)
            after = _lookup(new, parent)
            line = f"{_path(parent, root)}: {_show(before)} → {_show(after)}"
            if line not in lines:
                lines.append(line)
    return sorted(lines)


def _lookup(data: Any, parts: list[Any]) -> Any:
    for part in parts:
        data = data[part]
    return data
