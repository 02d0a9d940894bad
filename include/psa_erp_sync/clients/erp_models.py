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
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field


def _no_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("money must be a decimal string, not a float")
    return value


def _flag(value: Any) -> Any:
    if isinstance(value, str) and value.upper() in ("T", "F"):
        return value.upper() == "T"
    return value


def _ref(value: Any) -> Any:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return {"externalId": str(value)}
    return value


Money = Annotated[Decimal, BeforeValidator(_no_float)]
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


class AccountingPeriod(_Record):
    period_name: str | None = _alias("periodName")
    start_date: dt.date = Field(validation_alias=AliasChoices("startDate", "startdate"))
    end_date: dt.date = Field(validation_alias=AliasChoices("endDate", "enddate"))
    subsidiary: Ref | None = _alias("subsidiary")
    closed: Flag = Field(default=False)
    all_locked: Flag = Field(default=False, validation_alias=AliasChoices("allLocked", "alllocked"))
    ar_locked: Flag = Field(default=False, validation_alias=AliasChoices("arLocked", "arlocked"))
    ap_locked: Flag = Field(default=False, validation_alias=AliasChoices("apLocked", "aplocked"))

    def blocks(self, record_type: str) -> bool:
        """Whether a posting of ``record_type`` into this period is refused."""
        if self.closed or self.all_locked:
            return True
        if record_type == "expensereport":
            return self.ap_locked
        if record_type == "invoice":
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
