"""moenv.manifest.fragments: what a where/mask fragment may say, and the exact SQL it becomes."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot.dialects.mysql import MySQL
from sqlglot.tokenizer_core import TokenType

from moenv.manifest.fragments import (
    FORBIDDEN_FUNCTIONS,
    HELPERS,
    MAX_LENGTH,
    SET_SALT_SQL,
    Fragment,
    FragmentError,
    FragmentKind,
    parse_fragment,
    to_sql,
    unknown_columns,
)

DIGEST = "SHA2(CONCAT(@moenv_salt, {}), 256)"


def where(text: str) -> Fragment:
    return parse_fragment(text, kind="where")


def mask(text: str) -> Fragment:
    return parse_fragment(text, kind="mask")


# --- accepted fragments -------------------------------------------------------------------


def test_where_from_the_spec() -> None:
    fragment = where("created_at > '2024-01-01'")
    assert fragment == Fragment(
        text="created_at > '2024-01-01'",
        kind="where",
        columns=frozenset({"created_at"}),
        sql="(`created_at` > '2024-01-01')",
    )
    assert not fragment.needs_salt


def test_mask_from_the_spec() -> None:
    fragment = mask("CONCAT('user_', id, '@example.com')")
    assert fragment.sql == "CONCAT('user_', `id`, '@example.com')"
    assert fragment.columns == {"id"}
    assert fragment.kind == "mask"


def test_reserved_word_columns_in_backticks() -> None:
    fragment = where("`order` > 3 AND `key` = 'a' AND `Select` IS NULL")
    assert fragment.sql == "(`order` > 3 AND `key` = 'a' AND `Select` IS NULL)"
    assert fragment.columns == {"order", "key", "select"}


def test_column_names_are_lower_cased_and_collected_once() -> None:
    assert where("Status = 'x' OR STATUS = 'y' OR status IS NULL").columns == {"status"}


def test_sql_is_parenthesized_unless_it_is_one_operand() -> None:
    # An OR must not leak out of `WHERE {sql} AND <integrity filter>`.
    assert where("a = 1 OR b = 2").sql == "(`a` = 1 OR `b` = 2)"
    assert mask("email").sql == "`email`"
    assert mask("NULL").sql == "NULL"
    assert mask("'x'").sql == "'x'"
    assert mask("LOWER(email)").sql == "LOWER(`email`)"
    assert mask("(a + 1)").sql == "(`a` + 1)"
    assert mask("NOT (a)").sql == "(NOT (`a`))"
    assert mask("CASE WHEN a THEN 1 END").sql == "(CASE WHEN `a` THEN 1 END)"


@pytest.mark.parametrize(
    ("text", "sql"),
    [
        ("note = '--' OR note = '#' OR note = '/* x */'", "(`note` = '--' OR `note` = '#' OR `note` = '/* x */')"),
        ("note = 'a;b'", "(`note` = 'a;b')"),
        ("note = 'it''s'", "(`note` = 'it''s')"),
        # A backslash escape is re-emitted in a form no sql_mode can misread.
        ("note = 'it\\'s -- x'", "(`note` = 'it''s -- x')"),
        ('note = "dq"', "(`note` = 'dq')"),
    ],
)
def test_comment_and_semicolon_characters_inside_strings_are_data(text: str, sql: str) -> None:
    assert where(text).sql == sql


@pytest.mark.parametrize(
    ("text", "sql"),
    [
        ("REPLACE(phone, '-', '')", "REPLACE(`phone`, '-', '')"),
        ("REPLACE(phone, '-', '') = '555'", "(REPLACE(`phone`, '-', '') = '555')"),
        ("INSERT(card, 1, 12, 'xxxx')", "INSERT(`card`, 1, 12, 'xxxx')"),
        ("name REGEXP '^A'", "(`name` REGEXP '^A')"),
        ("amount MOD 7", "MOD(`amount`, 7)"),
        ("LOG10(x)", "LOG10(`x`)"),
        ("created_at < UTC_TIMESTAMP - INTERVAL 1 DAY", "(`created_at` < UTC_TIMESTAMP() - INTERVAL '1' DAY)"),
        ("d = UTC_DATE()", "(`d` = UTC_DATE())"),
        ("GET_FORMAT(DATE, 'ISO')", "GET_FORMAT(DATE, 'ISO')"),
        ("IFNULL(nick, 'anon')", "COALESCE(`nick`, 'anon')"),
    ],
)
def test_mysql_idioms_are_emitted_for_mysql_and_mariadb(text: str, sql: str) -> None:
    assert mask(text).sql == sql


def test_niladic_keywords_are_not_columns_but_quoted_names_are() -> None:
    assert where("d < UTC_TIMESTAMP").columns == {"d"}
    assert mask("`utc_timestamp`").columns == {"utc_timestamp"}


def test_where_subqueries_on_unqualified_tables() -> None:
    fragment = where("id IN (SELECT user_id FROM orders WHERE orders.total > 5) AND active")
    assert fragment.sql == "(`id` IN (SELECT `user_id` FROM `orders` WHERE `orders`.`total` > 5) AND `active`)"
    assert fragment.columns == {"id", "active"}  # columns inside the subquery are the other table's
    assert fragment.tables == {"orders"}


@pytest.mark.parametrize(
    ("text", "tables"),
    [
        ("EXISTS (SELECT 1 FROM Orders o WHERE o.user_id = users.id)", {"Orders"}),
        ("score > ALL (SELECT score FROM rivals)", {"rivals"}),
        ("score = ANY (SELECT score FROM a UNION SELECT score FROM b)", {"a", "b"}),
        ("id IN (SELECT x FROM (SELECT x FROM t) AS d JOIN u ON u.x = d.x)", {"t", "u"}),
    ],
)
def test_allowed_subquery_shapes(text: str, tables: set[str]) -> None:
    assert where(text).tables == tables


def test_to_sql_qualifies_subquery_tables_with_the_source_database() -> None:
    fragment = where("id IN (SELECT user_id FROM orders o JOIN items ON items.order_id = o.id) AND x > 1")
    assert to_sql(fragment, database="prod`db") == (
        "(`id` IN (SELECT `user_id` FROM `prod``db`.`orders` AS `o`"
        " JOIN `prod``db`.`items` ON `items`.`order_id` = `o`.`id`) AND `x` > 1)"
    )
    assert to_sql(fragment) == fragment.sql


def test_correlated_subqueries_name_the_filtered_row() -> None:
    fragment = where("EXISTS (SELECT 1 FROM orders o WHERE o.user_id = users.id AND o.total > users.credit)")
    assert fragment.outer_tables == {"users"}
    assert fragment.columns == {"id", "credit"}  # the filtered row's, reached from the subquery
    assert fragment.tables == {"orders"}
    assert to_sql(fragment, database="prod", alias="s") == (
        "EXISTS(SELECT 1 FROM `prod`.`orders` AS `o` WHERE `o`.`user_id` = `s`.`id` AND `o`.`total` > `s`.`credit`)"
    )
    assert to_sql(fragment, alias="s").startswith("EXISTS(SELECT 1 FROM `orders` AS `o` WHERE `o`.`user_id` = `s`.`id`")


@pytest.mark.parametrize(
    ("text", "outer"),
    [
        ("id IN (SELECT user_id FROM orders WHERE orders.total > 5)", set()),  # orders is the subquery's own
        ("EXISTS (SELECT 1 FROM users u2 WHERE u2.manager_id = users.id)", {"users"}),  # aliased: not visible
        ("EXISTS (SELECT 1 FROM users WHERE users.manager_id = 7)", set()),
        ("id IN (SELECT o.user_id FROM orders o JOIN items i ON i.order_id = o.id WHERE i.sku = Users.sku)", {"Users"}),
        ("EXISTS (SELECT 1 FROM (SELECT user_id FROM orders) d WHERE d.user_id = users.id)", {"users"}),
        ("EXISTS (SELECT 1 FROM orders O WHERE o.user_id = id)", set()),
    ],
)
def test_outer_references(text: str, outer: set[str]) -> None:
    assert where(text).outer_tables == outer


def test_an_alias_must_not_clash_with_a_subquery_name() -> None:
    fragment = where("EXISTS (SELECT 1 FROM orders s WHERE s.user_id = users.id)")
    with pytest.raises(FragmentError, match="a subquery names a table s, the name moenv gives the copied table"):
        to_sql(fragment, alias="s")
    assert to_sql(fragment, alias="src").endswith("`s`.`user_id` = `src`.`id`)")


def test_to_sql_without_subqueries_is_the_sql() -> None:
    fragment = mask("moenv.hash(email)")
    assert to_sql(fragment, database="prod", alias="s") == fragment.sql


def test_unknown_columns_is_case_insensitive_and_sorted() -> None:
    fragment = where("Zeta = 1 AND alpha = 2 AND `Mid` = 3")
    assert unknown_columns(fragment, ["ALPHA"]) == ["mid", "zeta"]
    assert unknown_columns(fragment, iter(["zeta", "MID", "Alpha"])) == []


def test_unknown_columns_ignores_helpers_and_subquery_columns() -> None:
    fragment = where("moenv.hash(email) = 'x' AND id IN (SELECT user_id FROM orders)")
    assert unknown_columns(fragment, ["email", "id"]) == []


# --- helpers ------------------------------------------------------------------------------


def test_helper_list() -> None:
    assert set(HELPERS) == {"hash", "email", "name", "phone", "keep_last", "number", "date_shift"}
    for name, doc in HELPERS.items():
        assert doc.startswith(f"moenv.{name}(expr"), doc
        assert "\n" not in doc


@pytest.mark.parametrize(
    ("text", "sql"),
    [
        ("moenv.hash(email)", DIGEST.format("`email`")),
        (
            "moenv.email(email)",
            f"CONCAT('u', LEFT({DIGEST.format('`email`')}, 16), '@example.invalid')",
        ),
        ("moenv.name(full_name)", f"CONCAT('Name-', LEFT({DIGEST.format('`full_name`')}, 8))"),
        (
            "moenv.phone(phone)",
            "CONCAT('+1555', LPAD(MOD(CAST(CONV(LEFT("
            + DIGEST.format("`phone`")
            + ", 8), 16, 10) AS SIGNED), 10000000), 7, '0'))",
        ),
        (
            "moenv.keep_last(card, 4)",
            "(CASE WHEN CHAR_LENGTH(`card`) > 4 THEN CONCAT(REPEAT('x', CHAR_LENGTH(`card`) - 4),"
            " SUBSTRING(`card`, CHAR_LENGTH(`card`) - 4 + 1)) ELSE `card` END)",
        ),
        (
            "moenv.number(age, 18, 90)",
            "(18 + MOD(CAST(CONV(LEFT(" + DIGEST.format("`age`") + ", 15), 16, 10) AS SIGNED), 73))",
        ),
        (
            "moenv.number(delta, -5, 5)",
            "(-5 + MOD(CAST(CONV(LEFT(" + DIGEST.format("`delta`") + ", 15), 16, 10) AS SIGNED), 11))",
        ),
        (
            "moenv.date_shift(birth_date, 30)",
            "(`birth_date` + INTERVAL (IF({o} >= 0, {o} + 1, {o})) DAY)".format(
                o="MOD(CAST(CONV(LEFT(" + DIGEST.format("`birth_date`") + ", 8), 16, 10) AS SIGNED), 60) - 30"
            ),
        ),
    ],
)
def test_helper_sql(text: str, sql: str) -> None:
    fragment = mask(text)
    assert fragment.sql == sql
    assert fragment.helpers == {text.split("(", maxsplit=1)[0].removeprefix("moenv.")}
    assert "moenv" not in fragment.columns


def test_helpers_are_case_insensitive_and_may_be_quoted() -> None:
    assert mask("MOENV.HASH(x)").sql == mask("`moenv`.`hash`(x)").sql == DIGEST.format("`x`")


def test_nested_helpers_compile_inside_out() -> None:
    fragment = mask("moenv.email(moenv.hash(id))")
    inner = DIGEST.format("`id`")
    assert fragment.sql == f"CONCAT('u', LEFT({DIGEST.format(inner)}, 16), '@example.invalid')"
    assert fragment.helpers == {"email", "hash"}
    assert fragment.columns == {"id"}


def test_helper_results_keep_their_precedence() -> None:
    digest = DIGEST.format("`x`")
    assert mask("moenv.number(x, 1, 6) * 2").sql == (
        f"((1 + MOD(CAST(CONV(LEFT({digest}, 15), 16, 10) AS SIGNED), 6)) * 2)"
    )
    shifted = mask("moenv.date_shift(a OR b, 1)").sql
    assert shifted.startswith("((`a` OR `b`) + INTERVAL ")


def test_helpers_work_in_where_too() -> None:
    fragment = where("moenv.hash(email) <> 'x'")
    assert fragment.sql == f"({DIGEST.format('`email`')} <> 'x')"
    assert fragment.needs_salt


def test_salted_helpers_read_the_session_salt() -> None:
    assert SET_SALT_SQL == "SET @moenv_salt = %s"
    for name in HELPERS:
        args = {"keep_last": ", 2", "number": ", 1, 9", "date_shift": ", 3"}.get(name, "")
        fragment = mask(f"moenv.{name}(v{args})")
        assert fragment.needs_salt == (name != "keep_last") == ("@moenv_salt" in fragment.sql)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("moenv.md5(x)", "unknown helper moenv.md5(); known helpers: moenv.date_shift, moenv.email"),
        ("moenv.left(x, 2)", "unknown helper moenv.left()"),
        ("moenv.hash()", "moenv.hash(expr) takes 1 argument, got 0"),
        ("moenv.hash(a, b)", "moenv.hash(expr) takes 1 argument, got 2"),
        ("moenv.keep_last(card)", "moenv.keep_last(expr, n) takes 2 arguments, got 1"),
        ("moenv.number(x, 1)", "moenv.number(expr, lo, hi) takes 3 arguments, got 2"),
        ("moenv.keep_last(card, n)", "moenv.keep_last: n must be an integer literal, not n"),
        ("moenv.keep_last(card, '4')", "n must be an integer literal"),
        ("moenv.keep_last(card, 1.5)", "n must be an integer literal"),
        ("moenv.keep_last(card, -1)", "moenv.keep_last: n must be between 0 and 65535, got -1"),
        ("moenv.number(x, 9, 1)", "moenv.number: lo (9) must not be greater than hi (1)"),
        ("moenv.number(x, 0, 9999999999999999999)", "moenv.number: hi must be between"),
        ("moenv.date_shift(d, -3)", "moenv.date_shift: days must be between 1 and 36500"),
        ("moenv.date_shift(d, 0)", "moenv.date_shift: days must be between 1 and 36500"),
        ("moenv.hash", "moenv.hash is a helper: call it, as in moenv.hash(col)"),
        ("moenv.hash(DISTINCT x)", "DISTINCT is not allowed"),
        ("moenv.hash(x AS y)", "without an alias"),
    ],
)
def test_bad_helper_calls(text: str, message: str) -> None:
    with pytest.raises(FragmentError, match=re.escape(message)):
        mask(text)


# --- refused fragments --------------------------------------------------------------------


def refused(text: str, kind: FragmentKind = "where") -> str:
    with pytest.raises(FragmentError) as info:
        parse_fragment(text, kind=kind)
    message = str(info.value)
    assert "\n" not in message and message
    return message


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty(text: str) -> None:
    assert refused(text) == "is empty"


@pytest.mark.parametrize(
    "text",
    ["a = 1 -- c", "a = 1 --", "a = 1 # c", "a /* c */ = 1", "/* c */ a = 1", "a = 1 /*! OR 1 */", "a = 1/**/"],
)
def test_comments(text: str) -> None:
    assert "comment" in refused(text)


def test_semicolons() -> None:
    assert "';'" in refused("a = 1; DROP TABLE users")
    assert "';'" in refused("a = 1;")


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("SELECT 1", ""),
        ("SELECT * FROM users", ""),
        ("INSERT INTO t VALUES (1)", "INSERT"),
        ("REPLACE INTO t VALUES (1)", "REPLACE"),
        ("UPDATE t SET a = 1", "UPDATE"),
        ("DELETE FROM t", "DELETE"),
        ("DROP TABLE t", "DROP"),
        ("SET @a = 1", "SET"),
        ("CALL p()", "CALL"),
        ("DO SLEEP(1)", "DO"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", ""),
        ("TRUNCATE t", "TRUNCATE"),
    ],
)
def test_statements(text: str, word: str) -> None:
    message = refused(text)
    assert "not a statement" in message
    assert word in message


def test_union() -> None:
    assert "UNION is not allowed" in refused("1 UNION SELECT password FROM users")


@pytest.mark.parametrize("text", ["x = @a", "@@version", "@@global.max_connections > 1", "x = @`a`", "(@a := 1)"])
def test_variables(text: str) -> None:
    assert "variables" in refused(text, "mask")


def test_user_may_not_read_the_salt_directly() -> None:
    assert "variables" in refused("@moenv_salt", "mask")


def test_placeholders() -> None:
    assert "placeholders" in refused("x = ?")


@pytest.mark.parametrize("name", sorted(FORBIDDEN_FUNCTIONS))
def test_forbidden_functions(name: str) -> None:
    assert refused(f"x = {name.lower()}(1)") == f"function {name}() is not allowed"


def test_forbidden_functions_are_found_anywhere() -> None:
    assert "SLEEP" in refused("id IN (SELECT id FROM t WHERE SLEEP(1) = 0)")
    assert "BENCHMARK" in refused("moenv.hash(BENCHMARK(1000, MD5('a')))", "mask")


@pytest.mark.parametrize("text", ["t.col = 1", "db.t.col = 1", "c.db.t.col = 1", "users.id IN (1)"])
def test_qualified_columns_outside_subqueries(text: str) -> None:
    assert "must not be qualified" in refused(text)


@pytest.mark.parametrize("text", ["sys.format_bytes(x)", "mysql.f(x)", "otherdb.f(x)"])
def test_qualified_function_calls(text: str) -> None:
    assert "only moenv.* helpers" in refused(text, "mask")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id IN (SELECT id FROM other.t)", "must not be qualified with a database"),
        ("EXISTS (SELECT * FROM mysql.user)", "must not be qualified with a database"),
        ("EXISTS (SELECT * FROM information_schema.tables)", "must not be qualified with a database"),
        ("id IN (SELECT id FROM t WHERE t.x IN (SELECT x FROM db2.u))", "must not be qualified with a database"),
        ("EXISTS (SELECT 1 FROM mysql)", "reading mysql is not allowed"),
        ("EXISTS (SELECT 1 FROM t AS sys WHERE sys.a = 1)", "reading sys is not allowed"),
        ("id IN (SELECT db.t.id FROM t)", "must not name a database"),
        ("id IN (SELECT id FROM t FOR UPDATE)", "locking reads"),
        ("id IN (SELECT id FROM t LOCK IN SHARE MODE)", "locking reads"),
        ("id IN (WITH c AS (SELECT 1) SELECT * FROM c)", "WITH is not allowed"),
        ("x = (SELECT MAX(x) FROM t)", "subqueries are allowed only as IN"),
        ("(SELECT 1 FROM t) IS NOT NULL", "subqueries are allowed only as IN"),
        ("x IN (VALUES ROW(1))", "subqueries are allowed only as IN"),
        ("(SELECT 1)", "subqueries are allowed only as IN"),
    ],
)
def test_refused_subqueries_in_where(text: str, message: str) -> None:
    assert message in refused(text)


@pytest.mark.parametrize(
    "text",
    ["(SELECT email FROM admins LIMIT 1)", "IF(EXISTS (SELECT 1 FROM t), 'a', 'b')", "id IN (SELECT id FROM t)"],
)
def test_no_subqueries_in_masks(text: str) -> None:
    assert "subqueries are not allowed in a mask" in refused(text, "mask")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("COUNT(*)", "aggregate and window functions"),
        ("MAX(id)", "aggregate and window functions"),
        ("GROUP_CONCAT(email)", "aggregate and window functions"),
        ("JSON_ARRAYAGG(email)", "aggregate and window functions"),
        ("ROW_NUMBER() OVER (ORDER BY id)", "aggregate and window functions"),
        ("email AS e", "without an alias"),
        ("email e", "without an alias"),
        ("a, b", "comma-separated list"),
        ("*", "'*' is not an expression"),
        ("x IN ()", "IN () needs at least one value"),
        ("INTERVAL(5, 1, 10)", "INTERVAL() function"),
        ("JSON_UNQUOTE(doc->'$.a')", "write JSON_EXTRACT(col, path)"),
        ("_utf8mb4", "cannot tell what _utf8mb4 is here"),
        ("VALUES(x)", "not a statement"),
    ],
)
def test_other_refusals(text: str, message: str) -> None:
    assert message in refused(text, "mask")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("'abc", "a string or quoted name is not closed"),
        ("`abc", "a string or quoted name is not closed"),
        ("a /* b", "not valid SQL"),
        ("x)", "')' without a matching '('"),
        ("(x", "'(' without a matching ')'"),
        ("x) OR (y", "')' without a matching '('"),
        ("x +", "is not valid SQL: an operand is missing at its end"),
        ("a b c", "is not valid SQL"),
    ],
)
def test_malformed(text: str, message: str) -> None:
    assert message in refused(text)


def test_limits() -> None:
    assert "longer than" in refused("x = '" + "a" * MAX_LENGTH + "'")
    assert "more than 32 levels" in refused("(" * 40 + "x" + ")" * 40)
    assert refused("NOT " * 2000 + "x") == "is nested too deeply"


def test_not_a_string() -> None:
    with pytest.raises(FragmentError, match="not int"):
        parse_fragment(42, kind="where")  # type: ignore[arg-type]


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown fragment kind"):
        parse_fragment("x", kind="select")  # type: ignore[arg-type]


# --- properties ---------------------------------------------------------------------------

# Pieces of SQL, so random fragments reach deep into the parser rather than failing at once.
WORDS = """
    SELECT FROM WHERE AND OR NOT IN EXISTS IS NULL LIKE BETWEEN CASE WHEN THEN ELSE END AS
    INTERVAL DAY CAST CHAR UNION REPLACE INSERT VALUES DIV MOD COLLATE BINARY ANY ALL
    SLEEP COUNT OVER JOIN ON FOR UPDATE LOCK WITH ROW CONCAT LEFT RIGHT TRIM BOTH USING
    ( ) , . = <> < > + - * / % ! ~ | & ^ << ; ? : := @ @@ -> ->> \\ ' " ` # -- /* */ { } [ ]
    x `order` t.c db.t.c moenv moenv.hash(x) moenv.keep_last(x,2) hash email
    'a' '--' "b" 1 -2 .5 1e3 0x1F b'1' X'AB' _utf8mb4
