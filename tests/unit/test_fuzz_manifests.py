"""Hostile manifests: property-based fuzzing of what `moenv validate` reads, and a few nasty files.

Whatever a manifest file, its template and the `--var` values hold, loading ends in one of two
ways: specs that passed validation (with names moenv can quote safely), or a ManifestError whose
every problem names the file and a line. Never another exception: the CLI would show a traceback.

Generated inputs: documents built from the schema's own field names with values of random types,
mutations of a valid manifest, raw YAML-ish text, Jinja expressions, and `--var` values that end
up in names, descriptions and SQL fragments. CASES counts what ran (printed by the last test).
"""

from __future__ import annotations

import atexit
import copy
import re
import shutil
import string
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moenv.errors import ConfigError, ManifestError
from moenv.manifest.loader import LoadedManifest, load_manifests, load_variables
from moenv.models.manifest import EnvironmentSpec

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ENV = {"USER": "fuzz", "HOME": "/home/fuzz", "CI_JOB": "42"}
_WORK = Path(tempfile.mkdtemp(prefix="moenv-fuzz-"))
atexit.register(shutil.rmtree, _WORK, True)
CASES: dict[str, int] = {}
# Accepted names (models/manifest.py check_name); anything else must have been refused.
_NAME = re.compile(r"[A-Za-z0-9_$][A-Za-z0-9_$\-]{0,63}")

# Derandomized: CI runs the same cases every time (a failure is reproducible, never flaky).
FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

VALID: dict[str, Any] = {
    "apiVersion": "moenv/v1",
    "kind": "Environment",
    "metadata": {"name": "dev-fuzz", "description": "fuzzed", "labels": {"team": "core"}},
    "spec": {
        "source": {"server": "default", "database": "production_db"},
        "target": {"database": "dev_fuzz_db"},
        "data": "full",
        "tables": {"include": ["*"], "exclude": ["temp_*"], "related": {"roots": ["users"], "max_depth": 2}},
        "relations": [{"from": "orders(user_id)", "to": "users(id)"}],
        "rules": {
            "users": {
                "where": "created_at > '2024-01-01'",
                "columns": ["id", "email", "created_at"],
                "mask": {"email": "CONCAT('user_', id, '@example.com')", "phone": None},
                "rename": "users_essential",
            },
            "orders": {"where": "status = 'completed'", "watermark": "updated_at"},
        },
        "integrity": "strict",
        "indexes": True,
        "constraints": True,
        "ttl": "7d",
        "refresh": {"every": "24h", "mode": "full"},
        "protect": False,
        "consistency": "table",
    },
}


def _field_names(schema: Mapping[str, Any]) -> list[str]:
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                names.update(props)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return sorted(names)


FIELD_NAMES = _field_names(EnvironmentSpec.model_json_schema(by_alias=True))

NASTY_STRINGS = [
    "", " ", "moenv/v1", "Environment", "full", "schema", "strict", "loose", "table", "snapshot", "incremental",
    "7d", "0d", "-1h", "36h", "1y", "*", "users", "orders", "id", "orders(user_id)", "users(id)", "a(b, c)",
    "x`y", "`; DROP DATABASE prod; --", "a'b", 'a"b', "a;b", "semi;colon", "ünïcødé", "😀", "\u202e", "a\u200bb",
    "x" * 65, "x" * 300, "1=1; DROP DATABASE x", "1=1 -- comment", "/* c */ 1", "SLEEP(10)", "x' OR '1'='1",
    "(SELECT password FROM mysql.user)", "@@version", "@x := 1", "?", "%s", "{{ vars.x }}", "{{ env.USER }}",
    "{% if %}", "{#", "}}", "\\", "\n", "\t", "\r\n", "null", "~", "yes", "no", "on", "0x1F", "1e309", "NaN",
    "moenv.email(email)", "moenv.nope(x)", "LOAD_FILE('/etc/passwd')", "name", "a.b", "a/b", "../../etc",
]  # fmt: skip

