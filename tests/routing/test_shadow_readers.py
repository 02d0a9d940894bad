"""The readers of the ledger during a parallel run (issue 15): a record has two lanes of ledger
rows, its own (the book of record) and its shadow in the secondary ERP; every reader takes the
record's own lane, and the per-ERP reconciliation leaves the secondary's shadow records to the
parallel-run check (docs/multi-erp.md "Parallel run").

Real PostgreSQL, the NetSuite and SAP simulators over loopback, the posting task, the per-ERP and
parallel-run reconciliation operators, the billing event build, the forecast's actuals, the close
report and the dead-letter replay. LE-UK1 posts December 2026 to NetSuite and, as shadows, to SAP.
Entry 7 is parked in NetSuite (its December closed) while its shadow is in SAP: the one record
whose lanes disagree, which no reader may count as posted; entry 8's shadow is parked in SAP while
NetSuite holds it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator
from tests.two_erps import COMPANY, PARALLEL, UK, connect_two_erps, expense_entry, post, time_entry

pytestmark = pytest.mark.integration


def _month(day: date) -> int:
    return day.year * 12 + day.month - 1


def _reconcile_erp(run_id: str) -> dict[str, Any]:
    from psa_erp_sync.operators.time_expense import ErpReconciliationOperator

    op = ErpReconciliationOperator(task_id="reconcile_erp")
    context = {"ti": None, "run_id": run_id, "dag": SimpleNamespace(dag_id="shadow_readers")}
    return op.execute(context)  # type: ignore[arg-type]


def _reconcile_parallel(run_id: str) -> dict[str, Any]:
    from psa_erp_sync.operators.posting import ParallelRunReconciliationOperator

    op = ParallelRunReconciliationOperator(
        task_id="reconcile_parallel_run", record_types=["timebill", "expensereport"]
    )
    return op.execute({"ti": None, "run_id": run_id})  # type: ignore[arg-type,no-any-return]


def _netsuite(sim: RunningSimulator) -> set[str]:
    items = sim.admin("GET", "/records/timebill", params={"limit": 100})["items"]
    return {i["externalId"] for i in items}


def _sap(sim: RunningSimulator) -> list[str]:
    """The source ids the live SAP timesheet records name (a shadow's: ``<id>-shadow``)."""
    return sorted(
        r["TimeSheetDataFields"]["TimeSheetNoteText"].split("] psa:")[1].split()[0]
        for r in sim.admin("GET", "/timesheets")["items"]
        if r["TimeSheetStatus"] in ("10", "20", "30", "40")
    )


def _sap_period(sim: RunningSimulator, *, open_: bool) -> None:
    sim.admin(
        "POST", "/periods", json=[{"company_code": COMPANY, "fiscal_year": 2026, "period": 12, "open": open_}]
    )


def _billing_project(conn: psycopg.Connection) -> None:
    """Project 42 as the extracts and the master-data sync leave it (for billing and the forecast)."""
    conn.execute("TRUNCATE master.erp_record")
    conn.execute(
        "INSERT INTO forecast.src_project (project_ref, practice, legal_entity, currency, billing_type, is_active)"
        " VALUES ('42', 'Technology', %s, 'GBP', 'time_and_materials', true)",
        (UK,),
    )
    conn.execute(
        "INSERT INTO master.erp_record (record_type, external_id, internal_id, version_hash, parent, is_inactive,"
        " body) VALUES ('job', 'psa-project-42', 'j42', 'v', 'psa-client-1', false, '{}'::jsonb),"
        " ('customer', 'psa-client-1', 'c1', 'v', NULL, false, '{}'::jsonb)"
    )


def _lanes(dsn: str, source_id: str) -> list[tuple[str, str, bool, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT action, target_erp, shadow, state FROM ledger.posting"
            " WHERE record_type = 'timebill' AND source_id = %s",
            (source_id,),
        ).fetchall()
    return sorted((str(a), str(e), bool(s), str(st)) for a, e, s, st in rows)


def _post_both(run_id: str) -> None:
    for record_type in ("timebill", "expensereport"):
        outcome = post(record_type, run_id)
        assert outcome["still_pending"] == 0 and outcome["rejected"] == 0, outcome


def _assert_readers_take_the_own_lane(dsn: str, erp_sim: RunningSimulator) -> None:
    """Billing, the forecast, the per-ERP reconciliation and the close report with 7 parked in
    NetSuite and posted as a shadow in SAP."""
    from psa_erp_sync.billing.events import build_billing_events
    from psa_erp_sync.billing.settings import BillingSettings
    from psa_erp_sync.forecast import inputs, model
    from psa_erp_sync.forecast.settings import load_forecast_settings
    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.reconcile import close_report

    # Per-ERP reconciliation: SAP holds 3 and 12 of its own; its shadows (6, 1, 7, 11) are the
    # parallel-run check's, neither expected of SAP nor unexpected in it.
    report = _reconcile_erp("shadow-readers-r1")
    time, expenses = report["timebill"]["by_erp"], report["expensereport"]["by_erp"]
    assert (time["netsuite"]["erp"]["count"], time["sap"]["erp"]["count"]) == (3, 1), report
    assert time["sap"]["erp"]["amounts_minor"] == {"GBP": 32_500}
    assert time["sap"]["unexpected_in_erp"] == 0 and time["sap"]["missing_in_erp"] == 0
    assert (expenses["netsuite"]["erp"]["count"], expenses["sap"]["erp"]["count"]) == (1, 1), report

    with psycopg.connect(dsn) as conn:
        # Billing: one event per record its book of record holds; 7 (only its shadow confirmed) held.
        outcome = build_billing_events(
            conn, config=BillingSettings.model_validate({"version": 1}), as_of=date(2027, 1, 31), run_id="b1"
        )
        conn.commit()
        billed = conn.execute("SELECT kind, source_id FROM billing.event ORDER BY 1, 2").fetchall()
        assert billed == [
            ("expense", "11"),
            ("expense", "12"),
            ("time", "1"),
            ("time", "3"),
            ("time", "5"),
            ("time", "6"),
        ], billed
        assert outcome.held == {"time": 1}, outcome

        # The forecast's posted actuals: each record once, by its own lane (7 not posted).
        settings = load_forecast_settings()
        project = {c: None for c in model.PROJECT_COLUMNS} | {
            "project_ref": "42",
            "legal_entity": UK,
            "currency": "GBP",
        }
        import pandas as pd

        actuals = inputs._actuals(conn, date(2027, 1, 31), pd.DataFrame([project]), settings)
        revenue = {int(r.month): int(r.revenue_minor) for r in actuals.itertuples() if r.project_ref == "42"}
        assert revenue == {
            _month(date(2026, 11, 1)): 10_000,  # 5: 1.00 h
            _month(date(2026, 12, 1)): 7_500 + 15_000 + 4_550,  # 6, 1 and expense 11 (not 7)
            _month(date(2027, 1, 1)): 32_500 + 12_001,  # 3 and expense 12
        }, revenue

        # The close report of December (NetSuite's month): 6 and 1 confirmed, 7 parked; reconciles.
        with ErpHook("erp_default").get_client() as client:
            closing = close_report.compute(
                conn,
                client,
                legal_entity=UK,
                period="2026-12",
                functional_currency="GBP",
                run_id="c1",
                as_of=datetime(2027, 1, 5, tzinfo=UTC),
            )
        close_report.check([closing])
        assert closing.postings["timebill"]["confirmed"] == 2 and closing.postings["timebill"]["parked"] == 1
        assert closing.postings["expensereport"]["confirmed"] == 1
    assert _netsuite(erp_sim) == {"psa-te-5", "psa-te-6", "psa-te-1"}


def test_every_reader_takes_the_records_own_lane_during_a_parallel_run(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from psa_erp_sync.posting import replay
    from psa_erp_sync.reconcile.parallel_run import ParallelRunMismatch

    connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim, routing=PARALLEL)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _billing_project(conn)
        time_entry(conn, 5, "2026-11-20", "s5", "1.00")  # before the window: NetSuite only
        time_entry(conn, 6, "2026-12-15", "s6", "0.75")  # in the window: NetSuite and SAP (shadow)
        time_entry(conn, 1, "2026-12-30", "s1", "1.50")
        time_entry(conn, 3, "2027-01-01", "s3", "3.25")  # past the cutover: SAP only
        expense_entry(conn, 11, "2026-12-15", 4_550)  # NetSuite and a shadow journal in SAP
        expense_entry(conn, 12, "2027-01-15", 12_001)  # SAP
    _post_both("shadow-readers-1")
    assert _sap(sap_sim) == ["1-shadow", "3", "6-shadow"]
    assert _reconcile_parallel("shadow-readers-p1")["windows"][0]["reconciled"]

    # NetSuite closes December: a new December entry parks in its own lane, its shadow posts to SAP.
    erp_sim.admin("POST", f"/periods/{UK}-2026-12", json={"closed": True})
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 7, "2026-12-20", "s7", "2.00")
    _post_both("shadow-readers-2")
    assert _lanes(clean_ods, "7") == [
        ("post", "netsuite", False, "parked"),
        ("post", "sap", True, "confirmed"),
    ]
    assert _sap(sap_sim) == ["1-shadow", "3", "6-shadow", "7-shadow"]
    _assert_readers_take_the_own_lane(clean_ods, erp_sim)
    # The parallel-run check does see the difference: SAP's shadow holds 7, NetSuite does not.
    with pytest.raises(ParallelRunMismatch, match="records 7"):
        _reconcile_parallel("shadow-readers-p2")

    # Replay releases 7's own parked row only; the next pass posts it to NetSuite, not to SAP again.
    erp_sim.admin("POST", f"/periods/{UK}-2026-12", json={"closed": False})
    with psycopg.connect(clean_ods) as conn:
        (stuck,) = replay.select(conn, replay.ReplayFilter(record_type="timebill"))
        assert (stuck["source_id"], stuck["lanes"]) == ("7", [False]), stuck
        assert replay.release(conn, [stuck], run_id="replay-1", actor="test") == 1
        conn.commit()
    _post_both("shadow-readers-3")
    assert _lanes(clean_ods, "7") == [
        ("post", "netsuite", False, "confirmed"),
        ("post", "netsuite", False, "superseded"),
        ("post", "sap", True, "confirmed"),
    ]
    assert _netsuite(erp_sim) == {"psa-te-5", "psa-te-6", "psa-te-1", "psa-te-7"}
    assert _sap(sap_sim) == ["1-shadow", "3", "6-shadow", "7-shadow"]

    # A shadow dead letter: SAP closes December, 8's shadow parks while NetSuite holds 8. Replay
    # releases the shadow row only, and the shadow lane posts it again to SAP as a shadow.
    _sap_period(sap_sim, open_=False)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 8, "2026-12-21", "s8", "0.50")
    _post_both("shadow-readers-4")
    assert _lanes(clean_ods, "8") == [
        ("post", "netsuite", False, "confirmed"),
        ("post", "sap", True, "parked"),
    ]
    _sap_period(sap_sim, open_=True)
    with psycopg.connect(clean_ods) as conn:
        (stuck,) = replay.select(conn, replay.ReplayFilter(record_type="timebill"))
        assert (stuck["source_id"], stuck["lanes"]) == ("8", [True]), stuck
        replay.release(conn, [stuck], run_id="replay-2", actor="test")
        conn.commit()
    _post_both("shadow-readers-5")
    assert _lanes(clean_ods, "8") == [
        ("post", "netsuite", False, "confirmed"),
        ("post", "sap", True, "confirmed"),
        ("post", "sap", True, "superseded"),
    ]
    assert "psa-te-8" in _netsuite(erp_sim)
    assert _sap(sap_sim) == ["1-shadow", "3", "6-shadow", "7-shadow", "8-shadow"]
    # Both ERPs and both lanes reconcile again.
    assert _reconcile_parallel("shadow-readers-p3")["windows"][0]["reconciled"]
    report = _reconcile_erp("shadow-readers-r2")
    assert report["timebill"]["by_erp"]["netsuite"]["erp"]["count"] == 5
    assert report["timebill"]["by_erp"]["sap"]["erp"]["count"] == 1
    assert Decimal(report["timebill"]["by_erp"]["sap"]["erp"]["hours"]) == Decimal("3.25")
