"""The SQL fragments of manifests (`rules.<t>.where`, `rules.<t>.mask`): checks them and compiles
them, with the `moenv.*` pseudonym helpers, to MySQL/MariaDB SQL. Pure: no I/O, no globals read.

What is accepted, and why:

- Exactly one expression in the MySQL dialect (sqlglot, read="mysql"), never a statement:
  no `;`, no comments (found with sqlglot's tokenizer, so `'--'` in a string is fine), no
  `UNION`, no `SELECT`/`SET`/`DROP`/…, no aliases, no comma-separated lists.
- Only the table's own columns, unqualified: `t.col` and `db.t.col` are refused outside
  subqueries, so a fragment cannot depend on how the executor names or aliases the source table.
- Subqueries: none in `mask` (a mask is a function of its row; a subquery there could copy
  another table's data into a column). In `where` only as `IN (SELECT …)`, `EXISTS (SELECT …)`
  or `= ANY/ALL (SELECT …)`, reading unqualified tables of the source database: any `db.t`
  and any table named like a system schema (`information_schema`, `mysql`,
  `performance_schema`, `sys`) is refused, and so are `WITH`, `INTO` and locking reads
  (`FOR UPDATE`, `LOCK IN SHARE MODE`: the source is never locked). Inside a subquery `t.col`
  is allowed, `db.t.col` is not; a qualifier no subquery defines names the filtered row
  (`users.id` in `EXISTS (SELECT 1 FROM orders o WHERE o.user_id = users.id)`): it is listed in
  `Fragment.outer_tables` and its column in `Fragment.columns`. `to_sql(fragment, database=…,
  alias=…)` qualifies the subqueries' tables with the source database (the session's current
  database then does not matter) and renames that outer qualifier to the statement's alias.
- No user or system variables (`@x`, `@@x`, `:=`), no placeholders (`?`), no aggregate or
  window functions outside subqueries (in a SELECT list they would collapse the rows), no
  functions that wait, lock or reach outside the database (`SLEEP`, `BENCHMARK`, `LOAD_FILE`,
  `GET_LOCK`, …, see `FORBIDDEN_FUNCTIONS`), no qualified function calls except `moenv.*`.

`Fragment.sql` is re-emitted from the checked parse tree (sqlglot's MySQL generator, every
identifier backtick-quoted), never the text as written: the server then runs exactly the tree
that was checked, so no difference between sqlglot's and the server's reading of the text
(backslash escapes under NO_BACKSLASH_ESCAPES, `"…"` under ANSI_QUOTES, `||` under
PIPES_AS_CONCAT) can smuggle anything past the checks. Fragments are read as in MySQL's
default sql_mode. The generator rewrites as it prints (IFNULL becomes COALESCE), so the
emitted SQL is read back and checked once more. It is parenthesized unless it is a single
column, literal or function call, so it can be embedded as an operand (`WHERE {sql} AND …`).
`%` appears in it only inside string literals (modulo is written MOD(a, b)), but LIKE patterns
have them: do not pass it through a driver's `%` parameter formatting.

Helpers (`HELPERS`) are deterministic and salted: their SQL reads the session variable
`@moenv_salt`, which the executor sets with `SET_SALT_SQL` before copying; the salt itself is
never part of the SQL text. Left unset, salted helpers yield NULL (never an unsalted hash).
A value is hashed by its string form, so 42 and '42' get the same pseudonym and joins between
an INT and a VARCHAR column stay consistent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Final, Literal

from sqlglot import exp
from sqlglot.dialects.mysql import MySQL
from sqlglot.errors import ErrorLevel, ParseError, SqlglotError, TokenError
from sqlglot.generators.mysql import MySQLGenerator
from sqlglot.tokenizer_core import Token, TokenType

__all__ = [
    "FORBIDDEN_FUNCTIONS",
    "HELPERS",
    "SALT_VARIABLE",
    "SET_SALT_SQL",
    "Fragment",
    "FragmentError",
    "FragmentKind",
    "parse_fragment",
    "to_sql",
    "unknown_columns",
]

FragmentKind = Literal["where", "mask"]

SALT_VARIABLE: Final = "@moenv_salt"
SET_SALT_SQL: Final = "SET @moenv_salt = %s"

FORBIDDEN_FUNCTIONS: Final = frozenset(
    {
        "SLEEP", "BENCHMARK", "LOAD_FILE",
        "GET_LOCK", "RELEASE_LOCK", "RELEASE_ALL_LOCKS", "IS_FREE_LOCK", "IS_USED_LOCK",
        "MASTER_POS_WAIT", "SOURCE_POS_WAIT", "MASTER_GTID_WAIT", "WAIT_FOR_EXECUTED_GTID_SET",
        "WAIT_UNTIL_SQL_THREAD_AFTER_GTIDS",
        "SYS_EVAL", "SYS_EXEC",
        # MariaDB sequences: NEXTVAL/SETVAL write to the source.
        "NEXTVAL", "SETVAL", "LASTVAL",
    }
)  # fmt: skip

SYSTEM_SCHEMAS: Final = frozenset({"information_schema", "mysql", "performance_schema", "sys"})

MAX_LENGTH: Final = 65_536
MAX_NESTING: Final = 32  # sqlglot's recursive parser overflows Python's stack near 40 levels

_STATEMENT_WORDS: Final = frozenset(
    {
        "ALTER", "ANALYZE", "BEGIN", "CALL", "CHANGE", "COMMIT", "CREATE", "DEALLOCATE", "DELETE",
        "DESCRIBE", "DO", "DROP", "EXECUTE", "EXPLAIN", "FLUSH", "GRANT", "HANDLER", "INSERT",
        "INSTALL", "KILL", "LOAD", "LOCK", "OPTIMIZE", "PREPARE", "PURGE", "RELEASE", "RENAME",
        "REPAIR", "REPLACE", "RESET", "REVOKE", "ROLLBACK", "SAVEPOINT", "SELECT", "SET", "SHOW",
        "SHUTDOWN", "START", "TABLE", "TRUNCATE", "UNINSTALL", "UNLOCK", "UPDATE", "USE", "VALUES",
        "WITH", "XA",
    }
)  # fmt: skip
# These may also start a function call: REPLACE(s, 'a', 'b'), INSERT(s, 1, 2, 'x'), VALUES(c).
_ALWAYS_STATEMENTS: Final = frozenset({"SELECT", "WITH", "TABLE"})

# Keyword functions MySQL calls without parentheses that sqlglot reads as column names.
_NILADIC_FUNCTIONS: Final = frozenset({"utc_date", "utc_time", "utc_timestamp"})
_GET_FORMAT_TYPES: Final = frozenset({"date", "time", "datetime", "timestamp"})  # GET_FORMAT(DATE, 'ISO')


class FragmentError(ValueError):
    """A fragment is not acceptable; str() is a one-line user-facing reason."""


@dataclass(frozen=True)
class Fragment:
    """A checked `where` or `mask` fragment and the SQL to embed for it."""

    text: str  # as written
    kind: FragmentKind
    columns: frozenset[str]  # the row's columns it reads, lower-cased (not moenv helpers); see below
    sql: str  # MySQL/MariaDB SQL, helpers compiled, identifiers quoted; see the module docstring
    tables: frozenset[str] = frozenset()  # unqualified tables read by subqueries, as written
    outer_tables: frozenset[str] = frozenset()  # qualifiers subqueries use for the filtered row: users in users.id
    helpers: frozenset[str] = frozenset()  # the moenv helpers it uses

    @property
    def needs_salt(self) -> bool:
        """True when the session copying with this fragment must set `@moenv_salt` first."""
        return any(_HELPERS[name].salted for name in self.helpers)


def parse_fragment(text: str, *, kind: FragmentKind) -> Fragment:
    """Check `text` as a fragment of `kind` and compile it; FragmentError says what is wrong."""
    return _compile(text, kind, database=None, alias=None)


def to_sql(fragment: Fragment, *, database: str | None = None, alias: str | None = None) -> str:
    """`fragment.sql` for a statement reading the source table from `database` under `alias`.

    `database` qualifies the tables of subqueries (the session's current database is then
    irrelevant); `alias` replaces the name by which correlated subqueries refer to the filtered
    row (`users.id` in `EXISTS (SELECT 1 FROM orders o WHERE o.user_id = users.id)`), for a
    statement that reads the source as `FROM db.users AS alias`.
    """
    if (database is None or not fragment.tables) and (alias is None or not fragment.outer_tables):
        return fragment.sql
    return _compile(fragment.text, fragment.kind, database=database, alias=alias).sql


def unknown_columns(fragment: Fragment, available: Iterable[str]) -> list[str]:
    """The columns `fragment` names that are not in `available` (case-insensitive), sorted."""
    known = {name.lower() for name in available}
    return sorted(name for name in fragment.columns if name not in known)


# --- helpers -------------------------------------------------------------------------------

_VALUE: Final = "__moenv_value__"  # the helper's first argument, where a function argument goes
_OPERAND: Final = "__moenv_operand__"  # the same, where an operator operand goes (parenthesized)
_DIGEST: Final = f"SHA2(CONCAT(@moenv_salt, {_VALUE}), 256)"


def _hex_int(digits: int) -> str:
    """An integer taken from the first `digits` hex digits of the salted digest (< 2^(4*digits))."""
    return f"CAST(CONV(LEFT({_DIGEST}, {digits}), 16, 10) AS SIGNED)"


def _int_in(value: int, low: int, high: int, what: str) -> int:
    if not low <= value <= high:
        raise FragmentError(f"{what} must be between {low} and {high}, got {value}")
    return value


def _build_hash(args: Sequence[int]) -> str:
    return _DIGEST


def _build_email(args: Sequence[int]) -> str:
    return f"CONCAT('u', LEFT({_DIGEST}, 16), '@example.invalid')"


def _build_name(args: Sequence[int]) -> str:
    return f"CONCAT('Name-', LEFT({_DIGEST}, 8))"


def _build_phone(args: Sequence[int]) -> str:
    return f"CONCAT('+1555', LPAD({_hex_int(8)} % 10000000, 7, '0'))"


def _build_keep_last(args: Sequence[int]) -> str:
    n = _int_in(args[0], 0, 65_535, "moenv.keep_last: n")
    # No GREATEST/RIGHT (MatrixOne 3.0 has neither) and no CHAR_LENGTH(v) - n below zero (an
    # unsigned result on MatrixOne 4.x, an out-of-range error there): the CASE keeps both out.
    length = f"CHAR_LENGTH({_VALUE})"
    return (
        f"(CASE WHEN {length} > {n} THEN CONCAT(REPEAT('x', {length} - {n}),"
        f" SUBSTRING({_VALUE}, {length} - {n} + 1)) ELSE {_VALUE} END)"
    )


_NUMBER_LIMIT: Final = 2**62
_NUMBER_SPAN: Final = 2**60  # 15 hex digits: exact in a signed BIGINT


def _build_number(args: Sequence[int]) -> str:
    low = _int_in(args[0], -_NUMBER_LIMIT, _NUMBER_LIMIT, "moenv.number: lo")
    high = _int_in(args[1], -_NUMBER_LIMIT, _NUMBER_LIMIT, "moenv.number: hi")
    if low > high:
        raise FragmentError(f"moenv.number: lo ({low}) must not be greater than hi ({high})")
    span = _int_in(high - low + 1, 1, _NUMBER_SPAN, "moenv.number: hi - lo + 1")
    return f"({low} + {_hex_int(15)} % {span})"


def _build_date_shift(args: Sequence[int]) -> str:
    days = _int_in(args[0], 1, 36_500, "moenv.date_shift: days")
    # An offset in [-days, -1] ∪ [1, days]: never 0, so no date keeps its value.
    offset = f"MOD({_hex_int(8)}, {2 * days}) - {days}"
    return f"({_OPERAND} + INTERVAL IF({offset} >= 0, {offset} + 1, {offset}) DAY)"


@dataclass(frozen=True)
class _Helper:
    params: tuple[str, ...]  # after the value: names of integer-literal parameters
    doc: str
    build: Callable[[Sequence[int]], str]
    salted: bool = True


_HELPERS: Final[Mapping[str, _Helper]] = MappingProxyType(
    {
        "hash": _Helper(
            (),
            "hex SHA-256 of the salted value (64 characters); NULL stays NULL",
            _build_hash,
        ),
        "email": _Helper(
            (),
            "'u<16 hex>@example.invalid': 64-bit prefix of the salted SHA-256, so distinct values"
            " collide with probability about n^2/2^65 (3e-8 for a million rows) and unique"
            " indexes survive; NULL stays NULL",
            _build_email,
        ),
        "name": _Helper(
            (),
            "'Name-<8 hex>' (32 bits: not unique beyond tens of thousands of rows); NULL stays NULL",
            _build_name,
        ),
        "phone": _Helper(
            (),
            "'+1555' and 7 digits from the salted hash (10^7 numbers: not unique); NULL stays NULL",
            _build_phone,
        ),
        "keep_last": _Helper(
            ("n",),
            "keeps the last n characters and replaces the others with 'x' (n a literal >= 0)",
            _build_keep_last,
            salted=False,
        ),
        "number": _Helper(
            ("lo", "hi"),
            "an integer in [lo, hi] picked by the salted hash (lo, hi integer literals)",
            _build_number,
        ),
        "date_shift": _Helper(
            ("days",),
            "the date or datetime moved by a salted, per-value jitter of at most ±days days",
            _build_date_shift,
        ),
    }
)


def _signature(name: str) -> str:
    return f"moenv.{name}({', '.join(('expr', *_HELPERS[name].params))})"


HELPERS: Final[Mapping[str, str]] = MappingProxyType(
    {name: f"{_signature(name)}: {helper.doc}" for name, helper in _HELPERS.items()}
)
"""Built-in helper name → one line of documentation (for docs and the CLI)."""


# --- checking and compiling ----------------------------------------------------------------

_DIALECT: Final = MySQL()
# Nodes that print as one operand. Not exp.Func: sqlglot makes AND, OR, REGEXP… functions too.
_SIMPLE: Final = (exp.Column, exp.Literal, exp.Paren, exp.Null, exp.Boolean)
_QUERIES: Final = (exp.Query, exp.Values)
_ALLOWED_SUBQUERY_PARENTS: Final = {exp.In: "query", exp.Exists: "this", exp.Any: "this", exp.All: "this"}
_DIGITS: Final = re.compile(r"\d+")
_NAMING_PARENTS: Final = (exp.Column, exp.Dot, exp.Anonymous, exp.Collate)
_UNFAITHFUL: Final = "cannot be re-emitted faithfully as MySQL; please simplify it"
# Aggregates sqlglot does not know (it reads them as plain functions).
_AGGREGATE_NAMES: Final = frozenset({"JSON_ARRAYAGG"})


class _Generator(MySQLGenerator):
    """sqlglot's MySQL generator, kept to what MariaDB also understands."""

    TRANSFORMS: ClassVar[dict[type[exp.Expr], Callable[..., str]]] = {
        **MySQLGenerator.TRANSFORMS,
        # MOD(a, b), not `a % b`: keeps `%` out of the SQL but for string literals, and is atomic.
        exp.Mod: lambda self, e: self.func("MOD", e.this, e.expression),
        # sqlglot writes UTC_DATE() as CURRENT_DATE AT TIME ZONE 'UTC', which MySQL does not have.
        exp.UtcDate: lambda self, e: "UTC_DATE()",
        # sqlglot writes `x REGEXP p` as REGEXP_LIKE(x, p), which MariaDB 10.11 does not have.
        exp.RegexpLike: lambda self, e: (
            self.binary(e, "REGEXP") if e.args.get("flag") is None else self.function_fallback_sql(e)
        ),
    }

    def log_sql(self, expression: exp.Log) -> str:
        # LOG10(x) is read as LOG(10, x), which differs from LOG10 in the last bit on MariaDB.
        base, value = expression.this, expression.expression
        if value is not None and isinstance(base, exp.Literal) and base.name in ("2", "10"):
            return self.func(f"LOG{base.name}", value)
        return super().log_sql(expression)


