"""Billing on SAP S/4HANA: invoices and credit memos as FI customer documents, and reading them back.

In S/4HANA an invoice that does not come from SD billing is an FI journal entry with a customer
(debtor) item: document type ``DR`` for an invoice, ``DG`` for a credit memo. One billing document
(:mod:`psa_erp_sync.billing.invoices`) becomes one balanced journal entry in its currency:

- the customer item: the customer (``billing.event.customer_ref``, a customer of
  ``ZPSA_MASTERDATA_SRV`` ``CustomerCollection`` in the company code), the receivable account, the
  document total (debit for an invoice, credit for a credit memo), the job as WBS element, and
  ``billing:<document ref>`` as item text (how the read-back names our document); an applied credit
  memo references the invoice it credits (``InvoiceReference``, SAP's REBZG);
- one revenue item per billed line (credit for an invoice, debit for a credit memo), its item text
  ``<source type>:<source id>`` (``timebill:psa-te-12``), the source the line bills.

The document carries the idempotency key as ``DocumentReferenceID`` (derived from it,
:func:`psa_erp_sync.clients.sap.journal_reference`), so an ambiguous outcome is resolved by
reading the document of that reference back (the client does it at once, the engine again
before anything is resent): exactly once under retries, as for expense journals
(docs/multi-erp.md, "The adapter interface"). Its ERP id is ``sap:<company>:<year>:<document>``.

The read-back (:func:`read_documents`, :func:`invoice_rows`, :func:`payment_rows`) reads the
customer documents page by page with ``$top``/``$skip`` and ``eq`` filters only (SAP ignores
``$orderby``, answers no ``__count`` and compares dates unreliably), de-duplicated by document key.
docs/billing.md, "Billing on SAP".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from psa_erp_sync import money
from psa_erp_sync.clients import erp as ns
from psa_erp_sync.clients.erp_models import ErrorDetail
from psa_erp_sync.clients.sap_models import (
    JournalEntryInput,
    JournalEntryItemInput,
    SapDate,
    SapDecimal,
    decimal_text,
)
from psa_erp_sync.posting.adapter import (
    BatchOutcome,
    Errors,
    Held,
    RecordOutcome,
    SapAdapter,
    SapMapping,
    one_by_one,
)
from psa_erp_sync.posting.ledger import Posting

#: The FI document type of each billing document type, and back (``DZ``: a customer payment).
DOCUMENT_TYPES: dict[str, str] = {"invoice": "DR", "creditmemo": "DG"}
RECORD_TYPES: dict[str, str] = {"DR": "invoice", "DG": "creditmemo", "DZ": "customerpayment"}
#: The item text of a document's customer item: ``billing:<document ref>``.
TEXT_PREFIX = "billing:"
#: Line sources an item text may name (``<source type>:<source id>``).
LINE_SOURCES = ("timebill", "expensereport", "milestone", "retainerperiod")
PAID, OPEN = "Paid In Full", "Open"
_SAP_ID = re.compile(r"^sap:([A-Z0-9]{4}):(\d{4}):(\d{1,10})$")
_TIMESTAMP = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


def sap_id(company_code: str, fiscal_year: str | int, document: str) -> str:
    """Our id of an SAP accounting document (its key): ``sap:<company code>:<fiscal year>:<document>``."""
    return f"sap:{company_code}:{int(fiscal_year):04d}:{document}"


def parse_sap_id(value: str | None) -> tuple[str, int, str] | None:
    """``(company code, fiscal year, document)`` of :func:`sap_id`, or None for another id."""
    found = _SAP_ID.match(value or "")
    return (found.group(1), int(found.group(2)), found.group(3)) if found else None


@dataclass(frozen=True)
class SapBillingAccounts:
    """The G/L accounts of customer documents (the SAP connection's extra may name others):
    ``receivable_account`` on the customer item (the customer's reconciliation account),
    ``revenue_account`` on the billed lines."""

    receivable_account: str = "1200"
    revenue_account: str = "4000"

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> SapBillingAccounts:
        default = cls()
        return cls(
            str(extra.get("receivable_account", default.receivable_account)),
            str(extra.get("revenue_account", default.revenue_account)),
        )


# --------------------------------------------------------------------------- the document we send


class CustomerItemInput(JournalEntryItemInput):
    """A journal entry item that may name a customer and the invoice it applies to."""

    customer: str = Field(default="", max_length=40)
    invoice_reference: str = Field(default="", pattern=r"^\d{0,10}$")
    invoice_reference_year: int | None = Field(default=None, ge=1990, le=2100)
    #: The amount in the company code's currency, for a document in another currency.
    amount_company_code: Decimal | None = Field(default=None, gt=0, decimal_places=2)


class CustomerDocumentInput(JournalEntryInput):
    """A customer invoice (``DR``) or credit memo (``DG``): balanced, exactly one customer item."""

    items: tuple[CustomerItemInput, ...] = Field(min_length=2)
    #: 1 transaction currency = ``exchange_rate`` company code currency (S/4HANA's ``ExchangeRate``),
    #: for a document in another currency than the company code's; then every item carries its
    #: amount in the company code's currency, balanced too.
    exchange_rate: Decimal | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_customer_item(self) -> CustomerDocumentInput:
        if sum(1 for i in self.items if i.customer) != 1:
            raise ValueError("a customer document has exactly one customer item")
        if self.exchange_rate is not None:
            local = [i.amount_company_code for i in self.items]
            if any(a is None for a in local):
                raise ValueError("a translated document carries every item's company code amount")
            balance = sum(
                ((a or Decimal(0)) if i.debit_credit == "S" else -(a or Decimal(0)))
                for a, i in zip(local, self.items, strict=True)
            )
            if balance != 0:
                raise ValueError(f"company code amounts differ by {balance}")
        return self

    def payload(self, reference: str) -> dict[str, Any]:
        body = super().payload(reference)
        for raw, item in zip(body["to_Item"]["results"], self.items, strict=True):
            if item.customer:
                raw["Customer"] = item.customer
            if item.invoice_reference:
                raw["InvoiceReference"] = item.invoice_reference
                raw["InvoiceReferenceFiscalYear"] = f"{item.invoice_reference_year or 0:04d}"
            if item.amount_company_code is not None:
                raw["AmountInCompanyCodeCurrency"] = decimal_text(item.amount_company_code)
        if self.exchange_rate is not None:
            body["ExchangeRate"] = format(self.exchange_rate, "f")
        return body


def _ref(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name) or {}
    return (
        str(value.get("externalId") or value.get("refName") or "") if isinstance(value, dict) else str(value)
    )


def _booking_day(payload: Mapping[str, Any]) -> date:
    """The document date, or the first day of the period the closed-period policy moved it to."""
    day = date.fromisoformat(str(payload["tranDate"]))
    found = re.search(r"-(\d{4})-(\d{2})$", _ref(payload, "postingPeriod"))
    start = date(int(found.group(1)), int(found.group(2)), 1) if found else None
    return start if start is not None and start > day else day


def _translated(
    posting: Posting, currency: str, items: list[CustomerItemInput]
) -> tuple[Decimal | None, list[CustomerItemInput]]:
    """A foreign-currency document's rate and its items with their company code amounts: the
    document's rate as planned (``exchangeRate``, the ERP's rate for its date,
    :func:`psa_erp_sync.billing.invoices.document_fx`), the customer item at the document total
    translated once (the functional total the close report expects), the lines each translated and
    the rounding difference on the largest line, so the company code side balances too."""
    text = posting.payload.get("exchangeRate")
    functional = posting.functional_currency
    if text in (None, "") or functional in (None, currency):
        return None, items
    assert functional is not None
    rate = Decimal(str(text))

    def local(item: CustomerItemInput) -> int:
        return money.convert_minor(money.to_minor(item.amount, currency), currency, rate, functional)

    customer, lines = local(items[0]), [local(i) for i in items[1:]]
    if lines:
        largest = max(range(len(lines)), key=lambda n: (items[n + 1].amount, -n))
        lines[largest] += customer - sum(lines)
    return rate, [
        i.model_copy(update={"amount_company_code": money.from_minor(minor, functional)})
        for i, minor in zip(items, [customer, *lines], strict=True)
    ]


def document_entry(
    posting: Posting, company_code: str, accounts: SapBillingAccounts
) -> CustomerDocumentInput:
    """The FI customer document of an invoice or credit memo posting (its ERP-neutral payload,
    :func:`psa_erp_sync.billing.invoices.erp_payload`). Raises ``KeyError``, ``ValueError`` or
    ``ValidationError`` for a payload SAP cannot take."""
    payload = posting.payload
    credit = posting.record_type == "creditmemo"
    job = _ref(payload, "job")
    wbs = job if len(job) <= 24 else ""
    applied = parse_sap_id(str((payload.get("createdFrom") or {}).get("internalId") or ""))
    if payload.get("createdFrom") and applied is None:
        raise KeyError(
            "createdFrom"
        )  # the credited invoice is not an SAP document: never applied across ERPs
    customer = CustomerItemInput(
        gl_account=accounts.receivable_account,
        amount=Decimal(str(payload["total"])),
        debit_credit="H" if credit else "S",
        text=f"{TEXT_PREFIX}{posting.source_id}"[:50],
        wbs_element=wbs,
        customer=_ref(payload, "entity"),
        invoice_reference=applied[2] if applied else "",
        invoice_reference_year=applied[1] if applied else None,
    )
    lines = [
        CustomerItemInput(
            gl_account=accounts.revenue_account,
            amount=Decimal(str(line["amount"])),
            debit_credit="S" if credit else "H",
            text=f"{line['sourceType']}:{line['sourceId']}"[:50],
            wbs_element=wbs,
        )
        for line in (payload.get("item") or {}).get("items") or []
    ]
    currency = _ref(payload, "currency")
    rate, items = _translated(posting, currency, [customer, *lines])
    return CustomerDocumentInput(
        company_code=company_code,
        document_type=DOCUMENT_TYPES[posting.record_type],
        document_date=date.fromisoformat(str(payload["tranDate"])),
        posting_date=_booking_day(payload),
        currency=currency,
        header_text=f"psa:{posting.idempotency_key[:16]}",
        items=tuple(items),
        exchange_rate=rate,
    )


# --------------------------------------------------------------------------- what we read


def _timestamp(value: Any) -> Any:
    if isinstance(value, str):
        found = _TIMESTAMP.match(value)
        if found is None:
            raise ValueError(f"not an OData V2 timestamp: {value!r}")
        return datetime.fromtimestamp(int(found.group(1)) / 1000, UTC)
    return value


SapTimestamp = Annotated[datetime, BeforeValidator(_timestamp)]


class SapItem(BaseModel):
    """One item of a customer document as read (``extra`` ignored, every field we use typed)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    AccountingDocumentItem: str
    GLAccount: str
    AmountInTransactionCurrency: SapDecimal
    DebitCreditCode: Literal["S", "H"]
    DocumentItemText: str = ""
    WBSElement: str = ""
    Customer: str = ""
    InvoiceReference: str = ""
    InvoiceReferenceFiscalYear: str = ""
    ClearingAccountingDocument: str = ""
    OpenAmountInTransactionCurrency: SapDecimal = Decimal(0)


class _Items(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    results: tuple[SapItem, ...] = ()


class SapDocument(BaseModel):
    """A customer document (``DR``, ``DG``, ``DZ``) with its items."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    CompanyCode: str
    FiscalYear: str
    AccountingDocument: str
    AccountingDocumentType: str
    DocumentDate: SapDate
    PostingDate: SapDate
    DocumentReferenceID: str = ""
    TransactionCurrency: str = Field(pattern=r"^[A-Z]{3}$")
    CompanyCodeCurrency: str = ""
    ExchangeRate: Annotated[Decimal | None, BeforeValidator(lambda v: v or None)] = None
    LastChangeDateTime: SapTimestamp
    to_Item: _Items = _Items()

    @property
    def id(self) -> str:
        return sap_id(self.CompanyCode, self.FiscalYear, self.AccountingDocument)

    @property
    def customer_item(self) -> SapItem | None:
        return next((i for i in self.to_Item.results if i.Customer), None)

    @property
    def cleared(self) -> bool:
        item = self.customer_item
        return item is not None and bool(item.ClearingAccountingDocument)

    def document_ref(self) -> str | None:
        """Our billing document's ref (its external id), from the customer item's text."""
        item = self.customer_item
        text = item.DocumentItemText if item else ""
        return text[len(TEXT_PREFIX) :] if text.startswith(TEXT_PREFIX) else None


def read_documents(
    client: Any, mapping: SapMapping, *, doc_type: str, fiscal_years: Sequence[int], page_size: int = 100
) -> list[tuple[SapDocument, dict[str, Any]]]:
    """Every customer document of ``doc_type`` in the mapped company codes and ``fiscal_years``,
    validated, with its entity as read (``__metadata`` dropped). Paged with ``$top``/``$skip``
    until a short page; a document read twice (rows shifting between pages) is kept once."""
    found: dict[str, tuple[SapDocument, dict[str, Any]]] = {}
    for company in sorted(set(mapping.company_codes.values())):
        for year in fiscal_years:
            skip = 0
            while True:
                rows = client.journal_entry_rows(
                    {
                        "$filter": f"CompanyCode eq '{company}' and FiscalYear eq '{year:04d}'"
                        f" and AccountingDocumentType eq '{doc_type}'",
                        "$expand": "to_Item",
                        "$top": str(page_size),
                        "$skip": str(skip),
                    }
                )
                for raw in rows:
                    entity = _plain(raw)
                    try:
                        doc = SapDocument.model_validate(entity)
                    except ValidationError as exc:
                        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:5])
                        raise ValueError(f"SAP {doc_type} document: invalid fields {fields}") from None
                    found[doc.id] = (doc, entity)
                if len(rows) < page_size:
                    break
                skip += len(rows)
    return [found[k] for k in sorted(found)]


def _plain(raw: Mapping[str, Any]) -> dict[str, Any]:
    """An entity without OData's ``__metadata`` (also in its items): what the hash and body keep."""
    out = {k: v for k, v in raw.items() if k != "__metadata"}
    items = out.get("to_Item")
    if isinstance(items, dict) and isinstance(items.get("results"), list):
        out["to_Item"] = {
            "results": [{k: v for k, v in i.items() if k != "__metadata"} for i in items["results"]]
        }
    return out


def _period(mapping: SapMapping, doc: SapDocument) -> str | None:
    entity = mapping.legal_entity(doc.CompanyCode)
    day = doc.PostingDate
    return f"{entity}-{day.year:04d}-{day.month:02d}" if entity else None


def _line_source(text: str) -> tuple[str | None, str | None]:
    kind, _, source = text.partition(":")
    return (kind, source) if kind in LINE_SOURCES and source else (None, None)


def invoice_rows(mapping: SapMapping, doc: SapDocument) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """An invoice or credit memo as the read-back's header and line rows (NetSuite's shape:
    :class:`psa_erp_sync.billing.readback.ErpBillingRow`), or None without a customer item."""
    item = doc.customer_item
    if item is None:
        return None
    reference = item.InvoiceReference
    head = {
        "id": doc.id,
        "externalid": doc.document_ref(),
        "lastmodifieddate": doc.LastChangeDateTime.isoformat(),
        "tranid": doc.AccountingDocument,
        "trandate": doc.DocumentDate.isoformat(),
        "entity": item.Customer,
        "job": item.WBSElement or None,
        "subsidiary": mapping.legal_entity(doc.CompanyCode),
        "currency": doc.TransactionCurrency,
        "total": item.AmountInTransactionCurrency,
        "amountremaining": item.OpenAmountInTransactionCurrency
        if doc.AccountingDocumentType == "DR"
        else None,
        "status": PAID if doc.cleared else OPEN,
        "createdfrom": sap_id(doc.CompanyCode, item.InvoiceReferenceFiscalYear, reference)
        if reference
        else None,
        "postingperiod": _period(mapping, doc),
    }
    if doc.ExchangeRate is not None and doc.CompanyCodeCurrency not in ("", doc.TransactionCurrency):
        head["exchangerate"] = format(doc.ExchangeRate, "f")  # what the close report translates at
    lines = []
    for line in doc.to_Item.results:
        if line.Customer:
            continue
        kind, source = _line_source(line.DocumentItemText)
        lines.append(
            {
                "transaction": doc.id,
                "linesequencenumber": int(line.AccountingDocumentItem),
                "sourcetype": kind,
                "sourceid": source,
                "amount": line.AmountInTransactionCurrency,
                "account": line.GLAccount,
                "currency": doc.TransactionCurrency,
                "description": line.DocumentItemText,
            }
        )
    return head, lines


def payment_rows(mapping: SapMapping, doc: SapDocument) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A payment document (``DZ``) as the read-back's header and application rows: each customer
    item that references an invoice applies its amount to it."""
    customer_items = [i for i in doc.to_Item.results if i.Customer]
    head = {
        "id": doc.id,
        "externalid": None,
        "lastmodifieddate": doc.LastChangeDateTime.isoformat(),
        "tranid": doc.AccountingDocument,
        "trandate": doc.DocumentDate.isoformat(),
        "customer": customer_items[0].Customer if customer_items else None,
        "subsidiary": mapping.legal_entity(doc.CompanyCode),
        "currency": doc.TransactionCurrency,
        "payment": str(sum((i.AmountInTransactionCurrency for i in customer_items), Decimal(0))),
    }
    lines = [
        {
            "transaction": doc.id,
            "linesequencenumber": int(i.AccountingDocumentItem),
            "appliedto": sap_id(doc.CompanyCode, i.InvoiceReferenceFiscalYear, i.InvoiceReference)
            if i.InvoiceReference
            else None,
            "amount": i.AmountInTransactionCurrency,
        }
        for i in customer_items
    ]
    return head, lines


def fiscal_years(mapping: SapMapping, today: date | None = None) -> tuple[int, ...]:
    """The fiscal years read: the mapping's, else last, this and next year."""
    year = (today or date.today()).year
    return mapping.fiscal_years or (year - 1, year, year + 1)


# --------------------------------------------------------------------------- the adapter


@dataclass(frozen=True)
class OpenItem:
    """What is still due on an SAP invoice (``amount_remaining``) of its ``total``."""

    total: Decimal
    amount_remaining: Decimal


class SapBillingAdapter:
    """The posting engine's adapter for invoices and credit memos on SAP (record types
    ``invoice`` and ``creditmemo``): one customer document per posting, in order; the journal
    read-back of :class:`~psa_erp_sync.posting.adapter.SapAdapter` by ``DocumentReferenceID``."""

    name = "sap"

    def __init__(self, client: Any, mapping: SapMapping, accounts: SapBillingAccounts | None = None) -> None:
        self.client = client
        self.mapping = mapping
        self.accounts = accounts or SapBillingAccounts()
        self.base = SapAdapter(client, mapping)  # errors, periods and master data as for postings

    def _company(self, posting: Posting) -> str:
        code = self.mapping.company_code(_ref(posting.payload, "subsidiary") or posting.legal_entity)
        if code is None:
            raise KeyError("subsidiary")
        return code

    def entry(self, posting: Posting) -> CustomerDocumentInput:
        return document_entry(posting, self._company(posting), self.accounts)

    def validate(self, postings: Sequence[Posting]) -> dict[str, Errors]:
        """Refuse before any call what SAP cannot take: another record type or action, an unmapped
        company code, a payload the models refuse (a credit memo applied to a non-SAP invoice)."""
        refused: dict[str, Errors] = {}
        for p in postings:
            if p.record_type not in DOCUMENT_TYPES or p.action != "post" or p.corrects:
                refused[p.external_id] = [("SAP_BILLING_UNSUPPORTED", p.record_type)]
                continue
            try:
                self.entry(p)
            except KeyError as exc:
                code = "COMPANY_CODE_UNMAPPED" if exc.args == ("subsidiary",) else "SAP_PAYLOAD_INVALID"
                refused[p.external_id] = [(code, str(exc.args[0]) if exc.args else None)]
            except (ValidationError, ValueError, ArithmeticError, TypeError):
                refused[p.external_id] = [("SAP_PAYLOAD_INVALID", None)]
        return refused

    def post_batch(self, erp_type: str, postings: Sequence[Posting], batch_key: str) -> BatchOutcome:
        """One document per posting, in order. SAP takes a second document with the same reference,
        so once one landed a failure of the whole request answers the rest ``ambiguous``: the
        engine reads them back instead of resending the batch."""
        return one_by_one(postings, self._post)

    def _post(self, p: Posting) -> RecordOutcome:
        return self.base.send_journal(
            p,
            self.entry(p),
            erp_id=lambda doc: sap_id(doc.CompanyCode, doc.FiscalYear, doc.AccountingDocument),
        )

    def read_back(self, postings: Sequence[Posting]) -> dict[str, Held]:
        """By key: the document whose ``DocumentReferenceID`` derives from the posting's key."""
        held: dict[str, Held] = {}
        with self.base._translated():
            for p in postings:
                company = self._company(p)
                docs = self.client.find_journal_entries(company, p.idempotency_key)
                if not docs:
                    continue
                doc = docs[0]
                debits = [
                    i.AmountInTransactionCurrency
                    for i in (doc.to_Item.results if doc.to_Item else ())
                    if i.DebitCreditCode == "S"
                ]
                held[p.idempotency_key] = Held(
                    sap_id(doc.CompanyCode, doc.FiscalYear, doc.AccountingDocument),
                    self.base._period_of(company, doc.PostingDate),
                    (p.idempotency_key,),
                    amount=sum(debits, Decimal(0)),
                )
        return held

    def reverse(self, posting: Posting) -> bool:
        """Billing documents are never reversed (a credit memo credits an invoice)."""
        raise ns.ErpRejected(400, [ErrorDetail.model_validate({"o:errorCode": "SAP_BILLING_UNSUPPORTED"})])

    def read_periods(self) -> list[dict[str, Any]]:
        return self.base.read_periods()

    def read_master_data(self, kind: Any) -> set[str] | None:
        return self.base.read_master_data(kind)

    def get_invoice(self, internal_id: str) -> OpenItem | None:
        """The customer item of an SAP invoice (``sap:<company>:<year>:<document>``): its total and
        the amount still open (what payments and credit memos referencing it have not covered)."""
        key = parse_sap_id(internal_id)
        if key is None:
            return None
        company, year, document = key
        with self.base._translated():
            rows = self.client.journal_entry_rows(
                {
                    "$filter": f"CompanyCode eq '{company}' and FiscalYear eq '{year:04d}'"
                    f" and AccountingDocument eq '{document}'",
                    "$expand": "to_Item",
                }
            )
        for raw in rows:
            item = SapDocument.model_validate(_plain(raw)).customer_item
            if item is not None:
                return OpenItem(item.AmountInTransactionCurrency, item.OpenAmountInTransactionCurrency)
        return None
