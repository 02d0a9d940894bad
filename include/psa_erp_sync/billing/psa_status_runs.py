"""The two ways ERP invoice status reaches the PSA: the ERP's ``invoice.created`` / ``invoice.paid``
webhooks drained from the inbox within seconds, and the daily sweep of every ERP invoice modified
since the last sweep (minus an overlap) that fixes whatever a lost webhook left behind. Both re-read
the ERP and call :func:`psa_erp_sync.billing.psa_status.mirror_invoice`."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from psa_erp_sync.billing import psa_status_store as store
from psa_erp_sync.billing.psa_status import mirror_invoice
from psa_erp_sync.clients.erp import ErpError
from psa_erp_sync.clients.psa import PsaApiError
from psa_erp_sync.ods import inbox

if TYPE_CHECKING:
    import psycopg

    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.psa import HarvestClient

log = logging.getLogger(__name__)

INVOICE_EVENTS = inbox.ERP_INVOICE_EVENTS
SWEEP_NAME = "erp_invoices"
DEFAULT_OVERLAP = timedelta(hours=2)


@dataclass
class StatusResult:
    """Counts per outcome (``created``, ``updated``, ``unchanged``, ``stale``, ``failed``, ...)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    events: int = 0
    invoices: int = 0
    failures: list[str] = field(default_factory=list)
    swept_from: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "invoices": self.invoices,
            "outcomes": dict(sorted(self.outcomes.items())),
            "failures": self.failures[:20],
            "swept_from": self.swept_from.isoformat() if self.swept_from else None,
        }


class StatusSyncFailed(RuntimeError):
    """Some invoices could not be mirrored; the others were. A retry (or the sweep) redoes them."""


def _mirror_ids(
    conn: psycopg.Connection,
    psa: HarvestClient,
    erp: NetSuiteClient,
    internal_ids: list[str],
    run_id: str,
    result: StatusResult,
) -> dict[str, str]:
    """Re-read each ERP invoice by internal id and mirror it; the outcome per id."""
    outcomes: dict[str, str] = {}
    paid = erp.payments_applied(internal_ids) if internal_ids else {}
    for internal_id in internal_ids:
        try:
            invoice = erp.get_invoice(internal_id)
            if invoice is None:
                outcome = "gone"
            else:
                outcome = mirror_invoice(conn, psa, invoice, paid=paid[internal_id], run_id=run_id)
        except (PsaApiError, ErpError) as exc:
            log.warning("ERP invoice %s not mirrored: %s", internal_id, exc)
            result.failures.append(f"{internal_id}: {exc}")
            outcome = "failed"
        outcomes[internal_id] = outcome
        result.outcomes[outcome] += 1
    result.invoices += len(internal_ids)
    return outcomes


def process_events(
    conn: psycopg.Connection, psa: HarvestClient, erp: NetSuiteClient, *, run_id: str
) -> StatusResult:
    """Claim the pending ERP invoice events, mirror each announced invoice once (duplicates and
    reorders collapse: the ERP is re-read), and settle the events. ``conn`` in autocommit.

    :raises StatusSyncFailed: after settling the rest, when some invoice failed (its events stay
        claimed by this run: a retry takes them back; the sweep is the safety net)."""
    result = StatusResult()
    events = inbox.claim(conn, run_id=run_id, source_system="erp", event_types=INVOICE_EVENTS)
    result.events = len(events)
    ids = sorted({e.source_id for e in events if e.source_id.isdigit()}, key=int)
    outcomes = _mirror_ids(conn, psa, erp, ids, run_id, result)
    settled = {
        e.delivery_id: outcomes.get(e.source_id, "invalid_id")
        for e in events
        if outcomes.get(e.source_id) != "failed"
    }
    inbox.settle(conn, settled, run_id=run_id, source_system="erp")
    if result.failures:
        raise StatusSyncFailed(f"{len(result.failures)} ERP invoices not mirrored: {result.failures[:5]}")
    return result


def sweep(
    conn: psycopg.Connection,
    psa: HarvestClient,
    erp: NetSuiteClient,
    *,
    run_id: str,
    as_of: datetime,
    overlap: timedelta = DEFAULT_OVERLAP,
) -> StatusResult:
    """Mirror every ERP invoice modified since the last sweep minus ``overlap`` (payments and
    credits move an invoice's ``lastModifiedDate``); then advance the watermark to ``as_of``.
    The first sweep reads every invoice. ``conn`` in autocommit.

    :raises StatusSyncFailed: some invoice failed; the watermark then stays where it was."""
    result = StatusResult()
    since = store.watermark(conn, SWEEP_NAME)
    result.swept_from = None if since is None else since - overlap
    ids = sorted(
        {str(i.id) for i in erp.iter_invoices(modified_since=since, overlap=overlap) if i.id},
        key=int,
    )
    _mirror_ids(conn, psa, erp, ids, run_id, result)
    if result.failures:
        raise StatusSyncFailed(f"{len(result.failures)} ERP invoices not mirrored: {result.failures[:5]}")
    store.advance_watermark(conn, SWEEP_NAME, as_of, run_id)
    return result
