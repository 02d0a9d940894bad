"""Delta journals against what was already posted, the closed-period policy, and Hypothesis
properties of the calculation: cumulative recognized never exceeds the price, every journal
balances, a recompute of unchanged inputs plans nothing. Pure units: no database."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psa_erp_sync.config import load_config
from psa_erp_sync.posting.periods import PeriodBook
from psa_erp_sync.revenue import journals
from psa_erp_sync.revenue.recognition import (
    ChangeOrder,
    ContractInputs,
    Milestone,
    month_end,
    month_index,
    month_start,
    recognize,
    recognize_period,
)

ACCOUNTS = load_config().legal_entities.revenue_accounts.by_role()
SEP, OCT, NOV = month_index(date(2026, 9, 1)), month_index(date(2026, 10, 1)), month_index(date(2026, 11, 1))


def _contract(cost: dict[int, int], estimate: dict[int, int]) -> ContractInputs:
    return ContractInputs(
        "FF1", "LE-US1", "USD", "fixed_fee", 1_000_000, cost_minor=cost, estimated_total_cost_minor=estimate
    )


def _target(contract: ContractInputs, period: int) -> journals.Journal:
    prev, cur = recognize_period(contract, period)
    assert cur is not None
    return journals.journal_for(prev, cur, ACCOUNTS)


def _book(closed: set[int]) -> PeriodBook:
    rows = []
    for entity in ("LE-US1", "LE-UK1"):
        for m in (SEP, OCT, NOV):
            rows.append(
                {
                    "externalid": f"{entity}-{m}",
                    "subsidiary": entity,
                    "startdate": month_start(m),
                    "enddate": month_end(m),
                    "closed": "T" if m in closed else "F",
                }
            )
    return PeriodBook.from_rows(rows)


def test_recompute_with_no_change_plans_no_journal() -> None:
    target = _target(_contract({SEP: 200_000}, {SEP: 800_000}), SEP)
    assert journals.delta(target, target.lines, ACCOUNTS) is None


def test_a_late_cost_plans_only_the_difference() -> None:
    posted = _target(_contract({SEP: 200_000}, {SEP: 800_000}), SEP).lines  # 250,000 recognized
    target = _target(_contract({SEP: 240_000}, {SEP: 800_000}), SEP)  # 300,000 now
    delta = journals.delta(target, posted, ACCOUNTS)
    assert delta is not None
    assert {(x.role, x.debit_minor, x.credit_minor) for x in delta.lines} == {
        ("contract_asset", 50_000, 0),
        ("revenue", 0, 50_000),
    }
    # Once the delta is posted too, the period is settled.
    assert journals.delta(target, (*posted, *delta.lines), ACCOUNTS) is None


def test_an_unbalanced_ledger_is_refused() -> None:
    target = _target(_contract({SEP: 200_000}, {SEP: 800_000}), SEP)
    with pytest.raises(journals.UnbalancedJournal):
        journals.delta(target, target.lines[:1], ACCOUNTS)


def test_closed_period_delta_goes_to_the_first_open_period_or_is_parked() -> None:
    book = _book(closed={SEP})
    posted = _target(_contract({SEP: 200_000}, {SEP: 800_000}), SEP).lines
    delta = journals.delta(_target(_contract({SEP: 240_000}, {SEP: 800_000}), SEP), posted, ACCOUNTS)
    assert delta is not None
    moved = journals.place(delta, book, "post_to_first_open")
    assert (moved.outcome, moved.posting_period, moved.recognition_period) == (
        "moved",
        f"LE-US1-{OCT}",
        f"LE-US1-{SEP}",
    )
    parked = journals.place(delta, book, "park")
    assert (parked.outcome, parked.posting_period, parked.reason) == ("park", None, "PERIOD_CLOSED")
    open_ = journals.place(delta, _book(closed=set()), "park")
    assert (open_.outcome, open_.posting_period) == ("post", f"LE-US1-{SEP}")


# --- properties ----------------------------------------------------------------------------------

MONTHS = st.integers(min_value=0, max_value=5)
amounts = st.integers(min_value=0, max_value=5_000_000)


@st.composite
def fixed_fee_histories(draw: st.DrawFn) -> ContractInputs:
    n = draw(st.integers(min_value=1, max_value=6))
    cost = {SEP + k: draw(amounts) for k in range(n)}
    estimate = {SEP + k: draw(amounts) for k in draw(st.sets(st.integers(0, n - 1)))}
    orders = tuple(
        ChangeOrder(draw(st.integers(-500_000, 2_000_000)), SEP + draw(MONTHS))
        for _ in range(draw(st.integers(0, 2)))
    )
    billed = {SEP + k: draw(amounts) for k in draw(st.sets(st.integers(0, n - 1)))}
    return ContractInputs(
        "FF",
        "LE-US1",
        "USD",
        "fixed_fee",
        draw(st.integers(0, 5_000_000)),
        change_orders=orders,
        cost_minor=cost,
        estimated_total_cost_minor=estimate,
        billed_minor=billed,
    )


@st.composite
def any_contract(draw: st.DrawFn) -> ContractInputs:
    kind = draw(st.sampled_from(["fixed_fee", "time_and_materials", "milestone", "retainer"]))
    if kind == "fixed_fee":
        return draw(fixed_fee_histories())
    value = draw(st.integers(0, 5_000_000))
    if kind == "time_and_materials":
        delivered = draw(st.dictionaries(st.integers(SEP, SEP + 5), amounts, max_size=6))
        return ContractInputs("TM", "LE-US1", "USD", kind, value, delivered_minor=delivered)
    if kind == "milestone":
        ms = tuple(
            Milestone(str(i), draw(amounts), draw(st.none() | st.integers(SEP, SEP + 5)))
            for i in range(draw(MONTHS))
        )
        return ContractInputs("MS", "LE-US1", "USD", kind, value, milestones=ms)
    start = date(2026, 9, draw(st.integers(1, 28)))
    end = date(2027, draw(st.integers(1, 12)), draw(st.integers(1, 28)))
    return ContractInputs("R", "LE-US1", "USD", kind, value, retainer_start=start, retainer_end=end)


@settings(max_examples=200, deadline=None)
@given(any_contract())
def test_cumulative_recognized_never_exceeds_the_price_and_journals_balance(contract: ContractInputs) -> None:
    rows = recognize(contract, SEP + 5)
    previous = None
    for row in rows:
        price = contract.price_at(row.period)
        assert price is not None
        assert 0 <= row.cum_revenue_minor <= price
        assert row.contract_asset_minor == 0 or row.contract_liability_minor == 0
        journal = journals.journal_for(previous, row, ACCOUNTS)
        assert journal.debits == journal.credits
        assert all((x.debit_minor > 0) != (x.credit_minor > 0) for x in journal.lines)
        previous = row
    # Totals tie: the periods sum to the cumulative exactly.
    if rows:
        assert sum(r.period_revenue_minor for r in rows) == rows[-1].cum_revenue_minor


@settings(max_examples=100, deadline=None)
@given(fixed_fee_histories(), fixed_fee_histories())
def test_recompute_is_idempotent_and_deltas_balance(before: ContractInputs, after: ContractInputs) -> None:
    """Post the journal of ``before``, then recompute with other cost updates: the delta balances,
    posting it settles the period, and a recompute of the same inputs plans nothing."""
    period = SEP
    posted = _target(before, period).lines
    target = _target(after, period)
    delta = journals.delta(target, posted, ACCOUNTS)
    if delta is not None:
        assert delta.debits == delta.credits
        posted = (*posted, *delta.lines)
    assert journals.delta(target, posted, ACCOUNTS) is None
    assert journals.delta(_target(after, period), posted, ACCOUNTS) is None
