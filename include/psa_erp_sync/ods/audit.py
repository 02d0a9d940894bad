"""Repository of ``audit.change``: the before/after of every change we make, one row each.

Row-at-a-time writers call :func:`record` or :func:`record_many`; a set-based statement that audits
the rows its own CTE changed uses :data:`INSERT_CHANGE` (``INSERT INTO audit.change (columns)``)
followed by its ``SELECT`` of those columns. ``before`` and ``after`` are JSON-able values (stored
as jsonb) or None (SQL NULL). The control totals (``audit.control_total``) are written by
``include/psa_erp_sync/reconcile/control_totals.py``, their only writer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

COLUMNS = "actor, action, entity, entity_key, before, after, run_id"
#: The head of a set-based audit insert: follow it with a SELECT of :data:`COLUMNS`, in order.
INSERT_CHANGE = f"INSERT INTO audit.change ({COLUMNS})"
_INSERT = f"{INSERT_CHANGE} VALUES (%s, %s, %s, %s, %s, %s, %s)"


@dataclass(frozen=True)
class Change:
    """One audited change: who (``actor``) did what (``action``) to which ``entity`` and key."""

    actor: str
    action: str
    entity: str
    entity_key: str
    before: Any = None
    after: Any = None


def _row(change: Change, run_id: str | None) -> tuple[Any, ...]:
    return (
        change.actor,
        change.action,
        change.entity,
        change.entity_key,
        None if change.before is None else Jsonb(change.before),
        None if change.after is None else Jsonb(change.after),
        run_id,
    )


def record(conn: psycopg.Connection, change: Change, *, run_id: str | None) -> None:
    """Write one change (in the caller's transaction)."""
    conn.execute(_INSERT, _row(change, run_id))


def record_many(conn: psycopg.Connection, changes: Iterable[Change], *, run_id: str | None) -> int:
    """Write these changes in one round of statements (in the caller's transaction); how many."""
    rows = [_row(change, run_id) for change in changes]
    if rows:
        with conn.cursor() as cur:
            cur.executemany(_INSERT, rows)
    return len(rows)
