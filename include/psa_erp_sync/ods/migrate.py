"""Forward-only, versioned SQL migrations for the ODS.

Files live in ``ods/migrations`` as ``NNNN_description.sql`` and are applied in order, each in
its own transaction, under an advisory lock so concurrent runners (demo, test workers) are safe.
An applied migration whose file has changed is an error: migrations are never edited, only added.

Usage::

    python -m psa_erp_sync.ods.migrate --dsn postgresql://...
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

_LOCK_ID = 0x0D5_0001
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    """An applied migration changed, or versions are not unique."""


def discover() -> list[Migration]:
    found = []
    for entry in resources.files("psa_erp_sync.ods").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions: {versions}")
    return found


def apply(dsn: str) -> list[str]:
    """Apply pending migrations; return the names applied now (empty when up to date)."""
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute("CREATE SCHEMA IF NOT EXISTS ods_meta")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS ods_meta.schema_migration ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            rows = conn.execute("SELECT version, name, checksum FROM ods_meta.schema_migration").fetchall()
            done = {version: (name, checksum) for version, name, checksum in rows}
            for migration in discover():
                if migration.version in done:
                    name, checksum = done[migration.version]
                    if checksum != migration.checksum:
                        raise MigrationError(
                            f"migration {name} was applied but its file changed; add a new migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO ods_meta.schema_migration (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                log.info("applied migration %s", migration.name)
                applied_now.append(migration.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Apply the ODS migrations.")
    parser.add_argument("--dsn", default=os.environ.get("PSA_ERP_SYNC_DSN"))
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("give --dsn or set PSA_ERP_SYNC_DSN")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = apply(args.dsn)
    log.info("ODS up to date (%d applied now)", len(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
