"""The ledger's DDL and queries, versioned; plain SQL that MySQL, MariaDB and MatrixOne accept; pure.

JSON is stored in LONGTEXT (not the JSON type) and no engine-specific options are used, so the
same schema works on every engine moenv supports.
"""

from __future__ import annotations

from moenv.engines.base import quote_ident

SCHEMA_VERSION = 2

# Migration N brings a ledger from version N-1 to N. Append, never edit.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS {db}.`meta` (
  `k` VARCHAR(64) NOT NULL PRIMARY KEY,
  `v` VARCHAR(255) NOT NULL
)""",
        """CREATE TABLE IF NOT EXISTS {db}.`environments` (
  `name` VARCHAR(128) NOT NULL PRIMARY KEY,
  `target_database` VARCHAR(64) NOT NULL,
  `source_server` VARCHAR(64) NOT NULL,
  `source_database` VARCHAR(64) NOT NULL,
  `status` VARCHAR(16) NOT NULL,
  `spec_hash` VARCHAR(64) NOT NULL DEFAULT '',
  `spec_json` LONGTEXT,
  `source_fingerprint` VARCHAR(64) NOT NULL DEFAULT '',
  `target_fingerprint` VARCHAR(64) NOT NULL DEFAULT '',
  `staging_database` VARCHAR(64) NULL,
  `created_at` DATETIME(6) NOT NULL,
  `updated_at` DATETIME(6) NOT NULL,
  `refreshed_at` DATETIME(6) NULL,
  `expires_at` DATETIME(6) NULL,
  `protect` TINYINT NOT NULL DEFAULT 0,
  `tables_total` INT NOT NULL DEFAULT 0,
  `tables_done` INT NOT NULL DEFAULT 0,
  `rows_copied` BIGINT NOT NULL DEFAULT 0,
  `stats_json` LONGTEXT,
  `message` TEXT,
  UNIQUE KEY `uq_target` (`target_database`)
)""",
        """CREATE TABLE IF NOT EXISTS {db}.`events` (
  `id` BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  `at` DATETIME(6) NOT NULL,
  `environment` VARCHAR(128) NOT NULL,
  `action` VARCHAR(32) NOT NULL,
  `result` VARCHAR(16) NOT NULL,
  `actor` VARCHAR(255) NOT NULL,
  `rows_copied` BIGINT NULL,
  `duration_ms` BIGINT NULL,
  `message` TEXT,
  KEY `ix_env` (`environment`, `id`)
)""",
        "INSERT IGNORE INTO {db}.`meta` (`k`, `v`) VALUES ('revision', '0')",
    ),
    ("ALTER TABLE {db}.`environments` ADD COLUMN `watermarks_json` LONGTEXT NULL",),
)

RECORD_COLUMNS = (
    "name",
    "target_database",
    "source_server",
    "source_database",
    "status",
    "spec_hash",
    "spec_json",
    "source_fingerprint",
    "target_fingerprint",
    "staging_database",
    "created_at",
    "updated_at",
    "refreshed_at",
    "expires_at",
    "protect",
    "tables_total",
    "tables_done",
    "rows_copied",
    "stats_json",
    "message",
    "watermarks_json",
)
EVENT_COLUMNS = ("id", "at", "environment", "action", "result", "actor", "rows_copied", "duration_ms", "message")


def migration_statements(ledger: str, from_version: int) -> list[tuple[int, str]]:
    """(version reached, statement) for every migration after `from_version`."""
    db = quote_ident(ledger)
    return [
        (version, statement.format(db=db))
        for version, statements in enumerate(MIGRATIONS, start=1)
        if version > from_version
        for statement in statements
    ]


# Columns added by a later migration: a ledger not migrated yet (read by `plan`) lacks them.
COLUMN_SINCE = {"watermarks_json": 2}


def record_columns(version: int) -> tuple[str, ...]:
    return tuple(c for c in RECORD_COLUMNS if COLUMN_SINCE.get(c, 1) <= max(version, 1))


def select_records(ledger: str, version: int = SCHEMA_VERSION) -> str:
    columns = ", ".join(quote_ident(c) for c in record_columns(version))
    return f"SELECT {columns} FROM {quote_ident(ledger)}.`environments`"


def select_events(ledger: str, *, environment: bool, limit: int) -> str:
    where = " WHERE `environment` = %s" if environment else ""
    columns = ", ".join(quote_ident(c) for c in EVENT_COLUMNS)
    return f"SELECT {columns} FROM {quote_ident(ledger)}.`events`{where} ORDER BY `id` DESC LIMIT {int(limit)}"


def upsert_record(ledger: str) -> str:
    cols = ", ".join(quote_ident(c) for c in RECORD_COLUMNS)
    marks = ", ".join(["%s"] * len(RECORD_COLUMNS))
    updates = ", ".join(f"{quote_ident(c)} = VALUES({quote_ident(c)})" for c in RECORD_COLUMNS if c != "name")
    return (
        f"INSERT INTO {quote_ident(ledger)}.`environments` ({cols}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {updates}"
    )


def delete_record(ledger: str) -> str:
    return f"DELETE FROM {quote_ident(ledger)}.`environments` WHERE `name` = %s"


def insert_event(ledger: str) -> str:
    cols = ", ".join(quote_ident(c) for c in EVENT_COLUMNS[1:])
    return f"INSERT INTO {quote_ident(ledger)}.`events` ({cols}) VALUES ({', '.join(['%s'] * 8)})"


def bump_revision(ledger: str) -> str:
    return f"UPDATE {quote_ident(ledger)}.`meta` SET `v` = CAST(`v` AS UNSIGNED) + 1 WHERE `k` = 'revision'"


def select_meta(ledger: str) -> str:
    return f"SELECT `k`, `v` FROM {quote_ident(ledger)}.`meta`"


def update_progress(ledger: str) -> str:
    return (
        f"UPDATE {quote_ident(ledger)}.`environments` SET `tables_done` = %s, `rows_copied` = %s,"
        " `updated_at` = %s WHERE `name` = %s"
    )


def create_ledger_database(ledger: str) -> str:
    return f"CREATE DATABASE IF NOT EXISTS {quote_ident(ledger)}"


def set_schema_version(ledger: str) -> str:
    return (
        f"INSERT INTO {quote_ident(ledger)}.`meta` (`k`, `v`) VALUES ('schema_version', %s)"
        " ON DUPLICATE KEY UPDATE `v` = VALUES(`v`)"
    )


def select_schema_version(ledger: str) -> str:
    return f"SELECT `v` FROM {quote_ident(ledger)}.`meta` WHERE `k` = 'schema_version'"
