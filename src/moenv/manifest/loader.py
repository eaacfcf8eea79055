"""Manifest files → EnvironmentSpecs with file:line for every field; the only module importing yaml.

Rendering (Jinja2) comes first, then YAML (several documents per file), then pydantic. Every
problem found in one pass is reported together, each with file:line and the field path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from moenv.errors import ConfigError, ManifestError, Problem
from moenv.manifest.fragments import FragmentError, FragmentKind, parse_fragment
from moenv.manifest.support import unsupported_fields
from moenv.manifest.templating import render_template, template_environment
from moenv.models.manifest import EnvironmentSpec

Loc = tuple[str | int, ...]
# libyaml's parser when PyYAML has it: the pure-Python one dominated `plan` for 200 manifests.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MANIFEST_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadedManifest:
    """One environment as written: its spec and where each of its fields stands."""

    spec: EnvironmentSpec
    path: Path
    line: int
    lines: Mapping[Loc, int] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def line_of(self, loc: Loc) -> int:
        """The line of the deepest known prefix of `loc` (a field, or the object holding it)."""
        probe = tuple(loc)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.line

    def problem(self, loc: Loc, message: str) -> Problem:
        return Problem(message, self.path, self.line_of(loc), dotted(loc))


def dotted(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


MAX_NODES = 50_000  # a manifest is small: more nodes than this is an alias bomb


@dataclass
class _Walk:
    """State of one walk over a composed document: its file, the nodes left, the nodes being visited."""

    path: Path
    left: int = MAX_NODES
    active: set[int] = field(default_factory=set)

    def refuse(self, node: yaml.Node, message: str, loc: Loc = ()) -> ManifestError:
        return ManifestError(Problem(f"YAML: {message}", self.path, node.start_mark.line + 1, dotted(loc) or None))


def _line_map(node: yaml.Node, loc: Loc, into: dict[Loc, int], walk: _Walk) -> None:
    """Line of every field; refuses what YAML accepts but a manifest must not hold: duplicate keys
    (the last would silently win, dropping e.g. masks), recursive anchors and alias bombs."""
    if id(node) in walk.active:
        raise walk.refuse(node, "an alias refers to a node that contains it (recursive anchor)", loc)
    walk.left -= 1
    if walk.left < 0:
        raise walk.refuse(node, f"the document expands to more than {MAX_NODES:,} nodes (aliases?)", loc)
    walk.active.add(id(node))
    into.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[object, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                child = (*loc, key.value)
                if key.value in seen and key.value != "<<":
                    raise walk.refuse(key, f"duplicate key {key.value!r} (first at line {seen[key.value]})", child)
                seen[key.value] = key.start_mark.line + 1
                _line_map(value, child, into, walk)
                into[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, (*loc, index), into, walk)
    walk.active.discard(id(node))


def expand_paths(paths: Sequence[Path]) -> list[Path]:
    """Files as given; directories → their *.yaml / *.yml files, sorted."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestError(Problem("no such file or directory", path))
    return files


def _documents(path: Path, text: str) -> list[tuple[Any, dict[Loc, int], int]]:
    """Parse every YAML document of a rendered file into (data, line map, first line)."""
    try:
        nodes = list(yaml.compose_all(text, Loader=_LOADER))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = " ".join(part for part in (exc.context, exc.problem) if part)
        raise ManifestError(Problem(f"YAML: {message}", path, line)) from exc
    except yaml.YAMLError as exc:
        position = getattr(exc, "position", None)  # ReaderError: a character YAML does not allow
        line = text[:position].count("\n") + 1 if isinstance(position, int) else None
        raise ManifestError(Problem(f"YAML: {exc}", path, line)) from exc
    docs = []
    for node in nodes:
        if node is None:
            continue
        lines: dict[Loc, int] = {}
        _line_map(node, (), lines, _Walk(path))
        try:
            data = _LOADER("").construct_document(node)  # the checked node, not a second parse
        except yaml.MarkedYAMLError as exc:  # e.g. a !!python/... tag: the safe loader constructs none
            mark = exc.problem_mark or exc.context_mark
            message = " ".join(part for part in (exc.context, exc.problem) if part)
            raise ManifestError(Problem(f"YAML: {message}", path, mark.line + 1 if mark else None)) from exc
        if data is None:
            continue
        docs.append((data, lines, node.start_mark.line + 1))
    return docs


