"""The one-pass decoder of staged JSON (``validation/staged_json.py``) vouches only for payloads the
PSA's model accepts, with the model's values: whatever it returns is what the model gives, and
the verdict of every payload stays the one the per-payload judges give (issue 16, deliverable 2).

Payloads are the shape the PSA simulator stages (every nested object present), with fields at any
depth replaced by hostile values, numbers and timestamps written in unusual ways, and keys given
twice in the text (the later wins in both decoders)."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psa_erp_sync.clients import psa_models
from psa_erp_sync.config import load_config
from psa_erp_sync.validation import staged_json
from psa_erp_sync.validation import time_expense as validation
from tests.validation.test_hostile import JSON, _raw
from tests.validation.test_rules import AS_OF, REF

FETCHED = datetime(2026, 11, 9, 12, tzinfo=UTC)
_ASSIGNMENT_TIMES = {"created_at": "2026-10-01T08:00:00Z", "updated_at": "2026-10-01T08:00:00Z"}
#: A time entry as the PSA simulator stages it (every nested object the model knows).
ENTRY: dict[str, Any] = {
    "id": 101,
    "spent_date": "2026-11-02",
    "user": {"id": 7, "name": "x"},
    "client": {"id": 5, "name": "c", "currency": "USD"},
    "project": {"id": 1, "name": "p", "code": "P1"},
    "task": {"id": 10, "name": "t"},
    "user_assignment": {
        "id": 500118,
        "budget": None,
        "is_active": True,
        "hourly_rate": 175.00,
        "use_default_rates": False,
        "is_project_manager": False,
        **_ASSIGNMENT_TIMES,
    },
    "task_assignment": {
        "id": 600396,
        "budget": None,
        "billable": True,
        "is_active": True,
        "hourly_rate": 170.00,
        **_ASSIGNMENT_TIMES,
    },
    "hours": 7.25,
    "hours_without_timer": 7.25,
    "rounded_hours": 7.25,
    "notes": "n",
    "is_locked": True,
    "locked_reason": None,
    "is_closed": True,
    "is_billed": False,
    "timer_started_at": None,
    "started_time": None,
    "ended_time": None,
    "is_running": False,
    "invoice": None,
    "external_reference": None,
    "billable": True,
    "budgeted": True,
    "billable_rate": 133.33,
    "cost_rate": 60.0,
    "created_at": "2026-11-02T10:00:00Z",
    "updated_at": "2026-11-03T10:00:00Z",
}
EXPENSE: dict[str, Any] = {
    "id": 5,
    "spent_date": "2026-11-02",
    "user": {"id": 7, "name": "x"},
    "client": {"id": 5, "name": "c", "currency": "USD"},
    "project": {"id": 1, "name": "p", "code": "P1"},
    "expense_category": {"id": 3, "name": "Hotel", "unit_name": None, "unit_price": None},
    "user_assignment": dict(ENTRY["user_assignment"]),
    "invoice": None,
    "notes": "n",
    "units": None,
    "receipt": None,
    "total_cost": 212.4,
    "billable": True,
    "is_closed": True,
    "is_locked": False,
    "is_billed": False,
    "locked_reason": None,
    "created_at": "2026-11-02T10:00:00Z",
    "updated_at": "2026-11-02T10:00:00Z",
}
TEMPLATES: dict[validation.Kind, dict[str, Any]] = {"time_entry": ENTRY, "expense_entry": EXPENSE}
MODELS = {"time_entry": psa_models.TimeEntry, "expense_entry": psa_models.Expense}

NUMBER_TEXTS = [
    "1.50",
    "2",
    "2.0",
    "-0",
    "-0.0",
    "1e2",
    "1E-7",
    "0.1e1",
    "7.250000000000000001",
    "1e308",
    "1e400",
    "123456789012345678901234567890",
    "18446744073709551616",
    "0.005",
    "7.3",
    "24.004",
    "-1",
]
NUMBERS = st.sampled_from(NUMBER_TEXTS).map(_raw)
TIMESTAMPS = st.sampled_from(
    [
        "2026-11-03T10:00:00.1234567Z",
        "2026-11-03 10:00:00+01:00",
        "2026-11-03T10:00:00z",
        "20261103T100000Z",
        "2026-11-03T10:00Z",
        "2026-11-03T10:00:00+0100",
        "2026-11-03T10:00:00.000+05:30",
        "2026-12-31T23:59:60Z",
        "2026-11-03T10:00:00",
        "2026-11-03T10:00:00+24:00",
        "2026-11-03T10:00:00-23:59:59.999999",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-23:59",
        "2026-11-03",
        "2026-11-03T24:00:00Z",
        "",
        "2026-02-29T10:00:00Z",
        "2024-02-29T10:00:00Z",
        "2026-11-03T10:00:00Z\n",
        "2026-11-03T10:00:00.123456-00:00",
    ]
)
DATES = st.sampled_from(
    ["20261102", "2026-W45-1", "2026-11-2", "2026-02-30", "2026-11-02T00:00:00Z", "0000-01-01"]
)
MONEY_TEXT = st.sampled_from(
    [" 12.5 ", "12.50", "1e400", "NaN", "abc", "-0.01", "1_000", "\u0661\u0662", "12.5\n", "+1", "007.10"]
)
HOSTILE = JSON | NUMBERS | TIMESTAMPS | DATES | MONEY_TEXT


def _paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, child in value.items():
        out.append((*prefix, key))
        if isinstance(child, dict):
            out.extend(_paths(child, (*prefix, key)))
    return out


@st.composite
def hostile_text(draw: st.DrawFn, kind: validation.Kind) -> bytes:
    """The template with 0-3 fields (any depth) replaced, removed or given twice."""
    payload = copy.deepcopy(TEMPLATES[kind])
    for path in draw(st.lists(st.sampled_from(_paths(TEMPLATES[kind])), max_size=3, unique=True)):
        parent = payload
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        if draw(st.integers(0, 3)) == 0:
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(HOSTILE)
    text = msgspec.json.encode(payload)
    if draw(st.booleans()):  # a key twice: first or last occurrence hostile
        key = draw(st.sampled_from(sorted(TEMPLATES[kind])))
        pair = msgspec.json.encode(key) + b":" + msgspec.json.encode(draw(HOSTILE))
        text = b"{" + pair + b"," + text[1:] if draw(st.booleans()) else text[:-1] + b"," + pair + b"}"
    return text


def _same(a: Any, b: Any) -> bool:
    """Equal, and the same text where the text is used (Decimal exponent, offset of a timestamp)."""
    if isinstance(a, (Decimal, datetime)):
        return type(a) is type(b) and str(a) == str(b) and a == b
    return bool(a == b and type(a) is type(b))


def _check(kind: validation.Kind, text: bytes, fetched_at: datetime | None) -> bool:
    """Asserts what :func:`staged_json.decode` promises; True when it vouched for the payload."""
    parsed = staged_json.decode(kind, text)
    config = load_config()
    judge = validation.judge_time_entry if kind == "time_entry" else validation.judge_expense
    old = judge(validation._json_loads(text), "h", ref=REF, config=config, as_of=AS_OF, fetched_at=fetched_at)
    new = validation.judge_staged(kind, text, "h", ref=REF, config=config, as_of=AS_OF, fetched_at=fetched_at)
    assert new == old, text
    if parsed is None:
        return False
    # the model accepts it, from the text and from the decoded payload, with the same values
    for model in (
        MODELS[kind].model_validate_json(text),
        MODELS[kind].model_validate(validation._json_loads(text)),
    ):
        for name in type(parsed).__struct_fields__:
            value, expected = getattr(parsed, name), getattr(model, name)
            if hasattr(value, "__struct_fields__"):  # a nested reference: the rules read its id
                assert _same(value.id, expected.id), (name, text)
            else:
                assert _same(value, expected), (name, value, expected, text)
    return True


@pytest.mark.parametrize("kind", ["time_entry", "expense_entry"])
def test_the_staged_shape_takes_the_one_pass_path(kind: validation.Kind) -> None:
    """What the PSA stages is decoded by the fast path (else it would be no faster)."""
    assert _check(kind, msgspec.json.encode(TEMPLATES[kind]), FETCHED)


@pytest.mark.parametrize("kind", ["time_entry", "expense_entry"])
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_what_the_decoder_vouches_for_is_what_the_model_gives(
    kind: validation.Kind, data: st.DataObject
) -> None:
    text = data.draw(hostile_text(kind))
    _check(kind, text, data.draw(st.sampled_from([None, FETCHED])))


@pytest.mark.parametrize(
    "changes",
    [
        {"billable_rate": "12.50"},  # a decimal string: the model reads it; the decoder declines
        {"hours": True},
        {"timer_started_at": "2026-11-03T10:00:00"},  # no zone: the model refuses
        {"task_assignment": dict(ENTRY["task_assignment"], created_at="not a time")},
        {"user_assignment": dict(ENTRY["user_assignment"], updated_at="2026-11-03T10:00:00")},
        {"spent_date": "20261102"},  # ISO basic: the model reads it (Python 3.11)
        {"updated_at": "2026-11-03T10:00:00.1234567Z"},
        {"user": {"id": 2**64, "name": "u"}},
        {"id": _raw("1" + "0" * 30)},
        {"billable_rate": " 12.50 "},  # a decimal string: the model's Money reads it
        {"billable_rate": "NaN"},
        {"cost_rate": "abc"},  # not read by the rules, refused by the model all the same
        {"task_assignment": dict(ENTRY["task_assignment"], budget="1e400")},
        {"user_assignment": dict(ENTRY["user_assignment"], hourly_rate="Infinity")},
    ],
)
def test_unusual_fields_get_the_verdict_they_always_had(changes: dict[str, Any]) -> None:
    text = msgspec.json.encode({**ENTRY, **changes})
    _check("time_entry", text, FETCHED)


@pytest.mark.parametrize("number", NUMBER_TEXTS)
@pytest.mark.parametrize(
    ("kind", "field"),
    [("time_entry", "hours"), ("time_entry", "billable_rate"), ("expense_entry", "total_cost")],
)
def test_numbers_keep_the_text_the_model_gives_them(kind: validation.Kind, field: str, number: str) -> None:
    """Hours and amounts are ``Decimal(str(the JSON number))``, as in the model: the fingerprint
    hashes that text, so ``2`` and ``2.0`` must stay apart."""
    text = msgspec.json.encode({**TEMPLATES[kind], field: _raw(number)})
    _check(kind, text, FETCHED)


@pytest.mark.parametrize("unit_price", ["12.50", " 1_000 ", "abc", "-Infinity", None, _raw("3.10")])
def test_an_expense_category_unit_price_string_is_read_as_the_model_reads_it(unit_price: Any) -> None:
    category = {"id": 3, "name": "Hotel", "unit_name": "night", "unit_price": unit_price}
    _check("expense_entry", msgspec.json.encode({**EXPENSE, "expense_category": category}), FETCHED)


# --- checks made by msgspec's decoder (perf-validation6): patterns no laxer than the model --------

# ASCII digits and others Unicode calls digits (Arabic-Indic 3, fullwidth 5, mathematical bold 9)
_DIGIT = st.sampled_from([*"0123456789", "\u0663", "\uff15", "\U0001d7d7"])
_TS_PART = st.sampled_from(
    ["", "T", "t", " ", "Z", "z", "+", "-", ":", ".", "\n", "24", "60", "00", "29", "30", "31", "02", "13"]
)
_TIMESTAMP_LIKE = st.one_of(
    st.builds(
        lambda y, mo, d, h, mi, s, frac, zone: (
            f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{zone}"
        ),
        st.integers(0, 9999),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 61),
        st.integers(0, 61),
        st.sampled_from(["", ".1", ".123456", ".1234567", ".", ".\u0663"]),
        st.sampled_from(["Z", "z", "+00:00", "-00:00", "+23:59", "+24:00", "-05:30", "+0530", "", "Z\n"]),
    ),
    st.lists(st.one_of(_DIGIT, _TS_PART), max_size=30).map("".join),
    TIMESTAMPS,
)
_MONEY_LIKE = st.one_of(
    st.lists(
        st.one_of(_DIGIT, st.sampled_from([*"+-.eE_ \n\t", "NaN", "Infinity", "sNaN"])), max_size=12
    ).map("".join),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    MONEY_TEXT,
)


def _decodes(type_: Any, value: str) -> bool:
    try:
        msgspec.json.decode(msgspec.json.encode(value), type=type_)
    except msgspec.ValidationError:
        return False
    return True


@settings(max_examples=2000, deadline=None)
@given(text=_TIMESTAMP_LIKE)
def test_a_timestamp_the_decoder_lets_through_is_one_the_model_reads(text: str) -> None:
    """msgspec checks the timestamps the rules do not read (``TIMESTAMP_PATTERN``): whatever it lets
    through, the model's own function parses with a zone (a leap second, 24:00, February 29 of a
    non-leap year, other digits, a final newline: declined, and the model decides)."""
    if _decodes(staged_json._Timestamp, text):
        assert psa_models._datetime(text).tzinfo is not None


@settings(max_examples=2000, deadline=None)
@given(text=_MONEY_LIKE)
def test_a_money_string_the_decoder_lets_through_is_the_decimal_the_model_reads(text: str) -> None:
    if _decodes(staged_json._Money, text):
        assert staged_json._amount(text) == psa_models._money(text)
        assert str(staged_json._amount(text)) == str(psa_models._money(text))


@settings(max_examples=1000, deadline=None)
@given(text=st.one_of(_TIMESTAMP_LIKE.map(lambda t: t[:10]), DATES, st.dates().map(str)))
def test_a_date_the_decoder_reads_is_the_model_s(text: str) -> None:
    try:
        decoded = msgspec.json.decode(msgspec.json.encode(text), type=date)
    except msgspec.ValidationError:
        return
    assert decoded == psa_models._date(text)


@pytest.mark.parametrize(
    "changes",
    [
        {"task_assignment": dict(ENTRY["task_assignment"], created_at="2026-02-29T10:00:00Z")},
        {"user_assignment": dict(ENTRY["user_assignment"], updated_at="2026-12-31T23:59:60Z")},
        {"timer_started_at": "2026-11-03T24:00:00Z"},
        {"timer_started_at": "2026-11-03T10:00:00Z\n"},
        {"cost_rate": "1e2"},
        {"cost_rate": " 12.50"},
        {"task_assignment": dict(ENTRY["task_assignment"], hourly_rate="\u0661\u0662")},
        {"billable_rate": "1_000"},
        {"id": 0},
        {"task": {"id": 2**63, "name": "t"}},
        {"spent_date": "2026-02-29"},
    ],
)
def test_checks_of_values_the_rules_do_not_read_are_made_by_the_decoder(changes: dict[str, Any]) -> None:
    """The decoder itself refuses these (no Python check after it), and the verdict stays the one
    the per-payload judge gives (the model decides them)."""
    text = msgspec.json.encode({**ENTRY, **changes})
    with pytest.raises(msgspec.ValidationError):
        staged_json._TIME_ENTRY.decode(text)
    assert not _check("time_entry", text, FETCHED)


@settings(max_examples=500, deadline=None)
@given(
    parts=st.tuples(
        st.integers(),
        st.dates(),
        st.integers(),
        st.integers(),
        st.decimals(allow_nan=False),
        st.text(),
    )
)
def test_the_entry_fingerprint_is_the_fingerprint_of_its_parts(parts: tuple[Any, ...]) -> None:
    assert validation._fingerprint6(*parts) == validation.fingerprint(*parts)
