"""Accuracy backtest: N months of synthetic history with known outcomes, forecast each month from
what was known then, report WAPE and bias per level and horizon next to a naive baseline.

Usage::

    python -m devtools.forecast_backtest --months 24 [--seed 7] [--json]

The synthetic firm (deterministic per seed) is built to be honest about what a plan knows:

- Projects come from opportunities that move one stage a month and survive each step with
  probabilities a little *below* the configured stage probabilities (CRM optimism we did not
  fully correct); won amounts differ from the opportunity amount (sd 15 %); starts slip.
- Resource plans know the calendar (working days, August and December holidays) but not what
  will happen: realized hours = plan x (1 + project drift (sd 10 %) + monthly noise (sd 15 %)),
  realization varies per project (sd 5 %), fixed-fee cost overruns move EAC (cumulative
  catch-ups, some loss contracts), milestones slip a month 30 % of the time.
- New business grows about 1.5 % a month.

At each as-of month ``t`` (the 1st of the month) the model sees only what was known then:
projects won before ``t``, actual hours/cost/revenue of months before ``t``, plans for months from
``t`` on, milestones completed before ``t``, and the open pipeline with its stage at ``t``.
The truth for month ``m`` is the revenue recognized in it: cumulative recognized revenue as of
``m + 1`` minus as of ``m`` (T&M as worked, fixed fee by cost-to-cost with the EAC of the time,
milestones when done, retainers evenly). The naive baseline forecasts every horizon with the mean
of the last three months' actual revenue (run rate). Horizon 1 is the as-of month itself.
"""

from __future__ import annotations

import argparse
import calendar
import json
import sys
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from psa_erp_sync.forecast import model
from psa_erp_sync.forecast.settings import PPM, ForecastSettings, load_forecast_settings, ppm

if TYPE_CHECKING:
    import pandas as pd

LEVELS = ("firm", "legal_entity", "practice")
ENTITIES = (("LE-US1", "USD"), ("LE-US2", "USD"), ("LE-UK1", "GBP"))
PRACTICES = ("Strategy", "Technology", "Finance Transformation", "Data & Analytics", "Operations")
KINDS = ("time_and_materials", "fixed_fee", "milestone", "retainer")
STAGES = ("Prospecting", "Qualification", "Proposal", "Negotiation")
WARMUP = 6  # months of history before the first evaluated as-of (the naive baseline needs 3)


@dataclass
class World:
    """The synthetic firm: projects, their plans and realized months, and the opportunity paths."""

    start: int  # month index of month 0
    projects: pd.DataFrame
    plan: pd.DataFrame  # ref, month, hours_centi (known from the win on)
    real: pd.DataFrame  # ref, month, hours_centi, revenue_minor, cost_minor
    milestones: pd.DataFrame  # ref, amount_minor, due_month, done_month
    opportunities: pd.DataFrame  # opp_ref, ref (or None when lost), created, resolved, won, amount...


def _workdays(index: int) -> int:
    year, month = index // 12, index % 12 + 1
    days = calendar.monthrange(year, month)[1]
    return sum(1 for d in range(1, days + 1) if date(year, month, d).weekday() < 5)


def _seasonal_ppm(index: int) -> int:
    """Working days x holiday factor, relative to a 21-day month (known to any plan)."""
    factor = {8: 880_000, 12: 780_000}.get(index % 12 + 1, 1_000_000)
    return _workdays(index) * factor // 21


