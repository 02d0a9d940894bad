"""Control totals: record count, hours, amount per currency to the cent, and a hash total.

The hash total is the sum of the first 60 bits of md5(source id) over the set: independent of
order, and different when any member differs, so "same count, different records" is caught.
Totals are computed in SQL over NUMERIC, never in floating point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from psa_erp_sync.contracts.kinds import KINDS

HASH_EXPR = "coalesce(sum(('x' || substr(md5({col}), 1, 15))::bit(60)::bigint::numeric), 0)::text"


@dataclass(frozen=True)
class Totals:
    count: int
    hours: Decimal
    amounts: dict[str, int] = field(default_factory=dict)  # currency -> minor units
    hash_total: str = "0"

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "hours": str(self.hours),
            "amounts_minor": dict(sorted(self.amounts.items())),
            "hash_total": self.hash_total,
        }


class ControlTotalMismatch(RuntimeError):
    """Two stages that must agree do not."""


def canonical(
    conn: psycopg.Connection,
    kind: str,
    *,
    approved_only: bool = True,
    where: str = "",
    params: tuple[Any, ...] = (),
) -> Totals:
    """Totals of current canonical records (approved, not deleted by default)."""
    table = KINDS[kind].canonical_table
    hours = "sum(hours)" if kind == "time_entry" else "0"
    filters = ["NOT is_deleted"] + (["approved"] if approved_only else []) + ([where] if where else [])
    clause = " AND ".join(filters)
    row = conn.execute(
        f"SELECT count(*), coalesce({hours}, 0), {HASH_EXPR.format(col='source_id')} FROM {table} WHERE {clause}",
        params,
    ).fetchone()
    assert row is not None
    amounts = {
        cur: int(total)
        for cur, total in conn.execute(
            f"SELECT currency, sum(amount_minor) FROM {table} WHERE {clause} GROUP BY currency ORDER BY currency",
            params,
        )
    }
    return Totals(int(row[0]), Decimal(row[1]), amounts, row[2])


def canonical_functional(conn: psycopg.Connection, kind: str) -> Totals:
    """:func:`canonical` (approved, not deleted) with the amounts in each record's functional
    currency (``functional_amount_minor``, migration 0023; the transaction amount for rows validated
    before it): the second currency of foreign-currency work."""
    table = KINDS[kind].canonical_table
    base = canonical(conn, kind)
    amounts = {
        cur.strip(): int(total)
        for cur, total in conn.execute(
            f"SELECT coalesce(functional_currency, currency), sum(coalesce(functional_amount_minor, amount_minor))"
            f" FROM {table} WHERE NOT is_deleted AND approved GROUP BY 1 ORDER BY 1"
        )
    }
    return Totals(base.count, base.hours, amounts, base.hash_total)


def record(
    conn: psycopg.Connection, *, dag_id: str, run_id: str, record_type: str, stage: str, totals: Totals
) -> None:
    """Store totals for (run, record type, stage); a retry overwrites its own earlier row."""
    conn.execute(
        """
        INSERT INTO audit.control_total (dag_id, run_id, record_type, stage, record_count, hours, amounts, hash_total)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (dag_id, run_id, record_type, stage) DO UPDATE SET record_count = EXCLUDED.record_count,
            hours = EXCLUDED.hours, amounts = EXCLUDED.amounts, hash_total = EXCLUDED.hash_total, recorded_at = now()
        """,
        (
            dag_id,
            run_id,
            record_type,
            stage,
            totals.count,
            totals.hours,
            Jsonb({k: str(v) for k, v in totals.amounts.items()}),
            totals.hash_total,
        ),
    )


def assert_equal(
    left_name: str, left: Totals, right_name: str, right: Totals, *, compare_hours: bool = True
) -> None:
    problems = []
    if left.count != right.count:
        problems.append(f"count {left.count} != {right.count}")
    if compare_hours and left.hours != right.hours:
        problems.append(f"hours {left.hours} != {right.hours}")
    if left.amounts and right.amounts and left.amounts != right.amounts:
        problems.append(f"amounts {left.amounts} != {right.amounts}")
    if left.hash_total != right.hash_total:
        problems.append(
            "hash totals differ (same count, different records)"
            if left.count == right.count
            else "hash totals differ"
        )
    if problems:
        raise ControlTotalMismatch(f"{left_name} vs {right_name}: " + "; ".join(problems))
