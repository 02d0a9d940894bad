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
from psa_erp_sync.billing.psa_status import InvoiceIndex, mirror_invoice
from psa_erp_sync.clients.erp import ErpError
from psa_erp_sync.clients.psa import PsaApiError, PsaEndpointNotFound, PsaWriteUncertain
from psa_erp_sync.ods import exceptions, inbox

if TYPE_CHECKING:
    from decimal import Decimal

    import psycopg

    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.erp_models import ErpInvoice
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


EXCEPTION_DOMAIN = "billing"
EXCEPTION_KIND = "propagation"  # a write into the PSA the PSA refused
REFUSED = "PSA_INVOICE_REFUSED"


def _refused(exc: PsaApiError) -> bool:
    """A PSA answer that a retry will not change (4xx but 429; never an uncertain write)."""
    return (
        not isinstance(exc, (PsaWriteUncertain, PsaEndpointNotFound))
        and exc.status is not None
        and 400 <= exc.status < 500
        and exc.status != 429
    )


def _report_refusal(
    conn: psycopg.Connection, external_id: str, exc: PsaApiError, run_id: str, owner: str
) -> None:
    item = exceptions.Item(
        kind=EXCEPTION_KIND,
        domain=EXCEPTION_DOMAIN,
        source_system="erp",
        record_type="invoice",
        source_id=external_id,
        reason_code=REFUSED,
        owner=owner,
        detail={"psa_status": exc.status, "endpoint": exc.endpoint, "error": str(exc)[:500]},
    )
    exceptions.quarantine_many(conn, [item], run_id=run_id)


@dataclass
class Mirror:
    """Mirrors ERP invoices to the PSA for one run (NetSuite's and SAP's sweeps alike)."""

    conn: psycopg.Connection
    psa: HarvestClient
    run_id: str
    index: InvoiceIndex
    owner: str
    result: StatusResult

    def one(self, invoice: ErpInvoice, *, paid: Decimal, erp_id: str) -> str:
        """Mirror one ERP invoice; the outcome. A PSA refusal opens an exception item for the
        billing owner (``rejected``); a success resolves it; another PSA error is a failure of the
        run (``failed``, named by ``erp_id``), the other invoices still mirrored."""
        external_id = str(invoice.external_id or erp_id)
        try:
            outcome = mirror_invoice(
                self.conn, self.psa, invoice, paid=paid, run_id=self.run_id, index=self.index
            )
            exceptions.resolve_for(
                self.conn,
                source_system="erp",
                record_type="invoice",
                source_ids=[external_id],
                kind=EXCEPTION_KIND,
            )
        except PsaApiError as exc:
            log.warning("ERP invoice %s not mirrored: %s", external_id, exc)
            if _refused(exc):
                _report_refusal(self.conn, external_id, exc, self.run_id, self.owner)
                return "rejected"
            self.result.failures.append(f"{erp_id}: {exc}")
            return "failed"
        return outcome


def _mirror_ids(
    conn: psycopg.Connection,
    psa: HarvestClient,
    erp: NetSuiteClient,
    internal_ids: list[str],
    run_id: str,
    result: StatusResult,
) -> dict[str, str]:
    """Re-read each ERP invoice by internal id and mirror it; the outcome per id. A PSA refusal
    opens an exception item for the billing owner (``rejected``); a later success resolves it."""
    from psa_erp_sync.config import load_config

    outcomes: dict[str, str] = {}
    # each client's PSA invoices listed once for these ids, not once per id
    index = InvoiceIndex()
    paid = erp.payments_applied(internal_ids) if internal_ids else {}
    owner = load_config().ownership.owner_for(EXCEPTION_DOMAIN) if internal_ids else ""
    mirror = Mirror(conn, psa, run_id=run_id, index=index, owner=owner, result=result)
    for internal_id in internal_ids:
        try:
            invoice = erp.get_invoice(internal_id)
            if invoice is None:
                outcome = "gone"
            else:
                outcome = mirror.one(invoice, paid=paid[internal_id], erp_id=internal_id)
        except ErpError as exc:
            log.warning("ERP invoice %s not read: %s", internal_id, exc)
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

    :raises StatusSyncFailed: after settling the rest, when some invoice failed for a reason a retry
        may fix (its events stay claimed by this run: a retry takes them back; the sweep is the
        safety net). A PSA refusal is settled ``rejected`` with an exception item instead."""
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