def _generate(node: exp.Expr) -> str:
    generator = _Generator(dialect=_DIALECT, identify=True, comments=False, unsupported_level=ErrorLevel.RAISE)
    return generator.generate(node)


def _compile(text: object, kind: FragmentKind, *, database: str | None, alias: str | None) -> Fragment:
    if kind not in ("where", "mask"):
        raise ValueError(f"unknown fragment kind {kind!r}")
    if not isinstance(text, str):
        raise FragmentError(f"must be an SQL expression in a string, not {type(text).__name__}")
    if not text.strip():
        raise FragmentError("is empty")
    if len(text) > MAX_LENGTH:
        raise FragmentError(f"is longer than {MAX_LENGTH} characters")
    try:
        tree = _parse(text)
        _read_keywords(tree)
        inner = _unwrap(tree, kind)
        helpers = _check(inner, kind)
        columns, tables = _columns(inner), _tables(inner)
        outer = _outer_references(inner)
        outer_tables = frozenset(column.table for column in outer)
        if database is not None:
            _qualify_tables(inner, database)
        if alias is not None:
            for column in outer:
                if alias.lower() in _visible_names(column):
                    raise FragmentError(
                        f"a subquery names a table {alias}, the name moenv gives the copied table; rename it"
                    )
                column.set("table", exp.to_identifier(alias, quoted=True))
        inner = _compile_helpers(tree, inner)
        sql = _generate(inner)
        if not _delimited(sql):
            sql = f"({sql})"
        _verify(sql, kind, database=database, columns=columns, tables=tables)
    except RecursionError as exc:
        raise FragmentError("is nested too deeply") from exc
    except SqlglotError as exc:
        # Raised while generating: sqlglot meets a construct MySQL cannot express.
        raise FragmentError(f"cannot be written as MySQL: {_one_line(str(exc))}") from exc
    return Fragment(
        text=text,
        kind=kind,
        columns=columns,
        sql=sql,
        tables=tables,
        outer_tables=outer_tables,
        helpers=frozenset(helpers),
    )


