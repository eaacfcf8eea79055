"""The engines the integration suite runs on, and the test fixtures' SQL rewritten for MatrixOne.

    ENGINES                                  # ("mariadb", "matrixone")
    engine_of("8.0.30-MatrixOne-v4.1.2")     # "matrixone"; "mariadb" for MariaDB / MySQL
    for_engine(statement, "matrixone")       # the same fixture statement in what MatrixOne accepts

The test sources are written once, in MariaDB's SQL (MariaDB's sequence tables `db.seq_1_to_N`
generate their rows). On MatrixOne the statements are rewritten, never the expected results:

- `db.seq_1_to_N [alias]` → `(SELECT result AS seq FROM generate_series(1, N) g) alias`
  (MatrixOne's table function names its column `result`);
- `IF(c, a, b)` → `(CASE WHEN c THEN a ELSE b END)` and `ELT(i, a, b, …)` → `(CASE i WHEN 1 THEN a …)`;
- `'2024-01-01' + INTERVAL …` → `CAST('2024-01-01' AS DATETIME) + INTERVAL …`;
- a generated column (`… AS (expr) VIRTUAL|STORED|PERSISTENT`) becomes a plain nullable column of
  its type (MatrixOne has no generated columns), CHECK constraints and `ENGINE=`/`COLLATE` options
  are dropped; `ANALYZE TABLE` becomes `SELECT 1`;
- a secondary or unique index of a CREATE TABLE loses the ENUM columns it names, and is dropped
  when none is left (MatrixOne < mid-2026 refuses ENUM columns in such indexes).

Nothing here has run against a MatrixOne server in this repository's CI (none can be installed
there): it follows MatrixOne's documented grammar, and the unit test tests/unit/test_dialect.py
pins each rewrite as exact text.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from moenv.engines import matrixone as mo
from moenv.live.connection import EngineInfo

__all__ = [
    "ENGINES",
    "MATRIXONE_NOT_RUN",
    "MATRIXONE_URL_ENV",
    "engine_of",
    "for_engine",
    "matrixone_url",
    "rows_digest",
]

ENGINES: tuple[str, ...] = ("mariadb", "matrixone")
MATRIXONE_URL_ENV = "MOENV_TEST_MATRIXONE_URL"
MATRIXONE_NOT_RUN = (
    f"MatrixOne run not run: set {MATRIXONE_URL_ENV} (e.g. mysql://root:111@127.0.0.1:6001/) "
    "to run the integration suite against a MatrixOne server"
)

_SEQ = re.compile(
    r"(?:`[^`]+`|\w+)\.seq_1_to_(\d+)"
    r"(?:\s+(?!(?:ON|WHERE|ORDER|JOIN|GROUP|LIMIT|UNION|LEFT|INNER|CROSS|AS)\b)([A-Za-z_]\w*)\b)?"
)
_DATE_PLUS_INTERVAL = re.compile(r"('\d{4}-\d{2}-\d{2}(?: [\d:]+)?')(\s*\+\s*INTERVAL\b)")
_GENERATED = re.compile(
    r"(?P<type>\b(?:INT|BIGINT|SMALLINT|DECIMAL|VARCHAR|CHAR|DOUBLE|FLOAT|DATE|DATETIME)(?:\s*\([\d,\s]+\))?"
    r"(?:\s+UNSIGNED)?)\s+(?:GENERATED\s+ALWAYS\s+)?AS\s*\(",
    re.IGNORECASE,
)
_GENERATED_KIND = re.compile(r"\s*(?:VIRTUAL|STORED|PERSISTENT)\b", re.IGNORECASE)
_CHECK = re.compile(r",\s*(?:CONSTRAINT\s+\w+\s+)?CHECK\s*\(", re.IGNORECASE)
_ANALYZE = re.compile(r"\s*ANALYZE\s+TABLE\b", re.IGNORECASE)
_TABLE_OPTIONS = re.compile(r"\s*\bENGINE\s*=\s*\w+|\s*\bCOLLATE\s*=?\s*\w+", re.IGNORECASE)
_ENUM_COLUMN = re.compile(r"(?:`([^`]+)`|(\w+))\s+ENUM\s*\(", re.IGNORECASE)
_SECONDARY_INDEX = re.compile(
    r"(,\s*)((?:UNIQUE\s+)?(?:KEY|INDEX)\b\s*(?:(?:`[^`]+`|\w+)\s*)?)\(([^()]*)\)", re.IGNORECASE
)


_matrixone_versions: dict[str, str] = {}


def matrixone_url() -> str:
    """MOENV_TEST_MATRIXONE_URL once its server answered as a MatrixOne moenv supports.

    Not set: the test is skipped as not run. Not MatrixOne: the test fails (a wrong URL must not
    pass as a skip). Older than 3.0.0: skipped with the version.
    """
    url = os.environ.get(MATRIXONE_URL_ENV)
    if not url:
        pytest.skip(MATRIXONE_NOT_RUN)
    if url not in _matrixone_versions:
        from tests.support.mariadb import connect

        connection = connect(url)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT version()")
                (version,) = cursor.fetchone() or ("",)
        finally:
            connection.close()
        _matrixone_versions[url] = str(version)
    version = _matrixone_versions[url]
    if mo.parse_version(version) is None:
        pytest.fail(f"{MATRIXONE_URL_ENV} does not point at MatrixOne: the server says version {version!r}")
    if not mo.Capabilities.from_text(version).supported:
        pytest.skip(f"MatrixOne run not run: moenv needs MatrixOne >= 3.0.0, this server runs {version}")
    return url


def engine_of(version: str) -> str:
    """`matrixone` when `SELECT version()` says so, else `mariadb` (MariaDB and MySQL alike): moenv's own reading."""
    return "matrixone" if EngineInfo.from_version(version).kind == "matrixone" else "mariadb"


