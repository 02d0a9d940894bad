"""The month-end close report per legal entity and period (issue 14, deliverable 8).

Figures, per currency, from the ODS with set-based SQL (integer minor units throughout):

- revenue recognized in the period (``revenue.recognition_latest``) vs billed in the period (ERP
  read-back: invoices - credit memos dated in the period, voided excluded);
- WIP (contract assets, unbilled receivable) and deferred revenue (contract liabilities), opening
  (each contract's latest recognition before the period), closing, and their movement;
- unbilled billing events and leakage (ready events dated ``leakage_days`` or more before the
  period's last day);
- postings by their latest ledger state (confirmed / parked / rejected / pending) per record type,
  and approved entries never planned;
- reconciliation to the cent, record by record: time and expenses (PSA per the ODS's canonical
  records, vs the ledger, vs the ERP's records read back by external id; both currencies), invoices
  (``billing.event`` invoiced vs ``billing.document`` vs ``billing.erp_invoice``) and journals
  (``revenue.journal`` vs the ledger vs ``billing.erp_journal``);
- open exception items per owner.

A mismatch is stored with the report, then :func:`check` raises
:class:`~psa_erp_sync.reconcile.control_totals.ControlTotalMismatch` naming the first differing
records. The HTML and JSON files are written by :mod:`psa_erp_sync.reconcile.close_html`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from psa_erp_sync import money
from psa_erp_sync.contracts.kinds import KINDS
from psa_erp_sync.reconcile import erp_readback
from psa_erp_sync.reconcile import fx as both_currencies
from psa_erp_sync.reconcile.control_totals import ControlTotalMismatch

#: Our external-id namespace in the ERP, per record type (as :mod:`.time_expense`).
EXTERNAL_ID_PREFIX = {kind.record_type: kind.external_id_prefix for kind in KINDS.values()}
SOURCE = {kind.record_type: kind.canonical_table for kind in KINDS.values()}
AREA_OF = {"timebill": "time", "expensereport": "expenses"}
#: How many differing records a reconciliation names.
FIRST_DIFFERENCES = 5
#: Latest ledger states, grouped as the report shows them.
STATE_GROUP = {
    "confirmed": "confirmed",
    "resolved": "confirmed",
    "parked": "parked",
    "rejected": "rejected",
    "pending": "pending",
    "sent": "pending",
    "ambiguous": "pending",
}

Amount = tuple[str, int]  # currency, minor units
Side = dict[str, Amount]  # record key -> amount


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CurrencyFigures(_Model):
    """The period's figures in one currency (minor units)."""

    currency: str
    revenue_recognized_minor: int = 0
    billed_minor: int = 0  # net: invoiced - credited
    invoiced_minor: int = 0  # invoices dated in the period (not voided)
    credited_minor: int = 0  # credit memos dated in the period (not voided), positive
    # The same per ERP the documents were read back from (netsuite, sap): each ERP's own total.
    invoiced_by_erp_minor: dict[str, int] = {}
    credited_by_erp_minor: dict[str, int] = {}
    wip_opening_minor: int = 0
    wip_closing_minor: int = 0
    deferred_opening_minor: int = 0
    deferred_closing_minor: int = 0
    unbilled_minor: int = 0
    leakage_count: int = 0
    leakage_minor: int = 0

    @property
    def wip_movement_minor(self) -> int:
        return self.wip_closing_minor - self.wip_opening_minor

    @property
    def deferred_movement_minor(self) -> int:
        return self.deferred_closing_minor - self.deferred_opening_minor


class Reconciliation(_Model):
    """One area in one currency: each side's sum, and the first records whose sides differ."""

    area: str  # time, time_functional, expenses, expenses_functional, invoices, invoices_functional, journals
    currency: str
    sides: dict[str, int]
    records: int
    differing: int
    first_differences: list[str]
    # Per ERP (netsuite, sap): the records compared with it, and its side's sum (the ERP side).
    erp_records: dict[str, int] = {}
    erp_sums: dict[str, int] = {}
    notes: list[str] = []  # what was not compared, and why

    @property
    def matched(self) -> bool:
        return self.differing == 0 and len(set(self.sides.values())) <= 1


class CloseReport(_Model):
    legal_entity: str
    period: str  # YYYY-MM
    as_of: datetime
    run_id: str
    currencies: list[CurrencyFigures]
    postings: dict[str, dict[str, int]]  # record type -> state group -> records
    reconciliation: list[Reconciliation]
    open_exceptions: dict[str, int]  # owner -> open items

    @property
    def reconciled(self) -> bool:
        return all(r.matched for r in self.reconciliation)

    def mismatches(self) -> list[Reconciliation]:
        return [r for r in self.reconciliation if not r.matched]


def month_bounds(period: str) -> tuple[date, date]:
    """First day of ``YYYY-MM`` and the first day of the next month."""
    start = date.fromisoformat(f"{period}-01")
    return start, (start + timedelta(days=32)).replace(day=1)


