"""``make demo``'s second ERP: LE-UK1 moves from NetSuite to SAP S/4HANA, and the report shows both.

After the seeded month has run through every DAG on NetSuite, finance adds a cutover to the routing
file (a new version of ``config/erp_routing.yaml`` in a copy of ``config/``): LE-UK1 posts to
NetSuite up to the seeded month's last day and to SAP from the first day of the next month
(``reverse_and_repost``). The demo then

- seeds SAP with what it needs: LE-UK1's company code, open posting periods, and a work agreement
  (``psa-user-<id>``) for every PSA user;
- books the first days of the new month for LE-UK1 in the PSA (approved time and expenses, copied
  from the seeded month's LE-UK1 entries) and moves one November LE-UK1 entry, already in
  NetSuite, across the cutover into the new month;
- runs ``time_expense_posting`` through Airflow once more: November stays in NetSuite, the new
  month goes to SAP, and the moved entry is reversed in NetSuite and posted in SAP;
- reconciles per ERP (:func:`erp_section`): what the ODS expects each ERP to hold (approved records
  whose latest ledger row routes there), what the ledger says it holds, and what the ERP itself
  holds, per record to the hour and the cent; the demo fails when SAP got nothing or either ERP
  does not reconcile.

The posting DAG's own ``reconcile_erp`` reads back each routed ERP (``reconcile/erp_readback.py``
and ``reconcile/sap_readback.py``) and runs in this phase too; :func:`erp_section` is the demo's
own, record-by-record proof beside it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from devtools.stack import ROOT, SIMULATORS, Stack

log = logging.getLogger("demo")

#: The demo's simulators: the default ones and SAP.
DEMO_SIMULATORS = (*SIMULATORS, "sap")
ENTITY = "LE-UK1"
COMPANY_CODE = "2010"
ERPS = ("netsuite", "sap")
RECORD_TYPES = ("timebill", "expensereport")
#: Tasks of time_expense_posting marked successful instead of run after the cutover: none (every
#: task, the per-ERP reconciliation included, runs).
SKIPPED_TASKS: str | None = None
#: New-month entries booked for the entity: at most this many time entries and expenses each.
NEW_MONTH_ENTRIES = 40
#: Ids of the entries booked here (far above the generator's: time 1e8+, expenses 3e8+).
TIME_ID_BASE, EXPENSE_ID_BASE = 190_000_000, 390_000_000
#: SAP timesheet statuses of a live record (50: superseded by a change, 60: deleted).
LIVE_STATUSES = ("10", "20", "30", "40")


# -- routing ---------------------------------------------------------------------------------------
def cutover_routing(current: dict[str, Any], cutover: date) -> dict[str, Any]:
    """``current`` (an ``erp_routing.yaml`` document) plus a version in which ENTITY moves to SAP on
    ``cutover``; every other entity keeps its routes."""
    latest = max(current["versions"], key=lambda v: v["version"])
    entities = json.loads(json.dumps(latest["legal_entities"], default=str))
    entities[ENTITY] = {
        "effective": [
            {"first_day": None, "last_day": (cutover - timedelta(days=1)).isoformat(), "erp": "netsuite"},
            {
                "first_day": cutover.isoformat(),
                "last_day": None,
                "erp": "sap",
                "correction_policy": "reverse_and_repost",
            },
        ]
    }
    erps = {**current["erps"], "sap": {"connection": "sap_default"}}
    version = {"version": latest["version"] + 1, "legal_entities": entities}
    return {**current, "erps": erps, "versions": [*current["versions"], version]}


def write_config(dest: Path, cutover: date) -> Path:
    """A copy of ``config/`` at ``dest`` whose routing file gained the cutover; validated."""
    from psa_erp_sync.routing.settings import load_routing

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ROOT / "config", dest)
    path = dest / "erp_routing.yaml"
    current = yaml.safe_load(path.read_text(encoding="utf-8"))
    path.write_text(yaml.safe_dump(cutover_routing(current, cutover), sort_keys=False), encoding="utf-8")
    load_routing(dest)  # refuses a routing that sends a record nowhere or twice
    return dest


def sap_connection_for(url: str) -> dict[str, Any]:
    """The ``sap_default`` connection to the SAP at ``url``, with the company code mapping the
    SAP adapter reads from its extra."""
    return {
        "conn_type": "http",
        "host": url,
        "login": "PSA_COMM_USER",
        "password": "local-sap-password",
        "extra": {"company_codes": {ENTITY: COMPANY_CODE}, "activity_type": "T001"},
    }


# -- seeding ---------------------------------------------------------------------------------------
def sap_seed(user_ids: Iterable[int], years: Iterable[int], currency: str = "GBP") -> dict[str, Any]:
    """SAP's company code for ENTITY, every period of ``years`` open, a work agreement per user."""
    return {
        "company_codes": [
            {"company_code": COMPANY_CODE, "name": "Northwind Consulting Ltd", "currency": currency}
        ],
        "work_agreements": [
            {
                "external_id": f"psa-user-{u}",
                "company_code": COMPANY_CODE,
                "person_work_agreement": f"{50_000_000 + u % 50_000_000:08d}",
            }
            for u in sorted(set(user_ids))
        ],
        "posting_periods": [
            {"company_code": COMPANY_CODE, "fiscal_year": y, "period": m, "open": True}
            for y in sorted(set(years))
            for m in range(1, 13)
        ],
    }


