"""Pydantic models of the Harvest API v2 payloads we consume: the PSA boundary validation.

The contract is Harvest's, not ours, so unknown fields are ignored (``extra="ignore"``): they
add fields without notice. Types are strict enough to reject garbage: ids are integers, flags
booleans, hours must be JSON numbers, dates ``YYYY-MM-DD`` strings, timestamps ISO 8601 with a
zone. Money arrives as JSON numbers (``150.0``) and becomes :class:`~decimal.Decimal` through
``Decimal(str(x))``, never staying a float; a decimal string is accepted too (the published
spec types ``expense_category.unit_price`` as a string).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictBool, StrictInt


def _decimal(value: Any, *, allow_str: bool) -> Decimal:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, (int, float)):
        result = Decimal(str(value))
    elif isinstance(value, str) and allow_str:
        try:
            result = Decimal(value.strip())
        except InvalidOperation as exc:
            raise ValueError("expected a decimal number") from exc
    else:
        raise ValueError(f"expected a number, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError("expected a finite number")
    return result


def _money(value: Any) -> Decimal:
    return _decimal(value, allow_str=True)


def _number(value: Any) -> Decimal:
    return _decimal(value, allow_str=False)


def _date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a date string YYYY-MM-DD")
    return date.fromisoformat(value)


def _datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value)
    else:
        raise ValueError("expected an ISO 8601 date-time string")
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    return parsed


Money = Annotated[Decimal, BeforeValidator(_money)]
"""An amount or rate: a JSON number (or decimal string) parsed exactly."""
Hours = Annotated[Decimal, BeforeValidator(_number)]
"""Decimal hours or a quantity: must be a JSON number."""
IsoDate = Annotated[date, BeforeValidator(_date)]
Timestamp = Annotated[datetime, BeforeValidator(_datetime)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class IdName(_Model):
    """A nested ``{id, name}`` reference; ``name`` may be null (e.g. a task the PSA no longer knows)."""

    id: StrictInt
    name: str | None = None


class ClientRef(IdName):
    currency: str | None = None


class ProjectRef(IdName):
    code: str | None = None


class InvoiceRef(_Model):
    id: StrictInt
    number: str | None = None


class ExpenseCategoryRef(IdName):
    unit_price: Money | None = None
    unit_name: str | None = None


class ExternalReference(_Model):
    id: str | None = None
    group_id: str | None = None
    account_id: str | None = None
    permalink: str | None = None
    service: str | None = None
    service_icon_url: str | None = None


class UserAssignment(_Model):
    id: StrictInt
    project: ProjectRef | None = None  # absent when nested inside a time entry
    user: IdName | None = None
    is_active: StrictBool = True
    is_project_manager: StrictBool = False
    use_default_rates: StrictBool | None = None
    hourly_rate: Money | None = None
    budget: Money | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class TaskAssignment(_Model):
    id: StrictInt
    project: ProjectRef | None = None  # absent when nested inside a time entry
    task: IdName | None = None
    is_active: StrictBool = True
    billable: StrictBool | None = None
    hourly_rate: Money | None = None
    budget: Money | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class TimeEntry(_Model):
    id: StrictInt
    spent_date: IsoDate
    user: IdName
    client: ClientRef | None = None
    project: ProjectRef
    task: IdName
    user_assignment: UserAssignment | None = None
    task_assignment: TaskAssignment | None = None
    hours: Hours
    hours_without_timer: Hours | None = None
    rounded_hours: Hours | None = None
    notes: str | None = None
    is_locked: StrictBool
    locked_reason: str | None = None
    is_closed: StrictBool
    is_billed: StrictBool
    timer_started_at: Timestamp | None = None
    started_time: str | None = None
    ended_time: str | None = None
    is_running: StrictBool = False
    invoice: InvoiceRef | None = None
    external_reference: ExternalReference | None = None
    billable: StrictBool
    budgeted: StrictBool | None = None
    billable_rate: Money | None = None
    cost_rate: Money | None = None
    created_at: Timestamp
    updated_at: Timestamp

    @property
    def approved(self) -> bool:
        """Harvest calls approval ``is_closed``."""
        return self.is_closed


class Expense(_Model):
    id: StrictInt
    spent_date: IsoDate
    user: IdName
    client: ClientRef | None = None
    project: ProjectRef
    expense_category: ExpenseCategoryRef
    user_assignment: UserAssignment | None = None
    invoice: InvoiceRef | None = None
    notes: str | None = None
    units: Hours | None = None
    total_cost: Money
    billable: StrictBool
    is_closed: StrictBool
    is_locked: StrictBool
    is_billed: StrictBool
    locked_reason: str | None = None
    created_at: Timestamp
    updated_at: Timestamp

    @property
    def approved(self) -> bool:
        return self.is_closed


class Client(_Model):
    id: StrictInt
    name: str
    is_active: StrictBool
    currency: str | None = None
    address: str | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


BillingType = Literal["time_and_materials", "fixed_fee", "milestone", "retainer"]


class Project(_Model):
    id: StrictInt
    client: ClientRef | None = None
    name: str
    code: str | None = None
    is_active: StrictBool
    is_billable: StrictBool = True
    is_fixed_fee: StrictBool = False
    bill_by: str | None = None
    hourly_rate: Money | None = None
    budget: Money | None = None
    budget_by: str | None = None
    cost_budget: Money | None = None
    fee: Money | None = None
    notes: str | None = None
    starts_on: IsoDate | None = None
    ends_on: IsoDate | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    # extensions of our PSA
    billing_type: BillingType | None = None
    legal_entity: str | None = None
    currency: str | None = None
    practice: str | None = None


class User(_Model):
    id: StrictInt
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    timezone: str | None = None
    is_contractor: StrictBool = False
    is_active: StrictBool
    weekly_capacity: StrictInt | None = None  # seconds
    default_hourly_rate: Money | None = None
    cost_rate: Money | None = None
    roles: list[str] = []
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    # extensions of our PSA
    legal_entity: str | None = None
    practice: str | None = None
    employee_id: str | None = None  # the HR system's Employee_ID


class Task(_Model):
    id: StrictInt
    name: str
    billable_by_default: StrictBool = True
    default_hourly_rate: Money | None = None
    is_default: StrictBool = False
    is_active: StrictBool = True
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class ExpenseCategory(_Model):
    id: StrictInt
    name: str
    unit_name: str | None = None
    unit_price: Money | None = None
    is_active: StrictBool = True
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class ScheduleEntry(_Model):
    """Extension ``/v2/x/schedule``: hours a user is scheduled on a project in a week."""

    id: StrictInt
    user: IdName
    project: ProjectRef
    week_start: IsoDate
    hours: Hours
    created_at: Timestamp | None = None
    updated_at: Timestamp


class Milestone(_Model):
    """Extension ``/v2/x/milestones``."""

    id: StrictInt
    project: ProjectRef
    name: str
    due_date: IsoDate | None = None
    amount: Money | None = None
    currency: str | None = None
    status: Literal["planned", "completed", "signed_off"]
    completed_at: Timestamp | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp


class InvoiceLineItem(_Model):
    id: StrictInt
    project: ProjectRef | None = None
    kind: str
    description: str | None = None
    quantity: Hours
    unit_price: Money
    amount: Money
    taxed: StrictBool = False
    taxed2: StrictBool = False


class Invoice(_Model):
    """A Harvest invoice; ``state`` draft -> open (sent) -> paid or closed."""

    id: StrictInt
    client: IdName
    number: str
    purchase_order: str | None = None
    amount: Money
    due_amount: Money
    currency: str
    state: Literal["draft", "open", "paid", "closed"]
    subject: str | None = None
    notes: str | None = None
    period_start: IsoDate | None = None
    period_end: IsoDate | None = None
    issue_date: IsoDate | None = None
    due_date: IsoDate | None = None
    sent_at: Timestamp | None = None
    paid_at: Timestamp | None = None
    paid_date: IsoDate | None = None
    closed_at: Timestamp | None = None
    line_items: list[InvoiceLineItem] = []
    created_at: Timestamp
    updated_at: Timestamp


class InvoicePayment(_Model):
    id: StrictInt
    amount: Money
    paid_at: Timestamp
    paid_date: IsoDate | None = None
    notes: str | None = None
    created_at: Timestamp
    updated_at: Timestamp
