"""Recognized revenue of one contract, period by period, in integer minor units.

Periods are calendar months, as integer month indexes (``year * 12 + month - 1``). Every amount
is an integer in minor units of the contract's currency. The rules (``/work/shared/DOMAIN.md``):

- **time and materials** (right to invoice): cumulative revenue = value delivered to date, capped
  at the transaction price when the contract has one (a not-to-exceed);
- **fixed fee** (input method, cost to cost): ``cum = min(cost_to_date / EAC, 1) x price`` with
  the estimate (EAC) as known at the end of each period, so a change of estimate or price is a
  cumulative catch-up in the period it becomes known. When ``EAC > price`` the whole expected
  loss ``EAC - price`` is recognized at once (ASC 605-35): the part not already in the margin to
  date (``cost_to_date - cum``) is held as a loss provision, released as the work is done;
- **milestone**: a milestone's amount when the customer signs it off (value delivered);
- **retainer** (stand-ready): ratably over the term, by time elapsed. A full month counts 1; a
  partial first or last month counts its days in the term over the days of the month;
- **transaction price** in a period = contract value + approved change orders effective on or
  before the period's end (never below zero).

Contract balance per contract: ``cum - cum_billed`` is a contract asset when positive and a
contract liability when negative. Contracts are never netted against each other.

**Rounding.** Each *cumulative* figure is computed exactly (``fractions.Fraction``) and rounded
once, half-even, to the minor unit. Period amounts are differences of rounded cumulatives, so the
periods of a contract always sum to its rounded cumulative: totals tie to the cent.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from fractions import Fraction
from typing import Literal, NamedTuple

BillingType = Literal["time_and_materials", "fixed_fee", "milestone", "retainer"]
BILLING_TYPES: tuple[BillingType, ...] = ("time_and_materials", "fixed_fee", "milestone", "retainer")


def month_index(day: date) -> int:
    return day.year * 12 + day.month - 1


def month_start(index: int) -> date:
    return date(index // 12, index % 12 + 1, 1)


def month_end(index: int) -> date:
    first = month_start(index)
    return date(first.year, first.month, calendar.monthrange(first.year, first.month)[1])


def round_half_even(value: Fraction) -> int:
    """An exact fraction rounded to an integer, ties to even (``round`` on a Fraction does that)."""
    return round(value)


def div_half_even(num: int, den: int) -> int:
    """``num / den`` (``den`` > 0) rounded to an integer, ties to even: integers only, no Fraction."""
    q, r = divmod(num, den)
    twice = 2 * r
    return q + 1 if twice > den or (twice == den and q % 2) else q


@dataclass(frozen=True)
class ChangeOrder:
    """An approved change order: ``amount_minor`` (may be negative) from ``effective_month`` on."""

    amount_minor: int
    effective_month: int


@dataclass(frozen=True)
class Milestone:
    milestone_id: str
    amount_minor: int
    signed_off_month: int | None = None  # None: not signed off (no revenue yet)


@dataclass(frozen=True)
class ContractInputs:
    """Everything the calculation needs about one contract (one project in one legal entity).

    Per-month mappings (month index -> minor units) hold what happened *in* that month:
    ``cost_minor`` (cost incurred), ``delivered_minor`` (T&M value delivered), ``billed_minor``
    (invoiced; zero until billing exists). ``estimated_total_cost_minor`` holds the EAC as known
    at the end of a month; it holds for later months until a newer estimate replaces it.
    ``contract_value_minor`` None means no price (a T&M contract without a not-to-exceed).
    """

    project_ref: str
    legal_entity: str
    currency: str
    billing_type: BillingType
    contract_value_minor: int | None
    change_orders: tuple[ChangeOrder, ...] = ()
    cost_minor: Mapping[int, int] = field(default_factory=dict)
    estimated_total_cost_minor: Mapping[int, int] = field(default_factory=dict)
    delivered_minor: Mapping[int, int] = field(default_factory=dict)
    milestones: tuple[Milestone, ...] = ()
    retainer_start: date | None = None
    retainer_end: date | None = None
    billed_minor: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.billing_type not in BILLING_TYPES:
            raise ValueError(f"contract {self.project_ref}: unknown billing type {self.billing_type!r}")
        if self.billing_type != "time_and_materials" and self.contract_value_minor is None:
            raise ValueError(f"contract {self.project_ref}: a {self.billing_type} contract needs a value")
        if self.billing_type == "retainer" and (self.retainer_start is None or self.retainer_end is None):
            raise ValueError(f"contract {self.project_ref}: a retainer needs its term (start and end)")
        if self.retainer_start and self.retainer_end and self.retainer_end < self.retainer_start:
            raise ValueError(f"contract {self.project_ref}: retainer ends before it starts")

    def first_month(self) -> int | None:
        """The earliest month anything happens in (None: nothing yet)."""
        months = [
            *self.cost_minor,
            *self.delivered_minor,
            *self.billed_minor,
            *self.estimated_total_cost_minor,
            *(m.signed_off_month for m in self.milestones if m.signed_off_month is not None),
        ]
        if self.billing_type == "retainer" and self.retainer_start is not None:
            months.append(month_index(self.retainer_start))
        return min(months) if months else None

    def price_at(self, month: int) -> int | None:
        """Transaction price at the end of ``month``: value + change orders effective by then."""
        if self.contract_value_minor is None:
            return None
        orders = sum(c.amount_minor for c in self.change_orders if c.effective_month <= month)
        return max(0, self.contract_value_minor + orders)

    def inputs_hash(self) -> str:
        """sha256 of the inputs in a canonical form (what a stored recognition was computed from)."""
        data = asdict(self)
        for key in ("cost_minor", "estimated_total_cost_minor", "delivered_minor", "billed_minor"):
            data[key] = sorted((int(k), int(v)) for k, v in data[key].items())
        text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


class Recognition(NamedTuple):
    """One contract at the end of one period. Cumulative figures are to date; ``period_*`` are
    the movements of this period (cumulative now - cumulative at the end of the previous one).
    (A NamedTuple: the forecast builds one per contract and month, hundreds of thousands.)"""

    project_ref: str
    legal_entity: str
    currency: str
    billing_type: BillingType
    period: int
    transaction_price_minor: int | None
    cost_to_date_minor: int
    estimated_total_cost_minor: int
    cum_revenue_minor: int
    period_revenue_minor: int
    cum_billed_minor: int
    contract_asset_minor: int
    contract_liability_minor: int
    expected_loss_minor: int
    loss_provision_minor: int


@functools.lru_cache(maxsize=4096)
def _month_bounds(month: int) -> tuple[date, date, int]:
    """(first day, last day, number of days) of a month index."""
    last = month_end(month)
    return month_start(month), last, last.day


def _retainer_units(start: date, end: date, month: int) -> Fraction:
    """The share of ``month`` inside the term ``[start, end]``: 1 for a full month."""
    m_first, m_last, days = _month_bounds(month)
    first, last = max(start, m_first), min(end, m_last)
    if last < first:
        return Fraction(0)
    return Fraction((last - first).days + 1, days)


def _retainer_term(start: date, end: date) -> Fraction:
    """The whole term in months (partial months as fractions)."""
    units = (_retainer_units(start, end, m) for m in range(month_index(start), month_index(end) + 1))
    return sum(units, Fraction(0))


def _signed_by_month(contract: ContractInputs) -> dict[int, int]:
    """For :func:`recognize`: the contract's signed-off milestone amounts per month."""
    signed: dict[int, int] = {}
    for m in contract.milestones:
        if m.signed_off_month is not None:
            signed[m.signed_off_month] = signed.get(m.signed_off_month, 0) + m.amount_minor
    return signed