# Fixed alphabets keep generation cheap. RAW_ALPHABET holds only characters YAML allows in a
# stream; the reader refuses the others (the nasty file "control-character" checks that refusal).
RAW_ALPHABET = (
    string.ascii_letters + string.digits + string.punctuation + " \t\n\r" + "äöüß€😀中\u00a0\u200b\u202e\ufeff"
)
ALPHABET = RAW_ALPHABET + "\x00\x01\x1f\x7f\x0b\x0c"
YAML_CHARACTERS = st.sampled_from(RAW_ALPHABET)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(NASTY_STRINGS)
    | st.text(ALPHABET, max_size=20)
)
keys = st.sampled_from(FIELD_NAMES) | st.sampled_from(NASTY_STRINGS) | st.text(ALPHABET, max_size=8)
# Two levels of nesting, built directly (st.recursive is several times slower to draw from).
values = (
    scalars
    | st.lists(scalars, max_size=3)
    | st.dictionaries(keys, scalars | st.lists(scalars, max_size=2), max_size=4)
    | st.lists(st.dictionaries(keys, scalars, max_size=3), max_size=2)
)
documents = st.fixed_dictionaries(
    {"apiVersion": st.sampled_from(["moenv/v1", "moenv/v2", ""]) | scalars, "kind": st.just("Environment") | scalars},
    optional={"metadata": values, "spec": st.dictionaries(st.sampled_from(FIELD_NAMES), values, max_size=8)},
)


def _write(text: str, name: str = "fuzz.yaml") -> Path:
    path = _WORK / name
    path.write_text(text, encoding="utf-8")
    return path


def check_load(text: str, *, variables: Mapping[str, str] | None = None, kind: str) -> list[LoadedManifest] | None:
    """Load `text` as a manifest file: specs with safe names, or a ManifestError located in the file."""
    CASES[kind] = CASES.get(kind, 0) + 1
    path = _write(text)
    try:
        loaded = load_manifests([path], variables=variables or {}, env=ENV, now=NOW)
    except ManifestError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.path == path, problem
            assert isinstance(problem.line, int) and problem.line >= 1, f"no line: {problem!r}"
            assert problem.message, problem
        return None
    for manifest in loaded:
        spec = manifest.spec.spec
        names = [spec.source.database, spec.target.database, spec.source.server, spec.target_server]
        names += [rule.rename for rule in spec.rules.values() if rule.rename] + list(spec.rules)
        for name in names:
            assert _NAME.fullmatch(name), f"an unquotable name was accepted: {name!r}"
        assert manifest.path == path and manifest.line >= 1
    return loaded


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump(document: Any) -> str:
    return yaml.dump(document, Dumper=_DUMPER, sort_keys=False, allow_unicode=True)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


VALID_PATHS = _paths(VALID)


def _apply(document: Any, path: tuple[Any, ...], action: str, key: str, value: Any) -> None:
    """Change `document` at `path` (skipped when an earlier change removed or reshaped it)."""
    parent: Any = None
    node: Any = document
    for part in path:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_dict or in_list):
            return
        parent, node = node, node[part]
    if action == "add" and isinstance(node, dict):
        node[key] = value
    elif action == "add" and isinstance(node, list):
        node.append(value)
    elif parent is None:
        return
    elif action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


mutations = st.lists(
    st.tuples(st.sampled_from(VALID_PATHS), st.sampled_from(["replace", "delete", "add"]), keys, values),
    min_size=1,
    max_size=4,
)


Change = tuple[tuple[Any, ...], str, str, Any]


def mutated(changes: list[Change]) -> Any:
    """The valid manifest with 1-4 changes: a value replaced, a key or item removed or added."""
    document: Any = copy.deepcopy(VALID)
    for path, action, key, value in changes:
        _apply(document, path, action, key, value)
    return document


