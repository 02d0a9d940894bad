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
  may be a string, as in the models: msgspec lets through only a plain decimal string
  (:data:`MONEY_TEXT_PATTERN`, which the models' validator surely reads), parsed by that
  validator; any other string declines the payload.
- Checks the model makes on values the rules do not read are msgspec's: a timestamp must match
  :data:`TIMESTAMP_PATTERN` (a subset of what ``datetime.fromisoformat`` parses with a zone), an
  amount the money pattern. The screen's id range (1 .. 2**63 - 1) is msgspec's too, for the
  record's id and its screened references: an id out of range declines the payload and the
  model's path screens it. ``spent_date`` is msgspec's RFC 3339 ``date`` (``YYYY-MM-DD``, a real
  day: a subset of ``date.fromisoformat``; any other form declines).
- The two timestamps the rules read are decoded as strings and parsed by the models' own function
  (``datetime.fromisoformat`` with a zone required); any that does not parse, or has no zone,
  declines the payload.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from psa_erp_sync.clients import psa_models

#: A JSON number the models' ``Hours`` validator accepts as one (see module doc).
_Number = int | float
#: A decimal string the models' ``Money`` validator surely reads as the finite ``Decimal`` of its
#: text (ASCII digits, an optional minus and fraction; ``\Z``: ``$`` would pass a final newline).
#: Any other string (spaces, ``+``, exponents, ``_``, other digits, ``NaN``) declines the payload:
#: the model decides it (module doc). Checked by msgspec's decoder, not in Python.
MONEY_TEXT_PATTERN = r"^-?[0-9]+(?:\.[0-9]+)?\Z"
#: A JSON value the models' ``Money`` validator reads: a number, or a string of the pattern above.
_Money = int | float | Annotated[str, msgspec.Meta(pattern=MONEY_TEXT_PATTERN)]
_DAY_OF_MONTH = (
    r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
#: An RFC 3339 timestamp with a zone that ``datetime.fromisoformat`` surely parses (a real day of
#: a year 0001-9999, February at most the 28th, hours 00-23, no leap second, at most 6 fraction
#: digits, an offset under 24 h). A timestamp the rules do not read only has to parse (the model
#: refuses the payload otherwise): msgspec checks this pattern; any other text declines the
#: payload and the model decides.
TIMESTAMP_PATTERN = (
    r"^(?!0000)[0-9]{4}-" + _DAY_OF_MONTH + r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])\Z"
)
_Timestamp = Annotated[str, msgspec.Meta(pattern=TIMESTAMP_PATTERN)]
#: An id the screen passes (1 .. 2**63 - 1): any other declines the payload, and the model's path
#: screens it (``ID_OUT_OF_RANGE``) as before.
_ScreenedId = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]


class _IdName(msgspec.Struct, frozen=True, gc=False):
    id: int
    name: str | None = None


class _Screened(_IdName, frozen=True, gc=False):
    """A reference whose id the screen reads (the entry's user, task)."""

    id: _ScreenedId


class _ClientRef(_IdName, frozen=True, gc=False):
    currency: str | None = None


class _ProjectRef(_IdName, frozen=True, gc=False):
    code: str | None = None


class _ScreenedProject(_ProjectRef, frozen=True, gc=False):
    id: _ScreenedId


class _InvoiceRef(msgspec.Struct, frozen=True, gc=False):
    id: int
    number: str | None = None


class _ExpenseCategoryRef(_IdName, frozen=True, gc=False):
    unit_price: _Money | None = None
    unit_name: str | None = None


class _ScreenedCategory(_ExpenseCategoryRef, frozen=True, gc=False):
    id: _ScreenedId


class _ExternalReference(msgspec.Struct, frozen=True, gc=False):
    id: str | None = None
    group_id: str | None = None
    account_id: str | None = None
    permalink: str | None = None
    service: str | None = None
    service_icon_url: str | None = None


class _UserAssignment(msgspec.Struct, frozen=True, gc=False):
    id: int
    project: _ProjectRef | None = None
    user: _IdName | None = None
    is_active: bool = True
    is_project_manager: bool = False
    use_default_rates: bool | None = None
    hourly_rate: _Money | None = None
    budget: _Money | None = None
    created_at: _Timestamp | None = None
    updated_at: _Timestamp | None = None


class _TaskAssignment(msgspec.Struct, frozen=True, gc=False):
    id: int
    project: _ProjectRef | None = None
    task: _IdName | None = None
    is_active: bool = True
    billable: bool | None = None
    hourly_rate: _Money | None = None
    budget: _Money | None = None
    created_at: _Timestamp | None = None
    updated_at: _Timestamp | None = None