def previous_period(as_of: datetime | date) -> str:
    """The month before ``as_of``'s month, ``YYYY-MM`` (the month a morning close run closes)."""
    first = date(as_of.year, as_of.month, 1)
    return (first - timedelta(days=1)).strftime("%Y-%m")


# --- figures ----------------------------------------------------------------------------------

_RECOGNIZED = """
    SELECT currency, sum(period_revenue_minor) FROM revenue.recognition_latest
    WHERE legal_entity = %(le)s AND period_month = %(start)s GROUP BY 1
"""
_BILLED = """
    SELECT currency, erp, coalesce(sum(total_minor) FILTER (WHERE record_type <> 'creditmemo'), 0),
           coalesce(sum(total_minor) FILTER (WHERE record_type = 'creditmemo'), 0)
    FROM billing.erp_invoice
    WHERE legal_entity = %(le)s AND tran_date >= %(start)s AND tran_date < %(end)s AND NOT voided
    GROUP BY 1, 2 ORDER BY 1, 2
"""
_BALANCES = """
    SELECT currency, sum(contract_asset_minor), sum(contract_liability_minor) FROM (
        SELECT DISTINCT ON (project_ref, currency) currency, contract_asset_minor, contract_liability_minor
        FROM revenue.recognition_latest WHERE legal_entity = %(le)s AND period_month < %(before)s
        ORDER BY project_ref, currency, period_month DESC
    ) latest GROUP BY 1
"""
_UNBILLED = """
    SELECT currency, sum(amount_minor), count(*) FILTER (WHERE event_date <= %(leak)s),
           coalesce(sum(amount_minor) FILTER (WHERE event_date <= %(leak)s), 0)
    FROM billing.event
    WHERE legal_entity = %(le)s AND state = 'ready' AND credits_ref IS NULL AND event_date < %(end)s
    GROUP BY 1
"""


def currency_figures(
    conn: psycopg.Connection, legal_entity: str, period: str, *, leakage_days: int = 30
) -> list[CurrencyFigures]:
    """Revenue, billing, WIP and deferred balances, unbilled and leakage per currency."""
    start, end = month_bounds(period)
    args = {"le": legal_entity, "start": start, "end": end}
    figures: dict[str, dict[str, Any]] = {}

    def put(currency: str, **values: int) -> None:
        figures.setdefault(currency.strip(), {}).update(values)

    for cur, amount in conn.execute(_RECOGNIZED, args):
        put(cur, revenue_recognized_minor=int(amount))
    billed: dict[str, dict[str, dict[str, int]]] = {}
    for cur, erp, invoiced, credited in conn.execute(_BILLED, args):
        per = billed.setdefault(cur.strip(), {"invoiced": {}, "credited": {}})
        per["invoiced"][str(erp)] = int(invoiced)
        per["credited"][str(erp)] = int(credited)
    for cur, per in billed.items():
        invoiced, credited = sum(per["invoiced"].values()), sum(per["credited"].values())
        put(cur, billed_minor=invoiced - credited, invoiced_minor=invoiced, credited_minor=credited)
        figures[cur]["invoiced_by_erp_minor"] = per["invoiced"]
        figures[cur]["credited_by_erp_minor"] = per["credited"]
    for cur, asset, liability in conn.execute(_BALANCES, args | {"before": start}):
        put(cur, wip_opening_minor=int(asset), deferred_opening_minor=int(liability))
    for cur, asset, liability in conn.execute(_BALANCES, args | {"before": end}):
        put(cur, wip_closing_minor=int(asset), deferred_closing_minor=int(liability))
    leak = end - timedelta(days=1 + leakage_days)
    for cur, unbilled, count, leaked in conn.execute(_UNBILLED, args | {"leak": leak}):
        put(cur, unbilled_minor=int(unbilled), leakage_count=int(count), leakage_minor=int(leaked))
    return [CurrencyFigures(currency=c, **v) for c, v in sorted(figures.items())]


_POSTINGS = """
    SELECT record_type, state, count(*) FROM (
        SELECT DISTINCT ON (record_type, source_system, source_id) record_type, state FROM ledger.posting_full
        WHERE legal_entity = %(le)s AND payload->>'tranDate' >= %(start)s AND payload->>'tranDate' < %(end)s
          AND NOT shadow
        ORDER BY record_type, source_system, source_id, seq DESC
    ) latest GROUP BY 1, 2
"""
_UNPLANNED = """
    SELECT count(*) FROM {source} c
    WHERE c.legal_entity = %(le)s AND c.spent_date >= %(start)s AND c.spent_date < %(end)s
      AND c.approved AND NOT c.is_deleted
      AND NOT EXISTS (SELECT 1 FROM ledger.posting p WHERE p.record_type = %(rt)s
                      AND p.source_system = c.source_system AND p.source_id = c.source_id AND NOT p.shadow)
"""