@settings(FUZZ, max_examples=700)
@given(mutations)
def test_mutated_manifests_load_or_fail_with_file_and_line(changes: list[Change]) -> None:
    check_load(dump(mutated(changes)), kind="mutated manifests")


@settings(FUZZ, max_examples=400)
@given(st.lists(documents, min_size=1, max_size=3))
def test_documents_from_schema_field_names_load_or_fail_with_file_and_line(docs: list[Any]) -> None:
    check_load(yaml.dump_all(docs, Dumper=_DUMPER, sort_keys=False, allow_unicode=True), kind="schema-name documents")


YAML_PIECES = [
    "apiVersion: moenv/v1\n", "kind: Environment\n", "metadata:\n", "  name: dev\n", "spec:\n", "  source:\n",
    "    database: db\n", "  target: {database: t}\n", "- ", ": ", "? ", "&a ", "*a ", "!!str ",
    "!!python/name:os.system ", "!!binary ", "|\n", ">-\n", "---\n", "...\n", "%YAML 1.1\n", "%TAG ! tag:x:\n",
    "#", "'", '"', "[", "]", "{", "}", ",", "\t", "  ", "\n", "\\", "\\x00", "\ufeff", "{{", "}}", "{%", "%}",
    "{#", "#}", "<<: *a\n", "~",
]  # fmt: skip


@settings(FUZZ, max_examples=800)
@given(
    st.lists(st.sampled_from(YAML_PIECES) | st.text(YAML_CHARACTERS, max_size=6), max_size=40)
    | st.text(YAML_CHARACTERS, max_size=200)
)
def test_raw_yaml_text_loads_or_fails_with_file_and_line(pieces: list[str] | str) -> None:
    check_load(pieces if isinstance(pieces, str) else "".join(pieces), kind="raw YAML text")


TEMPLATE_ATOMS = [
    "vars.v", "vars['v']", "vars.missing", "env.USER", "env.NOPE", "env['HOME']", "now", "now.year",
    "now.strftime('%Y%m%d')", "1", "0", "-1", "'x'", "''", "'a;b'", "none", "true", "[1, 2]", "{'a': 1}",
    "range(3)", "range(10**9)", "lipsum(1)", "self", "loop", "''.__class__", "env.__class__", "vars.items()",
    "cycler", "joiner", "namespace()", "'%s' % 1", "'{0}'.format(1)",
]  # fmt: skip
TEMPLATE_FILTERS = [
    "upper", "lower", "int", "float", "length", "trim", "default('d')", "join(',')", "replace('a', 'b')",
    "first", "last", "list", "string", "abs", "round", "sum", "sort", "unique", "reverse", "truncate(3)",
    "attr('__class__')", "map('upper')", "tojson", "safe", "e", "nope", "format(1)", "batch(2)", "random",
]  # fmt: skip
TEMPLATE_OPS = [" + ", " - ", " * ", " / ", " // ", " % ", " ~ ", " and ", " or ", " == ", " in ", "."]


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> str:
    atom = draw(st.sampled_from(TEMPLATE_ATOMS))
    if depth < 2 and draw(st.booleans()):
        atom = atom + draw(st.sampled_from(TEMPLATE_OPS)) + draw(expressions(depth + 1))
    for _ in range(draw(st.integers(0, 2))):
        atom += " | " + draw(st.sampled_from(TEMPLATE_FILTERS))
    return atom