def _columns(inner: exp.Expr) -> frozenset[str]:
    """The row's columns: those named outside subqueries and those subqueries reach through an outer name."""
    own = {node.name.lower() for node, in_query in _walk(inner) if isinstance(node, exp.Column) and not in_query}
    return frozenset(own | {column.name.lower() for column in _outer_references(inner)})


def _outer_references(inner: exp.Expr) -> list[exp.Column]:
    """Columns in subqueries qualified with a name no enclosing subquery defines: the filtered row's."""
    found = []
    for node, in_query in _walk(inner):
        if (
            in_query
            and isinstance(node, exp.Column)
            and node.table
            and not node.args.get("db")
            and node.table.lower() not in _visible_names(node)
        ):
            found.append(node)
    return found


def _visible_names(node: exp.Expr) -> set[str]:
    """Names (aliases, or table names) of the FROM/JOIN sources of every query around `node`."""
    names: set[str] = set()
    scope = node.parent
    while scope is not None:
        if isinstance(scope, exp.Select):
            sources = [scope.args.get("from_"), *scope.args.get("joins", [])]
            names.update(source.this.alias_or_name.lower() for source in sources if source is not None)
        scope = scope.parent
    return names


def _tables(inner: exp.Expr) -> frozenset[str]:
    return frozenset(
        node.name
        for node, in_query in _walk(inner)
        if isinstance(node, exp.Table) and in_query and isinstance(node.this, exp.Identifier)
    )