def _opening(
    contract: ContractInputs, signed: dict[int, int], start: int
) -> tuple[int, int, int, int, int | None]:
    """For :func:`recognize`: the totals to date before ``start`` (cost, delivered, billed, signed
    off) and the estimate known then. Amounts dated before the first month looped over count in it."""
    cost = sum(v for m, v in contract.cost_minor.items() if m < start)
    delivered = sum(v for m, v in contract.delivered_minor.items() if m < start)
    billed = sum(v for m, v in contract.billed_minor.items() if m < start)
    earned = sum(v for m, v in signed.items() if m < start)
    known = [m for m in contract.estimated_total_cost_minor if m < start]
    estimate = contract.estimated_total_cost_minor[max(known)] if known else None
    return cost, delivered, billed, earned, estimate


def _retainer_opening(
    contract: ContractInputs, start: int
) -> tuple[date | None, date | None, Fraction, Fraction]:
    """For :func:`recognize`: a retainer's first and last day, its term and the part of it elapsed
    before ``start`` (zero for other contracts)."""
    ret_start, ret_end = contract.retainer_start, contract.retainer_end
    term = elapsed = Fraction(0)
    if contract.billing_type == "retainer":
        assert ret_start is not None and ret_end is not None
        term = _retainer_term(ret_start, ret_end)
        elapsed = sum(
            (_retainer_units(ret_start, ret_end, m) for m in range(month_index(ret_start), start)),
            Fraction(0),
        )
    return ret_start, ret_end, term, elapsed


