"""Signed-off milestones billed within seconds: the ``milestone.completed`` inbox events.

A run claims the pending ``milestone.completed`` events (the same claim and settle as the time and
expense stream, :mod:`psa_erp_sync.ods.inbox`), re-reads each announced milestone from the PSA by
id (the webhook is only a hint), records the read in ``billing.milestone_read`` and builds the
milestone billing events (:func:`~psa_erp_sync.billing.events.build_billing_events` with
``kinds=("milestone",)``). A milestone the PSA no longer has is recorded gone, so its ready event
is withdrawn (or its invoiced one credited). The forecast's full milestone extract, read by every
periodic build, stays the safety net for a webhook that never came.

No Airflow imports: the flow hands in a connection, the PSA client and the run id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from psa_erp_sync import money
from psa_erp_sync.billing.events import EventsOutcome, build_billing_events
from psa_erp_sync.billing.settings import BillingSettings
from psa_erp_sync.clients import psa_models
from psa_erp_sync.ods import inbox

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

SOURCE = "psa"


@dataclass
class MilestoneStreamResult:
    claimed: int = 0
    milestones: int = 0
    gone_at_source: int = 0
    invalid: int = 0
    events: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def process_milestone_inbox(
    conn: psycopg.Connection,
    psa_client: Any,
    *,
    config: BillingSettings,
    as_of: date,
    run_id: str,
) -> MilestoneStreamResult:
    """Claim, re-read, record, build, settle. Safe to retry: claims belong to the run, the read is
    an upsert and the build is idempotent."""
    result = MilestoneStreamResult()
    claimed = inbox.claim(conn, run_id=run_id, source_system=SOURCE, event_types=inbox.MILESTONE_EVENTS)
    result.claimed = len(claimed)
    if not claimed:
        return result
    outcomes: dict[str, str] = {}
    read: dict[str, str] = {}
    for source_id in dict.fromkeys(e.source_id for e in claimed):
        read[source_id] = _record_read(conn, psa_client, source_id, run_id=run_id)
    conn.commit()
    result.milestones = len(read)
    result.gone_at_source = sum(1 for v in read.values() if v == "gone_at_source")
    result.invalid = sum(1 for v in read.values() if v == "invalid")
    built: EventsOutcome = build_billing_events(
        conn, config=config, as_of=as_of, run_id=run_id, kinds=("milestone",)
    )
    conn.commit()
    result.events = built.counts()
    for event in claimed:
        outcomes[event.delivery_id] = read[event.source_id]
    inbox.settle(conn, outcomes, run_id=run_id, source_system=SOURCE)
    log.info(
        "milestone stream: %d events, %d milestones, created %d",
        len(claimed),
        len(read),
        built.total("created"),
    )
    return result


def _record_read(conn: psycopg.Connection, client: Any, source_id: str, *, run_id: str) -> str:
    """Re-read one milestone and upsert what the PSA says into ``billing.milestone_read``; the
    event's outcome (``read``, ``gone_at_source``, ``invalid``)."""
    body = client.get_milestone(int(source_id))
    if body is None:  # gone: kept as a read, so it outranks an older full extract that still lists it
        conn.execute(
            "INSERT INTO billing.milestone_read (milestone_id, project_ref, amount_minor, status, exists_at_source,"
            " run_id) VALUES (%s, '', 0, 'planned', false, %s) ON CONFLICT (milestone_id) DO UPDATE"
            " SET exists_at_source = false, read_at = now(), run_id = EXCLUDED.run_id",
            (source_id, run_id),
        )
        return "gone_at_source"
    try:
        m = psa_models.Milestone.model_validate(body)
    except ValidationError as exc:
        log.warning(
            "milestone %s: invalid at source (%d errors); the full extract decides",
            source_id,
            exc.error_count(),
        )
        return "invalid"
    currency = m.currency or _project_currency(conn, str(m.project.id))
    if currency is None or m.amount is None:
        log.warning("milestone %s: no amount or currency; not billable", source_id)
        return "invalid"
    try:
        amount = money.to_minor_checked(m.amount, currency)
    except money.AmountOutOfRange:
        return "invalid"
    conn.execute(
        """
        INSERT INTO billing.milestone_read (milestone_id, project_ref, amount_minor, status, completed_on,
            exists_at_source, read_at, run_id)
        VALUES (%s, %s, %s, %s, %s, true, now(), %s)
        ON CONFLICT (milestone_id) DO UPDATE SET project_ref = EXCLUDED.project_ref,
            amount_minor = EXCLUDED.amount_minor, status = EXCLUDED.status, completed_on = EXCLUDED.completed_on,
            exists_at_source = true, read_at = now(), run_id = EXCLUDED.run_id
        """,
        (
            str(m.id),
            str(m.project.id),
            amount,
            m.status,
            m.completed_at.date() if m.completed_at else None,
            run_id,
        ),
    )
    return "read"


def _project_currency(conn: psycopg.Connection, project_ref: str) -> str | None:
    row = conn.execute(
        "SELECT currency FROM forecast.src_project WHERE project_ref = %s", (project_ref,)
    ).fetchone()
    return str(row[0]) if row else None
