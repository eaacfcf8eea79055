"""resolve/personal.py: which copied columns look like personal data, by name; pure."""

from __future__ import annotations

import pytest
from tests.unit.builders import catalog, create_action, desired, table

from moenv.planner.render import render_action
from moenv.resolve.personal import looks_personal, words


@pytest.mark.parametrize(
    "column",
    ["email", "contact_email2", "Phone", "mobileNumber", "first_name", "lastName", "date_of_birth", "last_login_ip",
     "lastLoginIP", "password_hash", "street_address", "zip", "iban", "display_name", "username", "api_key"],
)
def test_names_that_look_personal(column: str) -> None:
    assert looks_personal(column), words(column)


@pytest.mark.parametrize(
    "column", ["id", "name", "created_at", "status", "total", "description", "zipper", "shipment", "mailbox_count"]
)
def test_names_that_do_not(column: str) -> None:
    assert not looks_personal(column), words(column)


def test_only_columns_that_keep_their_source_values_are_listed_and_the_plan_shows_them() -> None:
    src = catalog("src", table("users", ("id", "email", "phone", "first_name", "created_at")), table("items", ("id",)))
    want = desired(
        source=src,
        rules={"users": {"mask": {"email": "CONCAT('u', id, '@example.invalid')"}, "exclude_columns": ["phone"]}},
    )
    assert want.unmasked_personal == ("users.first_name",)  # email masked, phone left out
    assert desired(source=src, data="schema").unmasked_personal == ()  # no rows, nothing leaks

    action = create_action(want)
    assert (
        "    ! personal data? copied unmasked: users.first_name (mask it, or leave it out with exclude_columns)"
        in render_action(action)
    )