@st.composite
def templated_manifests(draw: st.DrawFn) -> str:
    expr = draw(expressions())
    form = draw(
        st.sampled_from(
            [
                "{{ %s }}", "x{{ %s }}y", "{%% if %s %%}a{%% else %%}b{%% endif %%}",
                "{%% for i in %s %%}{{ i }}{%% endfor %%}", "{%% set x = %s %%}{{ x }}", "{{ %s", "%s }}",
                "{%% %s %%}", "{# %s", "{{ (%s) }}",
            ]
        )
    )  # fmt: skip
    snippet = form % expr if "%s" in form else form
    field = draw(st.sampled_from(["name", "description", "source_db", "target_db", "where", "mask", "ttl", "label"]))
    slots = dict.fromkeys(("name", "description", "source_db", "target_db", "where", "mask", "ttl", "label"), "")
    slots.update(name="dev", source_db="src", target_db="dst", where="id > 0", mask="'x'", ttl="7d", label="core")
    slots[field] = snippet if field in {"description", "where", "mask"} else slots[field] + snippet
    doc = (
        "apiVersion: moenv/v1\nkind: Environment\nmetadata:\n"
        f"  name: \"{slots['name']}\"\n  description: \"{slots['description']}\"\n"
        f"  labels: {{team: \"{slots['label']}\"}}\n"
        f"spec:\n  source: {{database: \"{slots['source_db']}\"}}\n  target: {{database: \"{slots['target_db']}\"}}\n"
        f"  ttl: \"{slots['ttl']}\"\n  rules:\n    users:\n      where: \"{slots['where']}\"\n"
        f"      mask: {{email: \"{slots['mask']}\"}}\n"
    )
    if draw(st.booleans()):
        doc = draw(st.sampled_from(["", "# c\n", "\n\n"])) + snippet + "\n" + doc
    return doc


var_values = st.sampled_from(NASTY_STRINGS) | st.text(YAML_CHARACTERS, max_size=30)


@settings(FUZZ, max_examples=600)
@given(templated_manifests(), var_values)
def test_template_expressions_render_or_fail_with_file_and_line(text: str, value: str) -> None:
    check_load(text, variables={"v": value, "x": "1"}, kind="template expressions")


@settings(FUZZ, max_examples=500)
@given(
    st.lists(st.sampled_from(["db=", "name=", "v=", "x", "=v", "1a=", "a b=", "é=", "db"]) | st.text(max_size=9),
             max_size=3),
    st.dictionaries(st.sampled_from(["db", "name", "where", "desc"]), var_values, max_size=4),
)
def test_var_values_are_refused_or_end_up_quoted(pairs: list[str], chosen: dict[str, str]) -> None:
    """`--var` strings parse to variables or fail with a ConfigError; the values then land in names
    (refused unless a plain name), descriptions and fragments."""
    try:
        variables = load_variables(pairs + [f"{k}={v}" for k, v in chosen.items()], [])
    except ConfigError as exc:
        assert exc.problems and all(p.message for p in exc.problems)
        CASES["--var values"] = CASES.get("--var values", 0) + 1
        return
    text = (
        "apiVersion: moenv/v1\nkind: Environment\n"
        "metadata: {name: \"{{ vars.name | default('dev') }}\", description: \"{{ vars.desc | default('') }}\"}\n"
        "spec:\n  source: {database: src}\n  target: {database: \"{{ vars.db | default('dst') }}\"}\n"
        "  rules:\n    users: {where: \"name = '{{ vars.where | default('x') }}'\"}\n"
    )
    loaded = check_load(text, variables=variables, kind="--var values")
    for manifest in loaded or []:
        assert _NAME.fullmatch(manifest.spec.spec.target.database)


# -- nasty files -----------------------------------------------------------------------------------

BASE = (
    "apiVersion: moenv/v1\nkind: Environment\nmetadata: {name: x}\n"
    "spec: {source: {database: a}, target: {database: b}}\n"
)


