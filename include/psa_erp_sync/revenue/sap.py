"""Revenue journals on SAP S/4HANA: a balanced SAP journal entry per ledger row of a revenue journal.

The ledger row of a revenue journal (:func:`psa_erp_sync.revenue.posting.journal_posting`) carries
the ERP-neutral journal: legal entity, date, currency, posting period and its lines (GL account,
debit or credit). :class:`RevenueSapAdapter` is the :class:`~psa_erp_sync.posting.adapter.SapAdapter`
with one more record type, ``journalentry`` of source system ``revenue``, sent through the same
machinery as SAP expenses (``_post_journals``/``_post_journal``: one request per entry, the rest of
a batch ``ambiguous`` after a failure once one landed) and read back the same way: by the
``DocumentReferenceID`` the key derives (:func:`psa_erp_sync.clients.sap.journal_reference`), so an
ambiguous outcome is resolved by reading back, never by sending again blindly. A delta journal (a
re-recognition that changes the amount) is one more entry with its own key: SAP adds it to what the
earlier entries of the period booked. Header text ``rev:<first 16 of the key>`` keeps revenue
entries apart from expenses (headed ``psa:<source id>``) in SAP's read-back
(:func:`revenue_entries`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from psa_erp_sync import money
from psa_erp_sync.clients.sap_models import JournalEntryInput, JournalEntryItemInput
from psa_erp_sync.posting.adapter import BatchOutcome, Errors, Held, SapAdapter, _booking_day, _ref
from psa_erp_sync.posting.ledger import Posting
from psa_erp_sync.revenue.journals import RECORD_TYPE
from psa_erp_sync.revenue.store import SOURCE_SYSTEM

HEADER_PREFIX = "rev:"


def is_revenue(posting: Posting) -> bool:
    return posting.record_type == RECORD_TYPE and posting.source_system == SOURCE_SYSTEM


def header_text(idempotency_key: str) -> str:
    """The SAP document header of a revenue journal (25 characters at most)."""
    return f"{HEADER_PREFIX}{idempotency_key[:16]}"


class RevenueSapAdapter(SapAdapter):
    """:class:`SapAdapter` that also posts revenue journals (``journalentry`` of ``revenue``) as
    balanced SAP journal entries, one document per ledger row; everything else as SapAdapter."""

    def _journal(self, posting: Posting, payload: dict[str, Any], *, mirrored: bool) -> JournalEntryInput:
        if not is_revenue(posting):
            return super()._journal(posting, payload, mirrored=mirrored)
        items = []
        for line in (payload.get("line") or {}).get("items") or []:
            debit = line.get("debit")
            side, amount = ("S", debit) if debit is not None else ("H", line.get("credit"))
            if mirrored:
                side = "H" if side == "S" else "S"
            items.append(
                JournalEntryItemInput(
                    gl_account=_ref(line, "account"),
                    amount=Decimal(str(amount)),
                    debit_credit=side,
                    text=str(posting.external_id)[:50],
                )
            )
        return JournalEntryInput(
            company_code=self._company(posting, payload),
            document_date=date.fromisoformat(str(payload["tranDate"])),
            posting_date=_booking_day(payload),
            currency=str((payload.get("currency") or {}).get("refName") or ""),
            header_text=header_text(posting.idempotency_key),
            items=tuple(items),
        )

    def validate(self, postings: Sequence[Posting]) -> dict[str, Errors]:
        revenue = [p for p in postings if is_revenue(p)]
        refused = super().validate([p for p in postings if not is_revenue(p)])
        for p in revenue:
            try:
                self._journal(p, p.payload, mirrored=False)
            except KeyError as exc:
                code = "COMPANY_CODE_UNMAPPED" if exc.args == ("subsidiary",) else "SAP_PAYLOAD_INVALID"
                refused[p.external_id] = [(code, str(exc.args[0]) if exc.args else None)]
            except (ValidationError, ValueError, ArithmeticError):
                refused[p.external_id] = [("SAP_PAYLOAD_INVALID", None)]
        return refused

    def post_batch(self, erp_type: str, postings: Sequence[Posting], batch_key: str) -> BatchOutcome:
        if postings and all(is_revenue(p) for p in postings):
            return self._post_journals(postings)
        return super().post_batch(erp_type, postings, batch_key)

    def read_back(self, postings: Sequence[Posting]) -> dict[str, Held]:
        held = super().read_back([p for p in postings if not is_revenue(p)])
        with self._translated():
            for p in postings:
                if is_revenue(p):
                    found = self._journal_held(p)
                    if found is not None:
                        held[p.idempotency_key] = found
        return held


@dataclass(frozen=True)
class SapRevenueEntry:
    """One revenue journal entry SAP holds: its document, reference, currency, debits (minor units)."""

    company_code: str
    document: str
    reference: str
    currency: str
    debit_minor: int
    credit_minor: int


def revenue_entries(client: Any, company_codes: Sequence[str]) -> list[SapRevenueEntry]:
    """Every revenue journal entry (header ``rev:...``) of the company codes, with its totals."""
    out = []
    for company in sorted(set(company_codes)):
        for doc in client.journal_entries(company):
            if not doc.DocumentHeaderText.startswith(HEADER_PREFIX):
                continue
            debit = credit = 0
            for item in doc.to_Item.results if doc.to_Item else ():
                amount = money.to_minor(Decimal(item.AmountInTransactionCurrency), item.TransactionCurrency)
                if item.DebitCreditCode == "S":
                    debit += amount
                else:
                    credit += amount
            out.append(
                SapRevenueEntry(
                    company,
                    doc.AccountingDocument,
                    doc.DocumentReferenceID,
                    doc.TransactionCurrency,
                    debit,
                    credit,
                )
            )
    return out
