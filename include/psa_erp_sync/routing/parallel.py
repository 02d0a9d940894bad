"""Parallel-run reconciliation: per legal entity x period x project x ERP, to the cent.

During a parallel run (``parallel_run`` of a cutover in ``config/erp_routing.yaml``) an entity
posts to both ERPs. Three things must agree, in integer minor units, for every
(legal entity, period, project, currency):

- what the ledger says each ERP holds (:func:`ledger_amounts`) and what that ERP reports holding
  (its read-back, given as :class:`Amount` rows by the caller): kind ``ledger_vs_erp``;
- what the secondary ERP holds and what the primary holds: kind ``primary_vs_secondary``.

:func:`reconcile` returns every difference, never a tolerance: one cent off is a difference.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import psycopg

DifferenceKind = Literal["ledger_vs_erp", "primary_vs_secondary"]


@dataclass(frozen=True)
class Amount:
    """An amount one side holds for one legal entity, period, project, ERP and currency."""

    legal_entity: str
    period: str
    project: str
    erp: str
    currency: str
    amount_minor: int


@dataclass(frozen=True)
class Difference:
    """``held_minor`` (the ERP's read-back; for ``primary_vs_secondary`` the secondary) differs from
    ``expected_minor`` (the ledger; or the primary). None: that side has no line at all."""

    kind: DifferenceKind
    legal_entity: str
    period: str
    project: str
    erp: str
    currency: str
    expected_minor: int | None
    held_minor: int | None

    @property
    def difference_minor(self) -> int:
        return (self.held_minor or 0) - (self.expected_minor or 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "legal_entity": self.legal_entity,
            "period": self.period,
            "project": self.project,
            "erp": self.erp,
            "currency": self.currency,
            "expected_minor": self.expected_minor,
            "held_minor": self.held_minor,
            "difference_minor": self.difference_minor,
        }


@dataclass
class ParallelRunReport:
    primary: str
    secondary: str
    compared: int = 0  # (entity, period, project, ERP, currency) lines compared
    differences: list[Difference] = field(default_factory=list)

    @property
    def reconciled(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict[str, Any]:
        return {
            "primary": self.primary,
            "secondary": self.secondary,
            "compared": self.compared,
            "reconciled": self.reconciled,
            "differences": [d.as_dict() for d in self.differences],
        }


_Key = tuple[str, str, str, str, str]  # entity, period, project, ERP, currency


def _totals(rows: Iterable[Amount]) -> dict[_Key, int]:
    totals: dict[_Key, int] = defaultdict(int)
    for r in rows:
        if not isinstance(r.amount_minor, int) or isinstance(r.amount_minor, bool):
            raise TypeError(f"amounts are integer minor units, not {type(r.amount_minor).__name__}")
        totals[(r.legal_entity, r.period, r.project, r.erp, r.currency)] += r.amount_minor
    return dict(totals)


def reconcile(
    expected: Iterable[Amount], held: Iterable[Amount], *, primary: str, secondary: str
) -> ParallelRunReport:
    """Every difference between the ledger (``expected``) and the ERPs' read-backs (``held``) per
    entity x period x project x ERP x currency, and between the secondary ERP and the primary."""
    want, have = _totals(expected), _totals(held)
    report = ParallelRunReport(primary, secondary)
    for key in sorted(set(want) | set(have)):
        report.compared += 1
        if want.get(key) != have.get(key):
            report.differences.append(Difference("ledger_vs_erp", *key, want.get(key), have.get(key)))
    by_erp: dict[str, dict[tuple[str, str, str, str], int]] = {primary: {}, secondary: {}}
    for (entity, period, project, erp, currency), amount in have.items():
        if erp in by_erp:
            by_erp[erp][(entity, period, project, currency)] = amount
    first, second = by_erp[primary], by_erp[secondary]
    for entity, period, project, currency in sorted(set(first) | set(second)):
        key4 = (entity, period, project, currency)
        if first.get(key4) != second.get(key4):
            report.differences.append(
                Difference(
                    "primary_vs_secondary",
                    entity,
                    period,
                    project,
                    secondary,
                    currency,
                    first.get(key4),
                    second.get(key4),
                )
            )
    return report


# What the ledger says each ERP holds, per posting's own period: each record's latest confirmed
# posting of the record itself per ERP and lane (its own, or a parallel run's shadow; a reversal,
# dated by the record it reverses, holds nothing) and every confirmed correcting journal,
# with the project (the ERP customer/job) of the record's latest posting of itself.
_LEDGER_AMOUNTS = """
WITH rows AS (
    SELECT * FROM ledger.posting_full
    WHERE legal_entity = %(entity)s AND state IN ('confirmed', 'resolved')
      AND coalesce(payload->>'tranDate', payload->'reverses'->>'tranDate')::date BETWEEN %(first)s AND %(last)s
), base AS (
    SELECT DISTINCT ON (record_type, source_system, source_id, target_erp, shadow) *
    FROM rows WHERE corrects IS NULL
    ORDER BY record_type, source_system, source_id, target_erp, shadow, seq DESC
), project AS (
    SELECT DISTINCT ON (record_type, source_system, source_id)
           record_type, source_system, source_id, payload->'customer'->>'externalId' AS project
    FROM ledger.posting_full WHERE corrects IS NULL AND payload ? 'customer'
    ORDER BY record_type, source_system, source_id, seq DESC
), held AS (
    SELECT record_type, source_system, source_id, period, target_erp, currency, amount_minor
    FROM base WHERE action IN ('post', 'adjust')
    UNION ALL
    SELECT record_type, source_system, source_id, period, target_erp, currency, amount_minor
    FROM rows WHERE corrects IS NOT NULL
)
SELECT h.period, coalesce(p.project, ''), h.target_erp, h.currency, sum(h.amount_minor)::bigint
FROM held h LEFT JOIN project p USING (record_type, source_system, source_id)
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""


def ledger_amounts(
    conn: psycopg.Connection[Any], *, legal_entity: str, first_day: date, last_day: date
) -> list[Amount]:
    """What the ledger says each ERP holds for ``legal_entity``'s postings dated in the window."""
    rows = conn.execute(
        _LEDGER_AMOUNTS, {"entity": legal_entity, "first": first_day, "last": last_day}
    ).fetchall()
    return [
        Amount(legal_entity, str(period or ""), project, erp, str(currency), int(amount))
        for period, project, erp, currency, amount in rows
    ]
