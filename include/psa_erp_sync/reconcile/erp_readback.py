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
from psa_erp_sync.reconcile.control_totals import Totals

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
    """What the ERP should hold, per source record:

    - the approved, not deleted canonical version, unless the record's latest posting is parked
      (closed period) or rejected (dead letter);
    - for a parked or rejected record, the version the ledger last confirmed, if any: the ERP
      rightly keeps it until finance replays (an edit into a closed period, a refused reversal).
    """
    source = SOURCE[record_type]
    hours = "c.hours" if record_type == "timebill" else "0::numeric"
    done_hours = "(d.payload->>'hours')::numeric" if record_type == "timebill" else "0::numeric"
    sql = f"""
        WITH latest AS (
            SELECT DISTINCT ON (source_system, source_id) source_system, source_id, state
            FROM ledger.posting WHERE record_type = %(rt)s ORDER BY source_system, source_id, seq DESC
        ), done AS (
            SELECT DISTINCT ON (source_system, source_id) source_system, source_id, action, payload, amount_minor, currency
            FROM ledger.posting WHERE record_type = %(rt)s AND state IN ('confirmed', 'resolved')
            ORDER BY source_system, source_id, seq DESC
        )
        SELECT c.source_id, {hours}, c.amount_minor, c.currency FROM {source} c
        LEFT JOIN latest l USING (source_system, source_id)
        WHERE c.approved AND NOT c.is_deleted AND coalesce(l.state, '') NOT IN ('parked', 'rejected')
        UNION ALL
        SELECT d.source_id, {done_hours}, d.amount_minor, d.currency FROM latest l
        JOIN done d USING (source_system, source_id)
        WHERE l.state IN ('parked', 'rejected') AND d.action IN ('post', 'adjust')
    """
    rows: dict[str, tuple[Decimal, int, str]] = {}
    for sid, h, amount, cur in conn.execute(sql, {"rt": record_type}):
        rows[str(sid)] = (Decimal(h), int(amount), str(cur))
    amounts: dict[str, int] = {}
    for _, amount, cur in rows.values():
        amounts[cur] = amounts.get(cur, 0) + amount
    total_hours = sum((h for h, _, _ in rows.values()), Decimal(0))
    return Totals(len(rows), total_hours, dict(sorted(amounts.items())), hash_of(list(rows))), rows


def posted_per_ledger(conn: psycopg.Connection, record_type: str) -> Totals:
    """What the ledger says the ERP holds: per source record, its last confirmed post or adjust
    (a confirmed reversal means nothing). Compared with the read-back, it proves the ledger true."""
    hours = "(payload->>'hours')::numeric" if record_type == "timebill" else "0::numeric"
    rows = conn.execute(
        f"""
        SELECT source_id, {hours}, amount_minor, currency FROM (
            SELECT DISTINCT ON (source_system, source_id) source_id, action, payload, amount_minor, currency
            FROM ledger.posting WHERE record_type = %s AND state IN ('confirmed', 'resolved')
            ORDER BY source_system, source_id, seq DESC
        ) done WHERE action IN ('post', 'adjust')
        """,
        (record_type,),
    ).fetchall()
    amounts: dict[str, int] = {}
    for _, _, amount, cur in rows:
        amounts[str(cur)] = amounts.get(str(cur), 0) + int(amount)
    total_hours = sum((Decimal(h) for _, h, _, _ in rows), Decimal(0))
    return Totals(len(rows), total_hours, dict(sorted(amounts.items())), hash_of([str(r[0]) for r in rows]))


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
