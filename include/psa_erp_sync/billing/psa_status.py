"""Invoice status back to the PSA: one ERP invoice mirrored as a Harvest invoice, idempotently.

The ERP owns invoices (``config/systems_of_authority.yaml``); the PSA shows them so delivery and
account managers see what was billed and paid. Per ERP invoice (keyed by its external id):

- the PSA invoice is created once, billing exactly the time entries and expenses the ERP lines
  name (``sourceId`` ``psa-te-<id>`` / ``psa-ex-<id>``: they become ``is_billed`` with
  ``invoice: {id, number}``, and the PSA refuses to edit them from then on); other lines
  (milestones, retainer periods) become free line items with the ERP's amount;
- its state only moves forward (draft -> open -> paid | closed), derived from the ERP's current
  record, never from an event's payload: a duplicated or reordered webhook re-reads the ERP and
  finds nothing to change, and an older read (``lastModifiedDate`` before the one mirrored) is
  ignored;
- payments: the sum customer payments apply in the ERP is mirrored as PSA payments (the
  difference to what the PSA already shows, re-read right before, so a retry adds nothing);
  ``Paid In Full`` with payments -> ``paid``; fully credited (nothing paid) or ``Voided`` ->
  ``closed`` (Harvest has no credit notes: "closed" is its written-off state).

Work on one ERP invoice holds a session advisory lock keyed by its external id, so the
webhook consumer and the sweep never mirror the same invoice at once. Nothing here imports Airflow.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from psa_erp_sync.billing import psa_status_store as store
from psa_erp_sync.clients.psa import PsaApiError

if TYPE_CHECKING:
    import psycopg

    from psa_erp_sync.clients.erp_models import ErpInvoice
    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.clients.psa_models import Invoice

log = logging.getLogger(__name__)

PsaState = Literal["draft", "open", "paid", "closed"]
RANK: dict[str, int] = {"draft": 0, "open": 1, "paid": 2, "closed": 2}
ERP_OPEN, ERP_PAID, ERP_VOIDED = "Open", "Paid In Full", "Voided"
CENT = Decimal("0.01")
_CLIENT = re.compile(r"^psa-client-(\d+)$")
_TIME = re.compile(r"^psa-te-(\d+)$")
_EXPENSE = re.compile(r"^psa-ex-(\d+)$")

Outcome = Literal["created", "updated", "unchanged", "stale", "not_psa", "voided_unmirrored"]


@dataclass(frozen=True)
class Target:
    """What the PSA should show for an ERP invoice: its state and the amount paid so far."""

    state: PsaState
    paid: Decimal


def target_of(status: str | None, total: Decimal, remaining: Decimal | None, paid: Decimal) -> Target:
    """The PSA state an ERP invoice maps to (``paid``: what customer payments applied to it)."""
    if status == ERP_VOIDED:
        return Target("closed", paid)
    left = total if remaining is None else remaining
    if left == 0 or status == ERP_PAID:
        return Target("paid" if paid > 0 else "closed", paid)
    return Target("open", paid)


@dataclass(frozen=True)
class SourceLines:
    """An ERP invoice's lines split into PSA entries to bill and free line items."""

    time_entry_ids: tuple[int, ...]
    expense_ids: tuple[int, ...]
    free_items: tuple[dict[str, str], ...]


def source_lines(invoice: ErpInvoice) -> SourceLines:
    """The PSA time entries and expenses the ERP lines bill (by our external ids of them); every
    other line becomes a free line item with the ERP's amount."""
    times: list[int] = []
    expenses: list[int] = []
    free: list[dict[str, str]] = []
    for line in invoice.lines:
        te = _TIME.match(line.source_id) if line.source_type == "timebill" else None
        ex = _EXPENSE.match(line.source_id) if line.source_type == "expensereport" else None
        if te:
            times.append(int(te.group(1)))
        elif ex:
            expenses.append(int(ex.group(1)))
        else:
            free.append(
                {
                    "kind": "Service",
                    "description": line.description or f"{line.source_type} {line.source_id}",
                    "quantity": "1",
                    "unit_price": str(line.amount.quantize(CENT)),
                }
            )
    return SourceLines(tuple(sorted(set(times))), tuple(sorted(set(expenses))), tuple(free))


def psa_client_id(invoice: ErpInvoice) -> int | None:
    """The PSA client an ERP invoice's customer came from (``psa-client-<id>``), else None."""
    key = invoice.entity.external_id if invoice.entity else None
    found = _CLIENT.match(key or "")
    return int(found.group(1)) if found else None


def psa_number(invoice: ErpInvoice) -> str:
    """The number the PSA invoice carries: the ERP's document number, else its external id."""
    return invoice.tran_id or str(invoice.external_id)