def alias_bomb(depth: int) -> str:
    """The 'billion laughs' in YAML: each level holds ten aliases of the level below (10**depth leaves)."""
    lines = [BASE.rstrip(), "bombs:", '  l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, depth + 1)]
    return "\n".join(lines) + "\n"


NASTY_FILES: dict[str, str] = {
    "recursive-anchor": "apiVersion: moenv/v1\nkind: Environment\nmetadata: &m {name: x, labels: *m}\n"
    "spec: {source: {database: a}, target: {database: b}}\n",
    "self-containing-list": BASE.replace("metadata: {name: x}", "metadata: {name: x, labels: &l [*l]}"),
    "recursive-macro": "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}\n" + BASE,
    "python-tag": BASE + "extra: !!python/object/apply:os.system ['echo pwned']\n",
    "sandbox-escape": BASE.replace("name: x", "name: \"{{ ''.__class__.__mro__[1].__subclasses__() }}\""),
    "sandbox-escape-in-expression": BASE.replace("name: x", "name: \"{{ ''.__class__ ~ 'x' }}\""),
    "deep-nesting": BASE + "extra: " + "[" * 5000 + "]" * 5000 + "\n",
    "statement-in-where": BASE.replace("spec: {", "spec: {rules: {users: {where: '1=1; DROP DATABASE x'}}, "),
    "comment-in-mask": BASE.replace("spec: {", "spec: {rules: {users: {mask: {email: \"'x' -- \"}}}, "),
    "backtick-database": BASE.replace("database: b", "database: 'b`; DROP DATABASE prod; --'"),
    "unknown-field": BASE.replace("spec: {", "spec: {sorce: {database: a}, "),
    "control-character": BASE.replace("name: x", "name: x\x1f"),
    "duplicate-key": BASE.replace("spec: {", "spec: {rules: {users: {mask: {email: 'NULL'}}}, rules: {}, "),
}


@pytest.mark.parametrize("name", sorted(NASTY_FILES))
def test_nasty_files_fail_with_a_located_manifest_error(name: str) -> None:
    text = NASTY_FILES[name]
    assert check_load(text, kind="nasty files") is None, f"{name} was accepted"


def test_a_yaml_alias_bomb_is_refused_quickly() -> None:
    """Ten levels of ten aliases: refused (or loaded) in well under a second, not expanded 10**9 times."""
    path = _write(alias_bomb(9), "bomb.yaml")
    # A separate interpreter with an address-space limit: a loader that expands the bomb must not take the machine down.
    probe = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from moenv.cli.main import main\n"
        "main(['validate', sys.argv[1]])\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe, str(path)],
            env={"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=8,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("moenv validate was still expanding a YAML alias bomb after 8 s")
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


@pytest.fixture(scope="module")
def nasty_dir() -> Iterator[Path]:
    directory = _WORK / "nasty"
    directory.mkdir(exist_ok=True)
    for name, text in NASTY_FILES.items():
        (directory / f"{name}.yaml").write_text(text, encoding="utf-8")
    (directory / "not-utf8.yaml").write_bytes(BASE.encode() + b"extra: \xff\xfe\n")
    yield directory


CLI_NASTY = ("recursive-anchor", "recursive-macro", "python-tag", "sandbox-escape", "statement-in-where", "not-utf8")


def test_the_cli_validates_nasty_files_without_a_traceback(nasty_dir: Path) -> None:
    """`moenv validate FILE` (a real interpreter per file, run side by side): exit 1, an error, no traceback."""
    files = [nasty_dir / f"{name}.yaml" for name in CLI_NASTY]
    env = {"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    running = {
        f.name: subprocess.Popen(
            [sys.executable, "-m", "moenv", "validate", str(f)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for f in files
    }
    problems = []
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=60)
        if process.returncode != 1 or "Traceback" in stdout + stderr or f"{name}:" not in stderr:
            problems.append(f"{name}: exit {process.returncode}\n{stdout}{stderr[-1500:]}")
    assert not problems, "\n\n".join(problems)


def test_fuzz_cases_were_counted() -> None:
    """Runs last: how many generated cases the properties above tried (printed with -s)."""
    if len(CASES) < 5:
        pytest.skip("the properties did not all run in this session")
    total = sum(CASES.values())
    print(f"\nfuzz cases: {CASES} = {total}")
    assert total >= 2000
