"""Canonical data contracts, version 1: the records every flow speaks after the boundary.

Conventions, the same for every model:

* ``ConfigDict(strict=True, extra="forbid", frozen=True)``: no silent coercion, no unknown fields,
  immutable values. Every model carries ``contract_version: Literal["v1"] = "v1"`` so a stored
  record (``canonical.record_v1(row)`` builds it as JSONB, migration 0049) says which contract it was written under.
* Money is an integer number of minor units (``*_minor: int``, e.g. cents) plus an ISO 4217
  ``currency`` (three upper-case letters). Floats are rejected everywhere, in Python and in JSON.
* Hours are ``Decimal`` with at most 2 decimal places (``numeric(9,2)`` in the ODS), never negative.
* Identifiers are constrained strings (letters, digits and ``_ - . : /``), never free text.
* Time entries and expenses carry no personal data: no names, emails or notes (notes are dropped
  at the boundary). Resources are referenced by ``user_ref`` only.

Strict mode and JSON: strict pydantic accepts a date or a ``Decimal`` only as its Python type in
Python mode. Canonical records are also read back from JSONB (after ``json.loads``, where dates and
decimals are strings), so the date, timestamp and hours types below accept ISO / decimal strings
through a field-level ``BeforeValidator`` that converts exactly those strings and nothing else
(no ints for dates, no floats for hours). Everything else stays strict.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

VERSION: Final = "v1"

# --- field types --------------------------------------------------------------------------


def _iso_date(value: Any) -> Any:
    if isinstance(value, datetime):
        raise ValueError("a date, not a datetime")
    if isinstance(value, str):
        if len(value) != 10:
            raise ValueError("dates are ISO YYYY-MM-DD")
        try:
            return date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError("dates are ISO YYYY-MM-DD") from exc
    return value


def _iso_timestamp(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError("timestamps are ISO 8601 with a UTC offset") from exc
    return value


def _decimal(value: Any) -> Any:
    if isinstance(value, bool | float):
        raise ValueError("a decimal string or Decimal, never a float")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            parsed = Decimal(value)
        except InvalidOperation as exc:
            raise ValueError("not a decimal number") from exc
        return parsed
    return value


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


IsoDate = Annotated[date, BeforeValidator(_iso_date), WithJsonSchema({"type": "string", "format": "date"})]
"""A calendar date; a ``date`` or an ISO ``YYYY-MM-DD`` string."""

Timestamp = Annotated[
    AwareDatetime, BeforeValidator(_iso_timestamp), WithJsonSchema({"type": "string", "format": "date-time"})
]
"""A timezone-aware instant; an aware ``datetime`` or an ISO 8601 string with an offset."""

Hours = Annotated[
    Decimal,
    BeforeValidator(_decimal),
    Field(ge=0, max_digits=9, decimal_places=2, allow_inf_nan=False),
    WithJsonSchema({"type": "string", "pattern": r"^\d{1,7}(\.\d{1,2})?$"}),
]
"""Non-negative hours with at most 2 decimals: ``Decimal``, int or a decimal string; never a float."""

MinorUnits = Annotated[int, Field(strict=True, ge=-(2**63), le=2**63 - 1)]
"""A signed amount in minor units of its record's currency (``bigint`` in the ODS)."""

NonNegativeMinorUnits = Annotated[int, Field(strict=True, ge=0, le=2**63 - 1)]

CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
"""ISO 4217 alphabetic code."""

CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
"""ISO 3166-1 alpha-2 code."""

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
]
"""A reference to a record in some system (``123``, ``psa-project-12``, ``eid:LE-US1``)."""

SourceSystem = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,31}$")]
"""The system a record came from, e.g. ``psa``, ``harvest``, ``crm``, ``erp``."""

LegalEntityCode = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
]
"""A legal entity (ERP subsidiary) code such as ``LE-US1``."""

PracticeCode = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_. -]*$")
]

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""A sha256 digest in lower-case hex."""

VersionHash = Sha256Hex
"""sha256 (hex) of the source payload version a record was built from."""

BusinessName = Annotated[str, StringConstraints(min_length=1, max_length=255)]
"""The name of an organisation (customer, legal entity), never of a person."""

BillingType = Literal["time_and_materials", "fixed_fee", "milestone", "retainer"]
OpportunityStage = Literal[
    "Prospecting", "Qualification", "Proposal", "Negotiation", "Closed Won", "Closed Lost"
]
ForecastLayer = Literal["actual", "contracted", "pipeline"]
Scenario = Literal["base", "best", "worst"]


class CanonicalModel(BaseModel):
    """Base of every v1 contract: strict, closed and immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    contract_version: Literal["v1"] = "v1"