def new_month_rows(
    entries: list[dict[str, Any]],
    uk_projects: set[int],
    days: list[date],
    *,
    id_base: int,
    stamp: datetime,
    limit: int = NEW_MONTH_ENTRIES,
) -> list[dict[str, Any]]:
    """Approved copies of ENTITY's approved entries, dated on ``days`` (round robin), new ids."""
    picked = [e for e in entries if e["project_id"] in uk_projects and e.get("is_closed")][:limit]
    at = stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        {
            **e,
            "id": id_base + i,
            "spent_date": days[i % len(days)].isoformat(),
            "is_closed": True,
            "is_locked": True,
            "is_billed": False,
            "created_at": at,
            "updated_at": at,
        }
        for i, e in enumerate(picked, start=1)
    ]


def book_new_month(firm: Any, psa_url: str, cutover: date, today: date) -> dict[str, int]:
    """Approved LE-UK1 time and expenses on the first working days of the month after the cutover."""
    from simulators.firm.generator import iter_expenses, iter_time_entries

    last = max(cutover, min(today, cutover + timedelta(days=6)))
    days = [cutover + timedelta(days=n) for n in range((last - cutover).days + 1)]
    days = [d for d in days if d.weekday() < 5] or [cutover]
    uk_projects = {p["id"] for p in firm.psa["projects"] if p["legal_entity"] == ENTITY}
    stamp = datetime.now(UTC)
    rows = {
        "time_entries": new_month_rows(
            [r for chunk in iter_time_entries(firm) for r in chunk],
            uk_projects,
            days,
            id_base=TIME_ID_BASE,
            stamp=stamp,
        ),
        "expenses": new_month_rows(
            [r for chunk in iter_expenses(firm) for r in chunk],
            uk_projects,
            days,
            id_base=EXPENSE_ID_BASE,
            stamp=stamp,
        ),
    }
    for name, chunk in rows.items():
        if chunk:
            httpx.post(f"{psa_url}/admin/seed", json={name: chunk}, timeout=120).raise_for_status()
    return {name: len(chunk) for name, chunk in rows.items()}


def move_across_cutover(dsn: str, psa_url: str, cutover: date) -> str | None:
    """Move one LE-UK1 time entry held in NetSuite to the cutover day (an edit in the PSA): the
    routing's ``reverse_and_repost`` reverses it in NetSuite and posts it in SAP. Its PSA id."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            """
            SELECT c.source_id FROM canonical.time_entry c
            JOIN LATERAL (SELECT action, state, target_erp FROM ledger.posting l WHERE l.record_type = 'timebill'
                          AND l.source_system = c.source_system AND l.source_id = c.source_id
                          ORDER BY seq DESC LIMIT 1) l ON true
            WHERE c.legal_entity = %s AND c.approved AND NOT c.is_deleted AND c.spent_date < %s
              AND l.action = 'post' AND l.state = 'confirmed' AND l.target_erp = 'netsuite'
            ORDER BY c.source_id::bigint LIMIT 1
            """,
            (ENTITY, cutover),
        ).fetchone()
    if row is None:
        return None
    source_id = str(row[0])
    httpx.patch(
        f"{psa_url}/admin/time_entries/{source_id}", json={"spent_date": cutover.isoformat()}, timeout=30
    ).raise_for_status()
    return source_id


# -- per-ERP reconciliation ------------------------------------------------------------------------
Rows = dict[str, tuple[Decimal, int | None, str | None]]  # source id -> (hours, amount minor, currency)


def _latest_target(conn: psycopg.Connection, record_type: str) -> dict[str, str]:
    """The ERP each record's latest ledger row routes to."""
    return {
        str(sid): str(erp)
        for sid, erp in conn.execute(
            "SELECT DISTINCT ON (source_system, source_id) source_id, target_erp FROM ledger.posting"
            " WHERE record_type = %s ORDER BY source_system, source_id, seq DESC",
            (record_type,),
        )
    }


