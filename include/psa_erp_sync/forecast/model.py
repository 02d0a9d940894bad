"""The revenue forecast model: pure, vectorised (pandas/numpy) on integer minor units.

Monthly buckets are integer month indexes (``year * 12 + month - 1``); ``m0`` is the month of
the as-of date. Three layers per project and month:

- ``actual``: revenue recognized up to the as-of month, by the revenue recognition calculation
  itself (``psa_erp_sync.revenue``: T&M as delivered, fixed fee by cost-to-cost with cumulative
  catch-up, milestones on sign-off, retainers ratably), so the forecast's actuals are the figures
  the revenue journals carry.
- ``contracted``: backlog burned by the resource plan after the as-of date: scheduled hours x
  bill rate x realization (T&M), planned cost through cost-to-cost (fixed fee), milestones not yet
  signed off at their due month (at the earliest the as-of month), the retainer's months after the
  as-of month; T&M and fixed fee are capped by the remaining transaction price.
- ``pipeline``: open opportunities x stage probability, spread from the expected start by the
  burn profile; a separate, lower-confidence layer.

Every product of two amounts goes through :func:`muldiv` (exact, half-even, int64 with a
Python-int fallback when a product could overflow), so no float ever touches money.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from psa_erp_sync import money
from psa_erp_sync.forecast.settings import PPM, ForecastSettings, ppm
from psa_erp_sync.revenue import frames as revenue_frames
from psa_erp_sync.revenue import grid as revenue_grid

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

LAYERS = ("actual", "contracted", "pipeline")
LINE_COLUMNS = [
    "project_ref",
    "practice",
    "legal_entity",
    "layer",
    "month",
    "currency",
    "amount_minor",
    "reporting_amount_minor",
]
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
    if num.dtype == object or den.dtype == object:
        q = num // den
        r = num - q * den
        twice = 2 * r
        up = (twice > den) | ((twice == den) & (q % 2 != 0))
        return q + up.astype(q.dtype)
    # The same on int64, with one division (floor quotient and remainder together) and in place.
    q, r = np.divmod(num, den)
    r <<= 1
    up = r > den
    up |= (r == den) & (q & 1).astype(bool)
    q += up
    return q


def muldiv(a: Any, b: Any, den: Any) -> np.ndarray:
    """``a x b / den`` exactly, rounded half-even once; int64 unless a product could overflow."""
    import numpy as np

    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    den_arr = np.asarray(den, dtype=np.int64)
    if np.any(den_arr <= 0):
        raise ValueError("muldiv needs positive denominators")
    if _bound(a) * _bound(b) < _INT64_SAFE:
        if den_arr.ndim == 0 and int(den_arr) == 1:
            return np.asarray(a * b, dtype=np.int64)  # nothing to round
        return np.asarray(rdiv(a * b, den_arr), dtype=np.int64)
    # Rare: amounts large enough to overflow int64. Exact Python integers, element-wise.
    big = rdiv(a.astype(object) * b.astype(object), den_arr.astype(object))
    return np.asarray(big, dtype=np.int64)


def _bound(values: np.ndarray) -> int:
    """The largest absolute value in ``values`` (0 when empty), as a Python int."""
    return max(int(values.max()), -int(values.min())) if values.size else 0


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
    - ``estimates``: project_ref -> {month: EAC as known at that month's end} (the stored
      revenue recognitions), so past months are recognized as they were.
    - ``contract_terms``: project_ref -> base value, dated change orders, term dates (ODS).
    - ``journaled``: project_ref -> {posting month: revenue} of the planned revenue journals
      before the as-of month: those months are shown as the ERP holds them.
    - ``billed_from_erp``: ``projects.billed_minor`` is the ERP's net billing (invoices - credit
      memos read back) for every contract type; when False (no read-back yet) milestone and
      retainer billing follow their schedules and T&M / fixed fee take ``billed_minor`` as given.
    """

    as_of: date
    projects: pd.DataFrame
    actuals: pd.DataFrame
    schedule: pd.DataFrame
    capacity: pd.DataFrame
    milestones: pd.DataFrame
    opportunities: pd.DataFrame
    prior: pd.DataFrame | None = None
    estimates: dict[str, dict[int, int]] | None = None
    contract_terms: dict[str, revenue_frames.ContractTerms] | None = None
    journaled: dict[str, dict[int, int]] | None = None
    billed_from_erp: bool = False
    # The schedule's text columns as integer codes, as the read had them (see :class:`ScheduleCodes`);
    # None (inputs built by hand) makes the model factorize the strings.
    schedule_codes: ScheduleCodes | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ScheduleCodes:
    """``columns[c] = (codes, values)`` with ``values[codes]`` equal to ``frame[c]`` (``values``
    may repeat), for the schedule frame ``frame`` as read. The model uses them only while
    ``inputs.schedule`` is that very frame, of that length (:func:`schedule_codes`)."""

    frame: pd.DataFrame
    columns: dict[str, tuple[Any, Any]]


def schedule_codes(inputs: ForecastInputs) -> dict[str, tuple[Any, Any]]:
    """The schedule's coded columns that still describe ``inputs.schedule`` (else none)."""
    coded = inputs.schedule_codes
    if coded is None or coded.frame is not inputs.schedule:
        return {}
    return {c: v for c, v in coded.columns.items() if len(v[0]) == len(inputs.schedule)}


