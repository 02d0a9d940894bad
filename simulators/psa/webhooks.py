"""Outbound webhooks of the PSA simulator (an extension: Harvest itself has none).

The outbox, signing (``X-PSA-Signature``), dispatcher, seeded drop/duplicate/reorder faults and the
admin routes are shared with the ERP simulator: :mod:`simulators.common.webhooks`. Here: the PSA's
events, its runtime config and :func:`enqueue`, which renders the announced rows in SQL with the
same Harvest JSON as the API (:mod:`simulators.psa.render`).
"""

from __future__ import annotations

import psycopg
from pydantic import Field

from simulators.common.webhooks import Dispatcher, WebhookConfig, sign
from simulators.psa.render import Kind, ts

__all__ = ["EVENTS", "Dispatcher", "PsaConfig", "enqueue", "sign"]

EVENTS = frozenset(
    {
        "time_entry.approved",
        "time_entry.updated",
        "time_entry.unapproved",
        "time_entry.deleted",
        "expense.approved",
        "milestone.completed",
    }
)


class PsaConfig(WebhookConfig):
    """Runtime knobs of the PSA simulator, changed with ``PUT /admin/config``."""

    rate_limit_requests: int = Field(default=100, ge=0)
    rate_limit_window_s: float = Field(default=15.0, gt=0)


def enqueue(conn: psycopg.Connection, kind: Kind, event: str, ids: list[int]) -> int:
    """Queue ``event`` for rows ``ids`` of ``kind`` (rendered now) to every subscriber of it."""
    if not ids:
        return 0
    cur = conn.execute(
        f"""
        WITH subs AS (SELECT id FROM webhook_subscriptions WHERE is_active AND %s = ANY(events)),
             d AS (SELECT gen_random_uuid() AS did, subs.id AS sid, x.id AS rid, x.j
                     FROM subs CROSS JOIN ({kind.select_json(f"{kind.alias}.id = ANY(%s)")}) x)
        INSERT INTO webhook_deliveries (delivery_id, subscription_id, event, body)
        SELECT did, sid, %s,
               json_build_object('delivery_id', did, 'event', %s::text,
                                 'occurred_at', {ts("clock_timestamp()")}, 'data', j)::text
          FROM d ORDER BY rid, sid""",
        (event, ids, event, event),
    )
    return cur.rowcount
