"""The close report's time and expenses per ERP (issue 15, docs/multi-erp.md "Downstream per ERP").

Real PostgreSQL, the NetSuite and SAP simulators over loopback, the posting task and the DAG step
``close_report_step``: LE-UK1 on NetSuite until its cutover, on SAP after. Each record of the month
is compared with the ERP that holds it (its ledger rows' ``target_erp``), strays are looked for in
both ERPs, and SAP's records are left out of the functional check, which says why.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from psa_erp_sync.reconcile import close_report as cr
from psa_erp_sync.reconcile.control_totals import ControlTotalMismatch
from tests.conftest import RunningSimulator
from tests.two_erps import COMPANY, ROUTING, UK, connect_two_erps, expense_entry, post, time_entry

pytestmark = pytest.mark.integration

#: LE-UK1 moves to SAP on 2027-01-15: January 2027 straddles the cutover.
MID_MONTH = copy.deepcopy(ROUTING)
MID_MONTH["versions"][0]["legal_entities"][UK]["effective"][0]["last_day"] = "2027-01-14"
MID_MONTH["versions"][0]["legal_entities"][UK]["effective"][1]["first_day"] = "2027-01-15"


@contextmanager
def _adapters(erp_sim: RunningSimulator) -> Iterator[tuple[Any, dict[str, Any]]]:
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.hooks.sap import SapHook
    from psa_erp_sync.posting.adapter import NetSuiteAdapter

    hook = SapHook("sap_default")
    with (
        NetSuiteClient(base_url=erp_sim.base_url, account_id="A1", token="t") as ns,
        hook.get_client() as sap,
    ):
        yield ns, {"netsuite": NetSuiteAdapter(ns), "sap": hook.adapter(sap)}


def _close(dsn: str, erp_sim: RunningSimulator, out: Path, run_id: str) -> dict[str, Any]:
    """The DAG step for LE-UK1, January 2027; the report as stored in ``close.report``."""
    from psa_erp_sync.config import load_config
    from psa_erp_sync.reconcile.close_html import close_report_step

    with _adapters(erp_sim) as (ns, adapters), psycopg.connect(dsn) as conn:
        try:
            close_report_step(
                conn,
                ns,
                config=load_config(),
                run_id=run_id,
                as_of=datetime(2027, 2, 2, tzinfo=UTC),
                period="2027-01",
                output_dir=str(out),
                legal_entities=[UK],
                erp_adapters=adapters,
            )
            failure = None
        except ControlTotalMismatch as exc:
            failure = str(exc)
        body, headline = conn.execute(
            "SELECT body, headline FROM close.report WHERE run_id = %s", (run_id,)
        ).fetchone() or (None, None)
    return {"report": cr.CloseReport.model_validate(body), "headline": headline, "failure": failure}


def _area(report: cr.CloseReport, area: str, currency: str = "GBP") -> cr.Reconciliation:
    [found] = [r for r in report.reconciliation if r.area == area and r.currency == currency]
    return found


def _sap_stray_expense(sap_sim: RunningSimulator, source_id: int, day: date, amount: str) -> None:
    """An expense journal entry of our namespace (``psa:<id>``) the ODS never had."""
    from psa_erp_sync.clients.sap import S4HanaClient
    from psa_erp_sync.clients.sap_models import JournalEntryInput, JournalEntryItemInput

    entry = JournalEntryInput(
        company_code=COMPANY,
        document_date=day,
        posting_date=day,
        currency="GBP",
        header_text=f"psa:{source_id}",
        items=(
            JournalEntryItemInput(gl_account="6100", amount=Decimal(amount), debit_credit="S"),
            JournalEntryItemInput(gl_account="2000", amount=Decimal(amount), debit_credit="H"),
        ),
    )
    with S4HanaClient(base_url=sap_sim.base_url, user="PSA_COMM", password="secret") as client:
        client.post_journal_entry(entry, idempotency_key=f"stray-{source_id}")


def _sap_record_of(sap_sim: RunningSimulator, source_id: int) -> str:
    items = sap_sim.admin("GET", "/timesheets")["items"]
    [record] = [
        i["TimeSheetRecord"]
        for i in items
        if f" psa:{source_id} " in i["TimeSheetDataFields"]["TimeSheetNoteText"]
        and i["TimeSheetStatus"] != "50"
    ]
    return str(record)


def test_the_month_after_the_cutover_reconciles_against_sap(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 1, "2026-12-30", "a1", "1.50")  # NetSuite, December: not this report's
        time_entry(conn, 2, "2026-12-31", "a2", "2.00")  # NetSuite, then moved into January below
        time_entry(conn, 3, "2027-01-05", "a3", "3.25")  # SAP
        time_entry(conn, 4, "2027-01-06", "a4", "4.00", 12_345)
        expense_entry(conn, 12, "2027-01-15", 12_001)
    assert post("timebill", "close-sap-1")["still_pending"] == 0
    assert post("expensereport", "close-sap-1")["still_pending"] == 0
    with psycopg.connect(clean_ods, autocommit=True) as conn:  # reversed in NetSuite, posted in SAP
        time_entry(conn, 2, "2027-01-02", "a2b", "2.50")
    assert post("timebill", "close-sap-2")["rejected"] == 0

    clean = _close(clean_ods, erp_sim, tmp_path / "out", "close-sap-r1")
    report = clean["report"]
    assert clean["failure"] is None and report.reconciled
    time = _area(report, "time")
    assert time.sides == {"psa": 25_000 + 32_500 + 49_380, "ledger": 106_880, "erp": 106_880}
    assert (time.erp_records, time.erp_sums) == ({"sap": 3}, {"sap": 106_880})
    expenses = _area(report, "expenses")
    assert (expenses.erp_records, expenses.erp_sums) == ({"sap": 1}, {"sap": 12_001})
    assert (
        _area(report, "time_functional").notes[0].startswith("functional check skipped for sap (3 records)")
    )
    assert clean["headline"]["compared_per_erp"] == {"expenses": {"sap": 1}, "time": {"sap": 3}}
    page = (tmp_path / "out" / f"close_{UK}_2027-01.html").read_text()
    assert "sap: 3 records, 1068.80" in page and "functional check skipped for sap" in page

    with _adapters(erp_sim) as (ns, _), psycopg.connect(clean_ods) as conn:  # SAP not given: said so
        [blind, _functional] = cr.reconcile_work(
            conn, ns, "timebill", legal_entity=UK, period="2027-01", functional_currency="GBP"
        )
    assert (blind.sides["erp"], blind.erp_records) == (0, {"sap": 3})
    assert blind.notes == ["3 records belong to sap, which was not read (no adapter)"]

    # Someone changes entry 3's hours in SAP; SAP holds an expense of ours the ODS never had.
    record = _sap_record_of(sap_sim, 3)
    sap_sim.admin("PUT", f"/timesheets/{record}/hours", json={"hours": "3.26"})
    _sap_stray_expense(sap_sim, 98, date(2027, 1, 20), "50.00")
    failed = _close(clean_ods, erp_sim, tmp_path / "out", "close-sap-r2")
    assert failed["failure"] is not None
    assert "psa-te-3: psa 32500 GBP, ledger 32500 GBP, erp 32600 GBP (minor units)" in failed["failure"]
    assert "psa-ex-98: psa nothing, ledger nothing, erp 5000 GBP (minor units)" in failed["failure"]
    assert sorted(failed["headline"]["mismatched_areas"]) == ["expenses GBP", "time GBP"]
    stored = json.loads((tmp_path / "out" / f"close_{UK}_2027-01.json").read_text())
    assert [r["erp_records"] for r in stored["reconciliation"] if r["area"] == "expenses"] == [{"sap": 2}]


def test_a_month_straddling_the_cutover_reconciles_each_record_with_its_erp(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim, routing=MID_MONTH)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 1, "2027-01-05", "a1", "1.50")  # NetSuite (before the 15th)
        time_entry(conn, 2, "2027-01-20", "a2", "2.00")  # SAP
        expense_entry(conn, 11, "2027-01-10", 4_550)  # NetSuite
        expense_entry(conn, 12, "2027-01-25", 12_001)  # SAP
    assert post("timebill", "close-mid-1")["still_pending"] == 0
    assert post("expensereport", "close-mid-1")["still_pending"] == 0
    with psycopg.connect(clean_ods) as conn:
        targets = dict(conn.execute("SELECT source_id, target_erp FROM ledger.posting").fetchall())
    assert targets == {"1": "netsuite", "2": "sap", "11": "netsuite", "12": "sap"}

    clean = _close(clean_ods, erp_sim, tmp_path / "out", "close-mid-r1")
    report = clean["report"]
    assert clean["failure"] is None and report.reconciled
    time = _area(report, "time")
    assert (time.erp_records, time.erp_sums) == (
        {"netsuite": 1, "sap": 1},
        {"netsuite": 15_000, "sap": 20_000},
    )
    expenses = _area(report, "expenses")
    assert expenses.erp_sums == {"netsuite": 4_550, "sap": 12_001}
    functional = _area(report, "time_functional")  # NetSuite's record, in both currencies
    assert (functional.records, functional.erp_records) == (1, {"netsuite": 1})
    assert functional.notes[0].startswith("functional check skipped for sap (1 records)")
    assert clean["headline"]["compared_per_erp"] == {
        "expenses": {"netsuite": 1, "sap": 1},
        "expenses_functional": {"netsuite": 1},
        "time": {"netsuite": 1, "sap": 1},
        "time_functional": {"netsuite": 1},
    }

    # A stray in each ERP: a timebill of ours in NetSuite, an expense of ours in SAP.
    with psycopg.connect(clean_ods) as conn:
        [payload] = conn.execute(
            "SELECT payload FROM ledger.posting_full WHERE source_id = '1' AND record_type = 'timebill'"
        ).fetchone() or [None]
    with _adapters(erp_sim) as (ns, _):
        ns.upsert("timebill", "psa-te-97", payload | {"externalId": "psa-te-97", "tranDate": "2027-01-07"})
    _sap_stray_expense(sap_sim, 98, date(2027, 1, 28), "50.00")
    failed = _close(clean_ods, erp_sim, tmp_path / "out", "close-mid-r2")
    assert failed["failure"] is not None
    assert "psa-te-97: psa nothing, ledger nothing, erp 15000 GBP (minor units)" in failed["failure"]
    assert "psa-ex-98: psa nothing, ledger nothing, erp 5000 GBP (minor units)" in failed["failure"]
    assert _area(failed["report"], "time").erp_records == {"netsuite": 2, "sap": 1}
    assert _area(failed["report"], "expenses").erp_records == {"netsuite": 1, "sap": 2}