def _held_per_ledger(conn: psycopg.Connection, record_type: str, erp: str) -> Rows:
    """What the ledger says ``erp`` holds per record: its last confirmed posting there (post or
    adjust, not reverse) plus its confirmed correcting records there, as ``erp_readback`` counts."""
    from psa_erp_sync.posting import ledger

    hours = f"({ledger.BASE_PAYLOAD}->>'hours')::numeric" if record_type == "timebill" else "0::numeric"
    sql = f"""
        SELECT source_id,
               CASE WHEN base_action IN ('post', 'adjust') THEN {hours} ELSE 0 END + corrected_hours,
               CASE WHEN base_action IN ('post', 'adjust') THEN base_amount ELSE 0 END + corrected_amount,
               coalesce(done_currency, base_currency)
        FROM (
            SELECT source_system, source_id, {ledger.HELD_COLUMNS},
                   (array_agg(action ORDER BY seq DESC) FILTER (WHERE state IN ('confirmed', 'resolved')))[1] AS done_action,
                   (array_agg(currency ORDER BY seq DESC) FILTER (WHERE state IN ('confirmed', 'resolved')))[1] AS done_currency,
                   (array_agg(currency ORDER BY seq DESC) FILTER (WHERE state IN ('confirmed', 'resolved') AND corrects IS NULL))[1] AS base_currency
            FROM ledger.posting WHERE record_type = %s AND target_erp = %s GROUP BY 1, 2
        ) held WHERE done_action IN ('post', 'adjust')
    """
    return {str(s): (Decimal(h), int(a), str(c)) for s, h, a, c in conn.execute(sql, (record_type, erp))}


def _ledger_states(conn: psycopg.Connection, erp: str) -> dict[str, dict[str, int]]:
    """Per record type, the ledger rows routed to ``erp`` by state (confirmed includes resolved)."""
    out: dict[str, dict[str, int]] = {}
    for record_type, state, n in conn.execute(
        "SELECT record_type, CASE WHEN state = 'resolved' THEN 'confirmed' ELSE state END, count(*)"
        " FROM ledger.posting WHERE target_erp = %s GROUP BY 1, 2 ORDER BY 1, 2",
        (erp,),
    ):
        out.setdefault(str(record_type), {})[str(state)] = int(n)
    return out


def sap_holds(conn: psycopg.Connection, record_type: str) -> Rows:
    """What the SAP simulator holds per PSA record (its own state, schema ``sim_sap``): live
    timesheet records by the ``psa:<id>`` of their note (hours; SAP keeps no amount on a
    timesheet), and the net of the expense account over the journal entries headed ``psa:<id>``."""
    if record_type == "timebill":
        rows: Rows = {}
        for note, hours in conn.execute(
            "SELECT data_fields->>'TimeSheetNoteText', hours FROM sim_sap.timesheet_record"
            " WHERE status = ANY(%s) ORDER BY record",
            (list(LIVE_STATUSES),),
        ):
            source = str(note).split("] psa:", 1)[1].split()[0] if "] psa:" in str(note) else str(note)
            if source in rows:
                raise AssertionError(f"SAP holds two live timesheet records of PSA entry {source}")
            rows[source] = (Decimal(hours), None, None)
        return rows
    from psa_erp_sync import money
    from psa_erp_sync.posting.adapter import SapMapping

    account = SapMapping(company_codes={}).expense_account
    found: Rows = {}
    for header, currency, net in conn.execute(
        "SELECT h.header_text, h.currency, sum(CASE i.debit_credit WHEN 'S' THEN i.amount ELSE -i.amount END)"
        " FROM sim_sap.journal_entry h JOIN sim_sap.journal_entry_item i USING (company_code, fiscal_year,"
        " accounting_document) WHERE i.gl_account = %s AND h.header_text LIKE 'psa:%%' GROUP BY 1, 2",
        (account,),
    ):
        if net:
            found[str(header).removeprefix("psa:")] = (
                Decimal(0),
                money.to_minor(Decimal(net), currency),
                currency,
            )
    return found


