"""moenv.manifest.loader: files → specs, with every problem located by file:line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.unit.builders import NOW, manifest_dict

from moenv.errors import ConfigError, ManifestError, Problem
from moenv.manifest.loader import LoadedManifest, load_manifests, load_variables
from moenv.manifest.support import unsupported_fields
from moenv.models.manifest import EnvironmentSpec

VALID = """\
# yaml-language-server: $schema=../schemas/environment.schema.json
apiVersion: moenv/v1
kind: Environment
metadata:
  name: dev
  description: Development copy
  labels: {team: core}
spec:
  source: {server: prod, database: production_db}
  target: {database: dev_db}
  data: schema
  tables:
    include: ["*"]
    exclude: ["temp_*", audit_log]
"""


def manifest(name: str, *, source: str = "production_db", target: str | None = None, extra: str = "") -> str:
    """A minimal valid document; `extra` is appended inside `spec:` (indent it by two spaces)."""
    return (
        "apiVersion: moenv/v1\n"
        "kind: Environment\n"
        "metadata:\n"
        f"  name: {name}\n"
        "spec:\n"
        f"  source: {{database: {source}}}\n"
        f"  target: {{database: {target or name.replace('-', '_') + '_db'}}}\n"
        f"{extra}"
    )


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def load(
    *paths: Path, variables: dict[str, str] | None = None, env: dict[str, str] | None = None
) -> list[LoadedManifest]:
    return load_manifests(list(paths), variables=variables, env=env if env is not None else {}, now=NOW)


def problems_of(*paths: Path, variables: dict[str, str] | None = None) -> tuple[Problem, ...]:
    with pytest.raises(ManifestError) as caught:
        load(*paths, variables=variables)
    return caught.value.problems


# --- what loads ----------------------------------------------------------------------------


def test_a_valid_file_loads_with_its_fields_and_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "dev.yaml", VALID)

    (loaded,) = load(path)

    assert loaded.name == "dev"
    assert loaded.path == path
    assert loaded.line == 2  # the document starts after the comment
    assert loaded.spec.metadata.description == "Development copy"
    assert loaded.spec.metadata.labels == {"team": "core"}
    assert loaded.spec.spec.source.server == "prod"
    assert loaded.spec.spec.target_server == "prod"  # defaults to the source's server
    assert loaded.spec.spec.data == "schema"
    assert loaded.spec.spec.tables.exclude == ["temp_*", "audit_log"]
    assert loaded.line_of(("spec", "target", "database")) == 10
    assert loaded.line_of(("spec", "tables", "exclude", 1)) == 14
    assert loaded.line_of(("spec", "no", "such", "field")) == 8  # deepest known prefix: `spec:`


def test_several_documents_in_one_file(tmp_path: Path) -> None:
    text = manifest("one") + "---\n" + manifest("two", target="second_db") + "---\n"
    path = write(tmp_path, "both.yaml", text)

    loaded = load(path)

    assert [(m.name, m.line, m.spec.spec.target.database) for m in loaded] == [
        ("one", 1, "one_db"),
        ("two", 9, "second_db"),
    ]


def test_a_directory_loads_yaml_and_yml_files_sorted(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", manifest("bravo"))
    write(tmp_path, "a.yml", manifest("alpha"))
    write(tmp_path, "c.yaml", manifest("charlie"))
    write(tmp_path, "notes.txt", "not a manifest: {{ this would fail }}")
    write(tmp_path, "README.md", "# not a manifest either")
    (tmp_path / "sub.yaml").mkdir()  # a directory named like a manifest is not a file

    loaded = load(tmp_path)

    assert [(m.path.name, m.name) for m in loaded] == [("a.yml", "alpha"), ("b.yaml", "bravo"), ("c.yaml", "charlie")]


def test_a_missing_path_is_a_manifest_error_naming_it(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path / "nope.yaml")

    assert problem.path == tmp_path / "nope.yaml"
    assert "no such file" in problem.message


# --- problems, located ---------------------------------------------------------------------


def test_an_unknown_key_names_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "typo.yaml", manifest("typo", extra="  tabels:\n    include: [users]\n"))

    (problem,) = problems_of(path)

    assert (problem.path, problem.line, problem.field) == (path, 8, "spec.tabels")
    assert "unknown field" in problem.message
    assert str(problem).startswith(f"{path}:8: spec.tabels: unknown field")


def test_a_missing_required_field_names_its_parent_line(tmp_path: Path) -> None:
    text = "apiVersion: moenv/v1\nkind: Environment\nmetadata:\n  name: x\nspec:\n  source: {database: a}\n"
    path = write(tmp_path, "missing.yaml", text)

    (problem,) = problems_of(path)

    assert (problem.path, problem.line, problem.field) == (path, 5, "spec.target")
    assert problem.message == "required field is missing"


def test_bad_yaml_indentation_names_file_and_line(tmp_path: Path) -> None:
    text = "apiVersion: moenv/v1\nkind: Environment\nmetadata:\n  name: bad\n   description: oops\n"
    path = write(tmp_path, "indent.yaml", text)

    (problem,) = problems_of(path)

    assert (problem.path, problem.line) == (path, 5)
    assert problem.message.startswith("YAML: ")


def test_an_undefined_template_variable_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "pr.yaml", manifest("pr-{{ vars.nope }}", target="pr_db"))

    (problem,) = problems_of(path)

    assert problem.path == path
    assert "nope" in problem.message
    assert problem.line == 4


def test_an_undefined_template_variable_comes_with_a_hint_about_var(tmp_path: Path) -> None:
    path = write(tmp_path, "pr.yaml", manifest("pr-{{ vars.nope }}", target="pr_db"))

    with pytest.raises(ManifestError) as caught:
        load(path)

    assert caught.value.hint is not None
    assert "--var" in caught.value.hint


def test_problems_in_several_files_are_reported_together(tmp_path: Path) -> None:
    typo = write(tmp_path, "a-typo.yaml", manifest("typo", extra="  tabels: {}\n"))
    yaml_error = write(tmp_path, "b-indent.yaml", "apiVersion: moenv/v1\nmetadata:\n  name: x\n   oops: 1\n")
    undefined = write(tmp_path, "c-undefined.yaml", manifest("pr-{{ vars.nope }}", target="pr_db"))
    write(tmp_path, "d-fine.yaml", manifest("fine"))

    problems = problems_of(tmp_path)

    assert len(problems) == 3
    assert [p.path for p in problems] == [typo, yaml_error, undefined]
    assert [p.line for p in problems[:2]] == [8, 4]
    assert problems[0].field == "spec.tabels"


# --- templating ----------------------------------------------------------------------------


def test_var_substitution(tmp_path: Path) -> None:
    path = write(tmp_path, "pr.yaml", manifest("pr-{{ vars.pr }}", target="pr_{{ vars.pr }}_db"))

    (loaded,) = load(path, variables=load_variables(["pr=42"], []))

    assert loaded.name == "pr-42"
    assert loaded.spec.spec.target.database == "pr_42_db"


def test_var_files_are_read_first_and_var_pairs_win(tmp_path: Path) -> None:
    var_file = write(tmp_path, "vars.yml", "pr: 7\nteam: core\nempty:\n")

    assert load_variables(["pr=42", "note=a=b"], [var_file]) == {"pr": "42", "team": "core", "empty": "", "note": "a=b"}


@pytest.mark.parametrize("pair", ["42", "=x", "not an identifier=1"])
def test_a_malformed_var_is_a_config_error(pair: str) -> None:
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        load_variables([pair], [])


def test_env_and_now_are_rendered(tmp_path: Path) -> None:
    path = write(tmp_path, "dev.yaml", manifest("dev-{{ env.USER }}-{{ now.strftime('%Y%m%d') }}", target="dev_db"))

    (loaded,) = load(path, env={"USER": "alice"})

    assert loaded.name == "dev-alice-20250602"


def test_the_template_sandbox_refuses_python_internals(tmp_path: Path) -> None:
    text = manifest("x", source="\"{{ ''.__class__.__mro__[1].__subclasses__() }}\"")
    path = write(tmp_path, "escape.yaml", text)

    (problem,) = problems_of(path)

    assert problem.path == path
    assert "unsafe" in problem.message


def test_a_failing_template_expression_is_a_manifest_error(tmp_path: Path) -> None:
    path = write(tmp_path, "div.yaml", manifest("x-{{ 1 // 0 }}"))

    (problem,) = problems_of(path)

    assert problem.path == path
    assert "ZeroDivisionError" in problem.message


def test_a_template_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "syntax.yaml", manifest("x", extra="  data: {{ vars.x \n"))

    (problem,) = problems_of(path, variables={"x": "full"})

    assert (problem.path, problem.line) == (path, 8)
    assert problem.message.startswith("template syntax:")


# --- names and fields ----------------------------------------------------------------------


def test_a_duplicate_name_across_files_names_both_places(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", manifest("dev"))
    second = write(tmp_path, "b.yaml", "# the same name again\n" + manifest("dev", target="other_db"))

    (problem,) = problems_of(tmp_path)

    assert (problem.path, problem.line, problem.field) == (second, 5, "metadata.name")
    assert f"already defined at {first}:1" in problem.message


def test_every_field_of_the_format_is_honoured_now() -> None:
    """support.py refuses what a version cannot do yet; today every field is implemented (the
    engine-dependent ones — grants, source.snapshot, consistency: snapshot — are checked against
    the source's engine at plan time, engines/plan_methods.py)."""
    fields: dict[str, Any] = {
        "tables": {"include": ["*"], "exclude": ["tmp_*"], "related": {"roots": ["users"], "max_depth": 2}},
        "relations": [{"from": "orders(user_id)", "to": "users(id)"}],
        "rules": {
            "users": {
                "where": "id > 1",
                "exclude_columns": ["address"],
                "mask": {"email": None},
                "rename": "people",
                "watermark": "updated_at",
            }
        },
        "ttl": "7d",
        "refresh": {"every": "24h", "mode": "incremental", "fallback": "full"},
        "protect": True,
        "verify": {"content": True},
        "budget": {"max_rows": 10},
        "target": {"server": "other", "database": "x_db"},
    }
    spec = EnvironmentSpec.model_validate(manifest_dict("x", "production_db", "x_db", **fields))
    assert unsupported_fields(spec) == []


@pytest.mark.parametrize("name", ["Dev", "-dev", "dev-", "dev env", "dev/1", "x" * 129])
def test_invalid_environment_names(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, "bad.yaml", manifest(f'"{name}"', target="bad_db"))

    (problem,) = problems_of(path)

    assert (problem.line, problem.field) == (4, "metadata.name")
    assert "is not a valid environment name" in problem.message


@pytest.mark.parametrize("ttl", ["3x", "0d", "7", "d", "-1h"])
def test_invalid_durations(tmp_path: Path, ttl: str) -> None:
    path = write(tmp_path, "ttl.yaml", manifest("ttl", extra=f'  ttl: "{ttl}"\n'))

    (problem,) = problems_of(path)

    assert (problem.line, problem.field) == (8, "spec.ttl")
    assert ("is not a duration" in problem.message) or ("must be positive" in problem.message)


def test_columns_and_exclude_columns_together_are_refused(tmp_path: Path) -> None:
    rules = "  rules:\n    users:\n      columns: [id]\n      exclude_columns: [email]\n"
    path = write(tmp_path, "cols.yaml", manifest("cols", extra=rules))

    (problem,) = problems_of(path)

    assert (problem.line, problem.field) == (9, "spec.rules.users")
    assert problem.message == "give either columns or exclude_columns, not both"


def test_a_document_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "list.yaml", manifest("ok") + "---\n- just\n- a list\n")

    (problem,) = problems_of(path)

    assert (problem.path, problem.line) == (path, 9)
    assert "must be a mapping" in problem.message
