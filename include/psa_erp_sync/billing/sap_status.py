"""Invoice status from SAP back to the PSA: the daily sweep's SAP half.

SAP sends no invoice webhooks here, so the sweep (``billing_status``) is how SAP invoices reach the
PSA. Each run reads the customer invoices (``DR``) and payments (``DZ``) of the mapped company
codes (:func:`psa_erp_sync.billing.sap.read_documents`), turns each invoice into the
:class:`~psa_erp_sync.clients.erp_models.ErpInvoice` the NetSuite path mirrors (status ``Paid In
Full`` once its open item is cleared, amount remaining = the open amount, lines = the revenue
items and the sources they bill) and calls :func:`psa_erp_sync.billing.psa_status.mirror_invoice`
with what payments apply to it (credit memos not included), exactly as for NetSuite: created once,
moved forward only. A PSA refusal opens the same exception item (``PSA_INVOICE_REFUSED``). SAP is
read in full each run, so an invoice the PSA already shows paid or closed is skipped without a
PSA call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from psa_erp_sync.billing import psa_status_store as store
from psa_erp_sync.billing import sap
from psa_erp_sync.billing.psa_status import InvoiceIndex
from psa_erp_sync.billing.psa_status_runs import (
    EXCEPTION_DOMAIN,
    Mirror,
    StatusResult,
    StatusSyncFailed,
)
from psa_erp_sync.clients.erp_models import ErpInvoice

if TYPE_CHECKING:
    import psycopg

    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.posting.adapter import SapMapping

log = logging.getLogger(__name__)

#: PSA invoice states nothing moves on from (:data:`psa_erp_sync.billing.psa_status.RANK`).
FINAL = ("paid", "closed")


def erp_invoice(mapping: SapMapping, doc: sap.SapDocument) -> ErpInvoice | None:
    """An SAP customer invoice as the PSA mirror reads an ERP invoice; None without a customer item."""
    rows = sap.invoice_rows(mapping, doc)
    if rows is None:
        return None
    head, lines = rows
    return ErpInvoice.model_validate(
        {
            "id": head["id"],
            "externalId": head["externalid"],
            "lastModifiedDate": head["lastmodifieddate"],
            "tranId": head["tranid"],
            "tranDate": head["trandate"],
            "entity": {"externalId": head["entity"]},
            "subsidiary": {"externalId": head["subsidiary"]} if head["subsidiary"] else None,
            "currency": {"refName": head["currency"]},
            "total": head["total"],
            "amountRemaining": head["amountremaining"],
            "status": head["status"],
            "item": {
                "items": [
                    {
                        "amount": str(line["amount"]),
                        "sourceType": line["sourcetype"] or "milestone",
                        "sourceId": line["sourceid"] or line["description"],
                        "description": line["description"],
                    }
                    for line in lines
                ]
            },
        }
    )


def payments_applied(mapping: SapMapping, client: Any, years: Sequence[int]) -> dict[str, Decimal]:
    """Per SAP invoice id, what payment documents (``DZ``) apply to it."""
    paid: dict[str, Decimal] = {}
    for doc, _ in sap.read_documents(client, mapping, doc_type="DZ", fiscal_years=years):
        for item in doc.to_Item.results:
            if item.Customer and item.InvoiceReference:
                key = sap.sap_id(doc.CompanyCode, item.InvoiceReferenceFiscalYear, item.InvoiceReference)
                paid[key] = paid.get(key, Decimal(0)) + item.AmountInTransactionCurrency
    return paid


def sweep_sap(
    conn: psycopg.Connection,
    psa: HarvestClient,
    adapter: Any,
    *,
    run_id: str,
    years: Sequence[int] | None = None,
) -> StatusResult:
    """Mirror every SAP customer invoice of the fiscal years to the PSA (``adapter``: anything
    with the SAP ``client`` and its ``mapping``). ``conn`` in autocommit.

    :raises StatusSyncFailed: some invoice failed for a reason a retry may fix; the others were mirrored."""
    from psa_erp_sync.config import load_config

    result = StatusResult()
    years = years or sap.fiscal_years(adapter.mapping)
    documents = sap.read_documents(adapter.client, adapter.mapping, doc_type="DR", fiscal_years=years)
    paid = payments_applied(adapter.mapping, adapter.client, years)
    owner = load_config().ownership.owner_for(EXCEPTION_DOMAIN) if documents else ""
    mirror = Mirror(conn, psa, run_id=run_id, index=InvoiceIndex(), owner=owner, result=result)
    for doc, _ in documents:
        invoice = erp_invoice(adapter.mapping, doc)
        if invoice is None:
            continue
        external_id = str(invoice.external_id or doc.id)
        outcome: str
        known = store.get(conn, external_id) if invoice.external_id else None
        if known is not None and known.psa_state in FINAL:
            # Paid or closed in the PSA: nothing can move forward; no PSA call (SAP is read in full).
            result.outcomes["unchanged"] += 1
            result.invoices += 1
            continue
        outcome = mirror.one(invoice, paid=paid.get(doc.id, Decimal(0)), erp_id=doc.id)
        result.outcomes[outcome] += 1
        result.invoices += 1
    if result.failures:
        raise StatusSyncFailed(f"{len(result.failures)} SAP invoices not mirrored: {result.failures[:5]}")
    return result
