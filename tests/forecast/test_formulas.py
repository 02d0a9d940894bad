"""The forecast formulas against hand-computed cases: cost-to-cost with cumulative catch-up, a
loss contract, T&M burn capped by the remaining price, milestones, retainers, weighted pipeline,
scenarios, FX and the capacity check. Pure units: no database."""

from __future__ import annotations

from datetime import date

import pandas as pd  # noqa: TID253  (tests may import pandas at the top)
import pytest

from psa_erp_sync.forecast import model
from psa_erp_sync.forecast.settings import parse

SETTINGS = parse(
    """
version: 1
reporting_currency: USD
horizon_months: 3
actual_months: 2
fx_rates: {USD: "1", GBP: "1.25", JPY: "0.0067"}
realization: {default: "0.90", practices: {Strategy: "0.80"}}
stage_probabilities: {Proposal: "0.50"}
burn_profile: ["1"]
scenarios:
  base:  {contracted: "1", pipeline: "1", pipeline_delay_months: 0, milestone_delay_months: 0}
  best:  {contracted: "1.10", pipeline: "1.20", pipeline_delay_months: 0, milestone_delay_months: 0}
  worst: {contracted: "0.50", pipeline: "0.50", pipeline_delay_months: 1, milestone_delay_months: 1}
"""
)
AS_OF = date(2026, 11, 15)
M = model.month_index
NOV, DEC, JAN, OCT, SEP = (
    M(date(2026, 11, 1)),
    M(date(2026, 12, 1)),
    M(date(2027, 1, 1)),
    M(date(2026, 10, 1)),
    M(date(2026, 9, 1)),
)


# --- scalar formulas ------------------------------------------------------------------------------


def test_cost_to_cost_progress_and_revenue() -> None:
    result = model.cost_to_cost(cost_to_date_minor=300, etc_minor=700, price_minor=2000)
    assert (result.eac_minor, result.cum_revenue_minor, result.expected_loss_minor) == (1000, 600, 0)


def test_cumulative_catch_up_when_eac_changes() -> None:
    before = model.cost_to_cost(300, 700, 2000)  # p = 0.3 -> 600
    # Next month 200 more cost was spent and the estimate to complete rose: EAC 500 + 750 = 1250.
    after = model.cost_to_cost(500, 750, 2000)  # p = 0.4 -> 800
    assert after.cum_revenue_minor == 800
    assert model.catch_up(after.cum_revenue_minor, before.cum_revenue_minor) == 200
    # Had EAC stayed 1000, the same cost would have earned 400: the EAC change is caught up at once.
    unchanged = model.cost_to_cost(500, 500, 2000)
    assert model.catch_up(unchanged.cum_revenue_minor, before.cum_revenue_minor) == 400


def test_catch_up_when_price_changes() -> None:
    before = model.cost_to_cost(300, 700, 2000)
    after = model.cost_to_cost(300, 700, 2400)  # an approved change order, no new cost
    assert model.catch_up(after.cum_revenue_minor, before.cum_revenue_minor) == 120


def test_loss_contract_recognises_the_expected_loss_at_once() -> None:
    result = model.cost_to_cost(cost_to_date_minor=600, etc_minor=600, price_minor=1000)
    assert result.eac_minor == 1200
    assert result.cum_revenue_minor == 500  # p = 0.5 of the price
    assert result.expected_loss_minor == 200  # EAC - price, in full, not pro rata


def test_progress_is_capped_at_one() -> None:
    assert model.cost_to_cost(1500, 0, 1000).cum_revenue_minor == 1000


def test_contract_balance_is_asset_or_liability_never_both() -> None:
    assert model.contract_balance(700, 500) == (200, 0)
    assert model.contract_balance(500, 700) == (0, 200)


def test_half_even_rounding_and_fx() -> None:
    assert list(model.rdiv([5, 15, 25, -5, 7], 10)) == [0, 2, 2, 0, 1]
    assert model.to_reporting(1001, "GBP", SETTINGS) == 1251  # 12.5125 -> 1251 (half-even below .5)
    assert model.to_reporting(10_000, "JPY", SETTINGS) == 6700  # 10,000 yen (no minor unit) -> 67.00 USD
    with pytest.raises(KeyError):
        model.to_reporting(1, "CHF", SETTINGS)


def test_muldiv_falls_back_to_exact_integers_on_overflow() -> None:
    big = 3 * 10**12
    assert int(model.muldiv([big], [big], [big])[0]) == big


def test_burn_weights_stretch_the_profile() -> None:
    assert model.burn_weights(4, [1, 2]) == [1, 1, 2, 2]
    assert model.burn_weights(3, [1, 2, 3, 4, 5, 6]) == [1, 3, 5]


# --- the vectorised model on a hand-computed firm ---------------------------------------------