# --- master data --------------------------------------------------------------------------


class LegalEntity(CanonicalModel):
    """A legal entity (ERP subsidiary): the unit that books revenue and owns accounting periods.

    Exported specification only: no code builds or reads it at runtime (docs/architecture.md, "Canonical contracts").
    """

    code: LegalEntityCode
    source_system: SourceSystem
    source_id: Identifier
    name: BusinessName
    country: CountryCode
    functional_currency: CurrencyCode
    is_active: bool


class Customer(CanonicalModel):
    """A customer as the ERP (its system of authority) knows it.

    Exported specification only: no code builds or reads it at runtime (docs/architecture.md, "Canonical contracts").
    """

    customer_ref: Identifier = Field(description="ERP external id, e.g. psa-client-12")
    source_system: SourceSystem
    source_id: Identifier
    name: BusinessName
    legal_entity: LegalEntityCode
    currency: CurrencyCode
    tax_code: Identifier | None = None
    is_active: bool


class Contract(CanonicalModel):
    """The commercial agreement a project delivers: billing type and transaction price.

    Exported specification only: no code builds or reads it at runtime (docs/architecture.md, "Canonical contracts").
    """

    contract_ref: Identifier
    source_system: SourceSystem
    source_id: Identifier
    customer_ref: Identifier
    project_ref: Identifier
    opportunity_ref: Identifier | None = None
    legal_entity: LegalEntityCode
    billing_type: BillingType
    transaction_price_minor: NonNegativeMinorUnits
    currency: CurrencyCode
    start_date: IsoDate
    end_date: IsoDate | None = None

    @model_validator(mode="after")
    def _dates_in_order(self) -> Contract:
        if self.end_date is not None and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self


class RateCardLine(CanonicalModel):
    """One bill rate, for a role or a task (at least one of them).

    Exported specification only: no code builds or reads it at runtime (docs/architecture.md, "Canonical contracts").
    """

    role_ref: Identifier | None = None
    task_ref: Identifier | None = None
    bill_rate_minor: NonNegativeMinorUnits

    @model_validator(mode="after")
    def _role_or_task(self) -> RateCardLine:
        if self.role_ref is None and self.task_ref is None:
            raise ValueError("a rate card line needs role_ref or task_ref")
        return self


