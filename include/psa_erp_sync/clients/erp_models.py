"""Pydantic models of the NetSuite (ERP) payloads we read: errors, batch jobs, master data, timebills.

Every model ignores fields it does not name (``extra="ignore"``: NetSuite adds fields freely) and
accepts both shapes a record reaches us in:

- a REST record (``GET /record/v1/{type}/...``): camelCase keys, references as objects
  ``{"id", "externalId", "refName"}``, booleans as JSON booleans;
- a SuiteQL row: lower-case keys, references flattened to a key string, booleans as ``"T"``/``"F"``.

Money and hours are :class:`~decimal.Decimal`, parsed from decimal strings; a float is refused.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from psa_erp_sync.money import Money


def _flag(value: Any) -> Any:
    if isinstance(value, str) and value.upper() in ("T", "F"):
        return value.upper() == "T"
    return value


def _ref(value: Any) -> Any:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return {"externalId": str(value)}
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]


def _alias(camel: str) -> Any:
    """A field read from its camelCase REST name or its lower-case SuiteQL column."""
    return Field(default=None, validation_alias=AliasChoices(camel, camel.lower()))


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class ErrorDetail(_Model):
    """One entry of ``o:errorDetails``."""

    code: str = Field(default="UNKNOWN", alias="o:errorCode")
    path: str | None = Field(default=None, alias="o:errorPath")
    detail: str = ""


class ErrorBody(_Model):
    """NetSuite's error body: ``{"type", "title", "status", "o:errorDetails": [...]}``."""

    type: str | None = None
    title: str | None = None
    status: int | None = None
    details: list[ErrorDetail] = Field(default_factory=list, alias="o:errorDetails")
    job_id: str | None = Field(default=None, alias="jobId")  # on IDEMPOTENCY_ERROR: the earlier job


class RecordRef(_Model):
    """A reference to another record; a bare string (SuiteQL) is read as its external id."""

    id: str | None = None
    external_id: str | None = Field(default=None, alias="externalId")
    ref_name: str | None = Field(default=None, alias="refName")

    @property
    def key(self) -> str | None:
        return self.external_id or self.ref_name or self.id


Ref = Annotated[RecordRef, BeforeValidator(_ref)]


class BatchAccepted(_Model):
    """The 202 answer to a batch submission (or the 409 body naming the earlier job)."""

    job_id: str = Field(alias="jobId")


class BatchItemResult(_Model):
    external_id: str | None = Field(default=None, alias="externalId")
    status: Literal["succeeded", "failed"]
    id: str | None = None
    operation: Literal["insert", "update"] | None = None
    error: ErrorDetail | None = None
    errors: list[ErrorDetail] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


class BatchJob(_Model):
    """``GET /services/rest/async/v1/job/{id}``."""

    id: str
    status: str  # PENDING | PROCESSING | SUCCEEDED | PARTIAL_SUCCESS | FAILED
    record_type: str | None = Field(default=None, alias="recordType")
    item_count: int | None = Field(default=None, alias="itemCount")
    succeeded_count: int | None = Field(default=None, alias="succeededCount")
    failed_count: int | None = Field(default=None, alias="failedCount")


FINISHED_JOB_STATES = frozenset({"SUCCEEDED", "PARTIAL_SUCCESS", "FAILED"})


class BatchResult(_Model):
    """``GET /services/rest/async/v1/job/{id}/result``: one result per submitted item, in order.

    ``replayed`` is true when the submission's idempotency key had been used before: these are the
    earlier job's results and the submission itself changed nothing.
    """

    job_id: str = Field(alias="jobId")
    status: str
    record_type: str | None = Field(default=None, alias="recordType")
    items: list[BatchItemResult] = Field(default_factory=list)
    replayed: bool = False

    @property
    def succeeded(self) -> list[BatchItemResult]:
        return [item for item in self.items if item.ok]

    @property
    def failed(self) -> list[BatchItemResult]:
        return [item for item in self.items if not item.ok]

    def by_external_id(self) -> dict[str, BatchItemResult]:
        return {item.external_id: item for item in self.items if item.external_id is not None}


class SuiteQLPage(_Model):
    count: int
    has_more: bool = Field(alias="hasMore")
    offset: int = 0
    total_results: int | None = Field(default=None, alias="totalResults")
    items: list[dict[str, Any]] = Field(default_factory=list)


