"""The recognition calculation on the forecast's input frames: one :class:`ContractInputs` per
project, recognized month by month with :func:`recognition.recognize`.

The revenue service (``service.py``) recognizes these contracts; the forecast's ``actual`` layer
(``forecast/model.py``) computes the same figures for the whole firm at once with ``grid.py``
(checked equal, month by month, in ``tests/revenue/test_grid.py``).

- **Price.** With ``contract_terms`` (read from the ODS): the CRM's won amount with its approved
  change orders effective-dated, or the PSA's fee/budget. Without: the frame's ``price_minor``
  (change orders already in it). A T&M contract with price 0 has no not-to-exceed.
- **Estimates.** The estimate known at each past period's end (``estimates``, from the stored
  recognitions); before the first of them and at ``through``: cost to date + the ETC now.
- **Milestones** count when signed off, in the month of their completion.
- **Retainers** run from their start to their end date (or whole months without dates).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from psa_erp_sync.revenue.recognition import (
    ChangeOrder,
    ContractInputs,
    Milestone,
    Recognition,
    month_end,
    month_start,
    recognize,
)

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class ContractTerms:
    """What the ODS knows beyond the forecast frame: base value, dated change orders, term dates."""

    value_minor: int | None
    change_orders: tuple[ChangeOrder, ...] = ()
    starts_on: date | None = None
    ends_on: date | None = None


def _actuals_by_month(
    actuals: pd.DataFrame, through: int
) -> tuple[dict[str, dict[int, int]], dict[str, dict[int, int]]]:
    """For :func:`contracts`: cost and delivered revenue per project and month, up to ``through``."""
    costs: dict[str, dict[int, int]] = {}
    delivered: dict[str, dict[int, int]] = {}
    acts = actuals[actuals["month"] <= through]
    for ref, month, revenue, cost in zip(
        acts["project_ref"].tolist(),
        acts["month"].tolist(),
        acts["revenue_minor"].tolist(),
        acts["cost_minor"].tolist(),
        strict=True,
    ):
        if cost:
            c = costs.setdefault(ref, {})
            c[month] = c.get(month, 0) + cost
        if revenue:
            d = delivered.setdefault(ref, {})
            d[month] = d.get(month, 0) + revenue
    return costs, delivered


def _signed_milestones(milestones: pd.DataFrame, through: int) -> dict[str, list[Milestone]]:
    """For :func:`contracts`: the milestones signed off by ``through``, per project."""
    signed: dict[str, list[Milestone]] = {}
    done = milestones[(milestones["status"] == "signed_off") & (milestones["done_month"] >= 0)]
    for i, (ref, amount, month) in enumerate(
        zip(
            done["project_ref"].tolist(),
            done["amount_minor"].tolist(),
            done["done_month"].tolist(),
            strict=True,
        )
    ):
        if month <= through:
            signed.setdefault(ref, []).append(Milestone(str(i), amount, month))
    return signed


def contracts(
    projects: pd.DataFrame,
    actuals: pd.DataFrame,
    milestones: pd.DataFrame,
    etc_minor: Mapping[str, int],
    through: int,
    *,
    estimates: Mapping[str, Mapping[int, int]] | None = None,
    contract_terms: Mapping[str, ContractTerms] | None = None,
    billed: Mapping[str, Mapping[int, int]] | None = None,
) -> list[ContractInputs]:
    """One contract per project row, with the actuals and milestones up to ``through``, and what the
    ERP billed per month (``billed``: project -> month index -> minor units; none: nothing billed)."""
    costs, delivered = _actuals_by_month(actuals, through)
    signed = _signed_milestones(milestones, through)
    out = []
    for ref, entity, currency, kind, price, start, end in zip(
        projects["project_ref"].tolist(),
        projects["legal_entity"].tolist(),
        projects["currency"].tolist(),
        projects["billing_type"].tolist(),
        projects["price_minor"].tolist(),
        projects["start_month"].tolist(),
        projects["end_month"].tolist(),
        strict=True,
    ):
        terms = (contract_terms or {}).get(ref)
        value: int | None = terms.value_minor if terms else price
        orders = terms.change_orders if terms else ()
        if kind == "time_and_materials" and not value and not orders:
            value = None  # no not-to-exceed known
        cost = costs.get(ref, {})
        history = dict((estimates or {}).get(ref, {}))
        eac_now = sum(cost.values()) + etc_minor.get(ref, 0)
        months = [*cost, *history]
        first = min(months) if months else through
        estimate = {first: eac_now} | {m: v for m, v in history.items() if m < through} | {through: eac_now}
        out.append(
            ContractInputs(
                project_ref=ref,
                legal_entity=entity,
                currency=currency,
                billing_type=kind,
                contract_value_minor=value
                if value is not None
                else (0 if kind != "time_and_materials" else None),
                change_orders=orders,
                cost_minor=cost,
                estimated_total_cost_minor=estimate if kind == "fixed_fee" else {},
                delivered_minor=delivered.get(ref, {}) if kind == "time_and_materials" else {},
                billed_minor={m: v for m, v in (billed or {}).get(ref, {}).items() if m <= through},
                milestones=tuple(signed.get(ref, ())) if kind == "milestone" else (),
                retainer_start=(terms.starts_on if terms and terms.starts_on else month_start(start))
                if kind == "retainer"
                else None,
                retainer_end=(terms.ends_on if terms and terms.ends_on else month_end(end))
                if kind == "retainer"
                else None,
            )
        )
    return out


def recognize_all(
    contracts_: list[ContractInputs], through: int, *, window_from: int | None = None
) -> dict[str, list[Recognition]]:
    """Every contract's recognition through ``through`` (project_ref -> months in order), listing
    the months from ``window_from`` on when given."""
    return {c.project_ref: recognize(c, through, window_from=window_from) for c in contracts_}