@dataclass
class ForecastResult:
    """One scenario's lines, contract balances, capacity check and totals."""

    scenario: str
    as_of: date
    lines: pd.DataFrame
    balances: pd.DataFrame
    capacity: pd.DataFrame
    totals: dict[str, Any] = field(default_factory=dict)
    # forecast.billing_kpi rows (psa_erp_sync.forecast.billing_kpis.BillingKpiRow), set by the refresh
    billing_kpis: list[Any] = field(default_factory=list)
    # The text columns of ``lines`` as computed, factorized: column -> (int codes, unique values),
    # ``uniques[codes]`` equal to the column (see :func:`line_codes`). The store uses them instead
    # of factorizing 1 M strings again; None (a result built by hand) makes it factorize.
    codes: dict[str, tuple[Any, Any]] | None = field(default=None, repr=False, compare=False)


TEXT_LINE_COLUMNS = ("project_ref", "layer", "practice", "legal_entity", "currency")


def line_codes(result: ForecastResult) -> dict[str, tuple[Any, Any]] | None:
    """The result's factorized text columns if they still describe its lines (same length)."""
    codes = result.codes
    if codes is None or any(len(codes[c][0]) != len(result.lines) for c in TEXT_LINE_COLUMNS):
        return None
    return codes


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
    "project_ref": "object",
    "practice": "object",
    "legal_entity": "object",
    "currency": "object",
    "billing_type": "object",
    "price_minor": "int64",
    "bill_rate_minor": "int64",
    "start_month": "int64",
    "end_month": "int64",
    "billed_minor": "int64",
}
ACTUAL_COLUMNS = {"project_ref": "object", "month": "int64", "revenue_minor": "int64", "cost_minor": "int64"}
SCHEDULE_COLUMNS = {
    "project_ref": "object",
    "user_ref": "object",
    "month": "int64",
    "hours_centi": "int64",
    "cost_rate_minor": "int64",
    "cost_currency": "object",
}
CAPACITY_COLUMNS = {"user_ref": "object", "month": "int64", "available_centi": "int64"}
MILESTONE_COLUMNS = {
    "project_ref": "object",
    "amount_minor": "int64",
    "status": "object",
    "due_month": "int64",
    "done_month": "int64",
}
OPPORTUNITY_COLUMNS = {
    "opp_ref": "object",
    "practice": "object",
    "legal_entity": "object",
    "currency": "object",
    "stage": "object",
    "amount_minor": "int64",
    "start_month": "int64",
    "duration_months": "int64",
}


# --- the vectorised model ---------------------------------------------------------------------


def _group_starts(keys: np.ndarray) -> np.ndarray:
    """Boolean mask of the first row of each run of equal ``keys`` (rows sorted by key)."""
    import numpy as np

    if not len(keys):
        return np.zeros(0, dtype=bool)
    return np.r_[True, keys[1:] != keys[:-1]]