class _Record(_Model):
    id: str | None = None
    external_id: str | None = _alias("externalId")
    is_inactive: Flag = Field(default=False, validation_alias=AliasChoices("isInactive", "isinactive"))
    last_modified_date: dt.datetime | None = _alias("lastModifiedDate")


class Subsidiary(_Record):
    name: str | None = _alias("name")
    country: str | None = _alias("country")
    currency: Ref | None = _alias("currency")


class Customer(_Record):
    company_name: str | None = _alias("companyName")
    subsidiary: Ref | None = _alias("subsidiary")
    currency: Ref | None = _alias("currency")
    tax_code: Ref | None = _alias("taxCode")


class Job(_Record):
    """A project (NetSuite ``job``); ``parent`` is its customer."""

    company_name: str | None = _alias("companyName")
    parent: Ref | None = _alias("parent")
    subsidiary: Ref | None = _alias("subsidiary")
    currency: Ref | None = _alias("currency")
    billing_type: str | None = _alias("billingType")
    contract_value: Money | None = _alias("contractValue")


class AccountingPeriod(BaseModel):
    """An ERP accounting period as the posting path and master data read it (a SuiteQL row, lower-case
    keys; the subsidiary as its key): its dates and locks, and which postings it refuses."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    external_id: str = Field(alias="externalid")
    subsidiary: str
    start_date: dt.date = Field(alias="startdate")
    end_date: dt.date = Field(alias="enddate")
    closed: bool = False
    all_locked: bool = Field(default=False, alias="alllocked")
    ar_locked: bool = Field(default=False, alias="arlocked")
    ap_locked: bool = Field(default=False, alias="aplocked")
    is_quarter: bool = Field(default=False, alias="isquarter")
    is_year: bool = Field(default=False, alias="isyear")

    @field_validator("closed", "all_locked", "ar_locked", "ap_locked", "is_quarter", "is_year", mode="before")
    @classmethod
    def _netsuite_bool(cls, value: Any) -> Any:
        # SuiteQL answers booleans as "T" / "F", and null for a flag the record does not carry.
        if value is None:
            return False
        if isinstance(value, str) and value in ("T", "F"):
            return value == "T"
        return value

    @property
    def is_summary(self) -> bool:
        """A quarter or a year: it rolls up its months and never takes a posting itself."""
        return self.is_quarter or self.is_year

    def blocks(self, record_type: str) -> bool:
        """Whether a posting of ``record_type`` into this period is refused."""
        if self.closed or self.all_locked:
            return True
        if record_type == "expensereport":
            return self.ap_locked
        if record_type in ("invoice", "creditmemo"):  # receivables: the AR lock blocks both
            return self.ar_locked
        return False


class TimeBill(_Record):
    """A timebill read back from the ERP (for reconciliation and ambiguity resolution)."""

    tran_date: dt.date = Field(validation_alias=AliasChoices("tranDate", "trandate"))
    employee: Ref | None = _alias("employee")
    customer: Ref | None = _alias("customer")
    subsidiary: Ref | None = _alias("subsidiary")
    hours: Money
    rate: Money | None = _alias("rate")
    currency: Ref | None = _alias("currency")
    is_billable: Flag | None = _alias("isBillable")
    memo: str | None = _alias("memo")
    posting_period: Ref | None = _alias("postingPeriod")


class ExpenseReport(_Record):
    """An expense report read back from the ERP."""

    tran_date: dt.date = Field(validation_alias=AliasChoices("tranDate", "trandate"))
    employee: Ref | None = _alias("employee")
    customer: Ref | None = _alias("customer")
    subsidiary: Ref | None = _alias("subsidiary")
    amount: Money
    currency: Ref | None = _alias("currency")
    category: str | None = _alias("category")
    tax_code: Ref | None = _alias("taxCode")
    is_billable: Flag | None = _alias("isBillable")
    memo: str | None = _alias("memo")
    posting_period: Ref | None = _alias("postingPeriod")


# --------------------------------------------------------------------------- billing: what we write
#
# Write models build the REST body of a billing transaction (``to_payload``), the same dict the
# posting engine hands to ``NetSuiteClient.submit_batch(record_type, items, key)``: a billing
# record posts through the batch path timebills use, under its ``RECORD_TYPE``.

LineSource = Literal["timebill", "expensereport", "milestone", "retainerperiod"]


def _money_str(value: Decimal) -> str:
    if value != value.quantize(Decimal("0.01")):
        raise ValueError(f"{value} has more than 2 decimal places")
    return str(value.quantize(Decimal("0.01")))


class _Write(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BillingLine(_Write):
    """An invoice or credit memo line and the source it bills (our external id of it)."""

    amount: Money
    source_type: LineSource
    source_id: str = Field(min_length=1, max_length=255)
    quantity: Money | None = None
    rate: Money | None = None
    description: str | None = None

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "amount": _money_str(self.amount),
            "sourceType": self.source_type,
            "sourceId": self.source_id,
        }
        if self.quantity is not None:
            out["quantity"] = str(self.quantity)
        if self.rate is not None:
            out["rate"] = str(self.rate)
        if self.description is not None:
            out["description"] = self.description
        return out


_EXT = r"^[A-Za-z0-9_-]{1,255}$"


class InvoiceIn(_Write):
    """An invoice to upsert by external id; its total is the sum of its lines."""

    RECORD_TYPE: ClassVar[str] = "invoice"

    external_id: str = Field(pattern=_EXT)
    tran_date: dt.date
    customer: str  # the customer's external id (NetSuite ``entity``)
    subsidiary: str
    currency: str  # ISO code (NetSuite ``refName``)
    lines: list[BillingLine] = Field(min_length=1)
    job: str | None = None
    tran_id: str | None = None
    due_date: dt.date | None = None
    memo: str | None = None
    posting_period: str | None = None

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))

    def to_payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "externalId": self.external_id,
            "tranDate": self.tran_date.isoformat(),
            "entity": {"externalId": self.customer},
            "subsidiary": {"externalId": self.subsidiary},
            "currency": {"refName": self.currency},
            "total": _money_str(self.total),
            "item": {"items": [line.to_payload() for line in self.lines]},
        }
        optional = {
            "job": {"externalId": self.job} if self.job else None,
            "tranId": self.tran_id,
            "dueDate": self.due_date.isoformat() if self.due_date else None,
            "memo": self.memo,
            "postingPeriod": {"externalId": self.posting_period} if self.posting_period else None,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return body


class CreditMemoIn(InvoiceIn):
    """A credit memo; ``created_from`` (an invoice's external id) applies its total to that invoice."""

    RECORD_TYPE: ClassVar[str] = "creditmemo"

    created_from: str | None = None

    def to_payload(self) -> dict[str, Any]:
        body = super().to_payload()
        body.pop("dueDate", None)
        if self.created_from:
            body["createdFrom"] = {"externalId": self.created_from}
        return body


class JournalLineIn(_Write):
    account: str
    debit: Money | None = None
    credit: Money | None = None
    currency: str | None = None  # defaults to the journal's
    memo: str | None = None

    @model_validator(mode="after")
    def _one_side(self) -> JournalLineIn:
        if (self.debit is None) == (self.credit is None):
            raise ValueError("a journal line has either a debit or a credit")
        if (self.debit or self.credit or Decimal(0)) < 0:
            raise ValueError("debits and credits are not negative")
        return self

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"account": {"externalId": self.account}}
        if self.debit is not None:
            out["debit"] = _money_str(self.debit)
        if self.credit is not None:
            out["credit"] = _money_str(self.credit)
        if self.currency:
            out["currency"] = {"refName": self.currency}
        if self.memo is not None:
            out["memo"] = self.memo
        return out