def postings(conn: psycopg.Connection, legal_entity: str, period: str) -> dict[str, dict[str, int]]:
    """Per record type, the records whose latest ledger row (dated in the period) is confirmed,
    parked, rejected or pending; and approved time and expenses with no ledger row (``unplanned``)."""
    start, end = month_bounds(period)
    args: dict[str, Any] = {"le": legal_entity, "start": start.isoformat(), "end": end.isoformat()}
    out: dict[str, dict[str, int]] = {}
    for record_type, state, count in conn.execute(_POSTINGS, args):
        group = STATE_GROUP.get(str(state))
        if group is not None:
            counts = out.setdefault(
                str(record_type), dict.fromkeys(("confirmed", "parked", "rejected", "pending"), 0)
            )
            counts[group] += int(count)
    for record_type, source in SOURCE.items():
        row = conn.execute(_UNPLANNED.format(source=source), args | {"rt": record_type}).fetchone()
        unplanned = int(row[0]) if row else 0
        if unplanned:
            counts = out.setdefault(
                record_type, dict.fromkeys(("confirmed", "parked", "rejected", "pending"), 0)
            )
            counts["unplanned"] = unplanned
    return dict(sorted(out.items()))


def open_exceptions(conn: psycopg.Connection, legal_entity: str) -> dict[str, int]:
    """Open exception items of the legal entity per owner."""
    rows = conn.execute(
        "SELECT owner, count(*) FROM exceptions.item WHERE status = 'open' AND legal_entity = %s"
        " GROUP BY 1 ORDER BY 1",
        (legal_entity,),
    )
    return {str(owner): int(count) for owner, count in rows}


# --- reconciliation ---------------------------------------------------------------------------


def compare(
    area: str,
    sides: Mapping[str, Side],
    *,
    not_expected: Mapping[str, set[str]] | None = None,
    prefix: str = "",
    limit: int = FIRST_DIFFERENCES,
) -> list[Reconciliation]:
    """Per currency, each side's sum and the records whose sides differ (a record missing on a side
    where it is expected counts as differing; ``not_expected[side]`` holds keys that side rightly
    lacks, e.g. an invoice not posted yet). The first ``limit`` differing records are named with
    every side's amount."""
    skip = not_expected or {}
    keys = sorted(set().union(*(s.keys() for s in sides.values())), key=lambda k: (len(k), k))
    groups: dict[str, dict[str, Any]] = {}
    for key in keys:
        present = [s[key] for s in sides.values() if key in s]
        currency = present[0][0]
        group = groups.setdefault(currency, {"sums": dict.fromkeys(sides, 0), "records": 0, "differing": []})
        group["records"] += 1
        for name, side in sides.items():
            if key in side:
                group["sums"][name] += side[key][1]
        expected = [name for name in sides if key not in skip.get(name, set()) or key in sides[name]]
        if len({sides[name].get(key) for name in expected}) > 1:
            group["differing"].append(key)
    return [
        Reconciliation(
            area=area,
            currency=currency,
            sides=g["sums"],
            records=g["records"],
            differing=len(g["differing"]),
            first_differences=[_describe(prefix + k, k, sides) for k in g["differing"][:limit]],
        )
        for currency, g in sorted(groups.items())
    ]


def _describe(name: str, key: str, sides: Mapping[str, Side]) -> str:
    parts = [
        f"{side} {value[1]} {value[0]}" if (value := rows.get(key)) else f"{side} nothing"
        for side, rows in sides.items()
    ]
    return f"{name}: " + ", ".join(parts) + " (minor units)"


_WORK = """
    WITH scope AS (
        SELECT source_system, source_id, approved AND NOT is_deleted AS live, currency, amount_minor,
               coalesce(functional_currency, currency) AS fcur,
               coalesce(functional_amount_minor, amount_minor) AS famount, spent_date
        FROM {source} WHERE legal_entity = %(le)s AND spent_date >= %(start)s AND spent_date < %(end)s
    ), latest AS (
        SELECT DISTINCT ON (source_system, source_id) source_system, source_id, state FROM ledger.posting
        WHERE record_type = %(rt)s AND NOT shadow ORDER BY source_system, source_id, seq DESC
    ), placed AS (
        SELECT DISTINCT ON (source_system, source_id) source_system, source_id, target_erp
        FROM ledger.posting WHERE record_type = %(rt)s AND NOT shadow AND action IN ('post', 'adjust')
        ORDER BY source_system, source_id, seq DESC
    ), held AS ({held})
    SELECT s.source_id, s.live, l.state, s.currency, s.amount_minor, s.fcur, s.famount,
           coalesce(h.present, false), h.currency, h.amount_minor, p.target_erp, s.spent_date
    FROM scope s LEFT JOIN latest l USING (source_system, source_id)
    LEFT JOIN placed p USING (source_system, source_id)
    LEFT JOIN held h USING (source_system, source_id)
"""


