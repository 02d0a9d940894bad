"""The backtest: WAPE and bias formulas, no look-ahead in what the model sees, and the target
(beat the naive run rate at firm level, horizons 1-3) on the default history."""

from __future__ import annotations

import pytest

from devtools import forecast_backtest as backtest
from psa_erp_sync.forecast import model
from psa_erp_sync.forecast.settings import load_forecast_settings


def test_wape_and_bias_by_hand() -> None:
    assert backtest.wape([100, 200, 0], [110, 150, 10]) == pytest.approx(70 / 300)
    assert backtest.bias([100, 200, 0], [110, 150, 10]) == pytest.approx(-30 / 300)


@pytest.fixture(scope="module")
def world() -> backtest.World:
    return backtest.build_world(8, seed=3, settings=load_forecast_settings())


def test_inputs_hold_only_what_was_known_at_the_as_of_date(world: backtest.World) -> None:
    t = world.start + backtest.WARMUP + 2
    inputs = backtest.known_at(world, t)
    assert inputs.as_of == model.month_start(t)
    assert (inputs.actuals["month"] < t).all()
    assert (inputs.schedule["month"] >= t).all()
    won = world.projects.set_index("project_ref")["win"]
    assert (won.reindex(inputs.projects["project_ref"]) < t).all()
    assert (inputs.milestones.query("status != 'planned'")["done_month"] < t).all()
    opps = world.opportunities.set_index("opp_ref")
    assert (opps.loc[inputs.opportunities["opp_ref"], "created"] < t).all()
    assert (opps.loc[inputs.opportunities["opp_ref"], "resolved"] >= t).all()  # still open then


def test_the_future_cannot_change_a_past_forecast(world: backtest.World) -> None:
    settings = load_forecast_settings()
    t = world.start + backtest.WARMUP + 2
    before = model.compute(backtest.known_at(world, t), settings, "base").lines
    # Rewrite everything that happens from month t on: realized hours, revenue and cost.
    future = world.real["month"] >= t
    world.real.loc[future, ["hours_centi", "revenue_minor", "cost_minor"]] *= 3
    world.milestones.loc[world.milestones["done_month"] >= t, "done_month"] += 2
    after = model.compute(backtest.known_at(world, t), settings, "base").lines
    assert before.equals(after)


def test_default_history_beats_the_naive_baseline_at_firm_level() -> None:
    report = backtest.run(months=24, seed=7, horizons=3)
    firm = report["levels"]["firm"]
    assert report["beats_naive_at_firm_h1_3"]
    for h in (1, 2, 3):
        assert firm[h]["model_wape"] < firm[h]["naive_wape"]
        assert firm[h]["wape_improvement_points"] > 0
    assert set(report["levels"]) == {"firm", "legal_entity", "practice"}
    table = backtest.format_table(report)
    assert "naive WAPE" in table and "firm" in table
