"""Read the ERP back and reconcile it with what should be there, to the cent.

Expected = the approved, not deleted canonical records, minus those parked (closed period) or
rejected (dead letters) whose latest ledger row says so. Actual = the ERP's records of our
external-id namespace. Count, hours, amount per currency (hours x rate, half-even once per
record, exactly as canonical amounts are computed) and the hash total of source ids must agree;
the differences are listed by external id so nothing is "close enough".

**Correcting records** (docs/posting.md "Closed periods"): a correction of a record held in a closed
period is a journal entry in an open period, external id ``<record's external id>-c<seq>``, with the
signed difference (amount, and hours in ``custbody_psa_hours``). Both sides count per PSA entry:
the ERP's record plus its correcting journals, summed; the ledger's record (its last confirmed
posting) plus its confirmed correcting rows. An entry whose latest correcting journal is a reversal
is not held (its sum must then be zero to the cent, else it is listed as unexpected).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from typing import Any, Protocol

import psycopg

from psa_erp_sync import money
from psa_erp_sync.contracts.kinds import KINDS
from psa_erp_sync.posting import ledger
from psa_erp_sync.reconcile.control_totals import Totals

SOURCE = {kind.record_type: kind.canonical_table for kind in KINDS.values()}


class SuiteQL(Protocol):
    def suiteql(self, query: str, *, page_size: int = 1000) -> Iterator[dict[str, Any]]: ...


def hash_of(source_ids: list[str]) -> str:
    """Same as the SQL hash total: sum of the first 60 bits of md5 of each id."""
    return str(
        sum(int(hashlib.md5(s.encode(), usedforsecurity=False).hexdigest()[:15], 16) for s in source_ids)
    )


def _net(record_type: str, *, per_erp: bool = False) -> str:
    """Per PSA entry, what the ERP holds for it per the ledger (``ledger.HELD_COLUMNS``): ``present``
    (the last confirmed posting, correction or not, is a post or an adjust), net hours and amount.
    ``per_erp``: only the ledger rows of the ERP named by the ``erp`` parameter (``target_erp``)."""
    only = " AND target_erp = %(erp)s" if per_erp else ""
    base_hours = f"({ledger.BASE_PAYLOAD}->>'hours')::numeric" if record_type == "timebill" else "0::numeric"
    return f"""
        SELECT source_system, source_id, coalesce(done_action IN ('post', 'adjust'), false) AS present,
               CASE WHEN base_action IN ('post', 'adjust') THEN {base_hours} ELSE 0 END + corrected_hours AS hours,
               CASE WHEN base_action IN ('post', 'adjust') THEN base_amount ELSE 0 END + corrected_amount AS amount_minor,
               coalesce(done_currency, base_currency) AS currency
        FROM (
            SELECT source_system, source_id, {ledger.HELD_COLUMNS},
                   (array_agg(action ORDER BY seq DESC) FILTER (WHERE state IN ('confirmed', 'resolved')))[1] AS done_action,
                   (array_agg(currency ORDER BY seq DESC) FILTER (WHERE state IN ('confirmed', 'resolved')))[1] AS done_currency,
                   (array_agg(currency ORDER BY seq DESC) FILTER (WHERE state IN ('confirmed', 'resolved') AND corrects IS NULL))[1] AS base_currency
            FROM ledger.posting WHERE record_type = %(rt)s AND NOT shadow{only} GROUP BY 1, 2
        ) held
    """


RouteOf = Callable[[str, date], str | None]


def expected(
    conn: psycopg.Connection,
    record_type: str,
    *,
    erp: str | None = None,
    route_of: RouteOf | None = None,
) -> tuple[Totals, dict[str, tuple[Decimal, int, str]]]:
    """What the ERP should hold, per source record:

    - the approved, not deleted canonical version, unless the record's latest posting is parked
      (closed period) or rejected (dead letter);
    - for a parked or rejected record, what the ledger last confirmed, if anything: the ERP
      rightly keeps it until finance replays (an edit into a closed period, a refused reversal).
      That is the record plus its confirmed correcting records, summed.

    ``erp`` (several ERPs, docs/multi-erp.md "Downstream per ERP"): only what that ERP should hold.
    A canonical record belongs to the ERP its latest ledger row targets (the route the planner
    stamped), or, never planned, to the ERP ``route_of(legal entity, date)`` names; a parked or
    rejected record's held part is what the ledger confirmed in that ERP.
    """
    source = SOURCE[record_type]
    hours = "c.hours" if record_type == "timebill" else "0::numeric"
    sql = f"""
        WITH latest AS (
            SELECT DISTINCT ON (source_system, source_id) source_system, source_id, state, target_erp
            FROM ledger.posting WHERE record_type = %(rt)s AND NOT shadow
            ORDER BY source_system, source_id, seq DESC
        ), held AS ({_net(record_type, per_erp=erp is not None)})
        SELECT c.source_id, {hours}, c.amount_minor, c.currency, l.target_erp, c.legal_entity, c.spent_date
        FROM {source} c
        LEFT JOIN latest l USING (source_system, source_id)
        WHERE c.approved AND NOT c.is_deleted AND coalesce(l.state, '') NOT IN ('parked', 'rejected')
        UNION ALL
        SELECT h.source_id, h.hours, h.amount_minor, h.currency, %(erp)s::text, NULL, NULL FROM latest l
        JOIN held h USING (source_system, source_id)
        WHERE l.state IN ('parked', 'rejected') AND h.present
    """
    rows: dict[str, tuple[Decimal, int, str]] = {}
    for sid, h, amount, cur, target, entity, day in conn.execute(sql, {"rt": record_type, "erp": erp}):
        if erp is not None and target is None:
            target = route_of(str(entity), day) if route_of is not None else None
        if erp is not None and target != erp:
            continue
        rows[str(sid)] = (Decimal(h), int(amount), str(cur))
    return totals_of(rows), rows


def totals_of(rows: dict[str, tuple[Decimal, int, str]]) -> Totals:
    """Count, hours, amount per currency and hash total of per-record rows."""
    amounts: dict[str, int] = {}
    for _, amount, cur in rows.values():
        amounts[cur] = amounts.get(cur, 0) + amount
    total_hours = sum((h for h, _, _ in rows.values()), Decimal(0))
    return Totals(len(rows), total_hours, dict(sorted(amounts.items())), hash_of(list(rows)))


def posted_per_ledger(conn: psycopg.Connection, record_type: str, *, erp: str | None = None) -> Totals:
    """What the ledger says the ERP holds: per source record, its last confirmed post or adjust
    plus its confirmed correcting records (a confirmed reversal, of the record or by a correcting
    record, means nothing). Compared with the read-back, it proves the ledger true. ``erp``: what
    the ledger says that ERP holds (its ``target_erp`` rows only)."""
    net = _net(record_type, per_erp=erp is not None)
    rows = conn.execute(
        f"SELECT source_id, hours, amount_minor, currency FROM ({net}) n WHERE present",
        {"rt": record_type, "erp": erp},
    ).fetchall()
    amounts: dict[str, int] = {}
    for _, _, amount, cur in rows:
        amounts[str(cur)] = amounts.get(str(cur), 0) + int(amount)
    total_hours = sum((Decimal(h) for _, h, _, _ in rows), Decimal(0))
    return Totals(len(rows), total_hours, dict(sorted(amounts.items())), hash_of([str(r[0]) for r in rows]))


_CORRECTION_SUFFIX = re.compile(r"^(?P<base>.+)-c(?P<seq>\d+)$")


def corrections(client: SuiteQL, prefix: str) -> dict[str, list[tuple[int, Decimal, int, str, str]]]:
    """The ERP's correcting journals of records whose external id starts with ``prefix``, per
    corrected external id: (seq, hours, amount in minor units, currency, action), in seq order."""
    found: dict[str, list[tuple[int, Decimal, int, str, str]]] = {}
    query = (
        f"SELECT externalid, amount, currency, custbody_psa_corrects, custbody_psa_hours, custbody_psa_action"
        f" FROM {ledger.CORRECTION_TYPE} ORDER BY id"
    )
    for item in client.suiteql(query):
        external_id = str(item.get("externalid") or "")
        corrected = str(item.get("custbody_psa_corrects") or "")
        match = _CORRECTION_SUFFIX.match(external_id)
        if not corrected.startswith(prefix) or match is None or match.group("base") != corrected:
            continue
        if ledger.is_shadow(corrected):  # a parallel run's shadow: reconciled by reconcile.parallel_run
            continue
        currency = str(item.get("currency"))
        found.setdefault(corrected, []).append(
            (
                int(match.group("seq")),
                Decimal(str(item.get("custbody_psa_hours") or 0)),
                money.to_minor(Decimal(str(item.get("amount"))), currency),
                currency,
                str(item.get("custbody_psa_action") or ""),
            )
        )
    for entries in found.values():
        entries.sort()
    return found


def actual(
    client: SuiteQL, record_type: str, prefix: str
) -> tuple[Totals, dict[str, tuple[Decimal, int, str]]]:
    """The ERP's records whose external id starts with ``prefix`` (e.g. ``psa-te-``), each plus its
    correcting journals (summed per PSA entry)."""
    columns = (
        "externalid, hours, rate, currency" if record_type == "timebill" else "externalid, amount, currency"
    )
    rows: dict[str, tuple[Decimal, int, str]] = {}
    for item in client.suiteql(f"SELECT {columns} FROM {record_type} ORDER BY id"):
        external_id = str(item.get("externalid") or "")
        if not external_id.startswith(prefix) or ledger.is_shadow(external_id):
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
    for corrected, entries in corrections(client, prefix).items():
        source_id = corrected[len(prefix) :]
        hours, amount, currency = rows.get(source_id, (Decimal(0), 0, entries[-1][3]))
        hours += sum((e[1] for e in entries), Decimal(0))
        amount += sum(e[2] for e in entries)
        if entries[-1][4] == "reverse" and hours == 0 and amount == 0:
            rows.pop(source_id, None)  # corrected to nothing: the entry is reversed
        else:
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