@dataclass
class _Ods:
    """The ODS side of one record type, entity and month (see :func:`_ods_work`)."""

    psa: Side = field(default_factory=dict)
    functional: Side = field(default_factory=dict)
    ledger: Side = field(default_factory=dict)
    scope: set[str] = field(default_factory=set)
    held_only: set[str] = field(default_factory=set)
    erp_of: dict[str, str] = field(default_factory=dict)  # key -> the ERP that should hold it


def _ods_work(
    conn: psycopg.Connection,
    record_type: str,
    legal_entity: str,
    period: str,
    route_of: erp_readback.RouteOf | None = None,
) -> _Ods:
    """PSA side (what the ERP should hold), functional PSA side, ledger side, the keys in scope,
    the keys left out of the both-currency check, and the ERP each key belongs to. What the ERP
    should hold: the approved, not deleted version when its latest posting is confirmed; for a
    parked, rejected or in-flight record, the ledger's last confirmed amount (as
    :func:`.erp_readback.expected`). The ERP: the one its latest post or adjust (own lane, never a
    shadow) targets; never posted, ``route_of(entity, date)`` (None: NetSuite)."""
    start, end = month_bounds(period)
    sql = _WORK.format(source=SOURCE[record_type], held=erp_readback._net(record_type))
    out = _Ods()
    args = {"le": legal_entity, "start": start, "end": end, "rt": record_type}
    for row in conn.execute(sql, args):
        sid, live, state, cur, amount, fcur, famount, present, hcur, hamount, target, day = row
        key = str(sid)
        out.scope.add(key)
        out.erp_of[key] = str(target or (route_of(legal_entity, day) if route_of else None) or "netsuite")
        if present:
            out.ledger[key] = (str(hcur).strip(), int(hamount))
        if state in ("confirmed", "resolved"):
            if live:  # else (unapproved or deleted, nothing reversed): the ERP should hold nothing
                out.psa[key] = (str(cur).strip(), int(amount))
                out.functional[key] = (str(fcur).strip(), int(famount))
        elif present:
            out.psa[key] = out.ledger[key]
            out.held_only.add(key)
    return out


@dataclass(frozen=True)
class _ErpRead:
    """What one ERP holds of a record type: per key its amount (with correcting journals), its
    functional amount at the ERP's own rate (None: the ERP's read-back carries none) and the
    legal entity and month it is booked to."""

    held: Side
    functional: Side | None
    placed: dict[str, tuple[str, str]]


#: Why the close report skips the functional check of SAP's records.
SAP_FUNCTIONAL_SKIPPED = (
    "functional check skipped for sap ({n} records): SAP's read-back carries no functional amount"
    " (journal items: AmountInTransactionCurrency only; timesheets: hours only); reconcile_erp checks"
    " SAP's transaction amounts at the rates the ledger sent (docs/multi-erp.md)"
)


def _read_netsuite(client: erp_readback.SuiteQL, record_type: str, functional_currency: str) -> _ErpRead:
    """NetSuite's records of our namespace by SuiteQL: amounts with correcting journals, and the
    functional amount at the record's own ``exchangeRate`` (records without corrections)."""
    prefix = EXTERNAL_ID_PREFIX[record_type]
    _, net = erp_readback.actual(client, record_type, prefix)
    lines = both_currencies.actual(client, record_type, prefix)
    return _ErpRead(
        held={k: (cur, amount) for k, (_, amount, cur) in net.items()},
        functional={
            k: (
                functional_currency,
                money.convert_minor(
                    line.amount_minor, line.currency, line.exchange_rate, functional_currency
                ),
            )
            for k, line in lines.items()
        },
        placed={k: (str(line.subsidiary), line.period) for k, line in lines.items()},
    )


def _read_sap(conn: psycopg.Connection, adapter: Any, record_type: str) -> _ErpRead:
    """SAP's records per source id (:func:`.sap_readback.actual`, correcting journals included),
    in the transaction currency; no functional amounts (:data:`SAP_FUNCTIONAL_SKIPPED`)."""
    from psa_erp_sync.reconcile import sap_readback

    _, rows = sap_readback.actual(conn, adapter.client, adapter.mapping, record_type)
    return _ErpRead(
        held={k: (cur, amount) for k, (_, amount, cur) in rows.items()},
        functional=None,
        placed=sap_readback.placed(adapter.client, adapter.mapping, record_type),
    )


@dataclass
class _ErpSide:
    """The ERP side of one record type, entity and month over every ERP read."""

    held: Side = field(default_factory=dict)
    functional: Side = field(default_factory=dict)
    holder: dict[str, str] = field(default_factory=dict)  # key -> the ERP compared with
    skipped_functional: dict[str, set[str]] = field(default_factory=dict)  # ERP -> keys


