"""``FirmSpec.history_months``: settled months of posted-ready work before the data month (opt-in)."""

from __future__ import annotations

from collections import Counter
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from simulators.firm.generator import (
    EXPENSE_HISTORY_BASE,
    TIME_ENTRY_HISTORY_BASE,
    Firm,
    FirmSpec,
    dirt_report,
    generate_firm,
    iter_expenses,
    iter_time_entries,
    mutations,
    summary,
)

TODAY = date(2026, 12, 6)  # data month November 2026
SMALL = {"consultants": 30, "customers": 12, "projects": 30, "opportunities": 10}


def _rows(stream: Any) -> list[dict[str, Any]]:
    return [row for chunk in stream for row in chunk]


@pytest.fixture(scope="module")
def plain() -> Firm:
    return generate_firm(FirmSpec(today=TODAY, **SMALL))


@pytest.fixture(scope="module")
def history() -> Firm:
    return generate_firm(FirmSpec(today=TODAY, history_months=3, **SMALL))


def test_default_is_off(plain: Firm) -> None:
    assert plain.history_months == []
    assert "history" not in summary(plain)
    assert all(r["id"] < TIME_ENTRY_HISTORY_BASE for r in _rows(iter_time_entries(plain)))
    assert plain.closed_month_start == date(2026, 10, 1)


def test_data_month_unchanged(plain: Firm, history: Firm) -> None:
    """The option adds rows; the data month's rows, dirt and mutations stay the same (only the
    closed-period dirt is dated in the month before the history, the one still closed)."""

    def moved(rows: list[dict[str, Any]], closed: str) -> list[dict[str, Any]]:
        return [dict(r, spent_date="closed") if r["spent_date"].startswith(closed) else r for r in rows]

    month = [r for r in _rows(iter_time_entries(history)) if r["id"] < TIME_ENTRY_HISTORY_BASE]
    assert moved(month, "2026-07") == moved(_rows(iter_time_entries(plain)), "2026-10")
    expenses = [r for r in _rows(iter_expenses(history)) if r["id"] < EXPENSE_HISTORY_BASE]
    assert moved(expenses, "2026-07") == moved(_rows(iter_expenses(plain)), "2026-10")
    assert mutations(history) == mutations(plain)
    assert {k: v for k, v in dirt_report(history).items() if "closed_period" not in k} == {
        k: v for k, v in dirt_report(plain).items() if "closed_period" not in k
    }
    assert history.psa == plain.psa and history.crm == plain.crm


def test_history_rows_are_settled_and_plausible(history: Firm) -> None:
    assert history.history_months == [date(2026, 8, 1), date(2026, 9, 1), date(2026, 10, 1)]
    starts = {p["id"]: p["starts_on"] for p in history.psa["projects"]}
    rows = [r for r in _rows(iter_time_entries(history)) if r["id"] > TIME_ENTRY_HISTORY_BASE]
    expenses = [r for r in _rows(iter_expenses(history)) if r["id"] > EXPENSE_HISTORY_BASE]
    assert rows and expenses
    for row in rows + expenses:
        assert "2026-08-01" <= row["spent_date"] <= "2026-10-31"
        assert row["is_closed"] and not row["is_billed"]
        assert row["spent_date"] >= starts[row["project_id"]]
        assert row["updated_at"] < f"{TODAY.isoformat()}T00:00:00Z"
        # approved in the first days of the month after the one worked
        assert row["updated_at"][:7] > row["spent_date"][:7]
    assert len({r["id"] for r in rows}) == len(rows)
    # every month carries about the same billable value: no month jumps over the one before
    value: Counter[str] = Counter()
    for r in rows:
        if r["billable"]:
            value[r["spent_date"][:7]] += int(Decimal(r["hours"]) * Decimal(r["billable_rate"]) * 100)
    months = [value[m] for m in ("2026-08", "2026-09", "2026-10")]
    assert min(months) > 0 and max(months) / min(months) < 1.3
    counts = summary(history)["history"]
    assert counts["psa.time_entries"] == len(rows) and counts["psa.expenses"] == len(expenses)


def test_history_periods_open_and_closed_dirt_moves(history: Firm) -> None:
    periods = {
        p["start_date"]: p["closed"] for p in history.erp["accounting_periods"] if p["subsidiary"] == "LE-US1"
    }
    assert periods["2026-07-01"] is True
    assert not any(periods[m] for m in ("2026-08-01", "2026-09-01", "2026-10-01", "2026-11-01"))
    assert history.closed_month_start == date(2026, 7, 1)
    # the closed-period dirt is dated in the month before the history, still closed
    july = [r for r in _rows(iter_time_entries(history)) if r["spent_date"].startswith("2026-07")]
    assert july and all(r["id"] < TIME_ENTRY_HISTORY_BASE for r in july)
    assert len(july) == dirt_report(history)["time_entries.closed_period"]


def test_history_months_bounds() -> None:
    with pytest.raises(ValueError, match="history_months"):
        generate_firm(FirmSpec(today=TODAY, history_months=12, **SMALL))
