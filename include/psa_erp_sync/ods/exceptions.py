"""Exception queue repository: quarantined records, dead letters and other items needing an owner.

One row per (kind, record, reason); a repeat sighting bumps ``occurrences`` and ``last_seen``
instead of adding a row, so the queue never grows by re-running a task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class Item:
    kind: str
    domain: str
    source_system: str
    record_type: str
    source_id: str
    reason_code: str
    owner: str
    source_version: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    legal_entity: str | None = None


def quarantine_many(conn: psycopg.Connection, items: Sequence[Item], *, run_id: str) -> int:
    """Upsert items as open exceptions; returns how many were written."""
    if not items:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO exceptions.item AS e (kind, domain, source_system, record_type, source_id, source_version,
                                              reason_code, detail, legal_entity, owner, last_run_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (kind, source_system, record_type, source_id, reason_code) DO UPDATE SET
                source_version = EXCLUDED.source_version, detail = EXCLUDED.detail,
                legal_entity = EXCLUDED.legal_entity, owner = EXCLUDED.owner,
                status = CASE WHEN e.status = 'ignored' THEN e.status ELSE 'open' END,
                last_seen = now(),
                occurrences = e.occurrences + CASE WHEN e.last_run_id IS DISTINCT FROM EXCLUDED.last_run_id THEN 1 ELSE 0 END,
                last_run_id = EXCLUDED.last_run_id
            """,
            [
                (
                    i.kind,
                    i.domain,
                    i.source_system,
                    i.record_type,
                    i.source_id,
                    i.source_version,
                    i.reason_code,
                    Jsonb(i.detail),
                    i.legal_entity,
                    i.owner,
                    run_id,
                )
                for i in items
            ],
        )
    return len(items)


def resolve_for(
    conn: psycopg.Connection, *, source_system: str, record_type: str, source_ids: Sequence[str], kind: str
) -> int:
    """Close open items of these records (they passed now); returns how many were closed."""
    if not source_ids:
        return 0
    cur = conn.execute(
        "UPDATE exceptions.item SET status = 'resolved', last_seen = now()"
        " WHERE kind = %s AND source_system = %s AND record_type = %s AND status = 'open' AND source_id = ANY(%s)",
        (kind, source_system, record_type, list(source_ids)),
    )
    return cur.rowcount


def open_summary(conn: psycopg.Connection) -> list[tuple[str, str, str, int]]:
    """Open items grouped by cause: (kind, reason code, owner, count), largest first."""
    return [
        (kind, reason, owner, int(n))
        for kind, reason, owner, n in conn.execute(
            "SELECT kind, reason_code, owner, count(*) FROM exceptions.item WHERE status = 'open'"
            " GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3"
        )
    ]


def close_other_reasons(
    conn: psycopg.Connection,
    *,
    kind: str,
    source_system: str,
    record_type: str,
    verdicts: Sequence[tuple[str, str]],
) -> int:
    """A record's newest verdict replaces older ones: close its open items of other reasons."""
    if not verdicts:
        return 0
    cur = conn.execute(
        """
        UPDATE exceptions.item e SET status = 'resolved', last_seen = now()
        FROM unnest(%s::text[], %s::text[]) AS v(source_id, reason_code)
        WHERE e.kind = %s AND e.source_system = %s AND e.record_type = %s AND e.status = 'open'
          AND e.source_id = v.source_id AND e.reason_code <> v.reason_code
        """,
        ([v[0] for v in verdicts], [v[1] for v in verdicts], kind, source_system, record_type),
    )
    return cur.rowcount


@dataclass(frozen=True)
class Unnotified:
    """An open exception item not yet announced to its owner, with the amount at stake when the
    record is known (canonical time or expense entry, or ``detail.amount_minor``)."""

    id: int
    owner: str
    kind: str
    reason_code: str
    record_type: str
    legal_entity: str | None
    amount_minor: int | None
    currency: str | None


def lock_unnotified(conn: psycopg.Connection) -> list[Unnotified]:
    """Open items never announced, locked until the caller's transaction ends (a concurrent
    digest skips them, so no item is announced twice), ordered by owner."""
    rows = conn.execute(
        """
        SELECT i.id, i.owner, i.kind, i.reason_code, i.record_type, i.legal_entity,
               COALESCE(t.amount_minor, x.amount_minor,
                        CASE WHEN i.detail->>'amount_minor' ~ '^-?[0-9]{1,18}$'
                             THEN (i.detail->>'amount_minor')::bigint END),
               COALESCE(t.currency, x.currency,
                        CASE WHEN i.detail->>'currency' ~ '^[A-Z]{3}$' THEN i.detail->>'currency' END)
        FROM exceptions.item i
        LEFT JOIN canonical.time_entry t
               ON i.record_type = 'time_entry' AND t.source_system = i.source_system AND t.source_id = i.source_id
        LEFT JOIN canonical.expense_entry x
               ON i.record_type = 'expense_entry' AND x.source_system = i.source_system AND x.source_id = i.source_id
        WHERE i.status = 'open' AND i.notified_at IS NULL
        ORDER BY i.owner, i.id
        FOR UPDATE OF i SKIP LOCKED
        """
    ).fetchall()
    return [Unnotified(*row) for row in rows]


def mark_notified(
    conn: psycopg.Connection,
    *,
    owner: str,
    item_ids: Sequence[int],
    dag_id: str,
    run_id: str,
    channels: Sequence[str],
    summary: dict[str, Any],
) -> None:
    """Record a sent digest and mark its items announced (same transaction as the lock)."""
    conn.execute(
        "UPDATE exceptions.item SET notified_at = now() WHERE id = ANY(%s) AND notified_at IS NULL",
        (list(item_ids),),
    )
    conn.execute(
        "INSERT INTO exceptions.notification (owner, dag_id, run_id, channels, items, summary)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (owner, dag_id, run_id, list(channels), len(item_ids), Jsonb(summary)),
    )