class RateCard(CanonicalModel):
    """The bill rates of one project from ``effective_from``, per role or task.

    Exported specification only: no code builds or reads it at runtime (docs/architecture.md, "Canonical contracts").
    """

    project_ref: Identifier
    source_system: SourceSystem
    currency: CurrencyCode
    effective_from: IsoDate
    lines: Annotated[tuple[RateCardLine, ...], BeforeValidator(_as_tuple), Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_keys(self) -> RateCard:
        _require_unique(((line.role_ref, line.task_ref) for line in self.lines), "role_ref/task_ref")
        return self


class Project(CanonicalModel):
    """A delivery project (PSA), with the legal entity and currency it bills in.

    Exported specification only: no code builds or reads it at runtime (docs/architecture.md, "Canonical contracts").
    """

    project_ref: Identifier
    source_system: SourceSystem
    source_id: Identifier
    customer_ref: Identifier
    contract_ref: Identifier | None = None
    code: Identifier | None = None
    legal_entity: LegalEntityCode
    practice: PracticeCode
    billing_type: BillingType
    currency: CurrencyCode
    starts_on: IsoDate | None = None
    ends_on: IsoDate | None = None
    is_active: bool
    is_billable: bool
    budget_hours: Hours | None = None
    fee_minor: NonNegativeMinorUnits | None = None
    source_updated_at: Timestamp


class Resource(CanonicalModel):
    """A person as a capacity and cost: no name or email, only a reference.

    Exported specification only: no code builds or reads it at runtime (docs/architecture.md, "Canonical contracts").
    """

    resource_ref: Identifier
    source_system: SourceSystem
    source_id: Identifier
    home_legal_entity: LegalEntityCode
    practice: PracticeCode
    cost_rate_minor: NonNegativeMinorUnits
    currency: CurrencyCode
    capacity_hours_per_week: Hours
    is_contractor: bool
    is_active: bool


class ResourcePlan(CanonicalModel):
    """Scheduled hours of one resource on one project in one week (starting Monday).

    Exported specification only: no code builds or reads it at runtime (docs/architecture.md, "Canonical contracts").
    """

    source_system: SourceSystem
    source_id: Identifier
    resource_ref: Identifier
    project_ref: Identifier
    week_start: IsoDate
    scheduled_hours: Hours

    @field_validator("week_start")
    @classmethod
    def _monday(cls, value: date) -> date:
        if value.weekday() != 0:
            raise ValueError("week_start is a Monday")
        return value


class Opportunity(CanonicalModel):
    """A CRM opportunity: pipeline until won, then the origin of a contract.

    Exported specification only: no code builds or reads it at runtime (docs/architecture.md, "Canonical contracts").
    """

    opportunity_ref: Identifier
    source_system: SourceSystem
    source_id: Identifier
    account_ref: Identifier
    stage: OpportunityStage
    probability: Annotated[int, Field(strict=True, ge=0, le=100)]
    amount_minor: NonNegativeMinorUnits
    currency: CurrencyCode
    close_date: IsoDate | None = None
    expected_start: IsoDate | None = None
    duration_months: Annotated[int, Field(strict=True, ge=1, le=600)] | None = None
    legal_entity: LegalEntityCode
    practice: PracticeCode | None = None
    billing_type: BillingType | None = None
    psa_project_ref: Identifier | None = None
    is_won: bool
    is_closed: bool
    source_updated_at: Timestamp

    @model_validator(mode="after")
    def _flags_match_stage(self) -> Opportunity:
        if self.is_won != (self.stage == "Closed Won"):
            raise ValueError("is_won must be true exactly when stage is Closed Won")
        if self.is_closed != (self.stage in ("Closed Won", "Closed Lost")):
            raise ValueError("is_closed must be true exactly when stage is Closed Won or Closed Lost")
        return self


# --- transactions -------------------------------------------------------------------------


class TimeEntry(CanonicalModel):
    """One PSA time entry; the row of ``canonical.time_entry``.

    ``amount_minor`` is hours x bill rate, rounded half-even once, to the minor unit. No notes: they
    enter only the one-way ``fingerprint``.

    In force: validation writes it and posting reads it through its msgspec twin in ``records.py``.
    """

    source_system: SourceSystem
    source_id: Identifier
    version_hash: VersionHash
    spent_date: IsoDate
    user_ref: Identifier
    project_ref: Identifier
    task_ref: Identifier | None
    legal_entity: LegalEntityCode
    hours: Hours
    billable: bool
    bill_rate_minor: NonNegativeMinorUnits
    amount_minor: MinorUnits
    currency: CurrencyCode
    approved: bool
    is_deleted: bool = False
    fingerprint: Sha256Hex = Field(
        description="sha256 of (user, date, project, task, hours, notes): duplicate detection"
    )
    source_updated_at: Timestamp


class ExpenseEntry(CanonicalModel):
    """One PSA expense line; the row of ``canonical.expense_entry``. No notes, no receipts.

    In force: validation writes it and posting reads it through its msgspec twin in ``records.py``.
    """

    source_system: SourceSystem
    source_id: Identifier
    version_hash: VersionHash
    spent_date: IsoDate
    user_ref: Identifier
    project_ref: Identifier
    legal_entity: LegalEntityCode
    category: Identifier
    billable: bool
    amount_minor: MinorUnits
    currency: CurrencyCode
    approved: bool
    is_deleted: bool = False
    fingerprint: Sha256Hex = Field(
        description="sha256 of (user, date, project, category, amount, notes): duplicate detection"
    )
    source_updated_at: Timestamp


class Milestone(CanonicalModel):
    """A billing or revenue milestone of a project; ``signed_off`` needs the customer.

    Exported specification only: no code builds or reads it at runtime (docs/architecture.md, "Canonical contracts").
    """

    milestone_ref: Identifier
    source_system: SourceSystem
    source_id: Identifier
    project_ref: Identifier
    due_date: IsoDate
    amount_minor: NonNegativeMinorUnits
    currency: CurrencyCode
    status: Literal["planned", "completed", "signed_off"]
    completed_at: Timestamp | None = None

    @model_validator(mode="after")
    def _completed_has_time(self) -> Milestone:
        if self.status != "planned" and self.completed_at is None:
            raise ValueError("a completed or signed-off milestone has completed_at")
        return self


class BillingEvent(CanonicalModel):
    """An amount approved for billing (Certinia-style): approved -> released -> invoiced.

    Exported specification only: no code builds or reads it at runtime (docs/architecture.md, "Canonical contracts").
    """

    billing_event_ref: Identifier
    source_system: SourceSystem
    source_id: Identifier
    project_ref: Identifier
    contract_ref: Identifier | None = None
    milestone_ref: Identifier | None = None
    event_date: IsoDate
    amount_minor: MinorUnits
    currency: CurrencyCode
    status: Literal["approved", "released", "invoiced"]
    invoice_ref: Identifier | None = None
    invoice_date: IsoDate | None = None

    @model_validator(mode="after")
    def _invoiced_has_invoice(self) -> BillingEvent:
        if self.status == "invoiced" and (self.invoice_ref is None or self.invoice_date is None):
            raise ValueError("an invoiced billing event has invoice_ref and invoice_date")
        return self


class Invoice(CanonicalModel):
    """An ERP invoice header, returned to the PSA for visibility.

    Exported specification only: no code builds or reads it at runtime (docs/architecture.md, "Canonical contracts").
    """

    invoice_ref: Identifier
    source_system: SourceSystem
    source_id: Identifier
    invoice_number: Identifier
    customer_ref: Identifier
    project_ref: Identifier | None = None
    legal_entity: LegalEntityCode
    invoice_date: IsoDate
    due_date: IsoDate | None = None
    period_ref: Identifier | None = None
    total_minor: MinorUnits
    amount_due_minor: MinorUnits
    currency: CurrencyCode
    status: Literal["open", "partially_paid", "paid", "voided"]
    source_updated_at: Timestamp


class RevenuePosting(CanonicalModel):
    """Revenue recognised for one contract in one accounting period (a signed amount).

    Exported specification only: no code builds or reads it at runtime (docs/architecture.md, "Canonical contracts").
    """

    posting_ref: Identifier
    source_system: SourceSystem
    contract_ref: Identifier
    project_ref: Identifier
    legal_entity: LegalEntityCode
    period_ref: Identifier
    posting_date: IsoDate
    method: Literal["time_and_materials", "cost_to_cost", "milestone", "straight_line"]
    kind: Literal["revenue", "expected_loss", "catch_up", "reversal"]
    amount_minor: MinorUnits
    currency: CurrencyCode


class AccountingPeriod(CanonicalModel):
    """An ERP accounting period of one legal entity and its locks.

    Exported specification only: no code builds or reads it at runtime (docs/architecture.md, "Canonical contracts").
    """

    period_ref: Identifier
    source_system: SourceSystem
    source_id: Identifier
    legal_entity: LegalEntityCode
    period_name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    start_date: IsoDate
    end_date: IsoDate
    closed: bool
    all_locked: bool
    ar_locked: bool
    ap_locked: bool

    @model_validator(mode="after")
    def _dates_in_order(self) -> AccountingPeriod:
        if self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self


# --- forecast -----------------------------------------------------------------------------


class ForecastLine(CanonicalModel):
    """One project's amount in one month and confidence layer; the row of ``forecast.line``.

    Exported specification only: no code builds or reads it at runtime (docs/architecture.md, "Canonical contracts").
    """

    project_ref: Identifier
    practice: PracticeCode
    legal_entity: LegalEntityCode
    layer: ForecastLayer
    month: IsoDate
    currency: CurrencyCode
    amount_minor: MinorUnits
    reporting_amount_minor: MinorUnits

    @field_validator("month")
    @classmethod
    def _first_of_month(cls, value: date) -> date:
        if value.day != 1:
            raise ValueError("month is the first day of the month")
        return value


class ForecastSnapshot(CanonicalModel):
    """An immutable forecast for one scenario as of a date; the row of ``forecast.snapshot``.

    Exported specification only: no code builds or reads it at runtime (docs/architecture.md, "Canonical contracts").
    """

    snapshot_id: Identifier
    scenario: Scenario
    version: Identifier
    as_of: IsoDate
    run_id: Annotated[str, StringConstraints(min_length=1, max_length=250)]
    data_versions: dict[Identifier, Annotated[str, StringConstraints(min_length=1, max_length=128)]]
    reporting_currency: CurrencyCode
    lines: Annotated[tuple[ForecastLine, ...], BeforeValidator(_as_tuple)]

    @model_validator(mode="after")
    def _unique_lines(self) -> ForecastSnapshot:
        _require_unique(
            ((line.project_ref, line.layer, line.month) for line in self.lines), "project_ref/layer/month"
        )
        return self


def _require_unique(keys: Iterable[tuple[Any, ...]], what: str) -> None:
    seen: set[tuple[Any, ...]] = set()
    for key in keys:
        if key in seen:
            raise ValueError(f"duplicate {what}: {'/'.join(str(k) for k in key)}")
        seen.add(key)


MODELS: Final[tuple[type[CanonicalModel], ...]] = (
    Customer,
    LegalEntity,
    Contract,
    RateCard,
    RateCardLine,
    Project,
    Resource,
    ResourcePlan,
    Opportunity,
    TimeEntry,
    ExpenseEntry,
    Milestone,
    BillingEvent,
    Invoice,
    RevenuePosting,
    AccountingPeriod,
    ForecastSnapshot,
    ForecastLine,
)
"""Every published v1 contract; one JSON Schema file each under ``schemas/v1/``."""
