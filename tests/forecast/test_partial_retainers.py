"""Retainers with a partial first or last month are computed by the vectorised grid (no longer
one by one through the per-contract rules: at 50k projects x 12 months they were ~1.4 s of the
forecast's compute CPU, docs/performance.md "perf-forecast3"), with the recognition calculation's
figures month by month: every month length (28, 29, 30, 31 days, a leap February), terms starting
and ending mid-month, inside one month, before or after the window, a price of 0 or none."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd  # noqa: TID253  (tests may import pandas at the top)
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psa_erp_sync.forecast import model
from psa_erp_sync.revenue import frames, grid
from psa_erp_sync.revenue.recognition import month_index, recognize

THROUGH = month_index(date(2028, 3, 1))
FIRST = THROUGH - 14

days = st.dates(min_value=date(2026, 6, 1), max_value=date(2029, 6, 30))


def _firm(terms: list[tuple[date, date, int | None]]) -> tuple[pd.DataFrame, dict[str, frames.ContractTerms]]:
    rows, contract_terms = [], {}
    for i, (starts, ends, value) in enumerate(terms):
        ref = f"R{i}"
        rows.append((ref, "Tech", "LE-US1", "USD", "retainer", 1, 0, FIRST, THROUGH, 0))
        contract_terms[ref] = frames.ContractTerms(value, (), starts, ends)
    projects = pd.DataFrame(rows, columns=list(model.PROJECT_COLUMNS)).astype(model.PROJECT_COLUMNS)
    return projects, contract_terms


def _expected(projects: pd.DataFrame, contract_terms: dict[str, frames.ContractTerms]) -> list[list[int]]:
    contracts = frames.contracts(
        projects,
        model.empty_frame(model.ACTUAL_COLUMNS),
        model.empty_frame(model.MILESTONE_COLUMNS),
        {},
        THROUGH,
        contract_terms=contract_terms,
    )
    out = []
    for contract in contracts:
        by_month = {r.period: r.cum_revenue_minor for r in recognize(contract, THROUGH)}
        running, row = 0, []
        for m in range(FIRST, THROUGH + 1):
            running = by_month.get(m, running)
            row.append(running)
        out.append(row)
    return out


def _grid(projects: pd.DataFrame, contract_terms: dict[str, frames.ContractTerms]) -> list[list[int]]:
    cum = grid.cumulative(
        projects,
        model.empty_frame(model.ACTUAL_COLUMNS),
        model.empty_frame(model.MILESTONE_COLUMNS),
        np.zeros(len(projects), dtype=np.int64),
        THROUGH,
        FIRST,
        contract_terms=contract_terms,
    )
    return [[int(v) for v in row] for row in cum]


def test_partial_months_of_every_length(monkeypatch: pytest.MonkeyPatch) -> None:
    terms = [
        (date(2027, 2, 10), date(2028, 2, 14), 1_000_001),  # 28-day Feb, leap Feb 2028
        (date(2027, 1, 31), date(2027, 4, 30), 999_999),  # one day of a 31-day month
        (date(2027, 6, 15), date(2027, 6, 20), 500_000),  # inside one month
        (date(2027, 11, 2), date(2029, 1, 15), 12_345_678),  # ends after the window
        (date(2026, 7, 17), date(2026, 9, 3), 777),  # ends before the window
        (date(2028, 3, 5), date(2028, 8, 31), 600_000),  # starts in the last month
        (date(2028, 5, 5), date(2028, 8, 31), 600_000),  # starts after the window
        (date(2027, 3, 3), date(2027, 9, 9), 0),
        (date(2027, 3, 3), date(2027, 9, 9), None),
        (date(2027, 3, 1), date(2027, 9, 30), 700_000),  # whole months: the closed form
    ]
    projects, contract_terms = _firm(terms)
    expected = _expected(projects, contract_terms)

    def per_contract(*args: object, **kwargs: object) -> object:
        raise AssertionError("a partial-month retainer went through the per-contract rules")

    monkeypatch.setattr(frames, "recognize_all", per_contract)
    assert _grid(projects, contract_terms) == expected
    assert any(0 < v < 1_000_001 for v in expected[0])  # the figures are not all 0 or the price


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(days, days, st.none() | st.integers(0, 10**12)), min_size=1, max_size=6))
def test_partial_retainers_equal_the_recognition_calculation(
    terms: list[tuple[date, date, int | None]],
) -> None:
    terms = [(min(a, b), max(a, b), value) for a, b, value in terms]
    projects, contract_terms = _firm(terms)
    assert _grid(projects, contract_terms) == _expected(projects, contract_terms)