def netsuite_holds(client: Any, record_type: str) -> Rows:
    """NetSuite read back through SuiteQL (records of our external-id prefix plus their correcting
    journals), as the posting DAG's reconciliation reads it."""
    from psa_erp_sync.reconcile import erp_readback
    from psa_erp_sync.reconcile.time_expense import EXTERNAL_ID_PREFIX

    _, rows = erp_readback.actual(client, record_type, EXTERNAL_ID_PREFIX[record_type])
    return {s: (h, a, c) for s, (h, a, c) in rows.items()}


def _totals(rows: Rows) -> dict[str, Any]:
    amounts: dict[str, int] = {}
    for _, amount, currency in rows.values():
        if amount is not None and currency is not None:
            amounts[currency] = amounts.get(currency, 0) + amount
    hours = sum((h for h, _, _ in rows.values()), Decimal(0))
    return {"count": len(rows), "hours": str(hours), "amounts_minor": dict(sorted(amounts.items()))}


def compare(expected: Rows, ledger_view: Rows, erp: Rows, *, limit: int = 10) -> dict[str, Any]:
    """Record by record: expected vs the ledger's view (hours, amount, currency) and the ledger's
    view vs the ERP (hours, and amount and currency where the ERP keeps them)."""

    def differs(a: tuple[Decimal, int | None, str | None], b: tuple[Decimal, int | None, str | None]) -> bool:
        return a[0] != b[0] or (b[1] is not None and (a[1], a[2]) != (b[1], b[2]))

    not_in_ledger = sorted(set(expected) - set(ledger_view))
    not_expected = sorted(set(ledger_view) - set(expected))
    ledger_differs = sorted(s for s in set(expected) & set(ledger_view) if expected[s] != ledger_view[s])
    missing = sorted(set(ledger_view) - set(erp))
    unexpected = sorted(set(erp) - set(ledger_view))
    erp_differs = sorted(s for s in set(ledger_view) & set(erp) if differs(ledger_view[s], erp[s]))
    problems = {
        "expected_not_in_ledger": not_in_ledger,
        "in_ledger_not_expected": not_expected,
        "ledger_differs_from_expected": ledger_differs,
        "missing_in_erp": missing,
        "unexpected_in_erp": unexpected,
        "erp_differs_from_ledger": erp_differs,
    }
    return {
        "reconciled": not any(problems.values()),
        "differences": {k: {"count": len(v), "examples": v[:limit]} for k, v in problems.items() if v},
    }


def erp_section(conn: psycopg.Connection, holds: dict[str, Callable[[str], Rows]]) -> dict[str, Any]:
    """Per ERP in ``holds`` (name -> what that ERP holds per record type): ledger rows by state,
    totals per currency (expected, per the ledger, per the ERP) and whether all three agree."""
    from psa_erp_sync.reconcile import erp_readback

    section: dict[str, Any] = {}
    targets = {rt: _latest_target(conn, rt) for rt in RECORD_TYPES}
    expected_all = {rt: erp_readback.expected(conn, rt)[1] for rt in RECORD_TYPES}
    for erp, read in holds.items():
        states = _ledger_states(conn, erp)
        per_type = {}
        for rt in RECORD_TYPES:
            # Records with no ledger row yet are NetSuite's (the default route), as before routing.
            expected: Rows = {
                s: (h, a, c)
                for s, (h, a, c) in expected_all[rt].items()
                if targets[rt].get(s, "netsuite") == erp
            }
            ledger_view = _held_per_ledger(conn, rt, erp)
            held = read(rt)
            per_type[rt] = {
                "ledger_rows": states.get(rt, {}),
                "expected": _totals(expected),
                "per_ledger": _totals(ledger_view),
                "in_erp": _totals(held),
                **compare(expected, ledger_view, held),
            }
        section[erp] = {
            "record_types": per_type,
            "confirmed": sum(t["ledger_rows"].get("confirmed", 0) for t in per_type.values()),
            "reconciled": all(t["reconciled"] for t in per_type.values()),
        }
    return section


def failures(section: dict[str, Any]) -> list[str]:
    """Why the ERP section fails the demo: SAP posted nothing, or an ERP does not reconcile."""
    problems = []
    sap = section.get("sap")
    if sap is None or not any(t["in_erp"]["count"] for t in sap["record_types"].values()):
        problems.append("SAP holds nothing: the cutover posted nothing to SAP")
    for erp, side in section.items():
        if not side["reconciled"]:
            problems.append(f"{erp} does not reconcile with the ledger and the approved PSA set")
    return problems


