"""Validation's common case of an expense (``time_expense._CommonExpense``, issue 16): the verdict
it gives must be the one :func:`judge_staged` gives the same text (reason, detail, canonical row
with its keys in the same order, and the row's ``COPY`` tuple value for value, type for type), and
every expense it cannot vouch for must go to :func:`judge_staged`. Compared on boundary, hostile
and generated payloads against :data:`~tests.validation.test_common_time.WIDE`, and through
``validate_run`` with the common case on and off (stored rows and quarantine items)."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psa_erp_sync.config import load_config
from psa_erp_sync.validation import time_expense as validation
from psa_erp_sync.validation.time_expense import PsaReference
from tests.validation.test_common_time import PROJECTS, USERS, WIDE, _exact, same_run_either_way
from tests.validation.test_from_json import FETCHED
from tests.validation.test_hostile import EXPENSE, _raw, hostile_item
from tests.validation.test_rules import AS_OF

COSTS: list[Any] = [
    212.4,
    0,
    0.0,
    _raw("-0.0"),
    -0.01,
    "12.50",
    "-1",
    " 12",
    "1e3",
    1e20,
    10**30,
    0.005,
    1.005,
]
COSTS += [_raw("1e400"), "NaN", True, None, 92233720368547758.07, 922337203685477.58]


def _pair(text: bytes, ref: PsaReference, fetched_at: datetime | None) -> tuple[Any, Any]:
    """(:meth:`_CommonExpense.judge`, :func:`judge_staged`) of ``text``; equal when the first is
    not None, with the row's keys in the same order and its ``COPY`` tuple the contract's."""
    config = load_config()
    common = validation._CommonExpense(ref, config, AS_OF, "psa").judge(text, "h", fetched_at)
    staged = validation.judge_staged(
        "expense_entry", text, "h", ref=ref, config=config, as_of=AS_OF, fetched_at=fetched_at
    )
    if common is not None:
        assert common == staged
        assert common.valid and common.row is not None and staged.row is not None
        assert list(common.row) == list(staged.row)
        row = {**staged.row, "source_read_at": fetched_at}
        contract = validation._built_by_id("expense_entry", [row])[row["source_id"]]
        assert _exact(common.built) == _exact(contract)
    return common, staged


def _cost_id(cost: Any) -> str:
    """A stable test id (``repr`` of a ``msgspec.Raw`` holds its address: xdist's workers differ)."""
    return f"raw:{bytes(cost).decode()}" if isinstance(cost, msgspec.Raw) else repr(cost)


def _ex(**changes: Any) -> dict[str, Any]:
    return {**EXPENSE, **changes}


def test_a_clean_expense_takes_the_common_case() -> None:
    common, staged = _pair(msgspec.json.encode(EXPENSE), WIDE, FETCHED)
    assert common is not None
    assert common.row["amount_minor"] == staged.row["amount_minor"] == 21240


@pytest.mark.parametrize("cost", COSTS, ids=_cost_id)
@pytest.mark.parametrize("fetched_at", [None, FETCHED])
def test_each_cost_gets_the_same_verdict(cost: Any, fetched_at: datetime | None) -> None:
    _pair(msgspec.json.encode(_ex(total_cost=cost)), WIDE, fetched_at)


def test_zero_and_negative_zero_keep_their_own_fingerprints() -> None:
    """One judge for both (the memo): ``0.0`` and ``-0.0`` are equal floats of other texts."""
    judge = validation._CommonExpense(WIDE, load_config(), AS_OF, "psa")
    for cost in (0.0, _raw("-0.0"), 0.0, _raw("-0.0")):
        text = msgspec.json.encode(_ex(total_cost=cost))
        common = judge.judge(text, "h", FETCHED)
        staged = validation.judge_staged(
            "expense_entry", text, "h", ref=WIDE, config=load_config(), as_of=AS_OF
        )
        assert common is not None and common == staged


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_any_payload_gets_the_same_verdict(data: st.DataObject) -> None:
    payload = data.draw(hostile_item(EXPENSE) | st.just(EXPENSE))
    _pair(msgspec.json.encode(payload), WIDE, data.draw(st.sampled_from([None, FETCHED])))


def _month(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` expenses over every reference, cost, date and timestamp case above; each field is a
    clean one 85 % of the time."""
    rnd = random.Random(seed)

    def pick(clean: Any, cases: list[Any]) -> Any:
        return clean if rnd.random() < 0.85 else rnd.choice(cases)

    days = ["2026-11-09", "2026-11-10", "2026-10-31", "1970-01-01"]
    stamps = ["2026-11-09T13:00:01Z", "1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]
    return [
        _ex(
            id=5000 + i,
            user={"id": pick(7, USERS), "name": "u"},
            project={"id": pick(rnd.choice([1, 6]), PROJECTS), "name": "p"},
            expense_category={"id": rnd.choice([3, 4]), "name": "c"},
            total_cost=pick(rnd.choice([212.4, 35, 12.5, "99.90"]), COSTS),
            billable=rnd.random() < 0.8,
            is_closed=rnd.random() < 0.5,
            spent_date=pick(rnd.choice(["2026-11-02", "2026-11-05"]), days),
            created_at=pick("2026-11-02T10:00:00Z", stamps),
            updated_at=pick("2026-11-03T10:00:00Z", stamps),
            notes=rnd.choice([None, "", "n", "é\x1f"]),
        )
        for i in range(n)
    ]


def test_a_generated_month_gets_the_same_verdicts() -> None:
    taken = 0
    for payload in _month(3000, seed=16):
        common, _ = _pair(msgspec.json.encode(payload), WIDE, FETCHED)
        taken += common is not None
    assert 300 < taken < 3000  # both paths were used


def test_a_run_stores_the_same_with_and_without_the_common_case(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    same_run_either_way(pg_dsn, monkeypatch, _month, "expense_entry")


_MONEY_VALUES: list[Any] = [
    None,
    0,
    1.5,
    "0.67",
    "12",
    "-3.10",
    " 1",
    "1e3",
    "1.",
    "+1",
    "NaN",
    "1.5\n",
    "\u0661",
]
_STAMPS: list[Any] = [None, "2026-10-02T17:45:00Z", "2026-10-02T17:45:00+02:00", "2026-02-30T00:00:00Z", "x"]


@pytest.mark.parametrize("unit_price", _MONEY_VALUES)
@pytest.mark.parametrize("total_cost", _MONEY_VALUES[1:5] + _MONEY_VALUES[6:8])
def test_the_light_decoder_holds_where_the_full_one_decodes(unit_price: Any, total_cost: Any) -> None:
    """``staged_json.LIGHT_EXPENSE`` with ``light_expense_holds`` passes an expense exactly when
    the full decoder (msgspec's patterns) decodes it, with the same values; the common case
    declines the others (then :func:`judge_staged` decides, as ever)."""
    from psa_erp_sync.validation import staged_json

    for stamp in _STAMPS:
        for rate in (None, 135.0, "135.00"):
            assignment = {
                "id": 500001,
                "is_active": True,
                "hourly_rate": rate,
                "created_at": stamp,
                "updated_at": stamp,
            }
            payload = _ex(
                total_cost=total_cost,
                expense_category={
                    "id": 700005,
                    "name": "Mileage",
                    "unit_price": unit_price,
                    "unit_name": "mile",
                },
                user_assignment=assignment,
            )
            text = msgspec.json.encode(payload)
            try:
                full = staged_json._EXPENSE.decode(text)
            except msgspec.ValidationError:
                full = None
            light = staged_json.LIGHT_EXPENSE.decode(text)
            holds = staged_json.light_expense_holds(light)
            if rate != "135.00":  # an assignment's money string: declined, though it may hold
                assert holds == (full is not None), (unit_price, total_cost, stamp, rate)
            if holds:
                assert full is not None
                assert msgspec.json.encode(light) == msgspec.json.encode(full)
            common, _ = _pair(text, WIDE, FETCHED)
            if not holds:
                assert common is None
