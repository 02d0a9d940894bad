"""Pydantic models of the SAP S/4HANA OData V2 payloads our client sends and reads.

Answers are validated leniently (``extra="ignore"``: SAP adds fields between releases) but every
field we use is typed: ``/Date(ms)/`` becomes a :class:`~datetime.date`, ``Edm.Decimal`` strings
become :class:`~decimal.Decimal` (a JSON number there is refused, never read as a float). Requests
are built from strict models (``extra="forbid"``) so a typo never reaches SAP.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

_EPOCH = date(1970, 1, 1)
_SAP_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")
DAY_MS = 86_400_000

# 10 in process, 20 released for approval, 30 approved, 40 approval rejected,
# 50 changed after approval (superseded by a successor), 60 cancelled.
StatusCode = Literal["10", "20", "30", "40", "50", "60"]
LIVE_STATUSES = frozenset({"10", "20", "30", "40"})


def to_sap_date(value: date) -> str:
    """``/Date(ms)/`` of midnight UTC of ``value`` (how OData V2 JSON carries an ``Edm.DateTime``)."""
    return f"/Date({(value - _EPOCH).days * DAY_MS})/"


def _parse_sap_date(value: Any) -> Any:
    if isinstance(value, str):
        match = _SAP_DATE.match(value)
        if match is None:
            raise ValueError(f"not an OData V2 date: {value!r}")
        ms = int(match.group(1))
        if ms % DAY_MS:
            raise ValueError(f"{value!r} is not midnight UTC of a day")
        return _EPOCH + timedelta(days=ms // DAY_MS)
    return value


def _decimal_string(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return Decimal(value) if value else Decimal(0)
        except InvalidOperation as exc:
            raise ValueError(f"not a decimal string: {value!r}") from exc
    if isinstance(value, Decimal):
        return value
    raise ValueError("an Edm.Decimal arrives as a string in OData V2 JSON")


SapDate = Annotated[date, BeforeValidator(_parse_sap_date)]
SapDecimal = Annotated[Decimal, BeforeValidator(_decimal_string)]


def decimal_text(value: Decimal, places: int = 2) -> str:
    """An ``Edm.Decimal`` for a request body: a string with exactly ``places`` decimals."""
    return f"{value.quantize(Decimal(1).scaleb(-places)):f}"


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --------------------------------------------------------------------------- timesheets


class DataFields(_Answer):
    ControllingArea: str = ""
    SenderCostCenter: str = ""
    ReceiverCostCenter: str = ""
    InternalOrder: str = ""
    ActivityType: str = ""
    WBSElement: str = ""
    WorkItem: str = ""
    TimeSheetNoteText: str = ""
    RecordedHours: SapDecimal
    HoursUnitOfMeasure: str = ""


class TimeSheetEntry(_Answer):
    """One record of ``TimeSheetEntryCollection`` as SAP answers it."""

    PersonWorkAgreementExternalID: str
    CompanyCode: str
    TimeSheetRecord: str
    PersonWorkAgreement: str = ""
    TimeSheetDate: SapDate
    TimeSheetStatus: StatusCode | Literal[""] = ""
    TimeSheetPredecessorRecord: str = ""
    TimeSheetIsExecutedInTestRun: bool = False
    TimeSheetDataFields: DataFields

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.PersonWorkAgreementExternalID, self.CompanyCode, self.TimeSheetRecord)

    @property
    def is_live(self) -> bool:
        """Neither superseded (50) nor cancelled (60)."""
        return self.TimeSheetStatus in LIVE_STATUSES


class TimeSheetInput(BaseModel):
    """What we book: one day's hours of one person work agreement on one receiver."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    person_work_agreement_external_id: str = Field(min_length=1, max_length=20)
    company_code: str = Field(pattern=r"^[A-Z0-9]{4}$")
    day: date
    hours: Decimal = Field(gt=0, le=24, decimal_places=2)
    activity_type: str = Field(default="", max_length=6)
    controlling_area: str = Field(default="", max_length=4)
    wbs_element: str = Field(default="", max_length=24)
    receiver_cost_center: str = Field(default="", max_length=10)
    internal_order: str = Field(default="", max_length=12)
    note: str = ""
    released_on_save: bool = True

    @model_validator(mode="after")
    def _one_receiver(self) -> TimeSheetInput:
        if not (self.wbs_element or self.receiver_cost_center or self.internal_order):
            raise ValueError("a receiver is required: wbs_element, receiver_cost_center or internal_order")
        return self

    def payload(
        self, *, operation: Literal["C", "U", "D"], note: str, record: str = "", test_run: bool = False
    ) -> dict[str, Any]:
        return {
            "PersonWorkAgreementExternalID": self.person_work_agreement_external_id,
            "CompanyCode": self.company_code,
            "TimeSheetRecord": record,
            "TimeSheetDate": to_sap_date(self.day),
            "TimeSheetIsReleasedOnSave": self.released_on_save,
            "TimeSheetIsExecutedInTestRun": test_run,
            "TimeSheetOperation": operation,
            "TimeSheetDataFields": {
                "ControllingArea": self.controlling_area,
                "ActivityType": self.activity_type,
                "WBSElement": self.wbs_element,
                "ReceiverCostCenter": self.receiver_cost_center,
                "InternalOrder": self.internal_order,
                "RecordedHours": decimal_text(self.hours),
                "HoursUnitOfMeasure": "H",
                "TimeSheetNoteText": note,
            },
        }