def _erp_work(
    conn: psycopg.Connection,
    reads: Mapping[str, _ErpRead],
    record_type: str,
    *,
    legal_entity: str,
    period: str,
    ods: _Ods,
) -> _ErpSide:
    """Each record of the scope as the ERP it belongs to holds it; the records of our namespace an
    ERP books to this entity and month that the ODS does not know (strays), and a record of the
    scope held by an ERP it does not belong to (key ``<id> in <erp>``), from every ERP read."""
    out = _ErpSide()
    candidates = [
        k
        for read in reads.values()
        for k, at in read.placed.items()
        if k not in ods.scope and at == (legal_entity, period)
    ]
    known = {
        str(r[0])
        for r in conn.execute(
            f"SELECT source_id FROM {SOURCE[record_type]} WHERE source_id = ANY(%s)", (candidates,)
        )
    }
    for erp, read in reads.items():
        for key, amount in read.held.items():
            name = f"{key} in {erp}" if key in ods.scope and ods.erp_of[key] != erp else key
            stray = key not in known and read.placed.get(key) == (legal_entity, period)
            if not (key in ods.scope or stray):
                continue
            out.held[name], out.holder[name] = amount, erp
            if read.functional is None:
                out.skipped_functional.setdefault(erp, set()).add(name)
            elif key in read.functional:
                out.functional[name] = read.functional[key]
    for key, erp in ods.erp_of.items():  # a record its ERP lacks: compared with that ERP all the same
        out.holder.setdefault(key, erp)
        if erp in reads and reads[erp].functional is None:
            out.skipped_functional.setdefault(erp, set()).add(key)
    return out


def _per_erp(
    rows: list[Reconciliation], sides: Mapping[str, Side], holder: Mapping[str, str]
) -> list[Reconciliation]:
    """Each reconciliation with the records and ERP-side sum per ERP compared (in its currency)."""
    out = []
    for r in rows:
        keys = {k for side in sides.values() for k, v in side.items() if v[0] == r.currency}
        records: dict[str, int] = {}
        sums: dict[str, int] = {}
        for key in keys:
            erp = holder.get(key, "netsuite")
            records[erp] = records.get(erp, 0) + 1
            if key in sides["erp"]:
                sums[erp] = sums.get(erp, 0) + sides["erp"][key][1]
        out.append(
            r.model_copy(
                update={"erp_records": dict(sorted(records.items())), "erp_sums": dict(sorted(sums.items()))}
            )
        )
    return out


def reconcile_work(
    conn: psycopg.Connection,
    client: erp_readback.SuiteQL,
    record_type: str,
    *,
    legal_entity: str,
    period: str,
    functional_currency: str,
    erp_adapters: Mapping[str, Any] | None = None,
    route_of: erp_readback.RouteOf | None = None,
) -> list[Reconciliation]:
    """Time (``timebill``) or expenses (``expensereport``) of one entity and month: PSA per the ODS
    vs ledger vs ERP in the transaction currency, then PSA vs ERP in the functional currency.

    Each record is compared with the ERP it belongs to (:func:`_ods_work`): NetSuite through
    ``client``; SAP (``erp_adapters["sap"]``, when given) by its read-back
    (:func:`.sap_readback.actual`). Strays are looked for in every ERP read. SAP holds no
    functional amount: its records are left out of the functional check, which says so."""
    ods = _ods_work(conn, record_type, legal_entity, period, route_of)
    reads = {"netsuite": _read_netsuite(client, record_type, functional_currency)}
    sap = (erp_adapters or {}).get("sap")
    if sap is not None:
        reads["sap"] = _read_sap(conn, sap, record_type)
    erp = _erp_work(conn, reads, record_type, legal_entity=legal_entity, period=period, ods=ods)
    skipped_elsewhere = set().union(*erp.skipped_functional.values())
    skip = ods.held_only | both_currencies.skipped(conn, record_type) | skipped_elsewhere
    area, prefix = AREA_OF[record_type], EXTERNAL_ID_PREFIX[record_type]
    sides = {"psa": ods.psa, "ledger": ods.ledger, "erp": erp.held}
    transaction = _per_erp(compare(area, sides, prefix=prefix), sides, erp.holder)
    unread = sorted(set(ods.erp_of.values()) - set(reads))
    if unread:  # e.g. SAP-routed records and no SAP adapter: their ERP side is empty, and why
        counts = {name: sum(1 for e in ods.erp_of.values() if e == name) for name in unread}
        said = [
            f"{n} records belong to {name}, which was not read (no adapter)" for name, n in counts.items()
        ]
        transaction = [r.model_copy(update={"notes": said}) for r in transaction]
    functional_sides = {
        "psa": {k: v for k, v in ods.functional.items() if k not in skip},
        "erp": {k: v for k, v in erp.functional.items() if k not in skip},
    }
    functional = _per_erp(
        compare(f"{area}_functional", functional_sides, prefix=prefix), functional_sides, erp.holder
    )
    notes = [
        SAP_FUNCTIONAL_SKIPPED.format(n=len(keys))
        for name, keys in erp.skipped_functional.items()
        if name == "sap"
    ]
    if notes:
        functional = [r.model_copy(update={"notes": notes}) for r in functional] or [
            Reconciliation(
                area=f"{area}_functional",
                currency=functional_currency,
                sides={"psa": 0, "erp": 0},
                records=0,
                differing=0,
                first_differences=[],
                notes=notes,
            )
        ]
    return transaction + functional


