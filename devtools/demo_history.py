"""The demo's seeded history and the plausibility check of the forecast's actuals (``make demo``).

Without history the demo's firm had one month of work: the months before it had no posted time,
expenses or fixed-fee cost, only retainers and signed-off milestones, so the forecast's last
closed month jumped 3.6-3.7x over the month before. Now the demo seeds ``HISTORY_MONTHS`` settled
months before the data month (``FirmSpec.history_months``: time and expenses approved in the first
days of the next month, in ERP periods still open then), the sync posts them in their own months,
and ``revenue_recognition`` recognizes and journals each of them (``periods_back``), as a firm
that has run for a while has it. The forecast's actual for every closed month then comes out of
real posted data: T&M from the posted billable time and expenses, fixed fee by cost-to-cost as
the cost accrues month by month, milestones on sign-off, retainers ratably.

The demo then fails (exit 1) when the last closed month is not plausible against the months
before: :func:`plausibility` is a pure function over the per-month actuals.
"""

from __future__ import annotations

from datetime import date, datetime
from statistics import mean
from typing import Any

import psycopg

#: Settled months the demo seeds before its data month (``FirmSpec.history_months``).
HISTORY_MONTHS = 3
#: The last closed month's actual must lie within these multiples of the mean of the closed months
#: before it. A month of a steady firm moves by well under 2x: fewer signed-off milestones, the
#: late approvals of a month just closed, or a retainer ending. A 3.6x jump (the demo without
#: history) or a collapse below half means the actuals do not come from posted history.
PLAUSIBLE_MONTH_RATIO = (0.5, 2.0)
#: How many closed months before the last one the mean is taken over (the seeded history).
PRIOR_MONTHS = HISTORY_MONTHS


#: Seconds a demo DAG run may take (``run_dag_test``'s default: 600). ``billing_status`` mirrors
#: every ERP invoice into the PSA, about three PSA requests per new invoice, and the PSA allows 100
#: requests per 15 s (Harvest's limit, the simulator's too): with the history the demo bills about
#: 1,100 invoices, which is over 8 minutes of PSA requests however fast the rest is.
DAG_TIMEOUTS = {"billing_status": 1800.0}


def dag_timeout(dag_id: str) -> float:
    return DAG_TIMEOUTS.get(dag_id, 600.0)


def first_run_conf(dag_id: str) -> dict[str, Any] | None:
    """The ``dags test`` conf of a DAG's first demo run: recognition recomputes the history too."""
    if dag_id == "revenue_recognition":
        return {"periods_back": HISTORY_MONTHS}
    return None


def plausibility(
    actuals: dict[str, int],
    *,
    prior_months: int = PRIOR_MONTHS,
    bounds: tuple[float, float] = PLAUSIBLE_MONTH_RATIO,
) -> dict[str, Any]:
    """Judge the last month of ``actuals`` (month ``YYYY-MM-DD`` -> minor units) against the mean of
    the ``prior_months`` months before it. Months missing in between count as zero.

    Returns the months used, the mean, the ratio (None when it cannot be taken) and ``plausible``
    with a ``reason`` when it is not.
    """
    if not actuals:
        return {"months": {}, "ratio": None, "plausible": False, "reason": "no actuals in the snapshot"}
    ordered = sorted(actuals)
    last = ordered[-1]
    prior = _months_before(date.fromisoformat(last), prior_months)
    before = [int(actuals.get(m, 0)) for m in prior]
    out: dict[str, Any] = {
        "months": {m: int(actuals.get(m, 0)) for m in [*prior, last]},
        "last_month": last,
        "prior_mean": round(mean(before)) if before else None,
        "bounds": list(bounds),
    }
    low, high = bounds
    if not before or mean(before) <= 0:
        return {**out, "ratio": None, "plausible": False, "reason": "no actuals in the months before"}
    ratio = round(int(actuals[last]) / mean(before), 2)
    plausible = low <= ratio <= high
    reason = None if plausible else f"{last} is {ratio}x the mean of the {len(before)} months before"
    return {**out, "ratio": ratio, "plausible": plausible, "reason": reason}


def _months_before(month: date, count: int) -> list[str]:
    out = []
    for k in range(count, 0, -1):
        index = month.year * 12 + month.month - 1 - k
        out.append(date(index // 12, index % 12 + 1, 1).isoformat())
    return out


def forecast_trend(dsn: str, today: datetime) -> dict[str, Any]:
    """The latest base snapshot's actuals per closed month (reporting currency, minor units), the
    last ``PRIOR_MONTHS + 1`` of them judged by :func:`plausibility`; ``all_months`` lists all."""
    with psycopg.connect(dsn) as conn:
        try:
            rows = conn.execute(
                "SELECT l.month, sum(l.reporting_amount_minor) FROM forecast.snapshot_sequence q"
                " JOIN forecast.snapshot s USING (snapshot_id) JOIN forecast.line l USING (snapshot_id)"
                " WHERE q.is_latest AND s.scenario = 'base' AND l.layer = 'actual' AND l.month < %s"
                " GROUP BY 1 ORDER BY 1",
                (today.date().replace(day=1),),
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            rows = []
    actuals = {m.isoformat(): int(v or 0) for m, v in rows}
    return {**plausibility(actuals), "all_months": actuals}


def trend_lines(trend: dict[str, Any]) -> list[str]:
    """The per-month actuals and the verdict, as the demo prints them."""
    if not trend:
        return []
    low, high = trend.get("bounds") or PLAUSIBLE_MONTH_RATIO
    lines = ["forecast actuals per closed month (base, reporting currency, minor units):"]
    lines += [f"  {m[:7]}: {v}" for m, v in trend.get("months", {}).items()]
    verdict = "plausible" if trend.get("plausible") else f"NOT plausible: {trend.get('reason')}"
    lines.append(
        f"  last closed month {str(trend.get('last_month', '?'))[:7]}: {trend.get('ratio')}x the mean of the"
        f" months before ({trend.get('prior_mean')}); {verdict} (bounds {low}x-{high}x)"
    )
    return lines
