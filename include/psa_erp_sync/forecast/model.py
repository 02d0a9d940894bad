"""The revenue forecast model: pure, vectorised (pandas/numpy) on integer minor units.

Monthly buckets are integer month indexes (``year * 12 + month - 1``); ``m0`` is the month of
the as-of date. Three layers per project and month:

- ``actual``: revenue recognized up to the as-of date (ASC 606 / IFRS 15, see docs/forecast.md):
  T&M = posted billable time + billable expenses (right to invoice); fixed fee by cost-to-cost
  (``p = cost_to_date / EAC``, ``EAC = cost_to_date + ETC``, ``cum = min(p, 1) x price``);
  milestones when completed; retainers evenly over the term.
- ``contracted``: backlog burned by the resource plan after the as-of date: scheduled hours x
  bill rate x realization (T&M), planned cost through cost-to-cost (fixed fee), planned
  milestones at their due month, the retainer's remaining months; T&M and fixed fee are capped by
  the remaining transaction price.
- ``pipeline``: open opportunities x stage probability, spread from the expected start by the
  burn profile; a separate, lower-confidence layer.

Every product of two amounts goes through :func:`muldiv` (exact, half-even, int64 with a
Python-int fallback when a product could overflow), so no float ever touches money.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from psa_erp_sync import money
from psa_erp_sync.forecast.settings import PPM, ForecastSettings, ppm

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

LAYERS = ("actual", "contracted", "pipeline")
LINE_COLUMNS = [
    "project_ref", "practice", "legal_entity", "layer", "month", "currency", "amount_minor",
    "reporting_amount_minor",
]  # fmt: skip
_INT64_SAFE = 2**62


# --- months and integer arithmetic -------------------------------------------------------------


def month_index(day: date) -> int:
    return day.year * 12 + day.month - 1


def month_start(index: int) -> date:
    return date(index // 12, index % 12 + 1, 1)


def rdiv(num: Any, den: Any) -> Any:
    """``num / den`` rounded half-even, element-wise on integer arrays (``den`` > 0)."""
    import numpy as np

    num = np.asarray(num)
    den = np.asarray(den)
    q = num // den
    r = num - q * den
    twice = 2 * r
    up = (twice > den) | ((twice == den) & (q % 2 != 0))
    return q + up.astype(q.dtype)


def muldiv(a: Any, b: Any, den: Any) -> np.ndarray:
    """``a x b / den`` exactly, rounded half-even once; int64 unless a product could overflow."""
    import numpy as np

    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    den_arr = np.asarray(den, dtype=np.int64)
    if np.any(den_arr <= 0):
        raise ValueError("muldiv needs positive denominators")
    max_a = int(np.abs(a).max()) if a.size else 0
    max_b = int(np.abs(b).max()) if b.size else 0
    if max_a * max_b < _INT64_SAFE:
        return np.asarray(rdiv(a * b, den_arr), dtype=np.int64)
    # Rare: amounts large enough to overflow int64. Exact Python integers, element-wise.
    big = rdiv(a.astype(object) * b.astype(object), den_arr.astype(object))
    return np.asarray(big, dtype=np.int64)


# --- the formulas, one contract at a time (what the vectorised code computes) ---------------


@dataclass(frozen=True)
class CostToCost:
    """Cost-to-cost measure of progress for one fixed-fee contract, in minor units."""

    eac_minor: int
    cum_revenue_minor: int
    expected_loss_minor: int


def cost_to_cost(cost_to_date_minor: int, etc_minor: int, price_minor: int) -> CostToCost:
    """``EAC = cost_to_date + ETC``; ``cum_rev = min(cost_to_date / EAC, 1) x price``;
    expected loss = ``EAC - price`` when positive (recognised in full, at once)."""
    eac = cost_to_date_minor + etc_minor
    if eac <= 0:
        return CostToCost(eac, 0, 0)
    cum = int(muldiv([min(cost_to_date_minor, eac)], [price_minor], eac)[0])
    return CostToCost(eac, cum, max(0, eac - price_minor))


def catch_up(cum_revenue_now_minor: int, cum_revenue_prior_minor: int) -> int:
    """Period revenue under the input method: the cumulative catch-up ``cum_t - cum_{t-1}``."""
    return cum_revenue_now_minor - cum_revenue_prior_minor


def contract_balance(cum_revenue_minor: int, cum_billed_minor: int) -> tuple[int, int]:
    """(contract asset, contract liability) of one contract: never netted across contracts."""
    balance = cum_revenue_minor - cum_billed_minor
    return (balance, 0) if balance >= 0 else (0, -balance)


def to_reporting(amount_minor: int, currency: str, settings: ForecastSettings) -> int:
    """One amount converted with the configured rate, half-even."""
    num, den = fx_factor(currency, settings)
    return int(muldiv([amount_minor], [num], den)[0])


def fx_factor(currency: str, settings: ForecastSettings) -> tuple[int, int]:
    """(numerator, denominator) turning minor units of ``currency`` into reporting minor units."""
    if currency not in settings.fx_rates:
        raise KeyError(f"no FX rate configured for {currency}")
    shift = money.exponent(settings.reporting_currency) - money.exponent(currency)
    num = ppm(settings.fx_rates[currency]) * (10 ** max(shift, 0))
    return num, PPM * (10 ** max(-shift, 0))


def burn_weights(duration_months: int, profile_ppm: list[int]) -> list[int]:
    """Weights of each month of a ``duration_months`` engagement: the profile stretched to fit."""
    n, size = max(1, duration_months), len(profile_ppm)
    return [profile_ppm[k * size // n] for k in range(n)]


# --- inputs and outputs -----------------------------------------------------------------------


@dataclass
class ForecastInputs:
    """What the model needs, already typed; every amount in integer minor units.

    - ``projects``: project_ref, practice, legal_entity, currency, billing_type, price_minor,
      bill_rate_minor, start_month, end_month (month indexes), billed_minor (invoiced to date,
      T&M and fixed fee; milestone and retainer billing follow their schedules).
    - ``actuals``: project_ref, month, revenue_minor (posted billable time + billable expenses),
      cost_minor (approved time x cost rate, in the project currency); months up to the as-of date.
    - ``schedule``: project_ref, user_ref, month, hours_centi (hundredths of an hour),
      cost_rate_minor (per hour, in ``cost_currency``), cost_currency; work after the as-of date.
    - ``capacity``: user_ref, month, available_centi.
    - ``milestones``: project_ref, amount_minor, status (planned|completed|signed_off), due_month,
      done_month (-1 when not done).
    - ``opportunities``: opp_ref, practice, legal_entity, currency, stage, amount_minor,
      start_month, duration_months (open ones; closed are ignored by stage).
    - ``prior``: project_ref, cum_revenue_minor of the previous snapshot (for the catch-up).
    """

    as_of: date
    projects: pd.DataFrame
    actuals: pd.DataFrame
    schedule: pd.DataFrame
    capacity: pd.DataFrame
    milestones: pd.DataFrame
    opportunities: pd.DataFrame
    prior: pd.DataFrame | None = None


@dataclass
class ForecastResult:
    """One scenario's lines, contract balances, capacity check and totals."""

    scenario: str
    as_of: date
    lines: pd.DataFrame
    balances: pd.DataFrame
    capacity: pd.DataFrame
    totals: dict[str, Any] = field(default_factory=dict)