def _inputs() -> model.ForecastInputs:
    projects = pd.DataFrame(
        [
            (
                "TM1",
                "Strategy",
                "LE-US1",
                "USD",
                "time_and_materials",
                1_000_000,
                10_000,
                SEP,
                M(date(2027, 12, 1)),
                0,
            ),
            ("FF1", "Technology", "LE-UK1", "GBP", "fixed_fee", 1_000_000, 0, SEP, M(date(2027, 6, 1)), 0),
            ("LOSS1", "Technology", "LE-US1", "USD", "fixed_fee", 100_000, 0, SEP, M(date(2027, 6, 1)), 0),
            ("MS1", "Operations", "LE-US1", "USD", "milestone", 300_000, 0, SEP, M(date(2027, 6, 1)), 0),
            (
                "RET1",
                "Operations",
                "LE-US1",
                "USD",
                "retainer",
                1_200_000,
                0,
                M(date(2026, 7, 1)),
                M(date(2027, 6, 1)),
                0,
            ),
        ],
        columns=list(model.PROJECT_COLUMNS),
    )
    actuals = pd.DataFrame(
        [
            ("TM1", OCT, 200_000, 80_000),
            ("TM1", NOV, 50_000, 20_000),
            ("FF1", OCT, 0, 100_000),
            ("FF1", NOV, 0, 200_000),
            ("LOSS1", OCT, 0, 60_000),
        ],
        columns=list(model.ACTUAL_COLUMNS),
    )
    schedule = pd.DataFrame(
        [
            ("TM1", "u1", NOV, 4_000, 4_000, "USD"),
            ("TM1", "u1", DEC, 10_000, 4_000, "USD"),
            ("TM1", "u1", JAN, 10_000, 4_000, "USD"),
            ("FF1", "u2", DEC, 8_000, 5_000, "GBP"),
            ("FF1", "u3", DEC, 2_500, 4_000, "GBP"),  # two people, one month: 400 + 100 GBP of cost
            ("FF1", "u2", JAN, 4_000, 5_000, "GBP"),
            ("LOSS1", "u4", DEC, 1_000, 6_000, "USD"),
        ],
        columns=list(model.SCHEDULE_COLUMNS),
    )
    capacity = pd.DataFrame(
        [("u1", NOV, 16_000), ("u1", DEC, 8_000), ("u1", JAN, 16_000)], columns=list(model.CAPACITY_COLUMNS)
    )
    milestones = pd.DataFrame(
        [
            ("MS1", 100_000, "signed_off", OCT, OCT),
            ("MS1", 100_000, "completed", NOV, NOV),
            ("MS1", 100_000, "planned", DEC, -1),
        ],
        columns=list(model.MILESTONE_COLUMNS),
    )
    opportunities = pd.DataFrame(
        [
            ("opp-1", "Strategy", "LE-US1", "USD", "Proposal", 600_000, DEC, 3),
            ("opp-2", "Strategy", "LE-US1", "USD", "Closed Won", 900_000, DEC, 3),
        ],
        columns=list(model.OPPORTUNITY_COLUMNS),
    )
    return model.ForecastInputs(AS_OF, projects, actuals, schedule, capacity, milestones, opportunities)


def _amounts(result: model.ForecastResult) -> dict[tuple[str, str, int], int]:
    return {(r.project_ref, r.layer, r.month): r.amount_minor for r in result.lines.itertuples()}


def test_time_and_materials_actuals_and_capped_burn() -> None:
    lines = _amounts(model.compute(_inputs(), SETTINGS, "base"))
    assert lines[("TM1", "actual", OCT)] == 200_000
    assert lines[("TM1", "actual", NOV)] == 50_000
    assert lines[("TM1", "contracted", NOV)] == 320_000  # 40 h x 100.00 x 0.80 realization (Strategy)
    # Dec would be 800,000, but only 1,000,000 - 250,000 - 320,000 = 430,000 of the price remains.
    assert lines[("TM1", "contracted", DEC)] == 430_000
    assert ("TM1", "contracted", JAN) not in lines


def test_fixed_fee_cost_to_cost_actuals_and_burn() -> None:
    result = model.compute(_inputs(), SETTINGS, "base")
    lines = _amounts(result)
    # cost to date 300,000; ETC 400,000 + 100,000 + 200,000 = 700,000; EAC 1,000,000; p = 0.3.
    assert lines[("FF1", "actual", OCT)] == 100_000
    assert lines[("FF1", "actual", NOV)] == 200_000
    assert lines[("FF1", "contracted", DEC)] == 500_000
    assert lines[("FF1", "contracted", JAN)] == 200_000
    row = result.lines[(result.lines.project_ref == "FF1") & (result.lines.month == DEC)].iloc[0]
    assert row.reporting_amount_minor == 625_000  # GBP 5,000 x 1.25
    ff = result.balances.set_index("project_ref").loc["FF1"]
    assert (ff.eac_minor, ff.cum_revenue_minor, ff.contract_asset_minor, ff.backlog_minor) == (
        1_000_000,
        300_000,
        300_000,
        700_000,
    )


