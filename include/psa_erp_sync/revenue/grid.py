"""The recognition calculation for many contracts at once: cumulative revenue per project and
month as a numpy grid, for the forecast's volumes (50,000 projects x 25 months).

Each rule of :mod:`recognition` has a closed form when a contract has no change orders and, for a
retainer, a term of whole months: T&M ``min(Σ delivered, cap)``, fixed fee
``half_even(price x min(ctd, EAC) / EAC)`` with the EAC of each month forward-filled from the
estimates, milestones ``min(Σ signed off, price)``, retainers ``half_even(price x k / term)``.
Those contracts are computed here, vectorised; the others (change orders, partial months) go
through :func:`recognition.recognize` itself. ``tests/revenue/test_grid.py`` checks, with
Hypothesis, that the grid equals :func:`recognition.recognize` month by month.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING

from psa_erp_sync.revenue import frames
from psa_erp_sync.revenue.recognition import month_end, month_index, month_start

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

_INT64_SAFE = 2**62


def _div_half_even(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ``num / den`` (``den`` > 0) rounded half-even (exact on integers)."""
    import numpy as np

    q = num // den
    r = num - q * den
    twice = 2 * r
    up = (twice > den) | ((twice == den) & (q % 2 != 0))
    return np.asarray(q + up.astype(q.dtype))


