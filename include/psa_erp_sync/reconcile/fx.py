"""Reconciliation in both currencies: the transaction amounts AND the functional amounts.

Foreign-currency work (a project billed in a currency other than its legal entity's functional
currency) is held in the ODS with both amounts (``canonical.*.functional_amount_minor`` at the ERP's
rate, migration 0023) and booked in the ERP in the transaction currency with ``exchangeRate``. The
ERP's functional amount is its transaction amount at that rate, rounded half-even once
(:func:`psa_erp_sync.money.convert_minor`), as NetSuite books a foreign-currency line in the
subsidiary's base currency.

Per legal entity, period (the month of the transaction date) and transaction currency, the sums of
both amounts must agree to the minor unit, and every record whose amounts differ is named. Records
with correcting journals, and records whose latest posting is parked or rejected, are left to the
transaction-currency check of :mod:`psa_erp_sync.reconcile.erp_readback` (which sums a record with
its corrections); a record missing on either side counts in its group here too.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

from psa_erp_sync import money
from psa_erp_sync.contracts.kinds import KINDS
from psa_erp_sync.posting import ledger
from psa_erp_sync.reconcile.erp_readback import SuiteQL

SOURCE = {kind.record_type: kind.canonical_table for kind in KINDS.values()}


@dataclass(frozen=True)
class Booked:
    """One record's two amounts, and where it counts (legal entity, ``YYYY-MM`` of its date)."""

    legal_entity: str
    period: str
    currency: str
    amount_minor: int
    functional_currency: str
    functional_minor: int

    def describe(self) -> str:
        return (
            f"{self.amount_minor} {self.currency} = {self.functional_minor} {self.functional_currency}"
            " (minor units)"
        )


def skipped(conn: psycopg.Connection, record_type: str) -> set[str]:
    """Source ids the both-currency check leaves to the transaction-currency check: corrected
    (a confirmed correcting journal) or latest posting parked or rejected."""
    return {
        str(r[0])
        for r in conn.execute(
            """
            SELECT source_id FROM ledger.posting
            WHERE record_type = %(rt)s AND corrects IS NOT NULL AND state IN ('confirmed', 'resolved')
              AND NOT shadow
            UNION
            SELECT source_id FROM (
                SELECT DISTINCT ON (source_system, source_id) source_id, state FROM ledger.posting
                WHERE record_type = %(rt)s AND NOT shadow ORDER BY source_system, source_id, seq DESC
            ) latest WHERE state IN ('parked', 'rejected')
            """,
            {"rt": record_type},
        )
    }


def expected(conn: psycopg.Connection, record_type: str) -> dict[str, Booked]:
    """Per source id, the approved, not deleted canonical record's two amounts (rows validated
    before migration 0023: the transaction amount is the functional amount)."""
    rows = conn.execute(
        f"""
        SELECT source_id, legal_entity, to_char(spent_date, 'YYYY-MM'), currency, amount_minor,
               coalesce(functional_currency, currency), coalesce(functional_amount_minor, amount_minor)
        FROM {SOURCE[record_type]} WHERE approved AND NOT is_deleted
        """
    )
    return {str(r[0]): Booked(r[1], r[2], r[3].strip(), int(r[4]), r[5].strip(), int(r[6])) for r in rows}


@dataclass(frozen=True)
class ErpLine:
    """What the ERP holds for a record: subsidiary, date, currency, amount and exchange rate."""

    subsidiary: str | None
    period: str
    currency: str
    amount_minor: int
    exchange_rate: Decimal


def actual(client: SuiteQL, record_type: str, prefix: str) -> dict[str, ErpLine]:
    """The ERP's records of our namespace with their ``exchangeRate`` (1 when it has none)."""
    columns = "hours, rate" if record_type == "timebill" else "amount"
    query = f"SELECT externalid, trandate, subsidiary, currency, exchangerate, {columns} FROM {record_type} ORDER BY id"
    found: dict[str, ErpLine] = {}
    for item in client.suiteql(query):
        external_id = str(item.get("externalid") or "")
        if not external_id.startswith(prefix) or ledger.is_shadow(external_id):
            continue
        currency = str(item.get("currency"))
        if record_type == "timebill":
            hours, rate = Decimal(str(item.get("hours"))), Decimal(str(item.get("rate") or 0))
            amount = money.line_amount_minor(hours, rate, currency)
        else:
            amount = money.to_minor(Decimal(str(item.get("amount"))), currency)
        subsidiary = item.get("subsidiary")
        found[external_id[len(prefix) :]] = ErpLine(
            str(subsidiary) if subsidiary else None,
            str(item.get("trandate") or "")[:7],
            currency,
            amount,
            Decimal(str(item.get("exchangerate") or 1)),
        )
    return found