def _verify(
    sql: str, kind: FragmentKind, *, database: str | None, columns: frozenset[str], tables: frozenset[str]
) -> None:
    """Read the emitted SQL back and check it again, as if a user had written it.

    sqlglot's generator rewrites as it prints (SPACE(3) becomes REPEAT(' ', 3)); a slip there
    must not run something the checks never saw, nor read other columns or tables.
    """
    try:
        emitted = _reparse(sql)
        helpers = _check(emitted, kind, emitted=True, database=database)
    except FragmentError as exc:
        raise FragmentError(_UNFAITHFUL) from exc
    if helpers or _columns(emitted) != columns or _tables(emitted) != tables:
        raise FragmentError(_UNFAITHFUL)


def _delimited(sql: str) -> bool:
    """Whether `sql` reads as one operand wherever it is embedded: a single token, `(…)` or `F(…)`."""
    tokens = _DIALECT.tokenize(_wrapped(sql))[1:-1]  # wrapped: a leading REPLACE( is a function
    if len(tokens) == 1:
        return True
    if tokens[0].token_type == TokenType.L_PAREN:
        opening = 0
    elif (
        len(tokens) > 1
        and tokens[1].token_type == TokenType.L_PAREN
        and tokens[0].token_type != TokenType.NOT
        and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tokens[0].text) is not None
    ):
        opening = 1
    else:
        return False
    depth = 0
    for index, token in enumerate(tokens[opening:], start=opening):
        depth += {TokenType.L_PAREN: 1, TokenType.R_PAREN: -1}.get(token.token_type, 0)
        if depth == 0:
            return index == len(tokens) - 1
    return False