def empty_frame(columns: dict[str, str]) -> pd.DataFrame:
    """A typed, empty frame with ``columns`` (name -> dtype)."""
    import pandas as pd

    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def empty_inputs(as_of: date) -> ForecastInputs:
    """Inputs with every frame empty but typed (a firm with nothing yet)."""
    return ForecastInputs(
        as_of=as_of,
        projects=empty_frame(PROJECT_COLUMNS),
        actuals=empty_frame(ACTUAL_COLUMNS),
        schedule=empty_frame(SCHEDULE_COLUMNS),
        capacity=empty_frame(CAPACITY_COLUMNS),
        milestones=empty_frame(MILESTONE_COLUMNS),
        opportunities=empty_frame(OPPORTUNITY_COLUMNS),
    )


PROJECT_COLUMNS = {
    "project_ref": "object", "practice": "object", "legal_entity": "object", "currency": "object",
    "billing_type": "object", "price_minor": "int64", "bill_rate_minor": "int64", "start_month": "int64",
    "end_month": "int64", "billed_minor": "int64",
}  # fmt: skip
ACTUAL_COLUMNS = {"project_ref": "object", "month": "int64", "revenue_minor": "int64", "cost_minor": "int64"}
SCHEDULE_COLUMNS = {
    "project_ref": "object", "user_ref": "object", "month": "int64", "hours_centi": "int64",
    "cost_rate_minor": "int64", "cost_currency": "object",
}  # fmt: skip
CAPACITY_COLUMNS = {"user_ref": "object", "month": "int64", "available_centi": "int64"}
MILESTONE_COLUMNS = {
    "project_ref": "object", "amount_minor": "int64", "status": "object", "due_month": "int64",
    "done_month": "int64",
}  # fmt: skip
OPPORTUNITY_COLUMNS = {
    "opp_ref": "object", "practice": "object", "legal_entity": "object", "currency": "object",
    "stage": "object", "amount_minor": "int64", "start_month": "int64", "duration_months": "int64",
}  # fmt: skip


