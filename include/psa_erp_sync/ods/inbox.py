"""Inbox repository: the ingress's two writes (an accepted event, a quarantined delivery), claim
pending webhook events for a run, and settle them.

Claims use ``FOR UPDATE SKIP LOCKED`` so concurrent runs never take the same event. A claim
belongs to a DAG run (``claimed_by`` = run id): a retried task of the same run takes its own
claims back, and claims of a run that died are taken over once their lease expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from psa_erp_sync.ods import jsonb

if TYPE_CHECKING:  # the DAG file imports the event types from here: no driver import at parse time
    import psycopg

CHANNEL = "psa_erp_sync_inbox"
TIME_EXPENSE_EVENTS = (
    "time_entry.approved",
    "time_entry.updated",
    "time_entry.unapproved",
    "time_entry.deleted",
    "expense.approved",
)
ERP_INVOICE_EVENTS = ("invoice.created", "invoice.paid")  # consumed by billing_status_stream
# Signed-off milestones become billing events within seconds (psa_erp_sync.billing.milestones).
MILESTONE_EVENTS = ("milestone.completed",)


@dataclass(frozen=True)
class Event:
    seq: int
    delivery_id: str
    source_system: str
    event_type: str
    source_id: str
    occurred_at: datetime | None
    received_at: datetime


def insert_event(
    conn: psycopg.Connection,
    *,
    delivery_id: str,
    source_system: str,
    event_type: str,
    source_id: str,
    occurred_at: datetime,
    body: bytes,
) -> bool:
    """Store an accepted event unless its (source, delivery id) is already stored: True if new.
    One statement (the caller's autocommit connection commits it)."""
    body = jsonb.escape_nul(body)  # jsonb cannot hold U+0000: kept as the literal text, as staging does
    row = conn.execute(
        "INSERT INTO inbox.event (delivery_id, source_system, event_type, source_id, occurred_at, payload)"
        " VALUES (%s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (source_system, delivery_id) DO NOTHING"
        " RETURNING seq",
        (delivery_id, source_system, event_type, source_id, occurred_at, body.decode()),
    ).fetchone()
    return row is not None


def upsert_quarantine(
    conn: psycopg.Connection,
    *,
    delivery_id: str,
    source_system: str,
    event_type: str | None,
    reason_code: str,
    detail: dict[str, Any],
    body: bytes,
    body_sha256: str,
    content_type: str | None,
) -> bool:
    """Keep an authentic but malformed delivery keyed by (source, sha256 of the body); seen again,
    count it. A stored body is never overwritten. True if this body was not quarantined before."""
    from psycopg.types.json import Jsonb

    row = conn.execute(
        "INSERT INTO inbox.quarantine AS q (delivery_id, last_delivery_id, source_system, event_type,"
        " reason_code, detail, body, body_sha256, content_type)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (source_system, body_sha256) DO UPDATE SET occurrences = q.occurrences + 1,"
        " last_seen = now(), last_delivery_id = EXCLUDED.last_delivery_id,"
        # a body the retention job dropped may be kept again; a stored body is never replaced
        " body = CASE WHEN q.body_purged_at IS NULL THEN q.body ELSE EXCLUDED.body END,"
        " body_purged_at = NULL"
        # occurrences is 1 only for a new row (reading xmax would need table-wide SELECT,
        # which the ingress's insert-only role does not have: migration 0015)
        " RETURNING occurrences",
        (
            delivery_id,
            delivery_id,
            source_system,
            event_type,
            reason_code,
            Jsonb(detail),
            body,
            body_sha256,
            content_type,
        ),
    ).fetchone()
    return bool(row and row[0] == 1)


def claim(
    conn: psycopg.Connection,
    *,
    run_id: str,
    source_system: str,
    event_types: tuple[str, ...] | list[str],
    limit: int = 5000,
    lease: timedelta = timedelta(minutes=10),
    takeover: tuple[str, timedelta] | None = None,
    min_age: timedelta = timedelta(0),
) -> list[Event]:
    """Claim pending events (and this run's own, and expired claims) in arrival order; commits.

    ``takeover`` = (prefix, lease): claims of claimers whose id starts with ``prefix`` are taken
    over once not renewed (:func:`renew`) for that shorter lease. The stream consumers use it:
    a live consumer renews its claims, so only a dead one's are taken (docs/streaming.md).
    ``min_age``: pending events only once received at least this long ago (the asset-triggered
    safety net leaves fresh ones to the consumer)."""
    prefix, short = takeover if takeover is not None else (None, lease)
    with conn.transaction():
        rows = conn.execute(
            """
            WITH c AS (
                SELECT seq FROM inbox.event
                WHERE source_system = %(system)s AND event_type = ANY(%(types)s)
                  AND ((status = 'pending'
                        AND (%(min_age)s = interval '0' OR received_at <= clock_timestamp() - %(min_age)s))
                       OR (status = 'claimed' AND (claimed_by = %(run_id)s OR claimed_at < now() - %(lease)s
                           OR (starts_with(claimed_by, %(prefix)s::text) AND claimed_at < now() - %(short)s))))
                ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED
            )
            UPDATE inbox.event e SET status = 'claimed', claimed_by = %(run_id)s, claimed_at = now(),
                                     attempts = e.attempts + 1
            FROM c WHERE e.seq = c.seq
            RETURNING e.seq, e.delivery_id, e.source_system, e.event_type, e.source_id, e.occurred_at,
                      e.received_at
            """,
            {
                "system": source_system,
                "types": list(event_types),
                "run_id": run_id,
                "lease": lease,
                "limit": limit,
                "prefix": prefix,
                "short": short,
                "min_age": min_age,
            },
        ).fetchall()
    return sorted((Event(*r) for r in rows), key=lambda e: e.seq)


def renew(conn: psycopg.Connection, *, run_id: str, source_system: str) -> int:
    """Renew the claims ``run_id`` still holds (a live claimer's heartbeat): a claim taken over by
    someone else, or settled, is left alone. One statement; the caller's autocommit commits it."""
    cur = conn.execute(
        "UPDATE inbox.event SET claimed_at = now()"
        " WHERE source_system = %s AND claimed_by = %s AND status = 'claimed'",
        (source_system, run_id),
    )
    return cur.rowcount


def settle(conn: psycopg.Connection, outcomes: dict[str, str], *, run_id: str, source_system: str) -> int:
    """Mark claimed events of ``source_system`` processed with their outcome, keyed by delivery id
    (unique per source only); only this run's claims. Commits."""
    if not outcomes:
        return 0
    with conn.transaction():
        cur = conn.execute(
            """
            UPDATE inbox.event e SET status = 'processed', processed_at = now(), outcome = o.outcome
            FROM unnest(%s::text[], %s::text[]) AS o(delivery_id, outcome)
            WHERE e.source_system = %s AND e.delivery_id = o.delivery_id AND e.claimed_by = %s
              AND e.status = 'claimed'
            """,
            (list(outcomes), list(outcomes.values()), source_system, run_id),
        )
        return cur.rowcount


def pending_after(
    conn: psycopg.Connection, *, source_system: str, event_types: list[str], after_seq: int
) -> int | None:
    """The highest seq of a pending event newer than ``after_seq``, or None: what a trigger watches."""
    row = conn.execute(
        "SELECT max(seq) FROM inbox.event WHERE source_system = %s AND event_type = ANY(%s)"
        " AND status = 'pending' AND seq > %s",
        (source_system, event_types, after_seq),
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def counts(conn: psycopg.Connection) -> dict[str, Any]:
    rows = conn.execute("SELECT status, count(*) FROM inbox.event GROUP BY status").fetchall()
    quarantined = conn.execute("SELECT count(*) FROM inbox.quarantine").fetchone()
    return {"events": {s: int(n) for s, n in rows}, "quarantined": int(quarantined[0]) if quarantined else 0}