# --------------------------------------------------------------------------- journal entries


class JournalEntryItemInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gl_account: str = Field(min_length=1, max_length=10)
    amount: Decimal = Field(gt=0, decimal_places=2)
    debit_credit: Literal["S", "H"]  # S debit, H credit
    text: str = Field(default="", max_length=50)
    cost_center: str = Field(default="", max_length=10)
    wbs_element: str = Field(default="", max_length=24)


class JournalEntryInput(BaseModel):
    """A journal entry (expense or revenue) in one currency, balanced: debits equal credits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    company_code: str = Field(pattern=r"^[A-Z0-9]{4}$")
    document_type: str = Field(default="SA", pattern=r"^[A-Z0-9]{2}$")
    document_date: date
    posting_date: date
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    header_text: str = Field(default="", max_length=25)
    items: tuple[JournalEntryItemInput, ...] = Field(min_length=2)

    @model_validator(mode="after")
    def _balanced(self) -> JournalEntryInput:
        balance = sum((i.amount if i.debit_credit == "S" else -i.amount for i in self.items), Decimal(0))
        if balance != 0:
            raise ValueError(f"debits and credits differ by {balance} {self.currency}")
        return self

    def payload(self, reference: str) -> dict[str, Any]:
        return {
            "CompanyCode": self.company_code,
            "AccountingDocumentType": self.document_type,
            "DocumentDate": to_sap_date(self.document_date),
            "PostingDate": to_sap_date(self.posting_date),
            "TransactionCurrency": self.currency,
            "DocumentReferenceID": reference,
            "DocumentHeaderText": self.header_text,
            "to_Item": {
                "results": [
                    {
                        "GLAccount": i.gl_account,
                        "AmountInTransactionCurrency": decimal_text(i.amount),
                        "DebitCreditCode": i.debit_credit,
                        "DocumentItemText": i.text,
                        "CostCenter": i.cost_center,
                        "WBSElement": i.wbs_element,
                    }
                    for i in self.items
                ]
            },
        }


class JournalEntryItem(_Answer):
    AccountingDocumentItem: str
    GLAccount: str
    AmountInTransactionCurrency: SapDecimal
    TransactionCurrency: str
    DebitCreditCode: Literal["S", "H"]
    DocumentItemText: str = ""


class _Items(_Answer):
    results: tuple[JournalEntryItem, ...] = ()


class JournalEntry(_Answer):
    CompanyCode: str
    FiscalYear: str
    AccountingDocument: str
    AccountingDocumentType: str = ""
    PostingDate: SapDate
    FiscalPeriod: str = ""
    DocumentReferenceID: str = ""
    DocumentHeaderText: str = ""
    TransactionCurrency: str = ""
    to_Item: _Items | None = None

    @model_validator(mode="before")
    @classmethod
    def _deferred_items(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and isinstance(data.get("to_Item"), dict)
            and "__deferred" in data["to_Item"]
        ):
            return {k: v for k, v in data.items() if k != "to_Item"}
        return data


class MasterRecord(BaseModel):
    """An entity of the master-data service (``ZPSA_MASTERDATA_SRV``): its properties as answered."""

    model_config = ConfigDict(extra="allow", frozen=True)

    CompanyCode: str


class PostingPeriod(_Answer):
    CompanyCode: str
    FiscalYear: str
    FiscalPeriod: str
    FiscalPeriodStartDate: SapDate
    FiscalPeriodEndDate: SapDate
    PostingPeriodIsOpen: bool


# --------------------------------------------------------------------------- envelopes and errors


class _Page(_Answer):
    results: list[dict[str, Any]]
    next: str | None = Field(default=None, alias="__next")


class Page(_Answer):
    """``{"d": {"results": [...], "__next": url}}``: one page of a collection."""

    d: _Page


class Single(_Answer):
    """``{"d": {...}}``: one entity."""

    d: dict[str, Any]


class _Message(_Answer):
    value: str = ""


class _Detail(_Answer):
    code: str = ""
    message: str = ""
    severity: str = ""


class _Inner(_Answer):
    errordetails: tuple[_Detail, ...] = ()


class _Error(_Answer):
    code: str = ""
    message: _Message = _Message()
    innererror: _Inner = _Inner()


class ErrorBody(_Answer):
    """SAP Gateway's OData V2 error: ``{"error": {"code": "F5/201", "message": {"value": ...}}}``."""

    error: _Error