# --- the vectorised model ---------------------------------------------------------------------


def _capped_burn(frame: pd.DataFrame, remaining: pd.Series) -> pd.Series:
    """Cap each project's cumulative future burn at its remaining transaction price."""
    import numpy as np

    frame = frame.sort_values(["project_ref", "month"], kind="stable")
    cum = frame.groupby("project_ref", sort=False)["amount_minor"].cumsum().to_numpy()
    cap = remaining.reindex(frame["project_ref"]).fillna(0).to_numpy(dtype=np.int64)
    capped = np.minimum(cum, cap)
    prev = np.minimum(cum - frame["amount_minor"].to_numpy(), cap)
    return pd_series(capped - prev, frame.index)


def pd_series(values: Any, index: Any) -> pd.Series:
    import pandas as pd

    return pd.Series(values, index=index, dtype="int64")


def compute(inputs: ForecastInputs, settings: ForecastSettings, scenario: str) -> ForecastResult:
    """The forecast of one scenario: lines per project, layer and month; balances; capacity."""
    import numpy as np
    import pandas as pd

    adj = settings.scenarios[scenario]  # type: ignore[index]
    contracted_ppm, pipeline_ppm = ppm(adj.contracted), ppm(adj.pipeline)
    m0 = month_index(inputs.as_of)
    m_end = m0 + settings.horizon_months  # exclusive
    m_first_actual = m0 - settings.actual_months

    projects = inputs.projects.set_index("project_ref", drop=False)
    projects.index.name = None  # the column stays the join key
    kind = projects["billing_type"]
    price = projects["price_minor"].astype("int64")

    # Cost rates in each project's currency (cross rates through the reporting currency).
    rate_ppm = {cur: ppm(rate) for cur, rate in settings.fx_rates.items()}
    sched = inputs.schedule.merge(
        projects[["project_ref", "currency", "bill_rate_minor", "practice", "billing_type"]],
        on="project_ref",
        how="inner",
    )
    if len(sched):
        from_rate = sched["cost_currency"].map(rate_ppm).to_numpy(dtype=np.int64)
        to_rate = sched["currency"].map(rate_ppm).to_numpy(dtype=np.int64)
        cost_rate = muldiv(sched["cost_rate_minor"].to_numpy(), from_rate, 1)
        cost_rate = rdiv(cost_rate, to_rate)
        hours = sched["hours_centi"].to_numpy(dtype=np.int64)
        sched = sched.assign(
            planned_cost=muldiv(hours, cost_rate, 100),
            planned_value=muldiv(hours, sched["bill_rate_minor"].to_numpy(dtype=np.int64), 100),
        )
    else:
        sched = sched.assign(planned_cost=pd.Series(dtype="int64"), planned_value=pd.Series(dtype="int64"))

    # --- actuals and cumulative revenue to date ------------------------------------------------
    actuals = inputs.actuals[inputs.actuals["month"] <= m0]
    by_project = actuals.groupby("project_ref")[["revenue_minor", "cost_minor"]].sum()
    cost_to_date = by_project["cost_minor"].reindex(projects.index, fill_value=0).astype("int64")
    tm_to_date = by_project["revenue_minor"].reindex(projects.index, fill_value=0).astype("int64")
    etc = sched.groupby("project_ref")["planned_cost"].sum().reindex(projects.index, fill_value=0)
    eac = (cost_to_date + etc).astype("int64")

    is_tm, is_ff = kind == "time_and_materials", kind == "fixed_fee"
    is_ms, is_ret = kind == "milestone", kind == "retainer"

    ff_cum = np.zeros(len(projects), dtype=np.int64)
    has_eac = (eac > 0).to_numpy() & is_ff.to_numpy()
    if has_eac.any():
        ff_cum[has_eac] = muldiv(
            np.minimum(cost_to_date.to_numpy()[has_eac], eac.to_numpy()[has_eac]),
            price.to_numpy()[has_eac],
            eac.to_numpy()[has_eac],
        )
    ms = inputs.milestones.merge(projects[["project_ref"]], on="project_ref", how="inner")
    done = ms[(ms["status"] != "planned") & (ms["done_month"] >= 0) & (ms["done_month"] <= m0)]
    ms_cum = done.groupby("project_ref")["amount_minor"].sum().reindex(projects.index, fill_value=0)
    signed = ms[ms["status"] == "signed_off"].groupby("project_ref")["amount_minor"].sum()
    signed = signed.reindex(projects.index, fill_value=0)

    term = (projects["end_month"] - projects["start_month"] + 1).clip(lower=1).astype("int64")
    monthly = pd_series(np.asarray(price.to_numpy() // term.to_numpy(), dtype=np.int64), projects.index)
    elapsed = (m0 - projects["start_month"]).clip(lower=0).clip(upper=term).astype("int64")
    ret_cum = _retainer_cum(price, term, elapsed)
    # Retainers are billed monthly in advance: the as-of month is billed, not yet earned.
    ret_billed = _retainer_cum(price, term, (elapsed + 1).clip(upper=term))

    cum_rev = pd_series(
        np.select(
            [is_tm.to_numpy(), is_ff.to_numpy(), is_ms.to_numpy(), is_ret.to_numpy()],
            [tm_to_date.to_numpy(), ff_cum, ms_cum.to_numpy(), ret_cum.to_numpy()],
            0,
        ),
        projects.index,
    )
    billed = pd_series(
        np.select(
            [is_ms.to_numpy(), is_ret.to_numpy()],
            [signed.to_numpy(), ret_billed.to_numpy()],
            projects["billed_minor"].to_numpy(dtype=np.int64),
        ),
        projects.index,
    )
    remaining = (price - cum_rev).clip(lower=0)

    parts: list[pd.DataFrame] = []
    # Actual layer: T&M per month as posted; fixed fee spread by each month's cost share (the
    # cumulative allocation keeps the months summing exactly to the cost-to-cost revenue).
    tm_actual = actuals[actuals["project_ref"].isin(projects.index[is_tm])]
    parts.append(tm_actual.assign(layer="actual", amount_minor=tm_actual["revenue_minor"]))
    ff_actual = actuals[actuals["project_ref"].isin(projects.index[is_ff])].sort_values(
        ["project_ref", "month"]
    )
    if len(ff_actual):
        cum_cost = ff_actual.groupby("project_ref")["cost_minor"].cumsum().to_numpy(dtype=np.int64)
        refs = ff_actual["project_ref"]
        total_cost = cost_to_date.reindex(refs).to_numpy(dtype=np.int64)
        cum_ff = ff_cum[projects.index.get_indexer(refs)]
        ok = total_cost > 0
        alloc = np.zeros(len(ff_actual), dtype=np.int64)
        alloc[ok] = muldiv(cum_ff[ok], cum_cost[ok], total_cost[ok])
        ff_actual = ff_actual.assign(cum=alloc)
        ff_actual["amount_minor"] = ff_actual["cum"] - ff_actual.groupby("project_ref")["cum"].shift(
            1, fill_value=0
        )
        parts.append(ff_actual.assign(layer="actual"))
    parts.append(done[["project_ref", "amount_minor"]].assign(month=done["done_month"], layer="actual"))
    parts.append(_retainer_months(projects[is_ret], monthly, term, m_first_actual, m0, "actual"))

    # Contracted layer.
    tm_sched = sched[sched["billing_type"] == "time_and_materials"]
    if len(tm_sched):
        per_month = tm_sched.groupby(["project_ref", "month"], as_index=False)["planned_value"].sum()
        practice = projects["practice"].reindex(per_month["project_ref"])
        real = practice.map(lambda p: ppm(settings.realization.for_practice(str(p)))).to_numpy(dtype=np.int64)
        value = muldiv(per_month["planned_value"].to_numpy(), real, PPM)
        value = muldiv(value, np.full(len(value), contracted_ppm, dtype=np.int64), PPM)
        per_month = per_month.assign(amount_minor=value)
        per_month["amount_minor"] = _capped_burn(per_month, remaining)
        parts.append(per_month.assign(layer="contracted"))
    ff_sched = sched[sched["billing_type"] == "fixed_fee"]
    if len(ff_sched):
        per_month = ff_sched.groupby(["project_ref", "month"], as_index=False)["planned_cost"].sum()
        per_month = per_month.sort_values(["project_ref", "month"])
        refs = per_month["project_ref"]
        base = cost_to_date.reindex(refs).to_numpy(dtype=np.int64)
        cum_cost = base + per_month.groupby("project_ref")["planned_cost"].cumsum().to_numpy(dtype=np.int64)
        eac_rows = eac.reindex(refs).to_numpy(dtype=np.int64)
        cum_now = muldiv(
            np.minimum(cum_cost, eac_rows), price.reindex(refs).to_numpy(), np.maximum(eac_rows, 1)
        )
        per_month = per_month.assign(cum=cum_now)
        prev = per_month.groupby("project_ref")["cum"].shift(1)
        start = pd_series(ff_cum[projects.index.get_indexer(refs)], per_month.index)
        period = per_month["cum"] - prev.fillna(start).astype("int64")
        value = muldiv(period.to_numpy(), np.full(len(period), contracted_ppm, dtype=np.int64), PPM)
        per_month = per_month.assign(amount_minor=value)
        per_month["amount_minor"] = _capped_burn(per_month, remaining)
        parts.append(per_month.assign(layer="contracted"))
    planned = ms[ms["status"] == "planned"]
    parts.append(
        planned[["project_ref", "amount_minor"]].assign(
            month=planned["due_month"].clip(lower=m0) + adj.milestone_delay_months, layer="contracted"
        )
    )
    parts.append(_retainer_months(projects[is_ret], monthly, term, m0, m_end, "contracted"))

    lines = pd.concat(
        [p[["project_ref", "month", "layer", "amount_minor"]] for p in parts], ignore_index=True
    )
    lines = lines.merge(projects[["project_ref", "practice", "legal_entity", "currency"]], on="project_ref")
    lines = pd.concat(
        [lines, _pipeline(inputs.opportunities, settings, pipeline_ppm, adj.pipeline_delay_months)]
    )
    lines = lines[
        ((lines["layer"] == "actual") & (lines["month"] >= m_first_actual) & (lines["month"] <= m0))
        | ((lines["layer"] != "actual") & (lines["month"] >= m0) & (lines["month"] < m_end))
    ]
    lines = lines.groupby(
        ["project_ref", "layer", "month", "practice", "legal_entity", "currency"], as_index=False, sort=True
    )["amount_minor"].sum()
    lines = lines[lines["amount_minor"] != 0].reset_index(drop=True)
    lines["amount_minor"] = lines["amount_minor"].astype("int64")
    lines["reporting_amount_minor"] = reporting_amounts(lines["amount_minor"], lines["currency"], settings)
    lines = lines[LINE_COLUMNS]

    prior = (
        inputs.prior.set_index("project_ref")["cum_revenue_minor"].reindex(projects.index)
        if inputs.prior is not None and len(inputs.prior)
        else pd.Series(np.nan, index=projects.index)
    )
    loss = (eac - price).clip(lower=0).where(is_ff, 0).astype("int64")
    balance = cum_rev - billed
    balances = pd.DataFrame(
        {
            "project_ref": projects["project_ref"].to_numpy(),
            "billing_type": kind.to_numpy(),
            "legal_entity": projects["legal_entity"].to_numpy(),
            "currency": projects["currency"].to_numpy(),
            "transaction_price_minor": price.to_numpy(),
            "cost_to_date_minor": cost_to_date.to_numpy(),
            "etc_minor": etc.to_numpy(dtype=np.int64),
            "eac_minor": eac.to_numpy(),
            "cum_revenue_minor": cum_rev.to_numpy(),
            "prior_cum_revenue_minor": prior.to_numpy(),
            "cum_billed_minor": billed.to_numpy(),
            "contract_asset_minor": balance.clip(lower=0).to_numpy(),
            "contract_liability_minor": (-balance).clip(lower=0).to_numpy(),
            "expected_loss_minor": loss.to_numpy(),
            "backlog_minor": remaining.to_numpy(),
        }
    )
    balances["catch_up_minor"] = (
        balances["cum_revenue_minor"] - balances["prior_cum_revenue_minor"].fillna(0)
    ).astype("int64")
    balances["prior_cum_revenue_minor"] = balances["prior_cum_revenue_minor"].astype("Int64")

    capacity = capacity_check(inputs.schedule, inputs.capacity)
    return ForecastResult(
        scenario=scenario,
        as_of=inputs.as_of,
        lines=lines,
        balances=balances,
        capacity=capacity,
        totals=totals_of(lines, balances, capacity, settings),
    )


def _retainer_cum(price: pd.Series, term: pd.Series, months: pd.Series) -> pd.Series:
    """Revenue of a stand-ready retainer after ``months`` of its ``term``: even, exact at the end."""
    return pd_series(muldiv(price.to_numpy(), months.to_numpy(), term.to_numpy()), price.index)


def _retainer_months(
    retainers: pd.DataFrame, monthly: pd.Series, term: pd.Series, first: int, end: int, layer: str
) -> pd.DataFrame:
    """One row per retainer month in ``[first, end)`` within its term (cumulative allocation)."""
    import numpy as np
    import pandas as pd

    if not len(retainers):
        return pd.DataFrame({"project_ref": [], "month": [], "layer": [], "amount_minor": []})
    lo = np.maximum(retainers["start_month"].to_numpy(), first)
    hi = np.minimum(retainers["end_month"].to_numpy() + 1, end)
    counts = np.clip(hi - lo, 0, None)
    refs = np.repeat(retainers["project_ref"].to_numpy(), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    months = np.repeat(lo, counts) + offsets
    k = months - np.repeat(retainers["start_month"].to_numpy(), counts)  # months already elapsed
    price = np.repeat(retainers["price_minor"].to_numpy(dtype=np.int64), counts)
    terms = np.repeat(term.reindex(retainers.index).to_numpy(dtype=np.int64), counts)
    amount = muldiv(price, k + 1, terms) - muldiv(price, k, terms)
    return pd.DataFrame({"project_ref": refs, "month": months, "layer": layer, "amount_minor": amount})


def _pipeline(
    opportunities: pd.DataFrame, settings: ForecastSettings, pipeline_ppm: int, delay: int
) -> pd.DataFrame:
    """Weighted pipeline: amount x P(stage) x scenario factor, spread by the burn profile."""
    import numpy as np
    import pandas as pd

    probability = {stage: ppm(p) for stage, p in settings.stage_probabilities.items()}
    opps = opportunities[opportunities["stage"].isin(list(probability))]
    columns = ["project_ref", "month", "layer", "amount_minor", "practice", "legal_entity", "currency"]
    if not len(opps):
        return pd.DataFrame(
            {c: pd.Series(dtype="int64" if c in ("month", "amount_minor") else "object") for c in columns}
        )
    prob = opps["stage"].map(probability).to_numpy(dtype=np.int64)
    weighted = muldiv(opps["amount_minor"].to_numpy(), prob, PPM)
    weighted = muldiv(weighted, np.full(len(weighted), pipeline_ppm, dtype=np.int64), PPM)
    profile = np.array([ppm(w) for w in settings.burn_profile], dtype=np.int64)
    n = np.clip(opps["duration_months"].to_numpy(dtype=np.int64), 1, None)
    refs_idx = np.repeat(np.arange(len(opps)), n)
    k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    nn = np.repeat(n, n)
    w = profile[k * len(profile) // nn]
    frame = pd.DataFrame({"i": refs_idx, "w": w})
    cum_w = frame.groupby("i")["w"].cumsum().to_numpy(dtype=np.int64)
    total_w = frame.groupby("i")["w"].transform("sum").to_numpy(dtype=np.int64)
    weighted_rows = weighted[refs_idx]
    cum_amount = muldiv(weighted_rows, cum_w, total_w)
    prev_amount = muldiv(weighted_rows, cum_w - w, total_w)
    return pd.DataFrame(
        {
            "project_ref": opps["opp_ref"].to_numpy()[refs_idx],
            "month": opps["start_month"].to_numpy(dtype=np.int64)[refs_idx] + delay + k,
            "layer": "pipeline",
            "amount_minor": cum_amount - prev_amount,
            "practice": opps["practice"].to_numpy()[refs_idx],
            "legal_entity": opps["legal_entity"].to_numpy()[refs_idx],
            "currency": opps["currency"].to_numpy()[refs_idx],
        }
    )


def reporting_amounts(amounts: pd.Series, currencies: pd.Series, settings: ForecastSettings) -> Any:
    import numpy as np

    factors = {cur: fx_factor(cur, settings) for cur in currencies.unique()}
    num = currencies.map({c: f[0] for c, f in factors.items()}).to_numpy(dtype=np.int64)
    den = currencies.map({c: f[1] for c, f in factors.items()}).to_numpy(dtype=np.int64)
    return muldiv(amounts.to_numpy(dtype=np.int64), num, den)


def capacity_check(schedule: pd.DataFrame, capacity: pd.DataFrame) -> pd.DataFrame:
    """Scheduled vs available hours per person and month; ``over_allocated`` when scheduled > available."""
    scheduled = schedule.groupby(["user_ref", "month"], as_index=False)["hours_centi"].sum()
    out = scheduled.merge(capacity, on=["user_ref", "month"], how="outer").fillna(
        {"hours_centi": 0, "available_centi": 0}
    )
    out = out.rename(columns={"hours_centi": "scheduled_centi"}).astype(
        {"scheduled_centi": "int64", "available_centi": "int64", "month": "int64"}
    )
    out["over_allocated"] = out["scheduled_centi"] > out["available_centi"]
    return out.sort_values(["user_ref", "month"]).reset_index(drop=True)


def totals_of(
    lines: pd.DataFrame, balances: pd.DataFrame, capacity: pd.DataFrame, settings: ForecastSettings
) -> dict[str, Any]:
    """Control totals: line count, reporting amount per layer, contract balances, over-allocation."""
    by_layer = lines.groupby("layer")["reporting_amount_minor"].sum()
    by_currency = lines.groupby("currency")["amount_minor"].sum()
    return {
        "lines": len(lines),
        "projects": int(lines["project_ref"].nunique()),
        "reporting_currency": settings.reporting_currency,
        "reporting_minor_by_layer": {str(k): int(v) for k, v in by_layer.items()},
        "amount_minor_by_currency": {str(k): int(v) for k, v in by_currency.items()},
        "contract_asset_minor_by_currency": {
            str(k): int(v) for k, v in balances.groupby("currency")["contract_asset_minor"].sum().items()
        },
        "contract_liability_minor_by_currency": {
            str(k): int(v) for k, v in balances.groupby("currency")["contract_liability_minor"].sum().items()
        },
        "loss_contracts": int((balances["expected_loss_minor"] > 0).sum()),
        "over_allocated_person_months": int(capacity["over_allocated"].sum()),
    }