def lines(phase: dict[str, Any]) -> list[str]:
    """The ERP section as text lines (printed and in report.md)."""
    out = [f"routing: {phase.get('routing', '')}"]
    if phase.get("booked"):
        out.append(
            f"booked after the cutover: {phase['booked']}; moved across it: PSA time entry {phase.get('moved')}"
        )
    for erp, side in phase.get("erps", {}).items():
        out.append(f"{erp}: reconciled {'yes' if side['reconciled'] else 'NO'}")
        for rt, t in side["record_types"].items():
            rows = t["ledger_rows"]
            out.append(
                f"  {rt}: confirmed {rows.get('confirmed', 0)}, parked {rows.get('parked', 0)},"
                f" rejected {rows.get('rejected', 0)} (ledger rows);"
                f" held {t['per_ledger']['count']} records, {t['per_ledger']['hours']} h,"
                f" minor units {t['per_ledger']['amounts_minor']}"
            )
            erp_amounts = t["in_erp"]["amounts_minor"] or "no amounts (SAP timesheets carry hours)"
            out.append(
                f"    expected {t['expected']['count']} / ledger {t['per_ledger']['count']} / in {erp}"
                f" {t['in_erp']['count']} records ({t['in_erp']['hours']} h, {erp_amounts}):"
                f" {'equal' if t['reconciled'] else 'DIFFERENT ' + json.dumps(t['differences'])}"
            )
    if phase.get("skipped_tasks"):
        out.append(
            f"time_expense_posting after the cutover: tasks {phase['skipped_tasks']!r} marked successful, not run"
            " (NetSuite-only); each ERP is reconciled above instead"
        )
    for problem in phase.get("failures", []):
        out.append(f"FAILED: {problem}")
    return out


# -- the phase -------------------------------------------------------------------------------------
def run_second_erp(
    stack: Stack,
    firm: Any,
    env: dict[str, str],
    run_dag: Callable[..., None],
    *,
    today: date,
    config_dir: Path,
) -> dict[str, Any]:
    """Cut LE-UK1 over to SAP after the seeded month, post the next days through Airflow, and
    reconcile each ERP. ``env`` (the Airflow processes' environment) gains the routing copy and
    SAP's connection; ``run_dag(dag_id, label, conf, mark_success)`` runs a DAG or stops the demo."""
    cutover = firm.month_end + timedelta(days=1)
    write_config(config_dir, cutover)
    env["PSA_ERP_SYNC_CONFIG_DIR"] = str(config_dir)
    env["AIRFLOW_CONN_SAP_DEFAULT"] = json.dumps(sap_connection_for(stack.url("sap")))
    users = [int(u["id"]) for u in firm.psa["users"]]
    currency = next(le.currency for le in firm.spec.legal_entities if le.code == ENTITY)
    years = {cutover.year - 1, cutover.year, cutover.year + 1}
    httpx.post(
        f"{stack.url('sap')}/admin/seed", json=sap_seed(users, years, currency), timeout=60
    ).raise_for_status()
    booked = book_new_month(firm, stack.url("psa"), cutover, today)
    moved = move_across_cutover(stack.dsn, stack.url("psa"), cutover)
    log.info("    %s cut over to SAP on %s; booked %s; moved %s across", ENTITY, cutover, booked, moved)
    run_dag("time_expense_posting", "after the SAP cutover", None, SKIPPED_TASKS)
    from psa_erp_sync.clients.erp import NetSuiteClient

    erp_conn = json.loads(env["AIRFLOW_CONN_ERP_DEFAULT"])
    with (
        NetSuiteClient(
            base_url=erp_conn["host"], account_id=erp_conn["extra"]["account_id"], token=erp_conn["password"]
        ) as netsuite,
        psycopg.connect(stack.dsn) as conn,
    ):
        section = erp_section(
            conn,
            {"netsuite": lambda rt: netsuite_holds(netsuite, rt), "sap": lambda rt: sap_holds(conn, rt)},
        )
    phase = {
        "routing": f"{ENTITY}: netsuite until {cutover - timedelta(days=1)}, sap from {cutover}"
        f" (reverse_and_repost; {config_dir / 'erp_routing.yaml'})",
        "cutover": cutover.isoformat(),
        "booked": booked,
        "moved": moved,
        "skipped_tasks": SKIPPED_TASKS,
        "erps": section,
    }
    phase["failures"] = failures(section)
    return phase
