"""Read the ERP back and reconcile it with what should be there, to the cent.

Expected = the approved, not deleted canonical records, minus those parked (closed period) or
rejected (dead letters) whose latest ledger row says so. Actual = the ERP's records of our
external-id namespace. Count, hours, amount per currency (hours x rate, half-even once per
record, exactly as canonical amounts are computed) and the hash total of source ids must agree;
the differences are listed by external id so nothing is "close enough".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Protocol

import psycopg

from psa_erp_sync import money
from psa_erp_sync.reconcile.control_totals import HASH_EXPR, Totals

SOURCE = {"timebill": "canonical.time_entry", "expensereport": "canonical.expense_entry"}


class SuiteQL(Protocol):
    def suiteql(self, query: str, *, page_size: int = 1000) -> Iterator[dict[str, Any]]: ...


def hash_of(source_ids: list[str]) -> str:
    """Same as the SQL hash total: sum of the first 60 bits of md5 of each id."""
    return str(
        sum(int(hashlib.md5(s.encode(), usedforsecurity=False).hexdigest()[:15], 16) for s in source_ids)
    )


def expected(
    conn: psycopg.Connection, record_type: str
) -> tuple[Totals, dict[str, tuple[Decimal, int, str]]]:
    source = SOURCE[record_type]
    hours = "hours" if record_type == "timebill" else "0::numeric"
    where = """approved AND NOT is_deleted AND NOT EXISTS (
        SELECT 1 FROM ledger.posting l WHERE l.record_type = %(rt)s AND l.source_system = c.source_system
          AND l.source_id = c.source_id AND l.state IN ('parked', 'rejected')
          AND l.seq = (SELECT max(seq) FROM ledger.posting m WHERE m.record_type = %(rt)s
                       AND m.source_system = c.source_system AND m.source_id = c.source_id))"""
    rows = {
        sid: (Decimal(h), int(amount), cur)
        for sid, h, amount, cur in conn.execute(
            f"SELECT source_id, {hours}, amount_minor, currency FROM {source} c WHERE {where}",
            {"rt": record_type},
        )
    }
    hash_row = conn.execute(
        f"SELECT {HASH_EXPR.format(col='source_id')} FROM {source} c WHERE {where}", {"rt": record_type}
    ).fetchone()
    amounts: dict[str, int] = {}
    for _, amount, cur in rows.values():
        amounts[cur] = amounts.get(cur, 0) + amount
    total_hours = sum((h for h, _, _ in rows.values()), Decimal(0))
    return Totals(
        len(rows), total_hours, dict(sorted(amounts.items())), hash_row[0] if hash_row else "0"
    ), rows


def actual(
    client: SuiteQL, record_type: str, prefix: str
) -> tuple[Totals, dict[str, tuple[Decimal, int, str]]]:
    """The ERP's records whose external id starts with ``prefix`` (e.g. ``psa-te-``)."""
    columns = (
        "externalid, hours, rate, currency" if record_type == "timebill" else "externalid, amount, currency"
    )
    rows: dict[str, tuple[Decimal, int, str]] = {}
    for item in client.suiteql(f"SELECT {columns} FROM {record_type} ORDER BY id"):
        external_id = str(item.get("externalid") or "")
        if not external_id.startswith(prefix):
            continue
        source_id = external_id[len(prefix) :]
        currency = str(item.get("currency"))
        if record_type == "timebill":
            hours = Decimal(str(item.get("hours")))
            amount = money.line_amount_minor(hours, Decimal(str(item.get("rate"))), currency)
        else:
            hours = Decimal(0)
            amount = money.to_minor(Decimal(str(item.get("amount"))), currency)
        if source_id in rows:
            raise AssertionError(f"the ERP holds {external_id} twice")
        rows[source_id] = (hours, amount, currency)
    amounts: dict[str, int] = {}
    for _, amount, cur in rows.values():
        amounts[cur] = amounts.get(cur, 0) + amount
    total_hours = sum((h for h, _, _ in rows.values()), Decimal(0))
    return Totals(len(rows), total_hours, dict(sorted(amounts.items())), hash_of(list(rows))), rows


def differences(
    want: dict[str, tuple[Decimal, int, str]], have: dict[str, tuple[Decimal, int, str]], limit: int = 20
) -> dict[str, Any]:
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    changed = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    return {
        "missing_in_erp": len(missing),
        "unexpected_in_erp": len(unexpected),
        "different_in_erp": len(changed),
        "examples": {
            "missing": missing[:limit],
            "unexpected": unexpected[:limit],
            "different": changed[:limit],
        },
    }
