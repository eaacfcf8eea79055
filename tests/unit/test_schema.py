"""The committed JSON Schema is current, and every example manifest in environments/ validates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit.builders import NOW

from moenv.manifest.loader import MANIFEST_SUFFIXES, load_manifests
from moenv.manifest.schema_export import SCHEMA_FILE, render_schema

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "schemas" / SCHEMA_FILE
EXAMPLES = sorted(p for p in (ROOT / "environments").iterdir() if p.suffix in MANIFEST_SUFFIXES)


def test_the_committed_schema_is_current() -> None:
    assert SCHEMA.is_file(), f"{SCHEMA} is missing: run `moenv schema` and commit the result"
    assert SCHEMA.read_text(encoding="utf-8") == render_schema(), (
        f"{SCHEMA} is stale: run `moenv schema` and commit the result"
    )


def test_the_schema_describes_the_manifest_and_forbids_unknown_keys() -> None:
    schema = json.loads(render_schema())

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["apiVersion", "kind", "metadata", "spec"]
    assert schema["additionalProperties"] is False
    clone = schema["$defs"]["CloneSpec"]
    assert clone["additionalProperties"] is False
    assert clone["properties"]["data"]["enum"] == ["full", "schema"]
    assert "expires" in clone["properties"]["ttl"]["description"]
    assert "from" in schema["$defs"]["RelationSpec"]["properties"]


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_manifest_validates(path: Path) -> None:
    loaded = load_manifests([path], env={"USER": "ci"}, now=NOW)

    assert loaded
    assert all(m.path == path for m in loaded)


def test_the_examples_load_together_without_name_clashes() -> None:
    loaded = load_manifests([ROOT / "environments"], env={"USER": "ci"}, now=NOW)

    names = [m.name for m in loaded]
    assert len(names) == len(set(names)) >= len(EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_point_editors_at_the_schema(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]

    assert first == f"# yaml-language-server: $schema=../schemas/{SCHEMA_FILE}"
