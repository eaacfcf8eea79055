"""resolve/scaffold.py (`moenv init`): the mask chosen per column, and the manifest text; pure."""

from __future__ import annotations

import pytest
import yaml
from tests.unit.builders import catalog, table

from moenv.models.catalog import Column, Index, Table
from moenv.models.manifest import EnvironmentSpec
from moenv.resolve import resolve_environment
from moenv.resolve.scaffold import scaffold, suggest_mask


def people(*columns: Column, unique: tuple[str, ...] = ()) -> Table:
    base = table("people", (Column("id", "int(11)", nullable=False), *columns))
    extra = tuple(Index(name=f"uq_{c}", columns=(c,), unique=True) for c in unique)
    return Table(name=base.name, columns=base.columns, indexes=base.indexes + extra, engine="InnoDB")


@pytest.mark.parametrize(
    ("column", "unique", "mask"),
    [
        (Column("email", "varchar(255)", nullable=False), True, "CONCAT('user', id, '@example.invalid')"),
        (Column("email", "varchar(255)", nullable=False), False, "moenv.email(email)"),
        (Column("email", "varchar(20)", nullable=True), False, None),  # no pseudonym fits: emptied
        (Column("username", "varchar(64)", nullable=False), True, "CONCAT('username_', id)"),
        (Column("phone", "varchar(32)", nullable=True), False, "moenv.phone(phone)"),
        (Column("first_name", "varchar(100)", nullable=False), False, "moenv.name(first_name)"),
        (Column("birth_date", "date", nullable=True), False, "moenv.date_shift(birth_date, 30)"),
        (Column("street_address", "text", nullable=False), False, "moenv.hash(street_address)"),
        (Column("zip", "varchar(10)", nullable=False), False, "moenv.keep_last(zip, 0)"),
        (Column("last_login_ip", "varchar(45)", nullable=True), False, None),
        (Column("ip", "int(10) unsigned", nullable=False), False, ""),  # nothing fits: left to the reader
    ],
)
def test_the_mask_fits_the_column(column: Column, unique: bool, mask: str | None) -> None:
    chosen, why = suggest_mask(people(column, unique=(column.name,) if unique else ()), column)
    assert chosen == mask, why
    assert column.type in why


def test_the_manifest_masks_what_looks_personal_and_resolves() -> None:
    src = catalog(
        "shop",
        people(
            Column("email", "varchar(255)", nullable=False),
            Column("phone", "varchar(32)", nullable=True),
            Column("e-mail", "varchar(99)", nullable=True),
            Column("created_at", "datetime", nullable=False),
            unique=("email",),
        ),
        table("odd name", (Column("id", "int(11)", nullable=False), Column("phone", "varchar(32)", nullable=True))),
        table("orders", ("id", "total")),
    )
    text, masked = scaffold(src, name="dev", target="dev_db")

    document = yaml.safe_load(text)
    assert masked == 3
    assert document["spec"]["source"] == {"server": "default", "database": "shop"}
    assert document["spec"]["rules"] == {
        "people": {
            "mask": {
                "email": "CONCAT('user', id, '@example.invalid')",
                "phone": "moenv.phone(phone)",
                "e-mail": "moenv.email(`e-mail`)",
            }
        },
    }
    assert '# "odd name": personal-looking columns, but a manifest cannot name this table:' in text
    want = resolve_environment(EnvironmentSpec.model_validate(document), src)
    assert want.unmasked_personal == ("odd name.phone",)  # what a manifest cannot name, the plan points out
    assert "# every column whose name looks personal is masked below" in text