def for_engine(statement: str, engine: str) -> str:
    """`statement` (MariaDB SQL of a test fixture) as `engine` should be given it."""
    if engine != "matrixone":
        return statement
    if _ANALYZE.match(statement):
        return "SELECT 1"  # statistics for MariaDB's optimizer; MatrixOne keeps its own
    text = _SEQ.sub(_series, statement)
    text = _rewrite_calls(text, "ELT", _elt)
    text = _rewrite_calls(text, "IF", _if)
    text = _DATE_PLUS_INTERVAL.sub(r"CAST(\1 AS DATETIME)\2", text)
    text = _plain_generated_columns(text)
    text = _drop_checks(text)
    text = _indexes_without_enums(text)
    return _TABLE_OPTIONS.sub("", text)


def rows_digest(rows: Iterable[tuple[Any, ...]]) -> str:
    """`count:sha256` of rows as the driver returned them, in a canonical order: CHECKSUM TABLE for any engine."""
    lines = sorted(repr(row) for row in rows)
    return f"{len(lines)}:{hashlib.sha256(chr(30).join(lines).encode()).hexdigest()}"


def _series(match: re.Match[str]) -> str:
    alias = match[2] or f"seq_{match[1]}"
    return f"(SELECT result AS seq FROM generate_series(1, {match[1]}) g) {alias}"


def _outside_quotes(text: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """(index, character, parenthesis depth after it) of every character of `text` from `start`
    that is not inside a quoted string or name (the quotes themselves are skipped too)."""
    depth = 0
    quote = ""
    for i in range(start, len(text)):
        char = text[i]
        if quote:
            quote = "" if char == quote else quote
            continue
        if char in "'\"`":
            quote = char
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        yield i, char, depth


def _closing(text: str, opening: int) -> int:
    """Index of the parenthesis closing the one at `opening` (quotes and nesting respected)."""
    for i, char, depth in _outside_quotes(text, opening):
        if char == ")" and depth == 0:
            return i
    raise ValueError(f"unbalanced parentheses in {text!r}")


def _arguments(inner: str) -> list[str]:
    """The top-level, comma-separated arguments of a call's inside."""
    cuts = [i for i, char, depth in _outside_quotes(inner) if char == "," and depth == 0]
    return [inner[a + 1 : b].strip() for a, b in itertools.pairwise([-1, *cuts, len(inner)])]


def _rewrite_calls(text: str, name: str, build: Callable[[list[str]], str]) -> str:
    pattern = re.compile(rf"(?<![\w.`]){name}\s*\(", re.IGNORECASE)
    while True:
        match = pattern.search(text)
        if match is None:
            return text
        opening = match.end() - 1
        closing = _closing(text, opening)
        arguments = [_rewrite_calls(a, name, build) for a in _arguments(text[opening + 1 : closing])]
        text = text[: match.start()] + build(arguments) + text[closing + 1 :]


def _elt(arguments: list[str]) -> str:
    index, *values = arguments
    whens = " ".join(f"WHEN {n} THEN {value}" for n, value in enumerate(values, start=1))
    return f"(CASE {index} {whens} END)"


def _if(arguments: list[str]) -> str:
    condition, then, otherwise = arguments
    return f"(CASE WHEN {condition} THEN {then} ELSE {otherwise} END)"


def _plain_generated_columns(text: str) -> str:
    while True:
        match = _GENERATED.search(text)
        if match is None:
            return text
        closing = _closing(text, match.end() - 1)
        kind = _GENERATED_KIND.match(text, closing + 1)
        end = kind.end() if kind else closing + 1
        text = text[: match.start()] + match["type"] + " NULL" + text[end:]


def _indexes_without_enums(text: str) -> str:
    """Secondary/unique index definitions without the statement's ENUM columns (none left: dropped).

    MatrixOne rejects them ("not supported: ENUM column 'x' cannot be in secondary index") in
    v3.0.11 and 4.0-dev, matrixorigin/matrixone issue #24729; allowed only from PR #24809/#25042
    (June 2026), so a fixture's index is narrowed rather than the ENUM column made a VARCHAR.
    """
    enums = {(m[1] or m[2]).lower() for m in _ENUM_COLUMN.finditer(text)}
    if not enums:
        return text

    def narrow(match: re.Match[str]) -> str:
        kept = [c for c in _arguments(match[3]) if c.strip("`").lower() not in enums]
        return f"{match[1]}{match[2]}({', '.join(kept)})" if kept else ""

    return _SECONDARY_INDEX.sub(narrow, text)


def _drop_checks(text: str) -> str:
    while True:
        match = _CHECK.search(text)
        if match is None:
            return text
        closing = _closing(text, match.end() - 1)
        text = text[: match.start()] + text[closing + 1 :]