def _pydantic_problems(exc: ValidationError, path: Path, lines: Mapping[Loc, int], first: int) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc: Loc = tuple(error["loc"])
        probe = loc
        while probe and probe not in lines:
            probe = probe[:-1]
        line = lines.get(probe, first)
        message = str(error["msg"])
        if error["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; `moenv schema` lists the fields)"
        elif error["type"] == "missing":
            message = "required field is missing"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        problems.append(Problem(message, path, line, dotted(loc) or None))
    return problems


def load_manifests(
    paths: Sequence[Path],
    *,
    variables: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> list[LoadedManifest]:
    """Load, render and validate every environment in `paths`; raise one ManifestError with all problems."""
    problems: list[Problem] = []
    hints: list[str] = []
    loaded: list[LoadedManifest] = []
    render_env = template_environment(os.environ if env is None else env)
    moment = now or datetime.now(UTC)
    for path in expand_paths(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(f"cannot read: {exc}", path))
            continue
        try:
            rendered = render_template(path, text, env=render_env, variables=variables or {}, now=moment)
            documents = _documents(path, rendered)
        except ManifestError as exc:
            problems += exc.problems
            if exc.hint and exc.hint not in hints:
                hints.append(exc.hint)
            continue
        for data, lines, first in documents:
            if not isinstance(data, dict):
                problems.append(Problem("a manifest document must be a mapping", path, first))
                continue
            try:
                spec = EnvironmentSpec.model_validate(data)
            except ValidationError as exc:
                problems += _pydantic_problems(exc, path, lines, first)
                continue
            manifest = LoadedManifest(spec, path, first, lines)
            problems += [manifest.problem(loc, message) for loc, message in unsupported_fields(spec)]
            problems += [manifest.problem(loc, message) for loc, message in fragment_problems(spec)]
            loaded.append(manifest)
    seen: dict[str, LoadedManifest] = {}
    for manifest in loaded:
        if manifest.name in seen:
            other = seen[manifest.name]
            problems.append(
                manifest.problem(
                    ("metadata", "name"),
                    f"environment {manifest.name!r} is already defined at {other.path}:{other.line}",
                )
            )
        seen[manifest.name] = manifest
    if problems:
        raise ManifestError(problems, hint="; ".join(hints) or None)
    return loaded


def fragment_problems(spec: EnvironmentSpec) -> list[tuple[Loc, str]]:
    """Every `where` and `mask` checked as SQL on its own (SPEC §2: a bad fragment fails `validate`);
    whether the columns it names exist is checked against the source catalog at plan time."""
    found: list[tuple[Loc, str]] = []
    for table, rule in spec.spec.rules.items():
        fragments: list[tuple[Loc, str, FragmentKind]] = []
        if rule.where is not None:
            fragments.append((("spec", "rules", table, "where"), rule.where, "where"))
        fragments += [(("spec", "rules", table, "mask", c), e, "mask") for c, e in rule.mask.items() if e is not None]
        for loc, text, kind in fragments:
            try:
                parse_fragment(text, kind=kind)
            except FragmentError as exc:
                found.append((loc, f"{kind}: {exc}"))
    return found


def load_variables(pairs: Sequence[str], files: Sequence[Path]) -> dict[str, str]:
    """`--var-file` YAML mappings first, then `--var NAME=VALUE` pairs (later wins)."""
    variables: dict[str, str] = {}
    for path in files:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(Problem(f"cannot read variable file: {exc}", path)) from exc
        except yaml.YAMLError as exc:
            raise ConfigError(Problem(f"YAML: {exc}", path)) from exc
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ConfigError(Problem("a variable file must be a mapping of names to values", path))
        for key, value in data.items():
            if isinstance(value, dict | list):
                raise ConfigError(Problem(f"variable {key!r} must be a scalar", path))
            variables[str(key)] = "" if value is None else str(value)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ConfigError(Problem(f"--var {pair!r}: expected NAME=VALUE with NAME an identifier"))
        variables[name.strip()] = value
    return variables