def _fixed_fee_month(price: int, cost: int, estimate: int | None) -> tuple[int, int, int, int]:
    """For :func:`recognize`: a fixed-fee month's cumulative revenue, EAC, loss and provision."""
    # An estimate below what is already spent is stale: EAC is at least the cost to date.
    eac = max(estimate if estimate is not None else cost, cost)
    revenue = div_half_even(price * min(cost, eac), eac) if eac > 0 else 0
    loss = max(0, eac - price)
    provision = 0
    if loss > 0:
        # The whole loss is recognized now: what the margin to date does not show is provided.
        provision = min(loss, max(0, loss - (min(cost, eac) - revenue)))
    return revenue, eac, loss, provision


def recognize(
    contract: ContractInputs, through: int, *, since: int | None = None, window_from: int | None = None
) -> list[Recognition]:
    """The contract's recognition for every month from its first activity (or ``since``, if
    earlier) through ``through``; empty when nothing has happened by then. With ``window_from``,
    only the months from then on are returned (earlier ones are summed, not listed: the same
    figures, less work).

    One pass over the months with running totals: each month's cumulative figures are computed
    from the totals to date, so a month's result never depends on how the months are grouped."""
    first = contract.first_month()
    if since is not None:
        first = since if first is None else min(first, since)
    if first is None or first > through:
        return []
    kind = contract.billing_type
    start = first if window_from is None else max(first, window_from - 1)
    signed = _signed_by_month(contract)
    cost, delivered, billed, earned, estimate = _opening(contract, signed, start)
    ret_start, ret_end, term, elapsed = _retainer_opening(contract, start)
    fixed_price = contract.price_at(through) if not contract.change_orders else None
    costs, deliveries, bills, estimates = (
        contract.cost_minor,
        contract.delivered_minor,
        contract.billed_minor,
        contract.estimated_total_cost_minor,
    )
    out: list[Recognition] = []
    prev_revenue = None
    for month in range(start, through + 1):
        cost += costs.get(month, 0)
        delivered += deliveries.get(month, 0)
        billed += bills.get(month, 0)
        earned += signed.get(month, 0)
        estimate = estimates.get(month, estimate)
        price = fixed_price if fixed_price is not None else contract.price_at(month)
        loss = provision = 0
        if kind == "time_and_materials":
            revenue = delivered
            eac = max(estimate if estimate is not None else cost, cost)
        elif kind == "fixed_fee":
            assert price is not None
            revenue, eac, loss, provision = _fixed_fee_month(price, cost, estimate)
        elif kind == "milestone":
            revenue = earned
            eac = max(estimate if estimate is not None else cost, cost)
        else:
            assert price is not None and ret_start is not None and ret_end is not None
            elapsed += _retainer_units(ret_start, ret_end, month)
            revenue = div_half_even(
                price * elapsed.numerator * term.denominator, elapsed.denominator * term.numerator
            )
            eac = max(estimate if estimate is not None else cost, cost)
        if price is not None and revenue > price:
            revenue = price
        if prev_revenue is None and month > first:
            prev_revenue = revenue  # the month before the window: only its cumulative is needed
            continue
        balance = revenue - billed
        out.append(
            Recognition(
                contract.project_ref,
                contract.legal_entity,
                contract.currency,
                kind,
                month,
                price,
                cost,
                eac,
                revenue,
                revenue - (prev_revenue or 0),
                billed,
                max(balance, 0),
                max(-balance, 0),
                loss,
                provision,
            )
        )
        prev_revenue = revenue
    return out


def recognize_period(contract: ContractInputs, period: int) -> tuple[Recognition | None, Recognition | None]:
    """(the previous period's recognition, this period's): what a period's journal moves between."""
    rows = recognize(contract, period)
    by_period = {r.period: r for r in rows[-2:]}
    return by_period.get(period - 1), by_period.get(period)