def _one_line(message: str) -> str:
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", message).split())


def _wrapped(text: str) -> str:
    # The parentheses make sqlglot read one expression (a leading REPLACE( or INSERT( would
    # otherwise start a statement); the newlines end a trailing `-- comment` before them.
    return f"(\n{text}\n)"


def _tokenize(text: str) -> list[Token]:
    wrapped = _wrapped(text)
    try:
        tokens = _DIALECT.tokenize(wrapped)
    except TokenError as exc:
        raise FragmentError(f"is not valid SQL: {_token_problem(exc)}") from exc
    if not tokens or tokens[-1].token_type != TokenType.R_PAREN or tokens[-1].end != len(wrapped) - 1:
        raise FragmentError("is not valid SQL: a string, quoted name or comment is not closed")
    if any(token.comments for token in tokens):
        # A comment is attached to a neighbouring token, possibly one of the wrapper's parentheses.
        raise FragmentError("contains a comment (--, # or /* */); comments are not allowed")
    inner = tokens[1:-1]
    if not inner:
        raise FragmentError("contains no expression")
    depth = 0
    for token in inner:
        if token.token_type == TokenType.SEMICOLON:
            raise FragmentError("contains ';': a fragment is one expression, not statements")
        if token.token_type == TokenType.L_PAREN:
            depth += 1
            if depth > MAX_NESTING:
                raise FragmentError(f"nests parentheses more than {MAX_NESTING} levels deep")
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
            if depth < 0:
                raise FragmentError("has a ')' without a matching '('")
    if depth:
        raise FragmentError("has a '(' without a matching ')'")
    return tokens


