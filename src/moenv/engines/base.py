"""What every engine module provides, and identifier quoting (done here, in one place); pure."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """Backtick-quote an identifier for MySQL, MariaDB and MatrixOne (embedded backticks doubled)."""
    if not name or "\x00" in name:
        raise ValueError(f"not a usable identifier: {name!r}")
    return "`" + name.replace("`", "``") + "`"


def qualified(database: str, table: str) -> str:
    return f"{quote_ident(database)}.{quote_ident(table)}"