_DOCUMENTS = """
    SELECT d.document_ref, d.currency, d.state,
           CASE d.doc_type WHEN 'creditmemo' THEN -d.total_minor ELSE d.total_minor END,
           (SELECT sum(e.amount_minor) FROM billing.event e WHERE e.document_ref = d.document_ref)
    FROM billing.document d
    WHERE d.legal_entity = %(le)s AND d.doc_date >= %(start)s AND d.doc_date < %(end)s
"""
_ERP_INVOICES = """
    SELECT external_id, currency, CASE record_type WHEN 'creditmemo' THEN -total_minor ELSE total_minor END
    FROM billing.erp_invoice
    WHERE external_id IS NOT NULL AND NOT voided
      AND (external_id = ANY(%(refs)s)
           OR (legal_entity = %(le)s AND tran_date >= %(start)s AND tran_date < %(end)s
               AND (external_id LIKE 'inv-%%' OR external_id LIKE 'cm-%%')))
"""


_DOCUMENTS_FUNCTIONAL = """
    SELECT d.document_ref, d.currency, coalesce(d.functional_currency, d.currency),
           CASE d.doc_type WHEN 'creditmemo' THEN -1 ELSE 1 END * coalesce(d.functional_total_minor, d.total_minor),
           d.state
    FROM billing.document d
    WHERE d.legal_entity = %(le)s AND d.doc_date >= %(start)s AND d.doc_date < %(end)s
"""
_ERP_INVOICES_FUNCTIONAL = """
    SELECT external_id, currency, CASE record_type WHEN 'creditmemo' THEN -total_minor ELSE total_minor END,
           coalesce(body ->> 'exchangerate', body ->> 'exchangeRate')
    FROM billing.erp_invoice
    WHERE external_id = ANY(%(refs)s) AND NOT voided
"""


def reconcile_invoices_functional(
    conn: psycopg.Connection, *, legal_entity: str, period: str
) -> list[Reconciliation]:
    """The same documents in the legal entity's functional currency: our document's functional total
    (at the ERP's rate for its date, issue 14 "Foreign currency") vs the ERP's record at the rate it
    booked (``exchangeRate`` as read back). A same-currency document is its total on both sides."""
    start, end = month_bounds(period)
    args: dict[str, Any] = {"le": legal_entity, "start": start, "end": end}
    ours: Side = {}
    functional_of: dict[str, str] = {}
    unposted: set[str] = set()
    for ref, _currency, functional, total, state in conn.execute(_DOCUMENTS_FUNCTIONAL, args):
        functional_of[str(ref)] = str(functional).strip()
        ours[str(ref)] = (functional_of[str(ref)], int(total))
        if state != "posted":
            unposted.add(str(ref))
    erp: Side = {}
    for ref, cur, total, rate in conn.execute(_ERP_INVOICES_FUNCTIONAL, {"refs": list(ours)}):
        functional, currency = functional_of[str(ref)], str(cur).strip()
        if currency == functional or rate in (None, ""):
            erp[str(ref)] = (functional, int(total))
        else:
            erp[str(ref)] = (
                functional,
                money.convert_minor(int(total), currency, Decimal(str(rate)), functional),
            )
    return compare("invoices_functional", {"document": ours, "erp": erp}, not_expected={"erp": unposted})


def reconcile_invoices(conn: psycopg.Connection, *, legal_entity: str, period: str) -> list[Reconciliation]:
    """Invoices and credit memos dated in the month (signed: a credit memo counts negative): the
    invoiced billing events of each document vs its total vs the ERP's record read back. A document
    not posted (planned, parked, rejected) is not expected in the ERP."""
    start, end = month_bounds(period)
    args: dict[str, Any] = {"le": legal_entity, "start": start, "end": end}
    events: Side = {}
    documents: Side = {}
    unposted: set[str] = set()
    for ref, cur, state, total, event_sum in conn.execute(_DOCUMENTS, args):
        documents[str(ref)] = (str(cur).strip(), int(total))
        if event_sum is not None:
            events[str(ref)] = (str(cur).strip(), int(event_sum))
        if state != "posted":
            unposted.add(str(ref))
    erp: Side = {
        str(ref): (str(cur).strip(), int(total))
        for ref, cur, total in conn.execute(_ERP_INVOICES, args | {"refs": list(documents)})
    }
    return compare(
        "invoices", {"events": events, "document": documents, "erp": erp}, not_expected={"erp": unposted}
    )


