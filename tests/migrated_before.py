"""A fresh database migrated up to (not including) one migration: a migration's tests start there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from psa_erp_sync.ods import migrate


@contextmanager
def database_before(pg_dsn: str, monkeypatch: pytest.MonkeyPatch, version: int) -> Iterator[str]:
    """The DSN of a new database (on ``pg_dsn``'s server) migrated below ``version``; dropped after."""
    name = f"pes_test_{version:04d}_{os.getpid()}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    every = migrate.discover()
    dsn = psycopg.conninfo.make_conninfo(pg_dsn, dbname=name)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(migrate, "discover", lambda: [m for m in every if m.version < version])
            migrate.apply(dsn)
        yield dsn
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
