"""A staged time entry or expense decoded from its JSON text in one pass (msgspec), for validation.

The PSA's pydantic models (:mod:`psa_erp_sync.clients.psa_models`) stay the definition of a
valid payload; this is a faster way to the same answer for the payloads it can vouch for.
:func:`decode` returns the values the rules read (:class:`ParsedTimeEntry`,
:class:`ParsedExpense`), or None when it cannot say that the model would accept the payload with
exactly these values. Validation then asks the model (``judge_staged`` in
:mod:`psa_erp_sync.validation.time_expense`), so a payload this decoder declines is judged as
it always was; it never refuses one itself.

Why the values are the model's (``tests/validation/test_from_json.py`` compares both paths on
boundary, hostile and generated payloads):

- The structs below hold every field of the models, each with a type **no laxer** than the
  model's: ids and flags strictly ``int`` / ``bool`` (the models' ``StrictInt`` / ``StrictBool``),
  strings ``str``, nested objects where the model has a nested model, ``None`` only where the model
  allows it, the same defaults. Unknown fields are ignored, as the models ignore them.
- Numbers (``Hours``, ``Money``) are decoded as the JSON number they are (``int`` or ``float``,
  the same decoder validation falls back to; a number no float holds is refused by msgspec) and
  become ``Decimal`` through the models' own validators (``Decimal(str(number))``). A money amount
  may be a string, as in the models: it is parsed by their validator too, read or not (a string
  that is not a finite decimal declines the payload).
- Dates and timestamps are decoded as strings and parsed by the models' own functions
  (``date.fromisoformat``, ``datetime.fromisoformat`` with a zone required); any that does not
  parse, or has no zone, declines the payload. Timestamps the rules do not read are parsed too
  (the model refuses a payload whose ``task_assignment.created_at`` is not one).
"""

from __future__ import annotations

import functools
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

import msgspec

from psa_erp_sync.clients import psa_models

#: A JSON number the models' ``Hours`` validator accepts as one (see module doc).
_Number = int | float
#: A JSON value the models' ``Money`` validator may accept: a number, or a string it parses.
_Money = int | float | str


class _IdName(msgspec.Struct, frozen=True):
    id: int
    name: str | None = None


class _ClientRef(_IdName, frozen=True):
    currency: str | None = None


class _ProjectRef(_IdName, frozen=True):
    code: str | None = None


class _InvoiceRef(msgspec.Struct, frozen=True):
    id: int
    number: str | None = None


class _ExpenseCategoryRef(_IdName, frozen=True):
    unit_price: _Money | None = None
    unit_name: str | None = None


class _ExternalReference(msgspec.Struct, frozen=True):
    id: str | None = None
    group_id: str | None = None
    account_id: str | None = None
    permalink: str | None = None
    service: str | None = None
    service_icon_url: str | None = None


class _UserAssignment(msgspec.Struct, frozen=True):
    id: int
    project: _ProjectRef | None = None
    user: _IdName | None = None
    is_active: bool = True
    is_project_manager: bool = False
    use_default_rates: bool | None = None
    hourly_rate: _Money | None = None
    budget: _Money | None = None
    created_at: str | None = None
    updated_at: str | None = None


class _TaskAssignment(msgspec.Struct, frozen=True):
    id: int
    project: _ProjectRef | None = None
    task: _IdName | None = None
    is_active: bool = True
    billable: bool | None = None
    hourly_rate: _Money | None = None
    budget: _Money | None = None
    created_at: str | None = None
    updated_at: str | None = None


class _TimeEntryJson(msgspec.Struct, frozen=True):
    """:class:`psa_erp_sync.clients.psa_models.TimeEntry`, field by field, as JSON types."""

    id: int
    spent_date: str
    user: _IdName
    project: _ProjectRef
    task: _IdName
    hours: _Number
    is_locked: bool
    is_closed: bool
    is_billed: bool
    billable: bool
    created_at: str
    updated_at: str
    client: _ClientRef | None = None
    user_assignment: _UserAssignment | None = None
    task_assignment: _TaskAssignment | None = None
    hours_without_timer: _Number | None = None
    rounded_hours: _Number | None = None
    notes: str | None = None
    locked_reason: str | None = None
    timer_started_at: str | None = None
    started_time: str | None = None
    ended_time: str | None = None
    is_running: bool = False
    invoice: _InvoiceRef | None = None
    external_reference: _ExternalReference | None = None
    budgeted: bool | None = None
    billable_rate: _Money | None = None
    cost_rate: _Money | None = None


class _ExpenseJson(msgspec.Struct, frozen=True):
    """:class:`psa_erp_sync.clients.psa_models.Expense`, field by field, as JSON types."""

    id: int
    spent_date: str
    user: _IdName
    project: _ProjectRef
    expense_category: _ExpenseCategoryRef
    total_cost: _Money
    billable: bool
    is_closed: bool
    is_locked: bool
    is_billed: bool
    created_at: str
    updated_at: str
    client: _ClientRef | None = None
    user_assignment: _UserAssignment | None = None
    invoice: _InvoiceRef | None = None
    notes: str | None = None
    units: _Number | None = None
    locked_reason: str | None = None


class ParsedTimeEntry(msgspec.Struct, frozen=True):
    """The values of a time entry the rules read, as the model gives them."""

    id: int
    spent_date: date
    user: _IdName
    project: _ProjectRef
    task: _IdName
    hours: Decimal
    billable: bool
    billable_rate: Decimal | None
    is_closed: bool
    notes: str | None
    created_at: datetime
    updated_at: datetime