def booked_in_erp(
    lines: Mapping[str, ErpLine], want: Mapping[str, Booked], functional_currency: Mapping[str, str]
) -> dict[str, Booked]:
    """The ERP's lines as :class:`Booked`: the functional amount at the line's own rate, in the
    functional currency of its legal entity (ours for a record we expect, else its subsidiary's)."""
    out: dict[str, Booked] = {}
    for source_id, line in lines.items():
        ours = want.get(source_id)
        entity = ours.legal_entity if ours is not None else (line.subsidiary or "?")
        functional = functional_currency.get(entity, line.currency)
        out[source_id] = Booked(
            entity,
            ours.period if ours is not None else line.period,
            line.currency,
            line.amount_minor,
            functional,
            money.convert_minor(line.amount_minor, line.currency, line.exchange_rate, functional),
        )
    return out


Group = tuple[str, str, str]  # legal entity, period, transaction currency


def totals(rows: Mapping[str, Booked]) -> dict[Group, dict[str, Any]]:
    """Per (legal entity, period, transaction currency): count and both sums."""
    out: dict[Group, dict[str, Any]] = {}
    for row in rows.values():
        group = out.setdefault(
            (row.legal_entity, row.period, row.currency), {"count": 0, "amount_minor": 0, "functional": {}}
        )
        group["count"] += 1
        group["amount_minor"] += row.amount_minor
        functional = group["functional"]
        functional[row.functional_currency] = (
            functional.get(row.functional_currency, 0) + row.functional_minor
        )
    return out


def compare(
    want: Mapping[str, Booked], have: Mapping[str, Booked], *, prefix: str, limit: int = 5
) -> dict[str, Any]:
    """Both sides per group, the groups that differ, and the first ``limit`` differing records of
    each (missing, unexpected, or with other amounts; both sides shown)."""
    want_totals, have_totals = totals(want), totals(have)
    groups = sorted(set(want_totals) | set(have_totals))
    differing: list[dict[str, Any]] = []
    for group in groups:
        left, right = want_totals.get(group), have_totals.get(group)
        if left == right:
            continue
        ids = sorted(
            (
                k
                for k in set(want) | set(have)
                if want.get(k) != have.get(k)
                and group
                in {
                    (r.legal_entity, r.period, r.currency)
                    for r in (want.get(k), have.get(k))
                    if r is not None
                }
            ),
            key=lambda k: (len(k), k),
        )
        differing.append(
            {
                "legal_entity": group[0],
                "period": group[1],
                "currency": group[2],
                "expected": left,
                "erp": right,
                "records": [
                    f"{prefix}{k}: expected {_text(want.get(k))}, ERP has {_text(have.get(k))}"
                    for k in ids[:limit]
                ],
            }
        )
    return {"groups": len(groups), "differing": differing}


def _text(row: Booked | None) -> str:
    return "nothing" if row is None else row.describe()


def reconcile(
    conn: psycopg.Connection,
    client: SuiteQL,
    record_type: str,
    *,
    prefix: str,
    functional_currency: Mapping[str, str],
    source_ids: Collection[str] | None = None,
    lines: Mapping[str, ErpLine] | None = None,
) -> dict[str, Any]:
    """The both-currency comparison of one record type (see the module docstring).
    ``source_ids``: the records this ERP should hold (several ERPs); None: every approved one.
    ``lines``: the ERP's lines when they are not NetSuite's SuiteQL read (SAP:
    :func:`psa_erp_sync.reconcile.sap_readback.functional_lines`); ``client`` is then unused."""
    skip = skipped(conn, record_type)
    want = {
        k: v
        for k, v in expected(conn, record_type).items()
        if k not in skip and (source_ids is None or k in source_ids)
    }
    read = lines if lines is not None else actual(client, record_type, prefix)
    have = booked_in_erp({k: v for k, v in read.items() if k not in skip}, want, functional_currency)
    return compare(want, have, prefix=prefix) | {
        "skipped": len(skip),
        "counts": {"expected": len(want), "erp": len(have)},
        "functional": {"expected": _functional_sums(want), "erp": _functional_sums(have)},
    }


def _functional_sums(rows: Mapping[str, Booked]) -> dict[str, int]:
    sums: dict[str, int] = {}
    for row in rows.values():
        sums[row.functional_currency] = sums.get(row.functional_currency, 0) + row.functional_minor
    return dict(sorted(sums.items()))
