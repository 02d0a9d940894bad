"""Extra connections to the ODS, opened from the original connection parameters.

Every connection beyond the one a task was handed (the planner's and validation's streaming
reader, the forecast store's parallel writers, the ingress and posting pools) comes from here.
``conn.info.dsn`` is never enough on its own: psycopg leaves the password out of it, so a second
connection built from it fails with "no password supplied" against any server that asks for one
(scram-sha-256 in production and in the embedded dev server).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool


def conninfo_of(conn: psycopg.Connection[Any]) -> str:
    """The parameters ``conn`` was opened with, password included (``conn.info.dsn`` omits it)."""
    password = conn.info.password
    if password:
        return psycopg.conninfo.make_conninfo(conn.info.dsn, password=password)
    return conn.info.dsn


def connect(conninfo: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A new ODS connection from a full conninfo (``OdsHook.dsn()`` or :func:`conninfo_of`)."""
    return psycopg.connect(conninfo, **kwargs)


def connect_like(conn: psycopg.Connection[Any], **kwargs: Any) -> psycopg.Connection[Any]:
    """A second connection to the same database, as the same role, as ``conn``."""
    return connect(conninfo_of(conn), **kwargs)


def pool(conninfo: str, **kwargs: Any) -> ConnectionPool[psycopg.Connection[Any]]:
    """A connection pool on the ODS; ``kwargs`` go to :class:`psycopg_pool.ConnectionPool`."""
    return ConnectionPool(conninfo, **kwargs)