def _token_problem(exc: TokenError) -> str:
    if any(str(error).startswith("Missing ") for error in (exc, exc.__cause__)):
        return "a string or quoted name is not closed"
    return "cannot be read as SQL tokens (a comment or string that is not closed?)"


def _parse(text: str) -> exp.Expr:
    tokens = _tokenize(text)
    try:
        (tree,) = _DIALECT.parser().parse_into(exp.Condition, tokens, _wrapped(text))
    except ParseError as exc:
        raise FragmentError(_parse_problem(text, tokens[1:-1], exc)) from exc
    if tree is None:
        raise FragmentError("contains no expression")
    if isinstance(tree, exp.Paren) and isinstance(tree.this, (exp.Alias, exp.Aliases)):
        # `TRUNCATE t` reads as the column TRUNCATE aliased t.
        statement = _statement_problem(tokens[1:-1])
        if statement:
            raise FragmentError(statement)
    return tree


def _reparse(sql: str) -> exp.Expr:
    """The tree of SQL this module emitted (no checks: it contains the helpers' @moenv_salt)."""
    try:
        (tree,) = _DIALECT.parse_into(exp.Condition, _wrapped(sql))
    except SqlglotError as exc:
        raise FragmentError(_UNFAITHFUL) from exc
    if not isinstance(tree, exp.Paren) or not isinstance(tree.this, exp.Expr):
        raise FragmentError(_UNFAITHFUL)
    _read_keywords(tree)
    return tree.this


def _statement_problem(tokens: Sequence[Token]) -> str | None:
    first = tokens[0]
    word = first.text.upper()
    if first.token_type != TokenType.IDENTIFIER and word in _STATEMENT_WORDS:
        follows_paren = len(tokens) > 1 and tokens[1].token_type == TokenType.L_PAREN
        if word in _ALWAYS_STATEMENTS or not follows_paren:
            return f"must be an expression, not a statement ({word} …)"
    return None


def _parse_problem(text: str, tokens: Sequence[Token], exc: ParseError) -> str:
    statement = _statement_problem(tokens)
    if statement:
        return statement
    depth = 0
    for token in tokens:
        depth += {TokenType.L_PAREN: 1, TokenType.R_PAREN: -1}.get(token.token_type, 0)
        if depth == 0 and token.token_type in (TokenType.UNION, TokenType.INTERSECT, TokenType.EXCEPT):
            return f"must be one expression: {token.text.upper()} is not allowed"
    error = exc.errors[0] if exc.errors else {}
    description = _one_line(str(error.get("description") or "syntax error"))
    if description.startswith("Required keyword"):
        description = "an operand is missing"
    highlight = error.get("highlight")
    line = error.get("line")
    where = ""
    if isinstance(highlight, str) and highlight.strip() and highlight.strip() != ")":
        where = f" near {_one_line(highlight)!r}"
    elif isinstance(line, int) and line > text.count("\n") + 2:  # the wrapper's closing line
        where = " at its end"
    return f"is not valid SQL: {description}{where}"


def _unwrap(tree: exp.Expr, kind: FragmentKind) -> exp.Expr:
    """The user's expression inside the parentheses `_wrapped` added."""
    if isinstance(tree, exp.Subquery) and isinstance(tree.this, exp.Subquery):
        _check_subquery_position(tree.this, kind)  # `(SELECT …)`: a subquery where none may be
    if isinstance(tree, _QUERIES):
        raise FragmentError("must be an expression, not a statement or query")
    if isinstance(tree, exp.Tuple):
        raise FragmentError("must be one expression, not a comma-separated list")
    if not isinstance(tree, exp.Paren) or not isinstance(tree.this, exp.Expr):
        raise FragmentError("must be one expression")
    return tree.this


def _walk(node: exp.Expr, in_query: bool = False) -> Iterator[tuple[exp.Expr, bool]]:
    """Every node below `node` (included), with whether it lies inside a subquery."""
    in_query = in_query or isinstance(node, _QUERIES)
    yield node, in_query
    for child in node.iter_expressions():
        yield from _walk(child, in_query)


def _read_keywords(tree: exp.Expr) -> None:
    """Turn the keywords sqlglot reads as column names back into keywords (never at the root)."""
    for node, _ in list(_walk(tree)):
        if not (isinstance(node, exp.Column) and not node.table and isinstance(node.this, exp.Identifier)):
            continue
        if node.this.quoted:
            continue
        name = node.name.lower()
        if name in _NILADIC_FUNCTIONS:
            (call,) = _DIALECT.parse_into(exp.Condition, f"{name.upper()}()")
            if call is not None:
                node.replace(call)
        elif (
            name in _GET_FORMAT_TYPES
            and isinstance(node.parent, exp.Anonymous)
            and node.parent.name.upper() == "GET_FORMAT"
            and node.arg_key == "expressions"
            and node.index == 0
        ):
            node.replace(exp.Var(this=name.upper()))