_JOURNALS = """
    SELECT j.external_id, j.currency, j.state, j.debit_minor, p.state, p.currency, p.amount_minor,
           coalesce(p.target_erp, 'netsuite')
    FROM revenue.journal j
    LEFT JOIN LATERAL (
        SELECT state, currency, amount_minor, target_erp FROM ledger.posting
        WHERE record_type = 'journalentry' AND external_id = j.external_id ORDER BY seq DESC LIMIT 1
    ) p ON true
    WHERE j.legal_entity = %(le)s
      AND (j.posting_month = %(start)s OR (j.state = 'parked' AND j.period_month = %(start)s))
"""
_ERP_JOURNALS = """
    SELECT j.external_id, j.currency, coalesce(sum(l.debit_minor), 0)
    FROM billing.erp_journal j LEFT JOIN billing.erp_journal_line l ON l.journal_internal_id = j.internal_id
    WHERE j.external_id = ANY(%(refs)s)
       OR (j.legal_entity = %(le)s AND j.tran_date >= %(start)s AND j.tran_date < %(end)s
           AND j.external_id LIKE 'rev-%%')
    GROUP BY 1, 2
"""


def reconcile_journals(
    conn: psycopg.Connection, *, legal_entity: str, period: str, elsewhere: Side | None = None
) -> list[Reconciliation]:
    """Revenue journals posted in the month (or parked for it): the planned debits vs the ledger's
    confirmed row vs the ERP's journal read back (sum of its debit lines). A parked journal, or one
    whose ledger row is not confirmed yet, is not expected in the ledger's confirmed view or the ERP.

    The ERP side of a journal routed to NetSuite is NetSuite's read-back in the ODS
    (``billing.erp_journal``); of one routed to another ERP (SAP after a cutover, the ledger row's
    ``target_erp``), that ERP's read-back ``elsewhere`` (external id -> currency, debits;
    :func:`psa_erp_sync.reconcile.revenue_journals.sap_side`). Without it such a journal is missing
    from the ERP side: the report cannot say SAP holds it."""
    start, end = month_bounds(period)
    args: dict[str, Any] = {"le": legal_entity, "start": start, "end": end}
    planned: Side = {}
    ledger_side: Side = {}
    in_flight: set[str] = set()
    routed_away: set[str] = set()
    for ext, cur, state, debit, pstate, pcur, pamount, target in conn.execute(_JOURNALS, args):
        planned[str(ext)] = (str(cur).strip(), int(debit))
        if target != "netsuite":
            routed_away.add(str(ext))
        if pstate in ("confirmed", "resolved"):
            ledger_side[str(ext)] = (str(pcur).strip(), int(pamount))
        elif state == "parked" or pstate is None or STATE_GROUP.get(str(pstate)) != "confirmed":
            in_flight.add(str(ext))
    erp: Side = {
        str(ext): (str(cur).strip(), int(debit))
        for ext, cur, debit in conn.execute(_ERP_JOURNALS, args | {"refs": list(planned)})
    }
    erp.update({ext: (elsewhere or {})[ext] for ext in routed_away if ext in (elsewhere or {})})
    return compare(
        "journals",
        {"journal": planned, "ledger": ledger_side, "erp": erp},
        not_expected={"ledger": in_flight, "erp": in_flight},
    )


# --- the report -------------------------------------------------------------------------------


def compute(
    conn: psycopg.Connection,
    erp: erp_readback.SuiteQL,
    *,
    legal_entity: str,
    period: str,
    functional_currency: str,
    run_id: str,
    as_of: datetime,
    leakage_days: int = 30,
    journals_elsewhere: Side | None = None,
    erp_adapters: Mapping[str, Any] | None = None,
    route_of: erp_readback.RouteOf | None = None,
) -> CloseReport:
    """The close report of one legal entity and month (``YYYY-MM``); ``journals_elsewhere``: the
    revenue journals other ERPs than NetSuite hold (:func:`reconcile_journals`); ``erp_adapters``
    and ``route_of``: time and expenses per ERP (:func:`reconcile_work`)."""
    reconciliation: list[Reconciliation] = []
    for record_type in SOURCE:
        reconciliation += reconcile_work(
            conn,
            erp,
            record_type,
            legal_entity=legal_entity,
            period=period,
            functional_currency=functional_currency,
            erp_adapters=erp_adapters,
            route_of=route_of,
        )
    reconciliation += reconcile_invoices(conn, legal_entity=legal_entity, period=period)
    reconciliation += reconcile_invoices_functional(conn, legal_entity=legal_entity, period=period)
    reconciliation += reconcile_journals(
        conn, legal_entity=legal_entity, period=period, elsewhere=journals_elsewhere
    )
    return CloseReport(
        legal_entity=legal_entity,
        period=period,
        as_of=as_of,
        run_id=run_id,
        currencies=currency_figures(conn, legal_entity, period, leakage_days=leakage_days),
        postings=postings(conn, legal_entity, period),
        reconciliation=reconciliation,
        open_exceptions=open_exceptions(conn, legal_entity),
    )