class _TimeEntryJson(msgspec.Struct, frozen=True, gc=False):
    """:class:`psa_erp_sync.clients.psa_models.TimeEntry`, field by field, as JSON types."""

    id: _ScreenedId
    spent_date: date
    user: _Screened
    project: _ScreenedProject
    task: _Screened
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
    timer_started_at: _Timestamp | None = None
    started_time: str | None = None
    ended_time: str | None = None
    is_running: bool = False
    invoice: _InvoiceRef | None = None
    external_reference: _ExternalReference | None = None
    budgeted: bool | None = None
    billable_rate: _Money | None = None
    cost_rate: _Money | None = None


class _ExpenseJson(msgspec.Struct, frozen=True, gc=False):
    """:class:`psa_erp_sync.clients.psa_models.Expense`, field by field, as JSON types."""

    id: _ScreenedId
    spent_date: date
    user: _Screened
    project: _ScreenedProject
    expense_category: _ScreenedCategory
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


class ParsedTimeEntry(msgspec.Struct, frozen=True, gc=False):
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


class ParsedExpense(msgspec.Struct, frozen=True, gc=False):
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


# The common case's decoder (``_CommonTime`` in :mod:`psa_erp_sync.validation.time_expense`):
# :class:`_TimeEntryJson` with the pattern checks left to Python. msgspec runs a field's pattern
# through ``re.search`` on every value; a month repeats a few thousand assignment timestamps, so
# :func:`light_patterns_hold` checks each distinct one once (~3 us of a ~6 us decode). The structs
# are derived from the full ones field by field; only these fields' types are laxer, and a payload
# whose deferred values do not hold is declined (then the full decoder and the model judge it).
_Unchecked = int | float | str
#: The laxer type of each deferred field, by struct.
_DEFERRED: dict[type, dict[str, object]] = {
    _UserAssignment: {
        "hourly_rate": _Unchecked | None,
        "budget": _Unchecked | None,
        "created_at": str | None,
        "updated_at": str | None,
    },
    _TaskAssignment: {
        "hourly_rate": _Unchecked | None,
        "budget": _Unchecked | None,
        "created_at": str | None,
        "updated_at": str | None,
    },
}


def _laxer(struct: type[msgspec.Struct], types: dict[str, object]) -> type[msgspec.Struct]:
    """``struct`` with the fields in ``types`` of that type, every other field as it is."""
    fields = [
        (f.name, types.get(f.name, f.type)) if f.required else (f.name, types.get(f.name, f.type), f.default)
        for f in msgspec.structs.fields(struct)
    ]
    return msgspec.defstruct("_Light" + struct.__name__, fields, frozen=True, gc=False)


_LIGHT_USER_ASSIGNMENT = _laxer(_UserAssignment, _DEFERRED[_UserAssignment])
_LIGHT_TASK_ASSIGNMENT = _laxer(_TaskAssignment, _DEFERRED[_TaskAssignment])
#: The fields of :class:`_TimeEntryJson` whose check :func:`light_patterns_hold` makes.
_TIME_ENTRY_DEFERRED: dict[str, object] = {
    "user_assignment": _LIGHT_USER_ASSIGNMENT | None,
    "task_assignment": _LIGHT_TASK_ASSIGNMENT | None,
    "timer_started_at": str | None,
    "billable_rate": _Unchecked | None,
    "cost_rate": _Unchecked | None,
}
LIGHT_TIME_ENTRY: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    _laxer(_TimeEntryJson, _TIME_ENTRY_DEFERRED)
)
#: The fields of :class:`_ExpenseJson` whose check :func:`light_expense_holds` makes (its user
#: assignment's timestamps, as a time entry's; its money values, declined when a string).
_EXPENSE_DEFERRED: dict[str, object] = {
    "user_assignment": _LIGHT_USER_ASSIGNMENT | None,
    "expense_category": _laxer(_ScreenedCategory, {"unit_price": _Unchecked | None}),
    "total_cost": _Unchecked,
}
#: The common case's decoder of an expense (``_CommonExpense``): :class:`_ExpenseJson` with the
#: pattern checks left to :func:`light_expense_holds`, as :data:`LIGHT_TIME_ENTRY`.
LIGHT_EXPENSE: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_laxer(_ExpenseJson, _EXPENSE_DEFERRED))
_TIMESTAMP_MATCH = re.compile(TIMESTAMP_PATTERN).search
#: The bound of this module's memo tables (:data:`_GOOD_TIMESTAMPS`, :data:`_DECIMAL_OF`).
_MEMO_MAX = 1 << 16
#: Timestamps known to match :data:`TIMESTAMP_PATTERN` (bounded: emptied when full).
_GOOD_TIMESTAMPS: set[str] = set()