"""
PIECES = [*WORDS.split(), "\n", "\t"]


def _sql_is_one_comment_free_expression(sql: str) -> None:
    tokens = MySQL().tokenize(f"(\n{sql}\n)")
    assert not any(token.comments for token in tokens)
    assert all(token.token_type != TokenType.SEMICOLON for token in tokens)


@settings(max_examples=2500, suppress_health_check=[HealthCheck.too_slow], deadline=None, database=None)
@given(text=st.text(max_size=60), kind=st.sampled_from(["where", "mask"]))
def test_any_text_gives_a_fragment_or_a_fragment_error(text: str, kind: FragmentKind) -> None:
    try:
        fragment = parse_fragment(text, kind=kind)
    except FragmentError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        _sql_is_one_comment_free_expression(fragment.sql)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None, database=None)
@given(
    pieces=st.lists(st.sampled_from(PIECES), min_size=1, max_size=10),
    separator=st.sampled_from([" ", ""]),
    kind=st.sampled_from(["where", "mask"]),
)
def test_sql_like_text_gives_a_fragment_or_a_fragment_error(
    pieces: list[str], separator: str, kind: FragmentKind
) -> None:
    try:
        fragment = parse_fragment(separator.join(pieces), kind=kind)
    except FragmentError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    _sql_is_one_comment_free_expression(fragment.sql)
    # What is emitted is itself an acceptable fragment when it uses no helper (helpers read a variable).
    if not fragment.helpers:
        again = parse_fragment(fragment.sql, kind=kind)
        assert again.columns == fragment.columns
        assert again.tables == fragment.tables