def _mul_div(a: np.ndarray, b: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``a x b / den`` rounded once, half-even; exact Python integers when int64 could overflow."""
    import numpy as np

    max_a = int(np.abs(a).max()) if a.size else 0
    max_b = int(np.abs(b).max()) if b.size else 0
    if max_a * max_b < _INT64_SAFE:
        return _div_half_even(a * b, den)
    big = _div_half_even(a.astype(object) * b.astype(object), den.astype(object))
    return np.asarray(big, dtype=np.int64)


def _dense(
    pi: np.ndarray, month: np.ndarray, amount: np.ndarray, n: int, first: int, width: int
) -> np.ndarray:
    """Amounts per (project, month column); months before ``first`` land in column 0."""
    import numpy as np

    out = np.zeros((n, width), dtype=np.int64)
    keep = (pi >= 0) & (month <= first + width - 1)
    col = np.clip(month[keep] - first, 0, None)
    np.add.at(out, (pi[keep], col), amount[keep])
    return out


def _fixed_fee(
    cum: np.ndarray,
    is_ff: np.ndarray,
    cost: np.ndarray,
    etc_minor: np.ndarray,
    price: np.ndarray,
    index: pd.Index,
    first: int,
    through: int,
    estimates: Mapping[str, Mapping[int, int]] | None,
) -> None:
    """For :func:`cumulative`: the fixed-fee rows of ``cum`` (percentage of completion on cost)."""
    import numpy as np

    # EAC per month: the estimate known then (forward-filled), cost to date + ETC now before
    # the first one and in the last month; never below the cost to date.
    eac_now = cost[:, -1] + etc_minor
    eac = np.tile(eac_now[:, None], (1, through - first + 1))
    for ref, history in (estimates or {}).items():
        i = index.get_indexer([ref])[0]
        if i < 0 or not is_ff[i]:
            continue
        before = [m for m in history if m < first]
        if before:
            eac[i, :] = history[max(before)]
        for m in sorted(m for m in history if first <= m < through):
            eac[i, m - first :] = history[m]
        eac[i, -1] = eac_now[i]
    eac = np.maximum(eac, cost)
    ff = np.flatnonzero(is_ff)
    num = np.minimum(cost[ff], eac[ff])
    den = eac[ff]
    positive = den > 0
    value = np.zeros_like(num)
    p = np.broadcast_to(price[ff][:, None], num.shape)
    value[positive] = _mul_div(num[positive], p[positive], den[positive])
    cum[ff] = value


def _recognize_slow(
    cum: np.ndarray,
    which: pd.DataFrame,
    slow: np.ndarray,
    actuals: pd.DataFrame,
    milestones: pd.DataFrame,
    etc_minor: np.ndarray,
    through: int,
    first: int,
    *,
    estimates: Mapping[str, Mapping[int, int]] | None,
    contract_terms: Mapping[str, frames.ContractTerms] | None,
) -> None:
    """For :func:`cumulative`: the rows of ``cum`` whose terms (change orders, partial retainer
    months) need the per-contract rules of :func:`frames.recognize_all`."""
    import numpy as np

    contracts = frames.contracts(
        which,
        actuals,
        milestones,
        dict(zip(which["project_ref"].tolist(), etc_minor[slow].tolist(), strict=True)),
        through,
        estimates=estimates,
        contract_terms=contract_terms,
    )
    rows = frames.recognize_all(contracts, through, window_from=first)
    for pos, contract in zip(np.flatnonzero(slow), contracts, strict=True):
        cum[pos, :] = 0
        for row in rows.get(contract.project_ref, []):
            if row.period >= first:
                cum[pos, row.period - first :] = row.cum_revenue_minor


def _terms(
    projects: pd.DataFrame, kind: np.ndarray, contract_terms: Mapping[str, frames.ContractTerms] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[int, tuple[date, date]]]:
    """For :func:`cumulative`: each project's price, whether it has a value, whether it needs the
    per-contract rules (``slow``), its first and last month, after its contract terms, and the
    retainers with a partial first or last month (position -> first and last day; see
    :func:`_partial_retainers`)."""
    import numpy as np

    terms = contract_terms or {}
    term_of = [terms.get(str(r)) for r in projects["project_ref"].to_numpy(dtype=object)]
    price = projects["price_minor"].to_numpy(np.int64).copy()
    has_value = np.ones(len(projects), dtype=bool)
    slow = np.zeros(len(projects), dtype=bool)
    start = projects["start_month"].to_numpy(np.int64).copy()
    end = projects["end_month"].to_numpy(np.int64).copy()
    partial: dict[int, tuple[date, date]] = {}
    for i, t in enumerate(term_of):
        if t is None:
            continue
        if t.change_orders:
            slow[i] = True
            continue
        has_value[i] = t.value_minor is not None
        price[i] = t.value_minor or 0
        if kind[i] == "retainer" and (t.starts_on or t.ends_on):
            first_day = t.starts_on or month_start(int(start[i]))
            last_day = t.ends_on or month_end(int(end[i]))
            if t.starts_on is not None:
                start[i] = month_index(t.starts_on)
            if t.ends_on is not None:
                end[i] = month_index(t.ends_on)
            if first_day.day != 1 or last_day != month_end(month_index(last_day)):
                if last_day >= first_day:
                    partial[i] = (first_day, last_day)
                else:
                    slow[i] = True  # an empty term: the per-contract rules decide
    return price, has_value, slow, start, end, partial


# Every month length divides this (lcm of 28, 29, 30 and 31): a day of any month is a whole number
# of these units, so a retainer's elapsed and whole term (sums of partial months) are integers.
_MONTH_UNITS = 377_580


def _units(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Months from day ``first`` through day ``last`` (days since 1970, ``last`` >= ``first``) in
    ``_MONTH_UNITS``: each day counts ``1 / days in its month`` of a month, as
    ``recognition._retainer_units`` sums them."""
    import numpy as np

    d0, d1 = first.astype("datetime64[D]"), last.astype("datetime64[D]")
    m0, m1 = d0.astype("datetime64[M]"), d1.astype("datetime64[M]")
    len0 = ((m0 + 1).astype("datetime64[D]") - m0.astype("datetime64[D]")).astype(np.int64)
    len1 = ((m1 + 1).astype("datetime64[D]") - m1.astype("datetime64[D]")).astype(np.int64)
    same = m0 == m1
    head = ((m0 + 1).astype("datetime64[D]") - d0).astype(np.int64)  # days of the first month
    tail = (d1 - m1.astype("datetime64[D]")).astype(np.int64) + 1  # days of the last month
    between = (m1 - m0).astype(np.int64) - 1
    across = head * (_MONTH_UNITS // len0) + between * _MONTH_UNITS + tail * (_MONTH_UNITS // len1)
    inside = ((d1 - d0).astype(np.int64) + 1) * (_MONTH_UNITS // len0)
    return np.where(same, inside, across)


def _partial_retainers(
    cum: np.ndarray, price: np.ndarray, partial: dict[int, tuple[date, date]], first: int, through: int
) -> None:
    """For :func:`cumulative`: the rows of retainers with a partial first or last month, exactly as
    :func:`recognition.recognize` (no change orders): ``half_even(price x elapsed / term)`` through
    each month's last day, with elapsed and term in whole ``_MONTH_UNITS`` (the same rational as
    its fractions of months), capped at the price."""
    import numpy as np

    rows = np.fromiter(partial, dtype=np.int64, count=len(partial))
    epoch = date(1970, 1, 1).toordinal()
    d0 = np.array([partial[i][0].toordinal() - epoch for i in rows], dtype=np.int64)
    d1 = np.array([partial[i][1].toordinal() - epoch for i in rows], dtype=np.int64)
    term = _units(d0, d1)
    p = np.maximum(price[rows], 0)
    for col, month in enumerate(range(first, through + 1)):
        last = month_end(month).toordinal() - epoch
        upto = np.minimum(d1, last)
        elapsed = np.where(upto >= d0, _units(d0, np.maximum(upto, d0)), 0)
        cum[rows, col] = np.minimum(_mul_div(p, elapsed, term), p)


def cumulative(
    projects: pd.DataFrame,
    actuals: pd.DataFrame,
    milestones: pd.DataFrame,
    etc_minor: np.ndarray,
    through: int,
    first: int,
    *,
    estimates: Mapping[str, Mapping[int, int]] | None = None,
    contract_terms: Mapping[str, frames.ContractTerms] | None = None,
) -> np.ndarray:
    """Cumulative recognized revenue, shape (projects, months ``first .. through``), in the
    projects' order, with the same inputs and rules as :func:`frames.contracts`."""
    import numpy as np
    import pandas as pd

    n, width = len(projects), through - first + 1
    index = pd.Index(projects["project_ref"])
    kind = projects["billing_type"].to_numpy(dtype=object)
    price, has_value, slow, start, end, partial = _terms(projects, kind, contract_terms)
    is_tm, is_ff = kind == "time_and_materials", kind == "fixed_fee"
    is_ms, is_ret = kind == "milestone", kind == "retainer"
    capped = ~(is_tm & ((price == 0) | ~has_value))  # a T&M contract without a value has no cap

    acts = actuals[actuals["month"] <= through]
    a_pi = index.get_indexer(acts["project_ref"])
    a_month = acts["month"].to_numpy(np.int64)
    cost = np.cumsum(_dense(a_pi, a_month, acts["cost_minor"].to_numpy(np.int64), n, first, width), axis=1)
    delivered = np.cumsum(
        _dense(a_pi, a_month, acts["revenue_minor"].to_numpy(np.int64), n, first, width), axis=1
    )
    done = milestones[(milestones["status"] == "signed_off") & (milestones["done_month"] >= 0)]
    signed = np.cumsum(
        _dense(
            index.get_indexer(done["project_ref"]),
            done["done_month"].to_numpy(np.int64),
            done["amount_minor"].to_numpy(np.int64),
            n,
            first,
            width,
        ),
        axis=1,
    )

    cum = np.zeros((n, width), dtype=np.int64)
    cum[is_tm] = delivered[is_tm]
    cum[is_ms] = signed[is_ms]
    if is_ff.any():
        _fixed_fee(cum, is_ff, cost, etc_minor, price, index, first, through, estimates)
    if is_ret.any():
        r = np.flatnonzero(is_ret)
        months = np.arange(first, through + 1, dtype=np.int64)[None, :]
        term = np.maximum(end[r] - start[r] + 1, 1)[:, None]
        elapsed = np.clip(months - start[r][:, None] + 1, 0, term)
        cum[r] = _div_half_even(price[r][:, None] * elapsed, np.broadcast_to(term, elapsed.shape))
    cum = np.where(capped[:, None], np.minimum(cum, price[:, None]), cum)
    if partial:
        _partial_retainers(cum, price, partial, first, through)

    if slow.any():
        _recognize_slow(
            cum,
            projects[slow],
            slow,
            actuals,
            milestones,
            etc_minor,
            through,
            first,
            estimates=estimates,
            contract_terms=contract_terms,
        )
    return cum


def monthly(
    projects: pd.DataFrame,
    cum: np.ndarray,
    first: int,
    journaled: Mapping[str, Mapping[int, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(project position, month, revenue) per month ``first + 1 .. through`` from the cumulative
    grid, zero months left out. A project's journaled months (posting month -> revenue) are shown
    as the ERP holds them; the month after the last of them takes the rest of the cumulative (as
    ``post_to_first_open`` does), so the months still sum to the cumulative revenue."""
    import numpy as np

    period = np.diff(cum, axis=1)
    if journaled:
        positions = {str(r): i for i, r in enumerate(projects["project_ref"].tolist())}
        for ref, months in journaled.items():
            i = positions.get(ref)
            if i is None:
                continue
            inside = {m: v for m, v in months.items() if first < m <= first + period.shape[1]}
            if not inside:
                continue
            lo, hi = min(inside), max(inside)
            for m in range(lo, hi + 1):
                period[i, m - first - 1] = inside.get(m, 0)
            if hi + 1 <= first + period.shape[1]:
                period[i, hi - first] = cum[i, hi + 1 - first] - cum[i, lo - 1 - first] - sum(inside.values())
    pi, col = np.nonzero(period)
    return pi.astype(np.int64), (col + first + 1).astype(np.int64), period[pi, col]