def _group_cumsum(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``values`` within runs of equal ``keys`` (exact, int64)."""
    import numpy as np

    if not len(values):
        return values.astype(np.int64)
    total = np.cumsum(values, dtype=np.int64)
    starts = np.flatnonzero(_group_starts(keys))
    counts = np.diff(np.r_[starts, len(values)])
    return total - np.repeat(total[starts] - values[starts], counts)


def _capped(pi: np.ndarray, amount: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Cap each project's cumulative burn (rows sorted by project, then month) at ``cap[pi]``."""
    import numpy as np

    cum = _group_cumsum(pi, amount)
    limit = cap[pi]
    return np.minimum(cum, limit) - np.minimum(cum - amount, limit)


def _sum_by(pi: Any, month: Any, *values: Any) -> tuple[np.ndarray, ...]:
    """Exact int64 sums of ``values`` per (project position, month), sorted by both."""
    import numpy as np
    import pandas as pd

    on_grid = _sum_on_a_grid(np.asarray(pi, dtype=np.int64), np.asarray(month, dtype=np.int64), values)
    if on_grid is not None:
        return on_grid
    frame = pd.DataFrame({"pi": pi, "month": month, **{f"v{i}": v for i, v in enumerate(values)}})
    summed = frame.groupby(["pi", "month"], sort=True).sum()
    out = [
        summed.index.get_level_values(0).to_numpy(np.int64),
        summed.index.get_level_values(1).to_numpy(np.int64),
    ]
    return (*out, *(summed[f"v{i}"].to_numpy(np.int64) for i in range(len(values))))


def _sum_on_a_grid(
    pi: np.ndarray, month: np.ndarray, values: tuple[Any, ...]
) -> tuple[np.ndarray, ...] | None:
    """:func:`_sum_by` on a dense (project position, month) grid: the same arrays, without
    pandas' factorizing and sorting. None when the grid would be sparse (or ``pi`` negative)."""
    import numpy as np

    if not len(pi) or pi.min() < 0:
        return None
    low = int(month.min())
    span = int(month.max()) - low + 1
    size = (int(pi.max()) + 1) * span
    if size > _GRID_CELLS_PER_ROW * len(pi):
        return None
    cell = pi * span + (month - low)
    cells = np.flatnonzero(np.bincount(cell, minlength=size))
    sums = [_int_sums(cell, np.asarray(v, dtype=np.int64), size)[cells] for v in values]
    return (cells // span, cells % span + low, *sums)


def _codes(values: Any, lookup: dict[str, int]) -> np.ndarray:
    """Map a column of labels to integers through ``lookup`` (factorised: one dict hit per label)."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    table = np.array([lookup[str(u)] for u in uniques], dtype=np.int64)
    return table[codes] if len(codes) else np.zeros(0, dtype=np.int64)


def _coded_lookup(codes: np.ndarray, values: Any, lookup: dict[str, int]) -> np.ndarray:
    """``lookup[values[code]]`` per code, asking ``lookup`` only for the values used (as :func:`_codes`)."""
    import numpy as np

    used = np.bincount(codes, minlength=len(values)) > 0 if len(codes) else np.zeros(len(values), dtype=bool)
    table = np.array([lookup[str(v)] if u else 0 for v, u in zip(values, used, strict=True)], dtype=np.int64)
    return table[codes] if len(codes) else np.zeros(0, dtype=np.int64)


@dataclass
class _Prepared:
    """Everything a scenario does not change, computed once per refresh."""

    m0: int
    m_end: int
    m_first_actual: int
    projects: pd.DataFrame
    actual: tuple[np.ndarray, np.ndarray, np.ndarray]  # pi, month, amount
    tm: tuple[np.ndarray, np.ndarray, np.ndarray]  # pi, month, realized value before the scenario factor
    ff: tuple[np.ndarray, np.ndarray, np.ndarray]  # pi, month, cost-to-cost period revenue
    milestones: tuple[np.ndarray, np.ndarray, np.ndarray]  # pi, due month (>= m0), amount
    retainers: tuple[np.ndarray, np.ndarray, np.ndarray]
    remaining: np.ndarray
    balances: pd.DataFrame
    capacity: pd.DataFrame
    etc: np.ndarray | None = None  # estimate to complete per project (planned cost), project currency


def _plan_rows(
    sched: pd.DataFrame,
    projects: pd.DataFrame,
    ref_index: pd.Index,
    rate_ppm: dict[str, int],
    coded: dict[str, tuple[Any, Any]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For :func:`prepare`: the resource plan rows (project position, month, cost, value) in each
    project's currency. ``coded``: the schedule's text columns as codes (:func:`schedule_codes`)."""
    import numpy as np

    n = len(projects)
    if "project_ref" in coded:
        codes, values = coded["project_ref"]
        s_pi = ref_index.get_indexer(np.asarray(values, dtype=object))[codes]
    else:
        s_pi = ref_index.get_indexer(sched["project_ref"])
    keep = s_pi >= 0
    s_pi, s_month = s_pi[keep], sched["month"].to_numpy(np.int64)[keep]
    hours = sched["hours_centi"].to_numpy(np.int64)[keep]
    if "cost_currency" in coded:
        codes, values = coded["cost_currency"]
        from_rate = _coded_lookup(codes[keep], values, rate_ppm)
    else:
        from_rate = _codes(sched["cost_currency"].to_numpy()[keep], rate_ppm)
    to_rate = _codes(projects["currency"].to_numpy(), rate_ppm)[s_pi] if n else np.zeros(0, dtype=np.int64)
    cost_rate = rdiv(muldiv(sched["cost_rate_minor"].to_numpy(np.int64)[keep], from_rate, 1), to_rate)
    planned_cost = muldiv(hours, cost_rate, 100)
    planned_value = muldiv(hours, projects["bill_rate_minor"].to_numpy(np.int64)[s_pi], 100)
    return s_pi, s_month, planned_cost, planned_value


def _tm_contracted(
    projects: pd.DataFrame,
    settings: ForecastSettings,
    is_tm: np.ndarray,
    s_pi: np.ndarray,
    s_month: np.ndarray,
    planned_value: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For :func:`prepare`: T&M planned value x the practice's realization, per project and month."""
    import numpy as np

    n = len(projects)
    tm_sched = is_tm[s_pi] if len(s_pi) else np.zeros(0, dtype=bool)
    t_pi, t_month, t_value = _sum_by(s_pi[tm_sched], s_month[tm_sched], planned_value[tm_sched])
    realization = {
        str(p): ppm(settings.realization.for_practice(str(p))) for p in projects["practice"].unique()
    }
    real_ppm = _codes(projects["practice"].to_numpy(), realization) if n else np.zeros(0, dtype=np.int64)
    t_value = muldiv(t_value, real_ppm[t_pi], PPM) if len(t_pi) else t_value
    return t_pi, t_month, t_value


def _ff_contracted(
    is_ff: np.ndarray,
    s_pi: np.ndarray,
    s_month: np.ndarray,
    planned_cost: np.ndarray,
    cost_to_date: np.ndarray,
    eac: np.ndarray,
    price: np.ndarray,
    cum_rev: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For :func:`prepare`: fixed-fee revenue per project and month through cost-to-cost."""
    import numpy as np

    ff_sched = is_ff[s_pi] if len(s_pi) else np.zeros(0, dtype=bool)
    g_pi, g_month, g_cost = _sum_by(s_pi[ff_sched], s_month[ff_sched], planned_cost[ff_sched])
    g_cum_cost = cost_to_date[g_pi] + _group_cumsum(g_pi, g_cost)
    g_eac = eac[g_pi]
    g_cum = muldiv(np.minimum(g_cum_cost, g_eac), price[g_pi], np.maximum(g_eac, 1)) if len(g_pi) else g_cost
    g_prev = np.r_[0, g_cum[:-1]] if len(g_cum) else g_cum.copy()
    starts = _group_starts(g_pi)
    g_prev[starts] = cum_rev[g_pi[starts]]
    return g_pi, g_month, g_cum - g_prev


def _balances(
    projects: pd.DataFrame,
    price: np.ndarray,
    cost_to_date: np.ndarray,
    etc: np.ndarray,
    cum_rev: np.ndarray,
    billed: np.ndarray,
    remaining: np.ndarray,
) -> pd.DataFrame:
    """For :func:`prepare`: each project's contract balance at the as-of date."""
    import numpy as np
    import pandas as pd

    kind = projects["billing_type"].to_numpy(dtype=object)
    is_ff = kind == "fixed_fee"
    eac = cost_to_date + etc
    return pd.DataFrame(
        {
            "project_ref": projects["project_ref"].to_numpy(),
            "billing_type": kind,
            "legal_entity": projects["legal_entity"].to_numpy(),
            "currency": projects["currency"].to_numpy(),
            "transaction_price_minor": price,
            "cost_to_date_minor": cost_to_date,
            "etc_minor": etc,
            "eac_minor": eac,
            "cum_revenue_minor": cum_rev,
            "cum_billed_minor": billed,
            "contract_asset_minor": np.maximum(cum_rev - billed, 0),
            "contract_liability_minor": np.maximum(billed - cum_rev, 0),
            "expected_loss_minor": np.where(is_ff, np.maximum(eac - price, 0), 0).astype(np.int64),
            "backlog_minor": remaining,
        }
    )


def _milestones(
    ms: pd.DataFrame, ref_index: pd.Index, n: int, m0: int
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """For :func:`prepare`: each project's signed-off milestone amount through the as-of month,
    and the pending milestones summed per project and month (due in the past: the as-of month)."""
    import numpy as np

    m_pi = ref_index.get_indexer(ms["project_ref"])
    keep = m_pi >= 0
    m_pi, m_amount = m_pi[keep], ms["amount_minor"].to_numpy(np.int64)[keep]
    m_status = ms["status"].to_numpy(dtype=object)[keep]
    m_due, m_done = ms["due_month"].to_numpy(np.int64)[keep], ms["done_month"].to_numpy(np.int64)[keep]
    signed_off = (m_status == "signed_off") & (m_done >= 0) & (m_done <= m0)
    signed = np.zeros(n, dtype=np.int64)
    np.add.at(signed, m_pi[signed_off], m_amount[signed_off])
    pending = ~signed_off
    milestones = _sum_by(m_pi[pending], np.maximum(m_due[pending], m0), m_amount[pending])
    return signed, milestones


def _cost_to_date(actuals: pd.DataFrame, ref_index: pd.Index, m0: int) -> np.ndarray:
    """For :func:`prepare`: each project's actual cost up to the as-of month."""
    import numpy as np

    acts = actuals[actuals["month"] <= m0]
    a_pi = ref_index.get_indexer(acts["project_ref"])
    keep = a_pi >= 0
    cost_to_date = np.zeros(len(ref_index), dtype=np.int64)
    np.add.at(cost_to_date, a_pi[keep], acts["cost_minor"].to_numpy(np.int64)[keep])
    return cost_to_date


def prepare(inputs: ForecastInputs, settings: ForecastSettings) -> _Prepared:
    """Actuals, cost-to-cost, contract balances, the capacity check and the scenario-free burn."""
    import numpy as np
    import pandas as pd

    m0 = month_index(inputs.as_of)
    m_end = m0 + settings.horizon_months  # exclusive
    m_first_actual = m0 - settings.actual_months
    projects = inputs.projects.reset_index(drop=True)
    n = len(projects)
    ref_index = pd.Index(projects["project_ref"])
    kind = projects["billing_type"].to_numpy(dtype=object)
    is_tm, is_ff = kind == "time_and_materials", kind == "fixed_fee"
    is_ms, is_ret = kind == "milestone", kind == "retainer"
    price = projects["price_minor"].to_numpy(np.int64)
    rate_ppm = {cur: ppm(rate) for cur, rate in settings.fx_rates.items()}

    coded = schedule_codes(inputs)
    s_pi, s_month, planned_cost, planned_value = _plan_rows(
        inputs.schedule, projects, ref_index, rate_ppm, coded
    )

    cost_to_date = _cost_to_date(inputs.actuals, ref_index, m0)
    etc = np.zeros(n, dtype=np.int64)
    np.add.at(etc, s_pi, planned_cost)
    eac = cost_to_date + etc

    # Recognized revenue through the as-of month: the revenue recognition calculation itself,
    # on the whole firm at once (``revenue/grid.py``, equal to ``recognition.recognize``).
    cum_grid = revenue_grid.cumulative(
        projects,
        inputs.actuals,
        inputs.milestones,
        etc,
        m0,
        m_first_actual - 1,
        estimates=inputs.estimates,
        contract_terms=inputs.contract_terms,
    )
    cum_rev = cum_grid[:, -1] if n else np.zeros(0, dtype=np.int64)

    signed, milestones = _milestones(inputs.milestones, ref_index, n, m0)

    start, end = projects["start_month"].to_numpy(np.int64), projects["end_month"].to_numpy(np.int64)
    term = np.maximum(end - start + 1, 1)
    elapsed = np.clip(m0 - start + 1, 0, term)
    # Retainers are billed monthly in advance: billed through the as-of month.
    ret_billed = muldiv(price, elapsed, term) if n else np.zeros(0, dtype=np.int64)

    billed = projects["billed_minor"].to_numpy(np.int64)
    if not inputs.billed_from_erp:
        billed = np.select([is_ms, is_ret], [signed, ret_billed], billed)
    remaining = np.maximum(price - cum_rev, 0)

    actual = revenue_grid.monthly(projects, cum_grid, m_first_actual - 1, inputs.journaled)

    # Contracted, before the scenario factor: T&M value x realization; fixed fee through cost-to-cost.
    tm = _tm_contracted(projects, settings, is_tm, s_pi, s_month, planned_value)
    ff = _ff_contracted(is_ff, s_pi, s_month, planned_cost, cost_to_date, eac, price, cum_rev)
    retainers = _retainer_months(price, start, end, term, np.flatnonzero(is_ret), m0 + 1, m_end)

    balances = _balances(projects, price, cost_to_date, etc, cum_rev, billed, remaining)
    return _Prepared(
        m0=m0,
        m_end=m_end,
        m_first_actual=m_first_actual,
        projects=projects,
        actual=actual,
        tm=tm,
        ff=ff,
        milestones=milestones,  # type: ignore[arg-type]
        retainers=retainers,
        remaining=remaining,
        balances=balances,
        capacity=capacity_check(inputs.schedule, inputs.capacity, coded.get("user_ref")),
        etc=etc,
    )


def compute(inputs: ForecastInputs, settings: ForecastSettings, scenario: str) -> ForecastResult:
    """The forecast of one scenario: lines per project, layer and month; balances; capacity."""
    return compute_scenarios(inputs, settings, (scenario,))[0]


def _with_catch_up(base_balances: pd.DataFrame, prior_frame: pd.DataFrame | None) -> pd.DataFrame:
    """For :func:`compute_scenarios`: the contract balances with the prior snapshot's cumulative
    revenue and the catch-up against it."""
    import pandas as pd

    balances = base_balances.copy()
    if prior_frame is not None and len(prior_frame):
        prior = prior_frame.set_index("project_ref")["cum_revenue_minor"].reindex(balances["project_ref"])
        balances["prior_cum_revenue_minor"] = prior.astype("Int64").to_numpy()
    else:
        balances["prior_cum_revenue_minor"] = pd.array([pd.NA] * len(balances), dtype="Int64")
    balances["catch_up_minor"] = (
        balances["cum_revenue_minor"] - balances["prior_cum_revenue_minor"].fillna(0).astype("int64")
    ).astype("int64")
    return balances


def compute_scenarios(
    inputs: ForecastInputs,
    settings: ForecastSettings,
    scenarios: tuple[str, ...],
    priors: dict[str, pd.DataFrame | None] | None = None,
) -> list[ForecastResult]:
    """Each scenario's forecast; the scenario-free work is done once. ``priors`` (per scenario)
    override ``inputs.prior`` for the catch-up against that scenario's previous snapshot."""
    return list(iter_scenarios(inputs, settings, scenarios, priors))


def iter_scenarios(
    inputs: ForecastInputs,
    settings: ForecastSettings,
    scenarios: tuple[str, ...],
    priors: dict[str, pd.DataFrame | None] | None = None,
) -> Iterator[ForecastResult]:
    """:func:`compute_scenarios` one scenario at a time: the scenario-free work when the first is
    asked for, each next scenario computed only when asked for (so a writer can store one while
    the next is computed: ``store.write_as_computed``)."""
    base = prepare(inputs, settings)
    text_codes = _text_codes(base.projects, inputs.opportunities)
    for scenario in scenarios:
        adj = settings.scenarios[scenario]  # type: ignore[index]
        shifts = _Shifts(
            ppm(adj.contracted), adj.milestone_delay_months, ppm(adj.pipeline), adj.pipeline_delay_months
        )
        lines, codes = _scenario_lines(base, inputs, settings, shifts, text_codes)
        prior_frame = (priors or {}).get(scenario, inputs.prior) if priors is not None else inputs.prior
        balances = _with_catch_up(base.balances, prior_frame)
        yield ForecastResult(
            scenario=scenario,
            as_of=inputs.as_of,
            lines=lines,
            balances=balances,
            capacity=base.capacity,
            totals=totals_of(lines, balances, base.capacity, settings, codes),
            codes=codes,
        )


@dataclass(frozen=True)
class _Shifts:
    """A scenario's adjustments: contracted and pipeline factors (ppm), delays in months."""

    contracted_ppm: int
    milestone_delay_months: int
    pipeline_ppm: int
    pipeline_delay_months: int


_OPPORTUNITY_TEXT = {"project_ref": "opp_ref", "practice": "practice", "legal_entity": "legal_entity"}


def _text_codes(projects: pd.DataFrame, opportunities: pd.DataFrame) -> dict[str, tuple[Any, Any]]:
    """The text columns of the projects then the opportunities, factorized once: a line's code
    is its project's (or opportunity's), so the lines' 1 M strings are never factorized again."""
    import numpy as np
    import pandas as pd

    out = {}
    for column in ("project_ref", "practice", "legal_entity", "currency"):
        both = np.concatenate(
            [
                projects[column].to_numpy(dtype=object),
                opportunities[_OPPORTUNITY_TEXT.get(column, column)].to_numpy(dtype=object),
            ]
        )
        codes, uniques = pd.factorize(both, use_na_sentinel=False)
        out[column] = (codes.astype(np.int32), uniques)  # int32: 3 scenarios x 1 M lines keep them
    return out


def _scenario_lines(
    base: _Prepared,
    inputs: ForecastInputs,
    settings: ForecastSettings,
    adj: _Shifts,
    text_codes: dict[str, tuple[Any, Any]],
) -> tuple[pd.DataFrame, dict[str, tuple[Any, Any]]]:
    """One scenario's lines (actual, contracted, pipeline) and their text columns' codes."""
    import numpy as np
    import pandas as pd

    factor = adj.contracted_ppm
    tm_pi, tm_month, tm_value = base.tm
    ff_pi, ff_month, ff_value = base.ff
    tm_amount = _capped(tm_pi, _scaled(tm_value, factor), base.remaining)
    ff_amount = _capped(ff_pi, _scaled(ff_value, factor), base.remaining)
    ms_pi, ms_month, ms_amount = base.milestones
    contracted = [
        (tm_pi, tm_month, tm_amount),
        (ff_pi, ff_month, ff_amount),
        (ms_pi, ms_month + adj.milestone_delay_months, ms_amount),
        base.retainers,
    ]
    a_pi, a_month, a_amount = base.actual
    a_keep = (a_month >= base.m_first_actual) & (a_month <= base.m0) & (a_amount != 0)
    c_pi, c_month, c_amount = (np.concatenate([p[i] for p in contracted]) for i in range(3))
    c_keep = (c_month >= base.m0) & (c_month < base.m_end) & (c_amount != 0)
    p_pos, p_month, p_amount = _pipeline_cells(inputs.opportunities, settings, adj, base.m0, base.m_end)
    rows = np.concatenate([a_pi[a_keep], c_pi[c_keep], len(base.projects) + p_pos])
    codes = {c: (text_codes[c][0][rows], text_codes[c][1]) for c in text_codes}
    codes["layer"] = (
        np.repeat(np.arange(3, dtype=np.int32), [int(a_keep.sum()), int(c_keep.sum()), len(p_pos)]),
        np.array(LAYERS, dtype=object),
    )
    amount = np.concatenate([a_amount[a_keep], c_amount[c_keep], p_amount]).astype(np.int64)
    columns = {c: _text_column(*codes[c]) for c in TEXT_LINE_COLUMNS}
    columns["month"] = np.concatenate([a_month[a_keep], c_month[c_keep], p_month]).astype(np.int64)
    columns["amount_minor"] = amount
    columns["reporting_amount_minor"] = _reporting_of_codes(amount, codes["currency"], settings)
    # copy=False: the arrays are this scenario's own (pandas would copy 1 M rows per column).
    return pd.DataFrame({c: columns[c] for c in LINE_COLUMNS}, copy=False), codes


def _scaled(values: np.ndarray, factor_ppm: int) -> np.ndarray:
    """``values x factor_ppm / PPM``, half-even (:func:`muldiv`); a factor of 1 changes nothing."""
    if factor_ppm == PPM:
        return values.copy()
    return muldiv(values, factor_ppm, PPM)


def _text_column(codes: Any, uniques: Any) -> Any:
    """``uniques[codes]`` as the column pandas would build from those strings (its inferred
    dtype), taken from the few distinct values: no inference or copy per row."""
    import numpy as np
    import pandas as pd

    values = np.asarray(uniques, dtype=object)
    if not len(codes):
        return values[codes]
    return pd.Series(values).array.take(np.asarray(codes, dtype=np.intp))


def _reporting_of_codes(amount: np.ndarray, coded: tuple[Any, Any], settings: ForecastSettings) -> np.ndarray:
    """:func:`reporting_amounts` of amounts whose currencies are given by (codes, uniques)."""
    import numpy as np

    codes, uniques = coded
    if not len(codes):
        return np.zeros(0, dtype=np.int64)
    used = np.bincount(codes, minlength=len(uniques)) > 0  # only currencies that occur need a rate
    factors = [fx_factor(str(c), settings) if u else (1, 1) for c, u in zip(uniques, used, strict=True)]
    # Each rate as its lowest terms (the same rational, so the same rounded result): a currency
    # whose rate is a whole number (the reporting currency's 1) needs no division.
    gcd = [math.gcd(n, d) for n, d in factors]
    num = np.array([n // g for (n, _), g in zip(factors, gcd, strict=True)], dtype=np.int64)
    den = np.array([d // g for (_, d), g in zip(factors, gcd, strict=True)], dtype=np.int64)
    whole = den[codes] == 1
    out = muldiv(amount, num[codes], 1) if whole.all() else np.empty(len(codes), dtype=np.int64)
    if not whole.all():
        out[whole] = muldiv(amount[whole], num[codes[whole]], 1)
        out[~whole] = muldiv(amount[~whole], num[codes[~whole]], den[codes[~whole]])
    return out


def _pipeline_cells(
    opportunities: pd.DataFrame, settings: ForecastSettings, adj: _Shifts, m0: int, m_end: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pipeline's lines in the horizon as (opportunity position, month, amount)."""
    import numpy as np

    pipeline = _pipeline(opportunities, settings, adj.pipeline_ppm, adj.pipeline_delay_months)
    month = pipeline["month"].to_numpy(dtype=np.int64)
    amount = pipeline["amount_minor"].to_numpy(dtype=np.int64)
    keep = (month >= m0) & (month < m_end) & (amount != 0)
    return pipeline["opp_pos"].to_numpy(dtype=np.int64)[keep], month[keep], amount[keep]


def _retainer_months(
    price: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    term: np.ndarray,
    which: np.ndarray,
    first: int,
    stop: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pi, month, amount) per month in ``[first, stop)`` of each retainer's term: even, the
    cumulative allocation ``price x k / term`` keeps the months summing exactly to the price."""
    import numpy as np

    lo = np.maximum(start[which], first)
    hi = np.minimum(end[which] + 1, stop)
    counts = np.clip(hi - lo, 0, None)
    pi = np.repeat(which, counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    months = np.repeat(lo, counts) + offsets
    if not len(pi):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    k = months - start[pi]
    amount = muldiv(price[pi], k + 1, term[pi]) - muldiv(price[pi], k, term[pi])
    return pi.astype(np.int64), months.astype(np.int64), amount


def _pipeline(
    opportunities: pd.DataFrame, settings: ForecastSettings, pipeline_ppm: int, delay: int
) -> pd.DataFrame:
    """Weighted pipeline: amount x P(stage) x scenario factor, spread by the burn profile.
    ``opp_pos`` is each row's opportunity's position in ``opportunities``."""
    import numpy as np
    import pandas as pd

    probability = {stage: ppm(p) for stage, p in settings.stage_probabilities.items()}
    kept = opportunities["stage"].isin(list(probability)).to_numpy(dtype=bool)
    opps = opportunities[kept]
    columns = ["project_ref", "month", "layer", "amount_minor", "practice", "legal_entity", "currency"]
    if not len(opps):
        return pd.DataFrame(
            {
                c: pd.Series(dtype="int64" if c in ("month", "amount_minor", "opp_pos") else "object")
                for c in [*columns, "opp_pos"]
            }
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
            "opp_pos": np.flatnonzero(kept)[refs_idx],
        }
    )


def reporting_amounts(
    amounts: pd.Series,
    currencies: pd.Series,
    settings: ForecastSettings,
    coded: tuple[Any, Any] | None = None,
) -> Any:
    """Amounts in minor units of their currencies -> reporting minor units (half-even).
    ``coded``: the currencies already factorized (codes, uniques)."""
    import numpy as np

    coded = pd_factorize(currencies) if coded is None else coded
    return _reporting_of_codes(amounts.to_numpy(dtype=np.int64), coded, settings)


def pd_factorize(values: Any) -> tuple[np.ndarray, Any]:
    import numpy as np
    import pandas as pd

    return pd.factorize(np.asarray(values, dtype=object))


def capacity_check(
    schedule: pd.DataFrame, capacity: pd.DataFrame, user_codes: tuple[Any, Any] | None = None
) -> pd.DataFrame:
    """Scheduled vs available hours per person and month; ``over_allocated`` when scheduled > available.
    ``user_codes``: the schedule's ``user_ref`` already factorized (codes, uniques), if known."""
    fast = _capacity_on_a_grid(schedule, capacity, user_codes)
    return fast if fast is not None else capacity_by_groupby(schedule, capacity)


def capacity_by_groupby(schedule: pd.DataFrame, capacity: pd.DataFrame) -> pd.DataFrame:
    """:func:`capacity_check` by pandas groupby + outer merge: where the grid does not apply, and the
    grid's oracle in the tests."""
    scheduled = schedule.groupby(["user_ref", "month"], as_index=False)["hours_centi"].sum()
    out = scheduled.merge(capacity, on=["user_ref", "month"], how="outer").fillna(
        {"hours_centi": 0, "available_centi": 0}
    )
    out = out.rename(columns={"hours_centi": "scheduled_centi"}).astype(
        {"scheduled_centi": "int64", "available_centi": "int64", "month": "int64"}
    )
    out["over_allocated"] = out["scheduled_centi"] > out["available_centi"]
    return out.sort_values(["user_ref", "month"]).reset_index(drop=True)


_GRID_CELLS_PER_ROW = 4  # a person x month grid larger than this many cells per input row: sort instead


def _capacity_on_a_grid(
    schedule: pd.DataFrame, capacity: pd.DataFrame, user_codes: tuple[Any, Any] | None
) -> pd.DataFrame | None:
    """:func:`capacity_check` summed on a dense (person rank, month) grid with numpy: the same
    frame, row for row. None when the inputs are outside what it handles (empty, NA or non-text
    people, other dtypes or columns, one person's month twice in the capacity, a sparse grid)."""
    import numpy as np
    import pandas as pd

    if not len(schedule) or not len(capacity) or list(capacity.columns) != list(CAPACITY_COLUMNS):
        return None
    dtypes = [schedule[c].dtype for c in ("user_ref", "month", "hours_centi")]
    dtypes += [capacity[c].dtype for c in CAPACITY_COLUMNS]
    if [str(d) for d in dtypes] != ["object", "int64", "int64", "object", "int64", "int64"]:
        return None
    s_code, c_code, users = _user_codes(schedule, capacity, user_codes)
    if users is None:
        return None
    s_month, c_month = schedule["month"].to_numpy(), capacity["month"].to_numpy()
    low, high = min(s_month.min(), c_month.min()), max(s_month.max(), c_month.max())
    span = int(high - low) + 1
    if len(users) * span > _GRID_CELLS_PER_ROW * (len(schedule) + len(capacity)):
        return None
    s_cell = s_code * span + (s_month - low)
    c_cell = c_code * span + (c_month - low)
    scheduled = _int_sums(s_cell, schedule["hours_centi"].to_numpy(), len(users) * span)
    seen = np.bincount(c_cell, minlength=len(scheduled))
    if seen.max() > 1:
        return None  # one person's month twice: the merge would repeat rows
    available = np.zeros(len(scheduled), dtype=np.int64)
    available[c_cell] = capacity["available_centi"].to_numpy()
    present = np.bincount(s_cell, minlength=len(scheduled)) > 0
    present |= seen > 0
    cells = np.flatnonzero(present)
    out = pd.DataFrame(
        {
            "user_ref": pd.Series(users[cells // span], dtype=object),
            "month": (cells % span + low).astype(np.int64),
            "scheduled_centi": scheduled[cells],
            "available_centi": available[cells],
        }
    )
    out["over_allocated"] = out["scheduled_centi"] > out["available_centi"]
    return out


_FLOAT_EXACT = 2**53  # every integer of smaller magnitude is exact in a float64


def _int_sums(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Exact int64 sums of ``values`` per ``index`` in ``[0, size)``. ``np.bincount`` (10x faster
    than ``np.add.at``) accumulates in float64: used only when no partial sum can reach 2^53, so
    every sum is exact; otherwise ``np.add.at`` in int64."""
    import numpy as np

    if len(values) * _bound(values) < _FLOAT_EXACT:
        return np.bincount(index, weights=values, minlength=size).astype(np.int64)
    out = np.zeros(size, dtype=np.int64)
    np.add.at(out, index, values)
    return out


def _user_codes(
    schedule: pd.DataFrame, capacity: pd.DataFrame, user_codes: tuple[Any, Any] | None
) -> tuple[Any, Any, Any]:
    """Each schedule and capacity row's person as its rank among the people sorted (as pandas
    sorts text), and the people in that order; (.., .., None) when a person is NA or not text."""
    import numpy as np
    import pandas as pd

    if user_codes is None:
        user_codes = pd.factorize(schedule["user_ref"].to_numpy(dtype=object))
    codes, values = user_codes
    codes = np.asarray(codes, dtype=np.int64)
    # ``values`` may repeat (the read's codes are rate ids): factorized again, a few thousand values.
    value_codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    if (codes < 0).any() or (value_codes < 0).any():
        return None, None, None  # NA people: pandas' groupby drops them
    codes = value_codes[codes]
    known = pd.Index(np.asarray(uniques, dtype=object))
    c_pos = known.get_indexer(capacity["user_ref"].to_numpy(dtype=object))
    extra = capacity["user_ref"].to_numpy(dtype=object)[c_pos < 0]
    extra_codes, extra_uniques = pd.factorize(extra)
    people = np.concatenate([np.asarray(uniques, dtype=object), np.asarray(extra_uniques, dtype=object)])
    if (extra_codes < 0).any() or not all(type(u) is str for u in people):
        return None, None, None
    c_pos[c_pos < 0] = len(uniques) + extra_codes
    order = np.argsort(people, kind="stable")  # Python's str order, as pandas sorts text
    rank = np.empty(len(people), dtype=np.int64)
    rank[order] = np.arange(len(people))
    return rank[np.asarray(codes, dtype=np.int64)], rank[c_pos], people[order]


def _sums_by(lines: pd.DataFrame, column: str, amount: str, coded: tuple[Any, Any] | None) -> dict[str, int]:
    """``lines.groupby(column)[amount].sum()`` as {value: int} in value order; from the codes
    when given (exact int64 sums per code, no factorization of the strings)."""
    import numpy as np

    if coded is None:
        return {str(k): int(v) for k, v in lines.groupby(column)[amount].sum().items()}
    import pandas as pd

    codes, uniques = coded
    sums = np.zeros(len(uniques), dtype=np.int64)
    np.add.at(sums, codes, lines[amount].to_numpy(dtype=np.int64))
    used = (np.bincount(codes, minlength=len(uniques)) > 0) & ~pd.isna(uniques)  # groupby drops NA keys
    return {str(uniques[i]): int(sums[i]) for i in sorted(np.flatnonzero(used), key=lambda i: uniques[i])}


def totals_of(
    lines: pd.DataFrame,
    balances: pd.DataFrame,
    capacity: pd.DataFrame,
    settings: ForecastSettings,
    codes: dict[str, tuple[Any, Any]] | None = None,
) -> dict[str, Any]:
    """Control totals: line count, reporting amount per layer, contract balances, over-allocation.
    ``codes``: the lines' factorized text columns (:attr:`ForecastResult.codes`), if known."""
    import numpy as np
    import pandas as pd

    codes = codes or {}
    project = codes.get("project_ref")
    projects = (
        int(lines["project_ref"].nunique())
        if project is None
        else int(((np.bincount(project[0], minlength=len(project[1])) > 0) & ~pd.isna(project[1])).sum())
    )
    return {
        "lines": len(lines),
        "projects": projects,
        "reporting_currency": settings.reporting_currency,
        "reporting_minor_by_layer": _sums_by(lines, "layer", "reporting_amount_minor", codes.get("layer")),
        "amount_minor_by_currency": _sums_by(lines, "currency", "amount_minor", codes.get("currency")),
        "contract_asset_minor_by_currency": {
            str(k): int(v) for k, v in balances.groupby("currency")["contract_asset_minor"].sum().items()
        },
        "contract_liability_minor_by_currency": {
            str(k): int(v) for k, v in balances.groupby("currency")["contract_liability_minor"].sum().items()
        },
        "loss_contracts": int((balances["expected_loss_minor"] > 0).sum()),
        "over_allocated_person_months": int(capacity["over_allocated"].sum()),
    }
