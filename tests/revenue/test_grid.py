"""The vectorised grid (what the forecast runs over the whole firm) equals the recognition
calculation month by month, for any firm Hypothesis draws: every billing type, estimate
histories, change orders and partial-month retainers (those take the scalar path), T&M with and
without a cap. And the monthly amounts, journaled months included, sum to the cumulative."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd  # noqa: TID253  (tests may import pandas at the top)
from hypothesis import given, settings
from hypothesis import strategies as st

from psa_erp_sync.forecast import model
from psa_erp_sync.revenue import frames, grid
from psa_erp_sync.revenue.recognition import ChangeOrder, month_index, recognize

THROUGH = month_index(date(2026, 11, 1))
FIRST = THROUGH - 6
KINDS = ["time_and_materials", "fixed_fee", "milestone", "retainer"]
money = st.integers(min_value=0, max_value=3_000_000)
months = st.integers(min_value=FIRST - 4, max_value=THROUGH + 1)


@st.composite
def firms(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(1, 5))
    projects, actuals, milestones, etc, estimates, terms = [], [], [], [], {}, {}
    for i in range(n):
        ref, kind = f"P{i}", draw(st.sampled_from(KINDS))
        start = draw(st.integers(FIRST - 6, THROUGH + 1))
        end = start + draw(st.integers(0, 14))
        projects.append((ref, "Tech", "LE-US1", "USD", kind, draw(money), 0, start, end, 0))
        for _ in range(draw(st.integers(0, 6))):
            actuals.append((ref, draw(months), draw(money), draw(money)))
        for _ in range(draw(st.integers(0, 3))):
            status = draw(st.sampled_from(["planned", "completed", "signed_off"]))
            done = draw(months) if status != "planned" else -1
            milestones.append((ref, draw(money), status, draw(months), done))
        etc.append(draw(money))
        if kind == "fixed_fee" and draw(st.booleans()):
            estimates[ref] = draw(st.dictionaries(months, money, max_size=4))
        if draw(st.booleans()):
            orders = tuple(
                ChangeOrder(draw(st.integers(-500_000, 1_000_000)), draw(months))
                for _ in range(draw(st.integers(0, 2)))
            )
            starts = date(2026, 1, 1) if not draw(st.booleans()) else date(2025, 12, draw(st.integers(1, 28)))
            ends = date(2027, draw(st.integers(1, 12)), draw(st.sampled_from([1, 15, 28])))
            terms[ref] = frames.ContractTerms(
                draw(st.none() | money),
                orders,
                starts if kind == "retainer" else None,
                ends if kind == "retainer" else None,
            )
    return {
        "projects": pd.DataFrame(projects, columns=list(model.PROJECT_COLUMNS)).astype(model.PROJECT_COLUMNS),
        "actuals": pd.DataFrame(actuals, columns=list(model.ACTUAL_COLUMNS)).astype(model.ACTUAL_COLUMNS),
        "milestones": pd.DataFrame(milestones, columns=list(model.MILESTONE_COLUMNS)).astype(
            model.MILESTONE_COLUMNS
        ),
        "etc": np.array(etc, dtype=np.int64),
        "estimates": estimates,
        "terms": terms,
    }


@settings(max_examples=150, deadline=None)
@given(firms())
def test_the_grid_equals_the_recognition_calculation(firm: dict[str, object]) -> None:
    projects, etc = firm["projects"], firm["etc"]
    assert isinstance(projects, pd.DataFrame) and isinstance(etc, np.ndarray)
    cum = grid.cumulative(
        projects,
        firm["actuals"],
        firm["milestones"],
        etc,
        THROUGH,
        FIRST,  # type: ignore[arg-type]
        estimates=firm["estimates"],
        contract_terms=firm["terms"],  # type: ignore[arg-type]
    )
    contracts = frames.contracts(
        projects,
        firm["actuals"],
        firm["milestones"],  # type: ignore[arg-type]
        dict(zip(projects["project_ref"], etc.tolist(), strict=True)),
        THROUGH,
        estimates=firm["estimates"],
        contract_terms=firm["terms"],  # type: ignore[arg-type]
    )
    for i, contract in enumerate(contracts):
        by_month = {r.period: r.cum_revenue_minor for r in recognize(contract, THROUGH)}
        expected, running = [], 0
        for m in range(FIRST, THROUGH + 1):
            running = by_month.get(m, running)
            expected.append(running)
        assert cum[i].tolist() == expected, contract.project_ref


@settings(max_examples=100, deadline=None)
@given(
    firms(), st.dictionaries(st.integers(FIRST + 1, THROUGH - 1), st.integers(-100_000, 900_000), max_size=3)
)
def test_monthly_amounts_sum_to_the_cumulative_with_journaled_months(
    firm: dict[str, object], journaled: dict[int, int]
) -> None:
    projects = firm["projects"]
    assert isinstance(projects, pd.DataFrame)
    cum = grid.cumulative(
        projects,
        firm["actuals"],
        firm["milestones"],
        firm["etc"],
        THROUGH,
        FIRST,  # type: ignore[arg-type]
        estimates=firm["estimates"],
        contract_terms=firm["terms"],  # type: ignore[arg-type]
    )
    pi, month, amount = grid.monthly(projects, cum, FIRST, {"P0": journaled})
    for i in range(len(projects)):
        assert int(amount[pi == i].sum()) == int(cum[i, -1] - cum[i, 0])
    shown = dict(zip(month[pi == 0].tolist(), amount[pi == 0].tolist(), strict=True))
    for m, v in journaled.items():  # journaled months are shown as journaled
        assert shown.get(m, 0) == v