class JournalEntryIn(_Write):
    """A journal entry; refused here already when debits and credits differ in any currency (the
    ERP refuses it too, with ``UNBALANCED_JOURNAL``)."""

    RECORD_TYPE: ClassVar[str] = "journalentry"

    external_id: str = Field(pattern=_EXT)
    tran_date: dt.date
    subsidiary: str
    currency: str
    lines: list[JournalLineIn] = Field(min_length=2)
    memo: str | None = None
    posting_period: str | None = None

    @model_validator(mode="after")
    def _balanced(self) -> JournalEntryIn:
        sums: dict[str, Decimal] = {}
        for line in self.lines:
            key = line.currency or self.currency
            sums[key] = sums.get(key, Decimal(0)) + (line.debit or Decimal(0)) - (line.credit or Decimal(0))
        unbalanced = {k: v for k, v in sums.items() if v != 0}
        if unbalanced:
            raise ValueError(f"journal out of balance: {unbalanced}")
        return self

    def to_payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "externalId": self.external_id,
            "tranDate": self.tran_date.isoformat(),
            "subsidiary": {"externalId": self.subsidiary},
            "currency": {"refName": self.currency},
            "line": {"items": [line.to_payload() for line in self.lines]},
        }
        if self.memo is not None:
            body["memo"] = self.memo
        if self.posting_period:
            body["postingPeriod"] = {"externalId": self.posting_period}
        return body


