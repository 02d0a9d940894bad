"""Foreign-currency rules as pure functions: the rate in force on a date, both amounts of a valid
entry (half-even once, minor-unit exponents per currency), and what stays ``CURRENCY_MISMATCH``."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from psa_erp_sync import money
from psa_erp_sync.config import LegalEntity, load_config
from psa_erp_sync.validation.fx import RateBook
from psa_erp_sync.validation.time_expense import ProjectRef, PsaReference, judge_expense, judge_time_entry

AS_OF = datetime(2026, 11, 20, 12, tzinfo=UTC)
RATES = RateBook.from_rows(
    [
        ("USD", "EUR", date(2026, 11, 1), Decimal("0.5"), "erp:currencyrate"),
        ("USD", "EUR", date(2026, 11, 10), Decimal("0.9"), "erp:currencyrate"),
        ("JPY", "EUR", date(2026, 11, 1), Decimal("0.0061"), "erp:currencyrate"),
        ("EUR", "JPY", date(2026, 11, 1), Decimal("163.9344262295"), "erp:currencyrate"),
    ]
)


def _config(currency: str = "EUR") -> Any:
    config = load_config()
    entities = dict(config.legal_entities.legal_entities)
    entities["LE-X"] = LegalEntity(
        country="DE",
        currency=currency,
        timezone="Europe/Berlin",
        close_calendar="GB",
        closed_period_policy="park",
    )
    return config.model_copy(
        update={"legal_entities": config.legal_entities.model_copy(update={"legal_entities": entities})}
    )


def _ref(currency: str | None, rates: RateBook = RATES) -> PsaReference:
    return PsaReference(
        projects={1: ProjectRef(1, True, "LE-X", currency)},
        users={7: True},
        task_assignments=frozenset({(1, 10)}),
        expense_categories=frozenset({3}),
        fx_rates=rates,
    )


ENTRY: dict[str, Any] = {
    "id": 101,
    "spent_date": "2026-11-02",
    "user": {"id": 7, "name": "x"},
    "project": {"id": 1, "name": "p"},
    "task": {"id": 10, "name": "t"},
    "hours": 1,
    "notes": "n",
    "is_locked": True,
    "is_closed": True,
    "is_billed": False,
    "billable": True,
    "billable_rate": 100.01,
    "created_at": "2026-11-02T10:00:00Z",
    "updated_at": "2026-11-03T10:00:00Z",
}
EXPENSE: dict[str, Any] = {
    "id": 5,
    "spent_date": "2026-11-02",
    "user": {"id": 7, "name": "x"},
    "project": {"id": 1, "name": "p"},
    "expense_category": {"id": 3, "name": "Hotel"},
    "total_cost": 100.03,
    "billable": True,
    "is_closed": True,
    "is_locked": False,
    "is_billed": False,
    "created_at": "2026-11-02T10:00:00Z",
    "updated_at": "2026-11-02T10:00:00Z",
}


def _time(currency: str | None, functional: str = "EUR", **changes: Any) -> Any:
    payload = copy.deepcopy(ENTRY) | changes
    return judge_time_entry(payload, "h" * 64, ref=_ref(currency), config=_config(functional), as_of=AS_OF)


def test_the_rate_in_force_is_the_latest_effective_on_or_before_the_date() -> None:
    assert RATES.rate_on("USD", "EUR", date(2026, 10, 31)) is None
    assert RATES.rate_on("USD", "EUR", date(2026, 11, 9)).rate == Decimal("0.5")  # type: ignore[union-attr]
    on_10th = RATES.rate_on("USD", "EUR", date(2026, 11, 10))
    assert on_10th is not None and (on_10th.rate, on_10th.effective_date) == (
        Decimal("0.9"),
        date(2026, 11, 10),
    )
    assert RATES.rate_on("GBP", "EUR", date(2026, 11, 10)) is None


def test_functional_amount_rounds_half_even_once() -> None:
    # 100.01 USD x 0.5 = 50.005 EUR: half-even gives 50.00 (half-up would give 50.01)
    verdict = _time("USD")
    assert verdict.valid, verdict
    row = verdict.row
    assert (row["amount_minor"], row["currency"]) == (10001, "USD")
    assert (row["functional_amount_minor"], row["functional_currency"]) == (5000, "EUR")
    assert (row["fx_rate"], row["fx_rate_date"], row["fx_rate_source"]) == (
        Decimal("0.5"),
        date(2026, 11, 1),
        "erp:currencyrate",
    )
    # 100.03 x 0.5 = 50.015: half-even rounds to the even 50.02
    expense = judge_expense(copy.deepcopy(EXPENSE), "h" * 64, ref=_ref("USD"), config=_config(), as_of=AS_OF)
    assert expense.row is not None and expense.row["functional_amount_minor"] == 5002
    assert money.convert_minor(10001, "USD", Decimal("0.5"), "EUR") == 5000


def test_jpy_has_no_minor_unit_on_either_side() -> None:
    # JPY transaction: 1 h x 15000 JPY = 15000 (exponent 0) -> x 0.0061 = 91.50 EUR = 9150 cents
    verdict = _time("JPY", billable_rate=15000)
    assert verdict.row is not None
    assert (verdict.row["amount_minor"], verdict.row["functional_amount_minor"]) == (15000, 9150)
    # JPY functional: 100.01 EUR x 163.9344262295 = 16395.08... -> 16395 JPY (no decimals)
    verdict = _time("EUR", functional="JPY")
    assert verdict.row is not None
    assert (verdict.row["amount_minor"], verdict.row["functional_amount_minor"]) == (10001, 16395)
    assert verdict.row["functional_currency"] == "JPY"


def test_the_same_currency_is_its_own_functional_amount_at_rate_one() -> None:
    verdict = _time("EUR")
    assert verdict.row is not None
    assert (verdict.row["functional_amount_minor"], verdict.row["fx_rate"], verdict.row["fx_rate_date"]) == (
        10001,
        Decimal(1),
        None,
    )


@pytest.mark.parametrize(
    ("currency", "spent_date", "reason"),
    [
        ("USD", "2026-10-31", "FX_RATE_MISSING"),  # the ERP's first USD rate is from 2026-11-01
        ("GBP", "2026-11-02", "FX_RATE_MISSING"),  # no GBP rate at all
        (None, "2026-11-02", "CURRENCY_MISMATCH"),  # no currency: truly invalid
        ("usd", "2026-11-02", "CURRENCY_MISMATCH"),  # not an ISO 4217 code
    ],
)
def test_without_a_rate_or_a_currency_the_entry_is_quarantined(
    currency: str | None, spent_date: str, reason: str
) -> None:
    verdict = _time(currency, spent_date=spent_date)
    assert verdict.reason_code == reason
    assert verdict.row is None
    if reason == "FX_RATE_MISSING":
        assert verdict.detail == {
            "transaction_currency": currency,
            "functional_currency": "EUR",
            "spent_date": spent_date,
        }