def headline(report: CloseReport) -> dict[str, Any]:
    """The figures a reader (or ``make demo``) prints first: per currency revenue recognized,
    billed (net) with what was invoiced and what credit memos credited, WIP and deferred closing balances with their movement, leakage; postings by state;
    whether everything reconciled; open exceptions."""
    states: dict[str, int] = {}
    for counts in report.postings.values():
        for state, count in counts.items():
            states[state] = states.get(state, 0) + count
    return {
        "legal_entity": report.legal_entity,
        "period": report.period,
        "reconciled": report.reconciled,
        "currencies": {
            c.currency: {
                **_by_erp(c),
                "revenue_recognized": money.format_minor(c.revenue_recognized_minor, c.currency),
                "billed": money.format_minor(c.billed_minor, c.currency),
                "invoiced": money.format_minor(c.invoiced_minor, c.currency),
                "credited": money.format_minor(c.credited_minor, c.currency),
                "wip": money.format_minor(c.wip_closing_minor, c.currency),
                "wip_movement": money.format_minor(c.wip_movement_minor, c.currency),
                "deferred": money.format_minor(c.deferred_closing_minor, c.currency),
                "deferred_movement": money.format_minor(c.deferred_movement_minor, c.currency),
                "leakage": money.format_minor(c.leakage_minor, c.currency),
            }
            for c in report.currencies
        },
        "postings": dict(sorted(states.items())),
        "mismatched_areas": sorted({f"{r.area} {r.currency}" for r in report.mismatches()}),
        **_compared_per_erp(report),
        "open_exceptions": sum(report.open_exceptions.values()),
    }


def _compared_per_erp(report: CloseReport) -> dict[str, Any]:
    """Time and expenses: the records compared per ERP (area -> ERP -> records, over currencies),
    and what was not compared, when an ERP other than NetSuite is involved."""
    compared: dict[str, dict[str, int]] = {}
    notes: list[str] = []
    for r in report.reconciliation:
        for erp, n in r.erp_records.items():
            per = compared.setdefault(r.area, {})
            per[erp] = per.get(erp, 0) + n
        notes += [f"{r.area}: {note}" for note in r.notes if f"{r.area}: {note}" not in notes]
    if not notes and all(set(per) <= {"netsuite"} for per in compared.values()):
        return {}
    return {
        "compared_per_erp": {a: dict(sorted(p.items())) for a, p in sorted(compared.items())},
        "notes": notes,
    }


def _by_erp(figures: CurrencyFigures) -> dict[str, Any]:
    """Invoiced and credited per ERP, when an ERP other than NetSuite holds any (a cutover month)."""
    erps = sorted({*figures.invoiced_by_erp_minor, *figures.credited_by_erp_minor})
    if not erps or erps == ["netsuite"]:
        return {}
    return {
        "by_erp": {
            erp: {
                "invoiced": money.format_minor(figures.invoiced_by_erp_minor.get(erp, 0), figures.currency),
                "credited": money.format_minor(figures.credited_by_erp_minor.get(erp, 0), figures.currency),
            }
            for erp in erps
        }
    }


def store(conn: psycopg.Connection, report: CloseReport) -> int:
    """Insert the report into ``close.report`` (same run, same content: nothing new); its id."""
    body = report.model_dump(mode="json")
    body_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    key = (report.legal_entity, report.period, report.run_id, body_hash)
    conn.execute(
        "INSERT INTO close.report (legal_entity, period, run_id, as_of, reconciled, headline, body, body_hash)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (*key[:3], report.as_of, report.reconciled, Jsonb(headline(report)), Jsonb(body), body_hash),
    )
    row = conn.execute(
        "SELECT report_id FROM close.report WHERE legal_entity = %s AND period = %s AND run_id = %s"
        " AND body_hash = %s",
        key,
    ).fetchone()
    assert row is not None
    return int(row[0])


def latest_headlines(conn: psycopg.Connection, period: str) -> list[dict[str, Any]]:
    """The headline of each legal entity's latest stored report of ``period`` (for ``make demo``)."""
    rows = conn.execute(
        "SELECT DISTINCT ON (legal_entity) headline FROM close.report WHERE period = %s"
        " ORDER BY legal_entity, created_at DESC, report_id DESC",
        (period,),
    )
    return [dict(r[0]) for r in rows]


def check(reports: Iterable[CloseReport]) -> None:
    """Raise naming the first differing records of every area that does not reconcile."""
    problems = [
        f"{report.legal_entity} {report.period} {r.area} {r.currency}: "
        + ", ".join(f"{side} {total}" for side, total in r.sides.items())
        + f"; {r.differing} differing, first: "
        + "; ".join(r.first_differences)
        for report in reports
        for r in report.mismatches()
    ]
    if problems:
        raise ControlTotalMismatch("close report does not reconcile: " + " || ".join(problems))