def _function_names(node: exp.Func) -> set[str]:
    if isinstance(node, exp.Anonymous):
        return {node.name.upper()}
    return {name.upper() for name in type(node).sql_names()}


def _helper_name(node: exp.Dot) -> str | None:
    """`hash` for `moenv.hash(…)`, None when `node` is not a moenv call."""
    owner, call = node.this, node.expression
    if isinstance(owner, exp.Identifier) and owner.name.lower() == "moenv" and isinstance(call, exp.Func):
        return call.name.lower() if isinstance(call, exp.Anonymous) else type(call).sql_name().lower()
    return None


def _check(inner: exp.Expr, kind: FragmentKind, *, emitted: bool = False, database: str | None = None) -> set[str]:
    """Raise FragmentError for the first thing not allowed; return the helpers used.

    `emitted`: `inner` is this module's own output, where the helpers' @moenv_salt and tables
    qualified with `database` are expected.
    """
    helpers: set[str] = set()
    for node, in_query in _walk(inner):
        _check_anywhere(node, salt_allowed=emitted)
        if isinstance(node, _QUERIES) and not _below_query(node):
            _check_subquery_position(node, kind)
        if isinstance(node, exp.Dot):
            name = _helper_name(node)
            if name is None:
                raise FragmentError(
                    f"qualified name {node.sql(dialect=_DIALECT)} is not allowed (only moenv.* helpers)"
                )
            _helper_arguments(name, node)
            helpers.add(name)
        if in_query:
            _check_in_subquery(node, database)
        else:
            _check_outside_subquery(node)
    return helpers


def _check_anywhere(node: exp.Expr, *, salt_allowed: bool) -> None:
    if salt_allowed and isinstance(node, exp.Parameter) and node.name == SALT_VARIABLE.removeprefix("@"):
        return
    if isinstance(node, (exp.Parameter, exp.SessionParameter, exp.PropertyEQ)):
        raise FragmentError("variables (@x, @@x, :=) are not allowed; moenv.* helpers use the salt for you")
    if isinstance(node, exp.Placeholder):
        raise FragmentError("placeholders (?, :name) are not allowed")
    if isinstance(node, exp.Lambda):
        # sqlglot reads `col->'$.a'` inside a call as a lambda, hiding the column it reads.
        raise FragmentError("-> inside a function call is not supported; write JSON_EXTRACT(col, path)")
    if isinstance(node, exp.Func) and not isinstance(node.parent, exp.Dot):
        forbidden = _function_names(node) & FORBIDDEN_FUNCTIONS
        if forbidden:
            raise FragmentError(f"function {min(forbidden)}() is not allowed")
    if isinstance(node, exp.Interval) and isinstance(node.this, exp.Tuple):
        raise FragmentError("the INTERVAL() function is not supported; use CASE")
    if isinstance(node, (exp.Command, exp.Into)):
        raise FragmentError("must be an expression, not a statement")


def _check_outside_subquery(node: exp.Expr) -> None:
    if isinstance(node, exp.Identifier) and not isinstance(node.parent, _NAMING_PARENTS):
        # A bare name sqlglot did not read as a column may still be one for the server.
        raise FragmentError(f"cannot tell what {node.name} is here")
    if isinstance(node, exp.Column):
        if node.table:
            qualifier = node.table
            if qualifier.lower() == "moenv" and not node.args.get("db"):
                raise FragmentError(f"moenv.{node.name} is a helper: call it, as in moenv.{node.name}(col)")
            raise FragmentError(
                f"column {node.sql(dialect=_DIALECT)} must not be qualified: name the table's own columns alone"
            )
    elif isinstance(node, (exp.AggFunc, exp.Window)) or (
        isinstance(node, exp.Anonymous) and node.name.upper() in _AGGREGATE_NAMES
    ):
        raise FragmentError("aggregate and window functions are not allowed: a fragment is per row")
    elif isinstance(node, (exp.Alias, exp.Aliases)):
        raise FragmentError("must be one expression without an alias (AS)")
    elif isinstance(node, exp.Distinct):
        raise FragmentError("DISTINCT is not allowed here")
    elif isinstance(node, exp.Star):
        raise FragmentError("'*' is not an expression")
    elif isinstance(node, exp.In) and not node.expressions and node.args.get("query") is None:
        raise FragmentError("IN () needs at least one value")