@dataclass
class InvoiceIndex:
    """The PSA invoices of each client by number, listed once per client per run.

    Before it, each ERP invoice without a stored mapping listed all of its client's PSA invoices
    (``find_invoice``) to look for an earlier create whose mapping was never stored: a sweep over a
    client's n invoices read n pages of up to n invoices, O(n^2). The index lists a client the first
    time one of its invoices is looked up and adds each invoice this run creates; a failed create
    (uncertain or refused) drops the client, so the next lookup lists it again. A hit is re-read
    before use (its state may have moved since the listing). One index per run or batch: invoices
    created by another process after the listing are not in it, as they were not between
    ``find_invoice`` and the create before (the per-invoice lock and the stored mapping cover that).
    """

    _by_client: dict[int, dict[str, Invoice]] = field(default_factory=dict)
    listings: int = 0

    def find(self, psa: HarvestClient, number: str, client_id: int) -> Invoice | None:
        known = self._by_client.get(client_id)
        if known is None:
            known = {}
            for listed in psa.iter_invoices(client_id=client_id):
                known.setdefault(listed.number, listed)  # the first, as find_invoice answers
            self._by_client[client_id] = known
            self.listings += 1
        hit = known.get(number)
        return None if hit is None else _reread(psa, hit.id)

    def add(self, client_id: int, invoice: Invoice) -> None:
        if client_id in self._by_client:
            self._by_client[client_id].setdefault(invoice.number, invoice)

    def forget(self, client_id: int) -> None:
        self._by_client.pop(client_id, None)


def _create(psa: HarvestClient, invoice: ErpInvoice, client_id: int, index: InvoiceIndex | None) -> Invoice:
    """Find the PSA invoice by number (an earlier create whose mapping was never stored), else create."""
    number = psa_number(invoice)
    if index is None:
        found = psa.find_invoice(number, client_id=client_id)
    else:
        found = index.find(psa, number, client_id)
    if found is not None:
        return found
    lines = source_lines(invoice)
    try:
        created = psa.create_invoice(
            client_id=client_id,
            number=number,
            time_entry_ids=lines.time_entry_ids,
            expense_ids=lines.expense_ids,
            line_items=lines.free_items,
            issue_date=invoice.tran_date,
            currency=invoice.currency.key if invoice.currency else None,
            subject=f"ERP invoice {number}",
        )
    except Exception:
        if index is not None:
            index.forget(client_id)  # an uncertain create may exist: list the client again next time
        raise
    if index is not None:
        index.add(client_id, created)
    return created


def _move(psa: HarvestClient, current: Invoice, target: Target) -> Invoice:
    """Move the PSA invoice forward to ``target``: send, record the missing payments, close."""
    if RANK[current.state] >= RANK[target.state] and current.state != "open":
        return current  # paid or closed already (or both draft): never back
    if current.state == "draft":
        current = psa.mark_invoice(current.id, "send")
    if current.state != "open":
        return current
    shown = current.amount - current.due_amount
    if target.state == "paid":
        missing = current.due_amount
    else:
        # Keep the PSA open while the ERP is: never pay it off from a partial ERP payment.
        missing = min(target.paid, current.amount - CENT) - shown
    if missing > 0:
        psa.record_invoice_payment(current.id, missing.quantize(CENT), notes="mirrored from the ERP")
        current = _reread(psa, current.id)
    if target.state == "closed" and current.state == "open":
        current = psa.mark_invoice(current.id, "close")
    return current


def _reread(psa: HarvestClient, invoice_id: int) -> Invoice:
    found = psa.get_invoice(invoice_id)
    if found is None:
        raise PsaApiError(404, f"/v2/invoices/{invoice_id}", "PSA invoice gone while mirroring it")
    return found


def mirror_invoice(
    conn: psycopg.Connection,
    psa: HarvestClient,
    invoice: ErpInvoice,
    *,
    paid: Decimal,
    run_id: str,
    index: InvoiceIndex | None = None,
) -> Outcome:
    """Make the PSA show ``invoice`` (an ERP invoice read with its lines; ``paid``: what customer
    payments apply to it). Idempotent. ``conn`` is in autocommit: the mapping is stored as soon as
    the PSA invoice exists, so a failure later in the same call never loses it. ``index``: the
    run's :class:`InvoiceIndex` (without one, each new invoice lists its client's PSA invoices)."""
    external_id = str(invoice.external_id or "")
    client_id = psa_client_id(invoice)
    if not external_id or client_id is None or invoice.id is None:
        return "not_psa"
    with store.locked(conn, external_id):
        known = store.get(conn, external_id)
        modified = invoice.last_modified_date
        if known and known.erp_modified_at and modified and modified < known.erp_modified_at:
            return "stale"
        target = target_of(invoice.status, invoice.total, invoice.amount_remaining, paid)
        if known is None:
            if invoice.status == ERP_VOIDED:
                return "voided_unmirrored"  # voided before the PSA ever showed it: nothing to bill
            current = _create(psa, invoice, client_id, index)
            store.save(conn, store.Mirror.of(external_id, invoice, current), run_id)
            outcome: Outcome = "created"
        else:
            current = _reread(psa, known.psa_invoice_id)
            outcome = "unchanged"
        before = (current.state, current.due_amount)
        current = _move(psa, current, target)
        if outcome == "unchanged" and (current.state, current.due_amount) != before:
            outcome = "updated"
        store.save(conn, store.Mirror.of(external_id, invoice, current), run_id)
    log.info("ERP invoice %s -> PSA invoice %s: %s (%s)", external_id, current.id, outcome, current.state)
    return outcome
