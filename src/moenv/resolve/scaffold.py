"""`moenv init`: a first manifest for a source database with a mask for every column whose name
looks personal, chosen to fit the column (suggest_mask says how); pure: a Catalog in, YAML text out."""

from __future__ import annotations

import json
import re
from datetime import date

from moenv.engines.base import quote_ident
from moenv.models.catalog import Catalog, Column, Table
from moenv.models.manifest import check_name
from moenv.resolve.personal import looks_personal, vocabulary

_LENGTH = re.compile(r"^(?:var)?char\((\d+)\)")
_TEXT = re.compile(r"^(?:tiny|medium|long)?text\b")
_DATES = ("date", "datetime", "timestamp")
_EMAIL = {"email", "mail"}
_PHONE = {"phone", "mobile", "telephone", "fax", "tel"}
_NAME = {
    "firstname",
    "lastname",
    "surname",
    "fullname",
    "forename",
    "username",
    "displayname",
    "givenname",
    "familyname",
}
_BIRTH = {"birth", "birthday", "birthdate", "dob"}
_PSEUDONYM_LENGTH = {"email": 35, "phone": 12, "name": 13, "hash": 64}


def _length(column: Column) -> int | None:
    """Characters the column holds: a number for (VAR)CHAR(n), None for TEXT (no practical limit)."""
    kind = column.type.lower()
    if match := _LENGTH.match(kind):
        return int(match[1])
    return None if _TEXT.match(kind) else 0


def _fits(column: Column, characters: int) -> bool:
    length = _length(column)
    return length is None or length >= characters


def _ident(name: str) -> str:
    """A column in a fragment: plain when it is a simple name, backquoted otherwise."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else quote_ident(name)


def suggest_mask(table: Table, column: Column) -> tuple[str | None, str]:
    """(the mask expression — None for SQL NULL, "" when none fits —, a comment saying why).

    In order: a birth date (date type) is shifted by up to 30 days; a column in a unique index of
    a table with a one-column key gets a value from the key (an address for emails); emails,
    phones and names get the moenv.* pseudonym where it fits (phone and name ones collide: not
    for unique columns); then NULL where allowed, else moenv.hash where 64 characters fit, else
    moenv.keep_last(…, 0) for text; nothing fits a numeric column.
    """
    said = vocabulary(column.name) | {column.name.lower().replace("_", "")}
    kind = column.type.lower()
    name = _ident(column.name)
    label = column.name.replace("'", "''")
    if kind.startswith(_DATES) and said & _BIRTH:
        return f"moenv.date_shift({name}, 30)", f"{kind}: moved by up to 30 days"
    unique = any(index.unique and name in index.columns for index in table.indexes)
    key = [_ident(k) for k in table.primary_key]
    if unique and len(key) == 1 and said & _EMAIL and _fits(column, 32):
        return f"CONCAT('user', {key[0]}, '@example.invalid')", f"{kind}, unique: one address per row, from the key"
    if unique and len(key) == 1 and _fits(column, len(column.name) + 12):
        return f"CONCAT('{label}_', {key[0]})", f"{kind}, unique: one value per row, from the key"
    for kind_words, helper in ((_EMAIL, "email"), (_PHONE, "phone"), (_NAME, "name")):
        # phone and name pseudonyms collide (10^7 and 2^32 values): not for a unique column
        if said & kind_words and _fits(column, _PSEUDONYM_LENGTH[helper]) and (not unique or helper == "email"):
            why = "64-bit salted pseudonym" if unique else "salted pseudonym, the same for the same value"
            return f"moenv.{helper}({name})", f"{kind}{', unique' if unique else ''}: {why}"
    if column.nullable:
        return None, f"{kind}: emptied"
    if _length(column) != 0:
        if _fits(column, _PSEUDONYM_LENGTH["hash"]):
            return f"moenv.hash({name})", f"{kind}: salted SHA-256"
        return f"moenv.keep_last({name}, 0)", f"{kind}: every character replaced by 'x'"
    return "", f"{kind}: looks personal, no mask fits its type: choose one (the plan will point it out)"


def _nameable(text: str) -> bool:
    """Whether a manifest may name it (models/manifest.py check_name)."""
    try:
        check_name(text)
    except ValueError:
        return False
    return True


def _key(text: str) -> str:
    """A YAML key: plain when it is a simple name, JSON-quoted (valid YAML) otherwise."""
    return text if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text) else json.dumps(text)


def scaffold(
    catalog: Catalog, *, name: str, target: str, server: str = "default", today: date | None = None
) -> tuple[str, int]:
    """(the manifest text, how many columns it masks) for copying `catalog`'s database whole."""
    lines = [
        "# yaml-language-server: $schema=../schemas/environment.schema.json",
        f"# Written by `moenv init` from {server}:{catalog.database}"
        + (f" on {today.isoformat()}" if today else "")
        + ". Review it before the first apply:",
        "# every column whose name looks personal is masked below; the others are copied as they are.",
        "apiVersion: moenv/v1",
        "kind: Environment",
        "metadata:",
        f"  name: {_key(name)}",
        f"  description: {json.dumps(f'Development copy of {catalog.database}')}",
        "spec:",
        f"  source: {{server: {_key(server)}, database: {_key(catalog.database)}}}",
        f"  target: {{database: {_key(target)}}}",
        "  data: full",
    ]
    rules: list[str] = []
    masked = 0
    for table in sorted(catalog.tables.values(), key=lambda t: t.name):
        if table.kind != "table":
            continue
        masks: list[str] = []
        for column in table.columns:
            if column.generated or column.name in table.primary_key or not looks_personal(column.name):
                continue
            expression, why = suggest_mask(table, column)
            if expression == "" or not _nameable(column.name):
                masks.append(f"        # {_key(column.name)}: ?  # {why}")
                continue
            value = "null" if expression is None else json.dumps(expression)
            masks.append(f"        {_key(column.name)}: {value}  # {why}")
            masked += _nameable(table.name)
        if masks and not _nameable(table.name):
            rules += [
                f"    # {json.dumps(table.name)}: personal-looking columns, but a manifest cannot name this table:",
                "    #   leave it out (tables.exclude) or copy it masked by hand",
            ]
        elif masks:
            rules += [f"    {_key(table.name)}:", "      mask:", *masks]
    if rules:
        lines += ["  rules:", *rules]
    return "\n".join(lines) + "\n", masked