BillingRecord = InvoiceIn | CreditMemoIn | JournalEntryIn


# --------------------------------------------------------------------------- billing: what we read


class _Lines(_Model):
    items: list[dict[str, Any]] = Field(default_factory=list)


class ErpInvoice(_Record):
    """An invoice (or credit memo) read back: REST record or SuiteQL row (no lines in SuiteQL)."""

    tran_id: str | None = _alias("tranId")
    tran_date: dt.date = Field(validation_alias=AliasChoices("tranDate", "trandate"))
    entity: Ref | None = _alias("entity")
    job: Ref | None = _alias("job")
    subsidiary: Ref | None = _alias("subsidiary")
    currency: Ref | None = _alias("currency")
    total: Money
    amount_remaining: Money | None = _alias("amountRemaining")
    status: str | None = _alias("status")
    created_from: Ref | None = _alias("createdFrom")
    item: _Lines | None = None

    @property
    def lines(self) -> list[BillingLine]:
        return [
            BillingLine(
                amount=Decimal(str(i["amount"])),
                source_type=i["sourceType"],
                source_id=i["sourceId"],
                quantity=Decimal(str(i["quantity"])) if i.get("quantity") is not None else None,
                rate=Decimal(str(i["rate"])) if i.get("rate") is not None else None,
                description=i.get("description"),
            )
            for i in (self.item.items if self.item else [])
        ]


class ErpCustomerPayment(_Record):
    tran_date: dt.date = Field(validation_alias=AliasChoices("tranDate", "trandate"))
    customer: Ref | None = _alias("customer")
    subsidiary: Ref | None = _alias("subsidiary")
    currency: Ref | None = _alias("currency")
    payment: Money
    memo: str | None = _alias("memo")
    apply: _Lines | None = None


class ErpJournalEntry(_Record):
    tran_date: dt.date = Field(validation_alias=AliasChoices("tranDate", "trandate"))
    subsidiary: Ref | None = _alias("subsidiary")
    currency: Ref | None = _alias("currency")
    memo: str | None = _alias("memo")
    line: _Lines | None = None


class TransactionLine(_Model):
    """A SuiteQL ``transactionline`` row: one line of an invoice, credit memo, payment or journal."""

    id: str
    transaction: str
    transaction_type: str = Field(alias="transactiontype")
    transaction_external_id: str | None = Field(default=None, alias="transactionexternalid")
    line_sequence_number: int = Field(alias="linesequencenumber")
    amount: Money | None = None
    debit: Money | None = None
    credit: Money | None = None
    source_type: str | None = Field(default=None, alias="sourcetype")
    source_id: str | None = Field(default=None, alias="sourceid")
    applied_to: str | None = Field(default=None, alias="appliedto")
    currency: str | None = None
    last_modified_date: dt.datetime | None = Field(default=None, alias="lastmodifieddate")


class CurrencyRate(_Record):
    """1 unit of ``transaction_currency`` = ``exchange_rate`` units of ``base_currency`` from
    ``effective_date`` on."""

    base_currency: Ref = Field(validation_alias=AliasChoices("baseCurrency", "basecurrency"))
    transaction_currency: Ref = Field(
        validation_alias=AliasChoices("transactionCurrency", "transactioncurrency")
    )
    exchange_rate: Money = Field(validation_alias=AliasChoices("exchangeRate", "exchangerate"))
    effective_date: dt.date = Field(validation_alias=AliasChoices("effectiveDate", "effectivedate"))


#: The read model of each billing record type (read back by external id).
READ_MODELS: dict[str, type[_Record]] = {
    "invoice": ErpInvoice,
    "creditmemo": ErpInvoice,
    "customerpayment": ErpCustomerPayment,
    "journalentry": ErpJournalEntry,
    "currencyrate": CurrencyRate,
}