class ParsedExpense(msgspec.Struct, frozen=True):
    """The values of an expense the rules read, as the model gives them."""

    id: int
    spent_date: date
    user: _IdName
    project: _ProjectRef
    expense_category: _ExpenseCategoryRef
    total_cost: Decimal
    billable: bool
    is_closed: bool
    notes: str | None
    created_at: datetime
    updated_at: datetime


_TIME_ENTRY = msgspec.json.Decoder(_TimeEntryJson)
_EXPENSE = msgspec.json.Decoder(_ExpenseJson)


# A month repeats a few thousand timestamps and amounts (assignments share theirs): each string is
# parsed once. The results are immutable (datetime, Decimal) and depend on the string only.
@functools.lru_cache(maxsize=1 << 16)
def _aware(text: str) -> datetime | None:
    """``psa_models._datetime`` of a string: None where the model refuses it."""
    try:
        return psa_models._datetime(text)
    except (ValueError, OverflowError):
        return None


@functools.lru_cache(maxsize=1 << 12)
def _money_text(text: str) -> Decimal | None:
    """``psa_models._money`` of a string: None where the model refuses it."""
    try:
        return psa_models._money(text)
    except (ValueError, OverflowError):
        return None


#: ``Decimal`` of each JSON number seen (a month repeats a few hours and rates), by type and value:
#: equal non-zero numbers of one type have one text, so one ``Decimal(str(x))``. Zero is not kept
#: (``-0.0`` equals ``0.0`` but is another Decimal). Bounded: emptied when full.
_DECIMAL_OF: dict[tuple[type, int | float], Decimal] = {}
_DECIMAL_OF_MAX = 1 << 16


def _number(value: int | float) -> Decimal:
    """``psa_models._number`` (and ``_money``) of a decoded JSON number, memoised."""
    if not value:
        return psa_models._number(value)
    key = (type(value), value)
    parsed = _DECIMAL_OF.get(key)
    if parsed is None:
        parsed = psa_models._number(value)
        if len(_DECIMAL_OF) >= _DECIMAL_OF_MAX:
            _DECIMAL_OF.clear()
        _DECIMAL_OF[key] = parsed
    return parsed


def _time_ok(value: str | None) -> bool:
    """An optional timestamp the model reads (None: absent)."""
    return value is None or _aware(value) is not None


def _money_ok(value: str | int | float | None) -> bool:
    """An optional ``Money`` the model reads: a number (msgspec decoded it: finite), None, or a
    string it parses."""
    return not isinstance(value, str) or _money_text(value) is not None


def _assignment_ok(a: _UserAssignment | _TaskAssignment | None) -> bool:
    return a is None or (
        _time_ok(a.created_at) and _time_ok(a.updated_at) and _money_ok(a.hourly_rate) and _money_ok(a.budget)
    )


def _dated(text: str, created: str, updated: str) -> tuple[date, datetime, datetime] | None:
    """(spent date, created at, updated at) as the models parse them, or None."""
    try:
        spent_date = psa_models._date(text)
    except (ValueError, OverflowError):
        return None
    created_at, updated_at = _aware(created), _aware(updated)
    if created_at is None or updated_at is None:
        return None
    return spent_date, created_at, updated_at


def _amount(value: str | int | float) -> Decimal:
    """The model's ``Money`` of a decoded value.

    :raises ValueError: a string the model refuses (:func:`decode` then declines the payload)."""
    if not isinstance(value, str):
        return _number(value)
    parsed = _money_text(value)
    if parsed is None:
        raise ValueError("not a decimal the model reads")
    return parsed


def _money(value: str | int | float | None) -> Decimal | None:
    """:func:`_amount` of an optional value (None stays None)."""
    return None if value is None else _amount(value)


def decode(
    kind: Literal["time_entry", "expense_entry"], text: str | bytes
) -> ParsedTimeEntry | ParsedExpense | None:
    """The values the rules read of a staged version, or None: let the model decide (module doc)."""
    try:
        raw = (_TIME_ENTRY if kind == "time_entry" else _EXPENSE).decode(text)
    except msgspec.MsgspecError:
        return None
    try:
        if isinstance(raw, _TimeEntryJson):
            return _time_entry(raw)
        return _expense(raw)
    except (ValueError, OverflowError):  # a value the model's own validator refuses
        return None


def _time_entry(raw: _TimeEntryJson) -> ParsedTimeEntry | None:
    dated = _dated(raw.spent_date, raw.created_at, raw.updated_at)
    if not (
        dated is not None
        and _assignment_ok(raw.user_assignment)
        and _assignment_ok(raw.task_assignment)
        and _time_ok(raw.timer_started_at)
        and _money_ok(raw.cost_rate)
    ):
        return None
    return ParsedTimeEntry(
        raw.id,
        dated[0],
        raw.user,
        raw.project,
        raw.task,
        _number(raw.hours),
        raw.billable,
        _money(raw.billable_rate),
        raw.is_closed,
        raw.notes,
        dated[1],
        dated[2],
    )


def _expense(raw: _ExpenseJson) -> ParsedExpense | None:
    dated = _dated(raw.spent_date, raw.created_at, raw.updated_at)
    if not (
        dated is not None
        and _assignment_ok(raw.user_assignment)
        and _money_ok(raw.expense_category.unit_price)
    ):
        return None
    return ParsedExpense(
        raw.id,
        dated[0],
        raw.user,
        raw.project,
        raw.expense_category,
        _amount(raw.total_cost),
        raw.billable,
        raw.is_closed,
        raw.notes,
        dated[1],
        dated[2],
    )