def _matches_once(text: str, match: Callable[[str], object], known: set[str]) -> bool:
    """Whether ``match`` finds ``text`` (a miss of the memo ``known``, which it then joins;
    emptied when full, bounded by :data:`_MEMO_MAX`)."""
    if match(text) is None:
        return False
    if len(known) >= _MEMO_MAX:
        known.clear()
    known.add(text)
    return True


def _timestamp_holds(text: str | None) -> bool:
    """Whether msgspec's pattern check of a ``_Timestamp | None`` field passes ``text``."""
    if text is None or text in _GOOD_TIMESTAMPS:
        return True
    return _matches_once(text, _TIMESTAMP_MATCH, _GOOD_TIMESTAMPS)


def _assignment_holds(assignment: Any) -> bool:
    """The deferred checks of a light assignment: its timestamps match, no money as a string."""
    return assignment is None or (
        type(assignment.hourly_rate) is not str
        and type(assignment.budget) is not str
        and _timestamp_holds(assignment.created_at)
        and _timestamp_holds(assignment.updated_at)
    )


def light_patterns_hold(raw: Any) -> bool:
    """Whether :data:`LIGHT_TIME_ENTRY`'s ``raw`` is what :data:`_TIME_ENTRY` decodes: its
    deferred timestamps match the pattern, and none of its money values is a string (a money
    string is declined rather than checked: the full path reads it)."""
    return (
        type(raw.billable_rate) is not str
        and type(raw.cost_rate) is not str
        and _timestamp_holds(raw.timer_started_at)
        and _assignment_holds(raw.user_assignment)
        and _assignment_holds(raw.task_assignment)
    )


_MONEY_MATCH = re.compile(MONEY_TEXT_PATTERN).search
#: Money strings known to match :data:`MONEY_TEXT_PATTERN` (bounded: emptied when full).
_GOOD_MONEY: set[str] = set()


def _money_holds(value: object) -> bool:
    """Whether msgspec's check of a ``_Money`` field passes ``value`` (a number or None, or a
    string of the pattern), given a value the laxer ``_Unchecked`` type let through."""
    if type(value) is not str or value in _GOOD_MONEY:
        return True
    return _matches_once(value, _MONEY_MATCH, _GOOD_MONEY)


def light_expense_holds(raw: Any) -> bool:
    """Whether :data:`LIGHT_EXPENSE`'s ``raw`` is what :data:`_EXPENSE` decodes: its money values
    and its user assignment's timestamps match their patterns; its assignment's money values are
    not strings (declined rather than checked, as :func:`light_patterns_hold`)."""
    return (
        _money_holds(raw.total_cost)
        and _money_holds(raw.expense_category.unit_price)
        and _assignment_holds(raw.user_assignment)
    )


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


def _number(value: int | float) -> Decimal:
    """``psa_models._number`` (and ``_money``) of a decoded JSON number, memoised."""
    if not value:
        return psa_models._number(value)
    key = (type(value), value)
    parsed = _DECIMAL_OF.get(key)
    if parsed is None:
        parsed = psa_models._number(value)
        if len(_DECIMAL_OF) >= _MEMO_MAX:
            _DECIMAL_OF.clear()
        _DECIMAL_OF[key] = parsed
    return parsed


def _amount(value: str | int | float) -> Decimal:
    """The model's ``Money`` of a decoded value.

    :raises ValueError: a string the model refuses (:func:`decode` then declines the payload)."""
    if not isinstance(value, str):
        return _number(value)
    parsed = _money_text(value)
    if parsed is None:
        raise ValueError("not a decimal the model reads")
    return parsed


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
    # Every other field was checked by the decoder (its types and patterns): only the two
    # timestamps the rules read are parsed here (their values are the model's).
    created_at, updated_at = _aware(raw.created_at), _aware(raw.updated_at)
    if created_at is None or updated_at is None:
        return None
    rate = raw.billable_rate
    return ParsedTimeEntry(
        raw.id,
        raw.spent_date,
        raw.user,
        raw.project,
        raw.task,
        _number(raw.hours),
        raw.billable,
        None if rate is None else _amount(rate),
        raw.is_closed,
        raw.notes,
        created_at,
        updated_at,
    )


def _expense(raw: _ExpenseJson) -> ParsedExpense | None:
    created_at, updated_at = _aware(raw.created_at), _aware(raw.updated_at)
    if created_at is None or updated_at is None:
        return None
    return ParsedExpense(
        raw.id,
        raw.spent_date,
        raw.user,
        raw.project,
        raw.expense_category,
        _amount(raw.total_cost),
        raw.billable,
        raw.is_closed,
        raw.notes,
        created_at,
        updated_at,
    )
