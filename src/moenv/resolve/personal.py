"""Columns that look like personal data (or secrets) by their names and are copied unmasked; pure.
A name heuristic on purpose (no rows read): the plan points them out, nothing is refused."""

from __future__ import annotations

import itertools
import re

from moenv.engines.base import quote_ident
from moenv.models.desired import Desired

PERSONAL_WORDS = frozenset(
    {
        # contact
        "email",
        "mail",
        "phone",
        "mobile",
        "telephone",
        "fax",
        # names
        "firstname",
        "lastname",
        "surname",
        "fullname",
        "username",
        "forename",
        # places
        "address",
        "street",
        "zip",
        "zipcode",
        "postcode",
        "postal",
        # identity
        "birth",
        "birthday",
        "birthdate",
        "dob",
        "ssn",
        "passport",
        "iban",
        "ip",
        "ipaddress",
        # secrets
        "password",
        "passwd",
        "secret",
        "token",
    }
)
PERSONAL_NAMES = frozenset(
    {
        "first_name",
        "last_name",
        "full_name",
        "given_name",
        "family_name",
        "display_name",
        "user_name",
        "date_of_birth",
        "national_id",
        "tax_id",
        "card_number",
        "credit_card",
        "cc_number",
        "api_key",
        "ip_address",
        "tel",
    }
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")


def words(column: str) -> list[str]:
    """`lastLoginIP` → [last, login, ip]; `contact_email2` → [contact, email]."""
    return [w.lower() for w in _WORD.findall(column)]


def vocabulary(column: str) -> set[str]:
    """The words of a name (split at `_`, `-`, digits, camelCase) and each two adjacent ones
    written together: `lastLoginIP` → {last, login, ip, lastlogin, loginip}."""
    split = words(column)
    return {*split, *(a + b for a, b in itertools.pairwise(split))}


def looks_personal(column: str) -> bool:
    """The name is one of PERSONAL_NAMES, or its vocabulary meets PERSONAL_WORDS (`lastName`)."""
    return column.lower() in PERSONAL_NAMES or not PERSONAL_WORDS.isdisjoint(vocabulary(column))


def unmasked_personal(desired: Desired) -> tuple[str, ...]:
    """`table.column` of every copied column that looks personal and keeps its source values."""
    if desired.manifest.spec.data != "full":
        return ()
    found: list[str] = []
    for table in desired.tables:
        if not table.with_data:
            continue
        for column, select in zip(table.columns, table.select, strict=True):
            # unmasked: its SELECT is the column itself (as engines/plan_methods.py reads a mask)
            if select == quote_ident(column) and looks_personal(column):
                found.append(f"{table.target}.{column}")
    return tuple(found)