def test_loss_contract_in_the_model() -> None:
    result = model.compute(_inputs(), SETTINGS, "base")
    loss = result.balances.set_index("project_ref").loc["LOSS1"]
    assert (loss.eac_minor, loss.cum_revenue_minor, loss.expected_loss_minor) == (120_000, 50_000, 20_000)
    assert _amounts(result)[("LOSS1", "contracted", DEC)] == 50_000  # revenue never exceeds the price
    assert result.totals["loss_contracts"] == 1


def test_milestones_on_sign_off() -> None:
    """Revenue on the customer's sign-off (psa_erp_sync.revenue): a milestone completed but not
    signed off is not yet revenue; it stays in the contracted layer, expected in the as-of month.
    (Before issue 14 the forecast recognized it on completion.)"""
    result = model.compute(_inputs(), SETTINGS, "base")
    lines = _amounts(result)
    assert lines[("MS1", "actual", OCT)] == 100_000
    assert ("MS1", "actual", NOV) not in lines
    assert lines[("MS1", "contracted", NOV)] == 100_000  # completed, awaiting sign-off
    assert lines[("MS1", "contracted", DEC)] == 100_000
    ms = result.balances.set_index("project_ref").loc["MS1"]
    assert (ms.cum_revenue_minor, ms.cum_billed_minor, ms.contract_asset_minor) == (100_000, 100_000, 0)


def test_retainer_ratable_through_the_as_of_month_and_balances_never_netted() -> None:
    """The retainer earns its as-of month at the period's end, as the revenue journals do (before
    issue 14 the forecast left that month in the contracted layer)."""
    inputs = _inputs()
    inputs.projects.loc[inputs.projects.project_ref == "TM1", "billed_minor"] = 300_000
    result = model.compute(inputs, SETTINGS, "base")
    lines = _amounts(result)
    assert lines[("RET1", "actual", SEP)] == lines[("RET1", "actual", OCT)] == lines[("RET1", "actual", NOV)]
    assert lines[("RET1", "actual", NOV)] == 100_000
    assert ("RET1", "contracted", NOV) not in lines
    assert all(lines[("RET1", "contracted", m)] == 100_000 for m in (DEC, JAN))
    balances = result.balances.set_index("project_ref")
    ret = balances.loc["RET1"]
    assert (ret.cum_revenue_minor, ret.cum_billed_minor) == (500_000, 500_000)  # billed monthly in advance
    tm = balances.loc["TM1"]
    assert (tm.contract_asset_minor, tm.contract_liability_minor) == (0, 50_000)  # billed 300,000 > 250,000
    # Never netted: the firm shows both an asset and a liability in USD.
    assert result.totals["contract_asset_minor_by_currency"]["USD"] == 50_000  # LOSS1
    assert result.totals["contract_liability_minor_by_currency"]["USD"] == 50_000


def test_weighted_pipeline_spread_and_closed_ignored() -> None:
    lines = _amounts(model.compute(_inputs(), SETTINGS, "base"))
    # 600,000 x 0.50 = 300,000 over Dec-Feb, flat; the horizon (Nov-Jan) holds Dec and Jan.
    assert lines[("opp-1", "pipeline", DEC)] == lines[("opp-1", "pipeline", JAN)] == 100_000
    assert not any(key[0] == "opp-2" for key in lines)


def test_scenarios_adjust_contracted_and_pipeline() -> None:
    best = _amounts(model.compute(_inputs(), SETTINGS, "best"))
    assert best[("TM1", "contracted", NOV)] == 352_000  # x 1.10
    assert best[("opp-1", "pipeline", DEC)] == 120_000  # x 1.20
    worst = _amounts(model.compute(_inputs(), SETTINGS, "worst"))
    assert worst[("TM1", "contracted", NOV)] == 160_000
    assert ("opp-1", "pipeline", DEC) not in worst  # delayed a month
    assert worst[("opp-1", "pipeline", JAN)] == 50_000
    assert worst[("MS1", "contracted", JAN)] == 100_000  # the planned milestone slips a month


def test_capacity_check_flags_over_allocation() -> None:
    capacity = model.compute(_inputs(), SETTINGS, "base").capacity.set_index(["user_ref", "month"])
    assert bool(capacity.loc[("u1", DEC), "over_allocated"])
    assert not bool(capacity.loc[("u1", NOV), "over_allocated"])


def test_catch_up_against_the_prior_snapshot() -> None:
    inputs = _inputs()
    inputs.prior = pd.DataFrame({"project_ref": ["FF1"], "cum_revenue_minor": [250_000]})
    balances = model.compute(inputs, SETTINGS, "base").balances.set_index("project_ref")
    assert balances.loc["FF1", "catch_up_minor"] == 50_000
    assert pd.isna(balances.loc["TM1", "prior_cum_revenue_minor"])


def test_empty_firm() -> None:
    result = model.compute(model.empty_inputs(AS_OF), SETTINGS, "base")
    assert result.lines.empty and result.totals["lines"] == 0
