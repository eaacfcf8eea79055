"""The JSON Schema of the manifest format, generated from the models (`moenv schema`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moenv.models.manifest import EnvironmentSpec

SCHEMA_FILE = "environment.schema.json"


def build_schema() -> dict[str, Any]:
    schema = EnvironmentSpec.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://moenv.dev/schemas/environment.schema.json",
        "title": "moenv Environment (apiVersion moenv/v1)",
        **schema,
    }


def render_schema() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schema(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SCHEMA_FILE
    path.write_text(render_schema(), encoding="utf-8")
    return path
