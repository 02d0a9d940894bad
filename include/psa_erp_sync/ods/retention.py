"""Retention of personal data in the ODS: staged people payloads and webhook bodies.

``config/retention.yaml`` says how long; :func:`enforce` applies it as of an explicit time, in one
transaction, and is idempotent (a second run the same day changes nothing):

- ``staging.raw_record`` versions of the listed endpoints that no extract has re-read
  (``fetched_at``) for ``days`` are dropped;
- ``inbox.event`` payloads older than ``event_days`` are cut down to their envelope (delivery id,
  event, occurred_at, record id) and marked ``payload_pseudonymised_at``; the row stays so a late
  retry of the same delivery is still answered as a duplicate, and the stream never reads the
  payload (it re-reads the record by id);
- ``inbox.quarantine`` bodies not seen again for ``quarantine_days`` are dropped (emptied) and
  marked ``body_purged_at``; the body hash, reason, dates and the exception item stay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from psa_erp_sync.config import Retention

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionResult:
    staged_dropped: dict[str, int] = field(default_factory=dict)  # "source endpoint" -> rows
    events_pseudonymised: int = 0
    quarantine_bodies_dropped: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "staged_dropped": dict(self.staged_dropped),
            "events_pseudonymised": self.events_pseudonymised,
            "quarantine_bodies_dropped": self.quarantine_bodies_dropped,
        }


def enforce(conn: psycopg.Connection, policy: Retention, *, as_of: datetime) -> RetentionResult:
    """Apply ``policy`` to everything older than its periods before ``as_of``; commits."""
    if as_of.tzinfo is None:
        raise ValueError("as_of must carry a UTC offset")
    staged: dict[str, int] = {}
    with conn.transaction():
        for rule in policy.staging:
            if rule.action != "drop":  # the only action staging allows (config.StagingRetention)
                raise ValueError(f"unknown staging retention action {rule.action!r}")
            cur = conn.execute(
                "DELETE FROM staging.raw_record WHERE source_system = %s AND endpoint = %s AND fetched_at < %s",
                (rule.source_system, rule.endpoint, as_of - timedelta(days=rule.days)),
            )
            staged[f"{rule.source_system} {rule.endpoint}"] = cur.rowcount
        events = conn.execute(
            """
            UPDATE inbox.event SET
                payload = jsonb_strip_nulls(jsonb_build_object(
                    'delivery_id', payload->'delivery_id', 'event', payload->'event',
                    'occurred_at', payload->'occurred_at', 'data', jsonb_build_object('id', payload->'data'->'id'))),
                payload_pseudonymised_at = %(as_of)s
            WHERE payload_pseudonymised_at IS NULL AND received_at < %(cutoff)s
            """,
            {"as_of": as_of, "cutoff": as_of - timedelta(days=policy.inbox.event_days)},
        ).rowcount
        bodies = conn.execute(
            "UPDATE inbox.quarantine SET body = ''::bytea, body_purged_at = %s"
            " WHERE body_purged_at IS NULL AND last_seen < %s",
            (as_of, as_of - timedelta(days=policy.inbox.quarantine_days)),
        ).rowcount
    return RetentionResult(staged, events, bodies)


def enforce_configured(conn: psycopg.Connection, *, as_of: datetime) -> dict[str, Any]:
    """Apply ``config/retention.yaml`` as of ``as_of`` (the retention DAG's step); logs and returns
    what was dropped or pseudonymised."""
    from psa_erp_sync.config import load_retention

    result = enforce(conn, load_retention(), as_of=as_of)
    log.info(
        "retention as of %s: staged versions dropped %s, webhook events pseudonymised %d,"
        " quarantined bodies dropped %d",
        as_of.isoformat(),
        result.staged_dropped,
        result.events_pseudonymised,
        result.quarantine_bodies_dropped,
    )
    return result.as_dict()