def _below_query(node: exp.Expr) -> bool:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, _QUERIES):
            return True
        parent = parent.parent
    return False


def _check_in_subquery(node: exp.Expr, database: str | None) -> None:
    if isinstance(node, exp.Table):
        qualified = node.args.get("catalog") or (node.args.get("db") and node.db != database)
        if qualified:
            raise FragmentError(
                f"table {node.sql(dialect=_DIALECT)} must not be qualified with a database:"
                " subqueries read the source database only"
            )
        if node.name.lower() in SYSTEM_SCHEMAS:
            raise FragmentError(f"reading {node.name} is not allowed")
    elif isinstance(node, exp.Column):
        if node.args.get("db") or node.args.get("catalog"):
            raise FragmentError(f"column {node.sql(dialect=_DIALECT)} must not name a database")
        if node.table.lower() in SYSTEM_SCHEMAS:
            raise FragmentError(f"reading {node.table} is not allowed")
    elif isinstance(node, (exp.With, exp.CTE)):
        raise FragmentError("WITH is not allowed in a fragment's subquery")
    elif isinstance(node, exp.Lock):
        raise FragmentError("locking reads (FOR UPDATE, LOCK IN SHARE MODE) are not allowed")


def _check_subquery_position(node: exp.Expr, kind: FragmentKind) -> None:
    """An outermost subquery: allowed only where the module docstring says."""
    if kind == "mask":
        raise FragmentError("subqueries are not allowed in a mask: a mask is computed from its row")
    for parent_type, arg in _ALLOWED_SUBQUERY_PARENTS.items():
        if isinstance(node.parent, parent_type) and node.arg_key == arg:
            return
    raise FragmentError("subqueries are allowed only as IN (SELECT …), EXISTS (SELECT …) or = ANY/ALL (SELECT …)")


def _helper_arguments(name: str, node: exp.Dot) -> tuple[exp.Expr, list[int]]:
    helper = _HELPERS.get(name)
    if helper is None:
        known = ", ".join(f"moenv.{known}" for known in sorted(_HELPERS))
        raise FragmentError(f"unknown helper moenv.{name}(); known helpers: {known}")
    call = node.expression
    if not isinstance(call, exp.Anonymous):
        raise FragmentError(f"unknown helper moenv.{name}()")
    args = list(call.expressions)
    expected = 1 + len(helper.params)
    if len(args) != expected:
        raise FragmentError(
            f"{_signature(name)} takes {expected} argument{'s' if expected > 1 else ''}, got {len(args)}"
        )
    value, *literals = args
    return value, [_int_literal(name, param, arg) for param, arg in zip(helper.params, literals, strict=True)]


def _int_literal(helper: str, param: str, node: exp.Expr) -> int:
    sign = 1
    if isinstance(node, exp.Neg):
        sign, node = -1, node.this
    if isinstance(node, exp.Literal) and not node.is_string and _DIGITS.fullmatch(node.name):
        return sign * int(node.name)
    raise FragmentError(f"moenv.{helper}: {param} must be an integer literal, not {node.sql(dialect=_DIALECT)}")


def _compile_helpers(tree: exp.Expr, inner: exp.Expr) -> exp.Expr:
    """Replace every moenv.* call below `tree` by its SQL, innermost first; return the new inner."""
    calls = [node for node in reversed(list(tree.walk(bfs=False))) if isinstance(node, exp.Dot)]
    for call in calls:
        name = _helper_name(call)
        assert name is not None  # _check refused every other Dot
        value, literals = _helper_arguments(name, call)
        compiled = _expand(_HELPERS[name].build(literals), value)
        if call is inner:
            inner = compiled
        call.replace(compiled)
    return inner


def _expand(template: str, value: exp.Expr) -> exp.Expr:
    (node,) = _DIALECT.parse_into(exp.Condition, template)
    assert node is not None
    operand = value if isinstance(value, _SIMPLE) else exp.Paren(this=value)
    # Collected before replacing, so a user column that happens to carry a sentinel's name
    # is never mistaken for one.
    slots = [part for part in node.walk() if isinstance(part, exp.Column) and part.name in (_VALUE, _OPERAND)]
    for slot in slots:
        replacement = (value if slot.name == _VALUE else operand).copy()
        if slot is node:
            return replacement
        slot.replace(replacement)
    return node


def _qualify_tables(inner: exp.Expr, database: str) -> None:
    for node, in_query in list(_walk(inner)):
        if isinstance(node, exp.Table) and in_query and isinstance(node.this, exp.Identifier):
            node.set("db", exp.to_identifier(database, quoted=True))
