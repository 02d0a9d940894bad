"""Boundary validation of Harvest payloads: strict where it matters, tolerant of new fields."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from psa_erp_sync.clients import psa_models


def entry(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 636709355,
        "spent_date": "2017-03-02",
        "user": {"id": 1782959, "name": "A B"},
        "client": {"id": 5735774, "name": "ABC Corp", "currency": "USD"},
        "project": {"id": 14307913, "name": "Marketing Website", "code": "MW"},
        "task": {"id": 8083365, "name": "Graphic Design"},
        "user_assignment": {
            "id": 125068553,
            "is_project_manager": True,
            "is_active": True,
            "hourly_rate": 100.0,
        },
        "task_assignment": {
            "id": 155502709,
            "billable": True,
            "is_active": True,
            "hourly_rate": 100.0,
            "budget": None,
        },
        "hours": 2.11,
        "rounded_hours": 2.25,
        "notes": "n",
        "is_locked": True,
        "locked_reason": "Item Approved and Locked for this Time Period",
        "is_closed": True,
        "is_billed": False,
        "timer_started_at": None,
        "is_running": False,
        "invoice": None,
        "external_reference": None,
        "billable": True,
        "budgeted": True,
        "billable_rate": 150.1,
        "cost_rate": 50.0,
        "created_at": "2017-06-27T15:50:15Z",
        "updated_at": "2017-06-27T16:47:14Z",
        "a_field_harvest_adds_later": {"x": 1},
    }
    base.update(overrides)
    return base


def test_parses_a_harvest_time_entry_with_exact_decimals() -> None:
    te = psa_models.TimeEntry.model_validate(entry())
    assert te.hours == Decimal("2.11") and te.billable_rate == Decimal("150.1")
    assert isinstance(te.cost_rate, Decimal) and te.cost_rate == Decimal("50.0")
    assert te.spent_date == date(2017, 3, 2) and te.updated_at.tzinfo is not None
    assert (
        te.approved and te.task_assignment is not None and te.task_assignment.hourly_rate == Decimal("100.0")
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hours", "2.5"),  # hours must be a JSON number
        ("hours", True),
        ("hours", None),
        ("spent_date", 20170302),
        ("spent_date", "02/03/2017"),
        ("id", "636709355"),
        ("is_closed", "yes"),
        ("billable_rate", "abc"),
        ("billable_rate", float("nan")),
        ("updated_at", "2017-06-27T16:47:14"),  # no zone
        ("project", None),
    ],
)
def test_rejects_garbage(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        psa_models.TimeEntry.model_validate(entry(**{field: value}))
    assert field in str(info.value)


def test_nullable_rate_and_unknown_task_name_are_allowed() -> None:
    te = psa_models.TimeEntry.model_validate(entry(billable_rate=None, task={"id": 999999, "name": None}))
    assert te.billable_rate is None and te.task.name is None


def test_expense_money_and_category_unit_price_string() -> None:
    ex = psa_models.Expense.model_validate(
        {
            "id": 1,
            "spent_date": "2026-10-01",
            "user": {"id": 2, "name": "x"},
            "project": {"id": 3, "name": "p", "code": None},
            "expense_category": {"id": 4, "name": "Mileage", "unit_price": "0.67", "unit_name": "mile"},
            "units": 10,
            "total_cost": 6.7,
            "billable": True,
            "is_closed": False,
            "is_locked": False,
            "is_billed": False,
            "created_at": "2026-10-01T00:00:00Z",
            "updated_at": "2026-10-01T00:00:00+00:00",
        }
    )
    assert ex.total_cost == Decimal("6.7") and ex.expense_category.unit_price == Decimal("0.67")
    assert ex.units == Decimal(10)


def test_project_extensions_and_billing_type() -> None:
    p = psa_models.Project.model_validate(
        {
            "id": 1,
            "name": "P",
            "is_active": True,
            "billing_type": "fixed_fee",
            "fee": 50000.0,
            "currency": "EUR",
        }
    )
    assert p.fee == Decimal("50000.0") and p.billing_type == "fixed_fee" and p.currency == "EUR"
    with pytest.raises(ValidationError):
        psa_models.Project.model_validate({"id": 1, "name": "P", "is_active": True, "billing_type": "barter"})


def test_schedule_and_milestone() -> None:
    s = psa_models.ScheduleEntry.model_validate(
        {
            "id": 1,
            "user": {"id": 2, "name": None},
            "project": {"id": 3, "name": "p", "code": "c"},
            "week_start": "2026-10-05",
            "hours": 32.0,
            "updated_at": "2026-10-01T00:00:00Z",
        }
    )
    assert s.hours == Decimal("32.0")
    m = psa_models.Milestone.model_validate(
        {
            "id": 1,
            "project": {"id": 3},
            "name": "M",
            "amount": 25000.0,
            "status": "completed",
            "completed_at": "2026-10-01T00:00:00Z",
            "updated_at": "2026-10-01T00:00:00Z",
        }
    )
    assert m.amount == Decimal("25000.0")