def build_world(months: int, seed: int, settings: ForecastSettings, first: date = date(2023, 1, 1)) -> World:
    """Generate the firm over ``WARMUP + months + 12`` months (the tail gives the last outcomes)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    m_start = model.month_index(first)
    span = WARMUP + months + 13
    survive = {"Prospecting": 0.30, "Qualification": 0.40, "Proposal": 0.56, "Negotiation": 0.55}
    projects: list[dict[str, Any]] = []
    plan_rows: list[tuple[str, int, int]] = []
    real_rows: list[tuple[str, int, int, int, int]] = []
    milestone_rows: list[tuple[str, int, int, int]] = []
    opp_rows: list[dict[str, Any]] = []
    fx_ppm = {cur: ppm(rate) for cur, rate in settings.fx_rates.items()}

    def draw_team(le_idx: int) -> tuple[int, int]:
        """(bill rate in the entity's currency, team hours a month at a 21-day month)."""
        currency = ENTITIES[le_idx][1]
        scale = fx_ppm["USD"] * 1_000_000 // fx_ppm[currency]  # rates in the local currency's scale
        bill_rate = int(rng.integers(160, 280)) * 100 * scale // 1_000_000 // 500 * 500
        return bill_rate, int(rng.integers(120, 900))

    def contract_value(kind: str, bill_rate: int, team_hours: int, duration: int) -> int:
        """What the CRM expects a deal of this shape to be worth (fixed fee priced below T&M)."""
        value = team_hours * bill_rate * duration
        return value * 85 // 100 if kind == "fixed_fee" else value

    def new_project(
        ref: str,
        win: int,
        start: int,
        le_idx: int,
        practice: str,
        kind: str,
        duration: int,
        team: tuple[int, int] | None = None,
    ) -> int:
        """Add a project; returns the deal value the CRM carried for it."""
        le, currency = ENTITIES[le_idx]
        bill_rate, team_hours = team or draw_team(le_idx)
        cost_rate = bill_rate * int(rng.integers(42, 55)) // 100
        drift = rng.normal(0, 0.10)
        realization = int(ppm(settings.realization.for_practice(practice)) * (1 + rng.normal(0, 0.05)))
        plan = {m: team_hours * 100 * _seasonal_ppm(m) // PPM for m in range(start, start + duration)}
        planned_value = sum(h * bill_rate // 100 for h in plan.values())
        planned_cost = sum(h * cost_rate // 100 for h in plan.values())
        if kind == "time_and_materials":
            price = planned_value * 11 // 10  # a not-to-exceed budget with headroom
        elif kind == "fixed_fee":
            price = planned_cost * int(rng.integers(150, 200)) // 100
        else:
            price = planned_value
        price = max(price, 100_000)
        projects.append(
            {
                "project_ref": ref,
                "practice": practice,
                "legal_entity": le,
                "currency": currency,
                "billing_type": kind,
                "price_minor": price,
                "bill_rate_minor": bill_rate,
                "start_month": start,
                "end_month": start + duration - 1,
                "billed_minor": 0,
                "win": win,
                "cost_rate_minor": cost_rate,
            }
        )
        for m, hours in plan.items():
            plan_rows.append((ref, m, hours))
            noise = drift + rng.normal(0, 0.15)
            if kind == "fixed_fee":
                noise += 0.05  # fixed-fee work overruns on average
            real_hours = max(0, int(hours * (1 + noise)))
            revenue = (
                real_hours * bill_rate // 100 * realization // PPM if kind == "time_and_materials" else 0
            )
            real_rows.append((ref, m, real_hours, revenue, real_hours * cost_rate // 100))
        if kind == "milestone":
            count = int(rng.integers(2, 5))
            amounts = [price // count] * count
            amounts[-1] += price - sum(amounts)
            for k, amount in enumerate(amounts, start=1):
                due = start + duration * k // count - 1
                done = due + (1 if rng.random() < 0.3 else 0)
                milestone_rows.append((ref, amount, due, done))
        return planned_value if kind == "time_and_materials" else price

    counter = 0
    # The backlog at month 0: projects already running.
    for _ in range(40):
        counter += 1
        duration = int(rng.integers(4, 13))
        start = m_start - int(rng.integers(0, duration))
        new_project(
            f"p{counter}",
            start - 1,
            start,
            int(rng.integers(0, 3)),
            PRACTICES[int(rng.integers(0, 5))],
            KINDS[int(rng.choice(4, p=[0.5, 0.25, 0.1, 0.15]))],
            duration,
        )
    # Opportunities created each month, growing; each moves one stage a month or is lost.
    for offset in range(-4, span):
        created = m_start + offset
        arrivals = rng.poisson(110 * 1.015 ** max(offset, 0))
        for _ in range(arrivals):
            counter += 1
            kind = KINDS[int(rng.choice(4, p=[0.5, 0.25, 0.1, 0.15]))]
            duration = int(rng.integers(3, 13))
            practice = PRACTICES[int(rng.integers(0, 5))]
            le_idx = int(rng.integers(0, 3))
            resolved, won = created + 4, True
            for step, stage in enumerate(STAGES):
                if rng.random() > survive[stage]:
                    resolved, won = created + step + 1, False
                    break
            expected_start = created + 5
            ref = f"p{counter}" if won else None
            team = draw_team(le_idx)
            if won:
                start = expected_start + (1 if rng.random() < 0.3 else 0)
                amount = new_project(f"p{counter}", resolved, start, le_idx, practice, kind, duration, team)
            else:  # a lost deal looks like a won one of its shape in the CRM
                amount = contract_value(kind, *team, duration)
            opp_rows.append(
                {
                    "opp_ref": f"opp-{counter}",
                    "ref": ref,
                    "created": created,
                    "resolved": resolved,
                    "won": won,
                    "practice": practice,
                    "legal_entity": ENTITIES[le_idx][0],
                    "currency": ENTITIES[le_idx][1],
                    "amount_minor": max(100_000, int(amount * (1 + rng.normal(0, 0.15)))),
                    "start_month": expected_start,
                    "duration_months": duration,
                }
            )
    return World(
        start=m_start,
        projects=pd.DataFrame(projects),
        plan=pd.DataFrame(plan_rows, columns=["project_ref", "month", "hours_centi"]),
        real=pd.DataFrame(
            real_rows, columns=["project_ref", "month", "hours_centi", "revenue_minor", "cost_minor"]
        ),
        milestones=pd.DataFrame(
            milestone_rows, columns=["project_ref", "amount_minor", "due_month", "done_month"]
        ),
        opportunities=pd.DataFrame(opp_rows),
    )


def known_at(world: World, t: int) -> model.ForecastInputs:
    """The model's inputs as of the 1st of month ``t``: nothing from month ``t`` or later."""
    import pandas as pd

    projects = world.projects[world.projects["win"] <= t - 1]
    refs = set(projects["project_ref"])
    real = world.real[world.real["project_ref"].isin(refs) & (world.real["month"] < t)]
    plan = world.plan[world.plan["project_ref"].isin(refs) & (world.plan["month"] >= t)]
    plan = plan.merge(projects[["project_ref", "cost_rate_minor", "currency"]], on="project_ref")
    schedule = pd.DataFrame(
        {
            "project_ref": plan["project_ref"],
            "user_ref": "team-" + plan["project_ref"],
            "month": plan["month"],
            "hours_centi": plan["hours_centi"],
            "cost_rate_minor": plan["cost_rate_minor"],
            "cost_currency": plan["currency"],
        }
    ).astype(model.SCHEDULE_COLUMNS)
    ms = world.milestones[world.milestones["project_ref"].isin(refs)]
    done = ms["done_month"] <= t - 1
    milestones = pd.DataFrame(
        {
            "project_ref": ms["project_ref"],
            "amount_minor": ms["amount_minor"],
            "status": done.map({True: "signed_off", False: "planned"}),
            "due_month": ms["due_month"],
            "done_month": ms["done_month"].where(done, -1),
        }
    ).astype(model.MILESTONE_COLUMNS)
    opps = world.opportunities
    open_ = opps[(opps["created"] <= t - 1) & (opps["resolved"] > t - 1)]
    stage_idx = (t - 1 - open_["created"]).clip(upper=3)
    opportunities = pd.DataFrame(
        {
            "opp_ref": open_["opp_ref"],
            "practice": open_["practice"],
            "legal_entity": open_["legal_entity"],
            "currency": open_["currency"],
            "stage": stage_idx.map(dict(enumerate(STAGES))),
            "amount_minor": open_["amount_minor"],
            "start_month": open_["start_month"].clip(lower=t),
            "duration_months": open_["duration_months"],
        }
    ).astype(model.OPPORTUNITY_COLUMNS)
    actuals = real[["project_ref", "month", "revenue_minor", "cost_minor"]].astype(model.ACTUAL_COLUMNS)
    return model.ForecastInputs(
        as_of=model.month_start(t),
        projects=projects[list(model.PROJECT_COLUMNS)].astype(model.PROJECT_COLUMNS),
        actuals=actuals,
        schedule=schedule,
        capacity=model.empty_frame(model.CAPACITY_COLUMNS),
        milestones=milestones,
        opportunities=opportunities,
    )


def wape(actual: Any, forecast: Any) -> float:
    """Weighted absolute percentage error: sum |A - F| / sum |A| (defined when some A is not 0)."""
    import numpy as np

    a, f = np.asarray(actual, dtype=np.int64), np.asarray(forecast, dtype=np.float64)
    return float(np.abs(a - f).sum() / np.abs(a).sum())


def bias(actual: Any, forecast: Any) -> float:
    """sum (F - A) / sum A: positive when the forecast runs high."""
    import numpy as np

    a, f = np.asarray(actual, dtype=np.int64), np.asarray(forecast, dtype=np.float64)
    return float((f - a).sum() / a.sum())


def run(
    months: int = 24, seed: int = 7, horizons: int = 6, settings: ForecastSettings | None = None
) -> dict[str, Any]:
    """Backtest ``months`` as-of dates; WAPE and bias per level and horizon, model vs naive."""
    import pandas as pd

    settings = settings or load_forecast_settings()
    if months < 1 or not 1 <= horizons <= settings.horizon_months:
        raise ValueError("months >= 1 and 1 <= horizons <= the configured horizon")
    world = build_world(months, seed, settings)
    first_t = world.start + WARMUP
    last_t = first_t + months - 1
    cum: dict[int, pd.Series] = {}
    forecasts: list[pd.DataFrame] = []
    meta = world.projects.set_index("project_ref")[["legal_entity", "practice", "currency"]]
    for t in range(world.start + 1, last_t + horizons + 1):
        result = model.compute(known_at(world, t), settings, "base")
        cum[t] = result.balances.set_index("project_ref")["cum_revenue_minor"]
        if first_t <= t <= last_t:
            lines = result.lines[result.lines["layer"] != "actual"]
            lines = lines[lines["month"] < t + horizons]
            forecasts.append(lines.assign(as_of=t, horizon=lines["month"] - t + 1))
    # Truth: revenue recognized in month m = cum as of m + 1 minus cum as of m, in reporting currency.
    truth_rows = []
    for m in range(world.start + 1, last_t + horizons):
        delta = cum[m + 1].sub(cum[m], fill_value=0).astype("int64")
        delta = delta[delta != 0]
        truth_rows.append(
            pd.DataFrame({"project_ref": delta.index, "month": m, "amount_minor": delta.to_numpy()})
        )
    truth = pd.concat(truth_rows, ignore_index=True).join(meta, on="project_ref")
    truth["reporting"] = model.reporting_amounts(truth["amount_minor"], truth["currency"], settings)
    fc = pd.concat(forecasts, ignore_index=True)
    report: dict[str, Any] = {
        "months": months,
        "seed": seed,
        "as_of_first": model.month_start(first_t).isoformat(),
        "as_of_last": model.month_start(last_t).isoformat(),
        "levels": {},
    }
    for level in LEVELS:
        key = [] if level == "firm" else [level]
        actual = truth.groupby([*key, "month"])["reporting"].sum()
        predicted = fc.groupby([*key, "as_of", "horizon"])["reporting_amount_minor"].sum()
        groups = [None] if level == "firm" else sorted(truth[level].unique())
        rows = []
        for t in range(first_t, last_t + 1):
            for g in groups:

                def a(m: int, g: Any = g, actual: Any = actual) -> int:
                    return int(actual.get(m if g is None else (g, m), 0))

                naive = sum(a(m) for m in (t - 3, t - 2, t - 1)) / 3
                for h in range(1, horizons + 1):
                    f = int(predicted.get((t, h) if g is None else (g, t, h), 0))
                    rows.append((h, a(t + h - 1), f, naive))
        frame = pd.DataFrame(rows, columns=["horizon", "actual", "model", "naive"])
        per_h = {}
        for h, part in frame.groupby("horizon"):
            m_wape, n_wape = wape(part["actual"], part["model"]), wape(part["actual"], part["naive"])
            per_h[int(h)] = {
                "model_wape": round(m_wape, 4),
                "naive_wape": round(n_wape, 4),
                "model_bias": round(bias(part["actual"], part["model"]), 4),
                "naive_bias": round(bias(part["actual"], part["naive"]), 4),
                "wape_improvement_points": round((n_wape - m_wape) * 100, 2),
                "wape_improvement_relative": round((n_wape - m_wape) / n_wape, 4) if n_wape else None,
            }
        report["levels"][level] = per_h
    firm = report["levels"]["firm"]
    report["beats_naive_at_firm_h1_3"] = all(
        firm[h]["model_wape"] < firm[h]["naive_wape"] for h in (1, 2, 3) if h in firm
    )
    return report


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"Backtest: {report['months']} as-of months {report['as_of_first']} .. {report['as_of_last']} (seed {report['seed']})",
        f"{'level':<14}{'h':>3}{'model WAPE':>12}{'naive WAPE':>12}{'better by':>11}{'model bias':>12}{'naive bias':>12}",
    ]
    for level, per_h in report["levels"].items():
        for h, r in per_h.items():
            lines.append(
                f"{level:<14}{h:>3}{r['model_wape']:>12.1%}{r['naive_wape']:>12.1%}"
                f"{r['wape_improvement_points']:>9.1f}pp{r['model_bias']:>+12.1%}{r['naive_bias']:>+12.1%}"
            )
    lines.append(
        f"beats the naive baseline at firm level, horizons 1-3: {report['beats_naive_at_firm_h1_3']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--months", type=int, default=24, help="as-of months to backtest")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--horizons", type=int, default=6)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = run(args.months, args.seed, args.horizons)
    sys.stdout.write((json.dumps(report, indent=2) if args.json else format_table(report)) + "\n")
    return 0 if report["beats_naive_at_firm_h1_3"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
