"""PostgreSQL state of a simulator: one connection pool per process, one schema per simulator."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool


def sim_dsn() -> str:
    dsn = os.environ.get("SIM_DSN") or os.environ.get("PSA_ERP_SYNC_DSN")
    if not dsn:
        raise RuntimeError("set SIM_DSN (or PSA_ERP_SYNC_DSN) to the PostgreSQL that holds simulator state")
    return dsn


class SimDB:
    """A pool whose connections have ``search_path`` set to the simulator's schema."""

    def __init__(self, dsn: str, schema: str, *, max_size: int = 20) -> None:
        self.dsn = dsn
        self.schema = schema
        self.pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=max_size,
            # Named, so a benchmark can tell the simulator's backends from the pipeline's.
            kwargs={"options": f"-c search_path={schema},public", "application_name": f"simulator {schema}"},
            open=False,
        )

    def open(self, schema_sql: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            # Several simulators may start at once against one database.
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (self.schema,))
            try:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                conn.execute(f'SET search_path = "{self.schema}", public')
                conn.execute(schema_sql.encode())
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (self.schema,))
        self.pool.open(wait=True)

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def tx(self) -> Iterator[psycopg.Connection]:
        """A connection in a transaction that commits on success."""
        with self.pool.connection() as conn:
            yield conn

    def truncate_all(self) -> None:
        with self.pool.connection() as conn:
            tables = conn.execute(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables WHERE schemaname = %s",
                (self.schema,),
            ).fetchall()
            if tables:
                conn.execute("TRUNCATE " + ", ".join(t[0] for t in tables) + " RESTART IDENTITY CASCADE")
