"""A month across LE-UK1's cutover from NetSuite to SAP, through the posting task (issue 15, deliverable 7).

Real PostgreSQL, the NetSuite simulator and the SAP simulator over loopback, and
``IdempotentPostingOperator`` without ``erp=``: one task posts each record to the ERP its posting
date routes to (config copy: LE-UK1 on NetSuite until 2026-12-31, on SAP from 2027-01-01,
``reverse_and_repost``). Then an unapproval on each side and a December entry moved into January
(reversed in NetSuite, posted in SAP), and the ERP totals per side, to the cent and the hour.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator, connect_airflow
from tests.routed_config import routed_config_dir

pytestmark = pytest.mark.integration

UK = "LE-UK1"
NETSUITE_ONLY = {"effective": [{"erp": "netsuite"}]}
ROUTING = {
    "version": 1,
    "erps": {"netsuite": {"connection": "erp_default"}, "sap": {"connection": "sap_default"}},
    "versions": [
        {
            "version": 1,
            "legal_entities": {
                "LE-US1": NETSUITE_ONLY,
                "LE-US2": NETSUITE_ONLY,
                UK: {
                    "effective": [
                        {"first_day": None, "last_day": "2026-12-31", "erp": "netsuite"},
                        {
                            "first_day": "2027-01-01",
                            "last_day": None,
                            "erp": "sap",
                            "correction_policy": "reverse_and_repost",
                        },
                    ]
                },
            },
        }
    ],
}
MONTHS = [("2026-11", "30"), ("2026-12", "31"), ("2027-01", "31"), ("2027-02", "28")]
NETSUITE_SEED = {
    "subsidiaries": [
        {
            "external_id": UK,
            "name": "Northwind UK Ltd",
            "country": "GB",
            "currency": "GBP",
            "is_inactive": False,
        }
    ],
    "currencies": [{"symbol": "GBP", "name": "GBP"}],
    "employees": [{"external_id": "psa-user-7", "subsidiary": UK, "is_inactive": False}],
    "customers": [
        {
            "external_id": "psa-client-1",
            "company_name": "Acme Ltd",
            "subsidiary": UK,
            "currency": "GBP",
            "is_inactive": False,
        }
    ],
    "jobs": [
        {
            "external_id": "psa-project-42",
            "name": "Project 42",
            "customer": "psa-client-1",
            "subsidiary": UK,
            "currency": "GBP",
            "billing_type": "time_and_materials",
            "contract_value": "100000.00",
            "is_inactive": False,
        }
    ],
    "accounting_periods": [
        {
            "external_id": f"{UK}-{m}",
            "subsidiary": UK,
            "period_name": m,
            "start_date": f"{m}-01",
            "end_date": f"{m}-{d}",
            "closed": False,
            "all_locked": False,
            "ar_locked": False,
            "ap_locked": False,
        }
        for m, d in MONTHS
    ],
}
SAP_SEED = {
    "company_codes": [{"company_code": "2010", "currency": "GBP"}],
    "work_agreements": [
        {"external_id": "psa-user-7", "company_code": "2010", "person_work_agreement": "50000007"}
    ],
    "posting_periods": [
        {"company_code": "2010", "fiscal_year": y, "period": m, "open": True}
        for y in (2026, 2027)
        for m in range(1, 13)
    ],
}


def _entry(
    conn: psycopg.Connection, source_id: int, day: str, version: str, hours: str, rate_minor: int
) -> None:
    amount = int(Decimal(hours) * rate_minor)
    conn.execute(
        """
        INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref, project_ref,
            legal_entity, hours, billable, bill_rate_minor, amount_minor, currency, approved, fingerprint,
            source_updated_at, record)
        VALUES ('psa', %s, %s, %s, '7', '42', %s, %s, true, %s, %s, 'GBP', true, %s, now(), '{}'::jsonb)
        ON CONFLICT (source_system, source_id) DO UPDATE SET version_hash = EXCLUDED.version_hash,
            spent_date = EXCLUDED.spent_date, hours = EXCLUDED.hours, amount_minor = EXCLUDED.amount_minor,
            bill_rate_minor = EXCLUDED.bill_rate_minor, approved = true
        """,
        (str(source_id), version, day, UK, hours, rate_minor, amount, version),
    )


def _post(run_id: str) -> dict[str, Any]:
    from psa_erp_sync.operators.posting import IdempotentPostingOperator

    op = IdempotentPostingOperator(task_id="post_timebills", record_type="timebill")
    result = op.execute({"ti": None, "run_id": run_id})  # type: ignore[arg-type]
    return result["outcome"]  # type: ignore[no-any-return]


def _lineage_outputs() -> list[tuple[str, str]]:
    from psa_erp_sync.operators.posting import IdempotentPostingOperator

    _inputs, outputs = IdempotentPostingOperator(task_id="t", record_type="timebill").lineage_datasets()
    return [(d.namespace, d.name) for d in outputs]


def _netsuite(sim: RunningSimulator) -> dict[str, tuple[Decimal, Decimal]]:
    """Live timebills by PSA source id: (hours, amount)."""
    items = sim.admin("GET", "/records/timebill", params={"limit": 100})["items"]
    return {
        i["externalId"].removeprefix("psa-te-"): (
            Decimal(i["hours"]),
            Decimal(i["hours"]) * Decimal(i["rate"]),
        )
        for i in items
    }


def _sap(sim: RunningSimulator) -> dict[str, Decimal]:
    """Live SAP timesheet records by PSA source id: hours."""
    out = {}
    for r in sim.admin("GET", "/timesheets")["items"]:
        if r["TimeSheetStatus"] in ("10", "20", "30", "40"):
            source = r["TimeSheetDataFields"]["TimeSheetNoteText"].split("] psa:")[1].split()[0]
            assert source not in out, f"two live SAP records for {source}"
            out[source] = Decimal(r["TimeSheetDataFields"]["RecordedHours"])
    return out


def test_a_month_across_the_cutover_posts_each_side_to_its_erp(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config_dir = routed_config_dir(tmp_path / "config", routing=ROUTING)
    monkeypatch.setenv("PSA_ERP_SYNC_CONFIG_DIR", str(config_dir))
    connect_airflow(monkeypatch, clean_ods, erp=erp_sim)
    sap_conn = {
        "conn_type": "http",
        "host": sap_sim.base_url,
        "login": "PSA_COMM",
        "password": "secret",
        "extra": {"company_codes": {UK: "2010"}, "activity_type": "T001"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SAP_DEFAULT", json.dumps(sap_conn))
    erp_sim.admin("POST", "/seed", json=NETSUITE_SEED)
    sap_sim.admin("POST", "/seed", json=SAP_SEED)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entry(conn, 1, "2026-12-30", "a1", "1.50", 10_000)  # NetSuite: the last days before cutover
        _entry(conn, 2, "2026-12-31", "a2", "2.00", 10_000)
        _entry(conn, 3, "2027-01-01", "a3", "3.25", 10_000)  # SAP: from the cutover day
        _entry(conn, 4, "2027-01-04", "a4", "4.00", 10_000)
    first = _post("cutover-1")
    assert first["posted"] == 4 and first["still_pending"] == 0, first
    assert set(first["by_erp"]) == {"netsuite", "sap"}
    assert (first["by_erp"]["netsuite"]["posted"], first["by_erp"]["sap"]["posted"]) == (2, 2)
    assert _netsuite(erp_sim) == {
        "1": (Decimal("1.50"), Decimal("150.00")),
        "2": (Decimal("2.00"), Decimal("200.00")),
    }
    assert _sap(sap_sim) == {"3": Decimal("3.25"), "4": Decimal("4.00")}

    # Corrections and unapprovals across the cutover.
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute("UPDATE canonical.time_entry SET approved = false WHERE source_id IN ('1', '4')")
        _entry(conn, 2, "2027-01-02", "a2b", "2.50", 10_000)  # moved into January: reverse_and_repost
    second = _post("cutover-2")
    assert second["still_pending"] == 0 and second["rejected"] == 0, second
    assert _netsuite(erp_sim) == {}  # 1 unapproved, 2 reversed where it was held
    assert _sap(sap_sim) == {"2": Decimal("2.50"), "3": Decimal("3.25")}  # 4 unapproved, 2 reposted
    with psycopg.connect(clean_ods) as conn:
        rows = conn.execute(
            "SELECT source_id, action, target_erp, state FROM ledger.posting WHERE source_id = '2' ORDER BY seq"
        ).fetchall()
        items = conn.execute("SELECT count(*) FROM exceptions.item WHERE status = 'open'").fetchone()
    assert [r[1:] for r in rows] == [
        ("post", "netsuite", "confirmed"),
        ("reverse", "netsuite", "confirmed"),
        ("post", "sap", "confirmed"),
    ]
    assert items == (0,)
    # The ERP totals per side, to the hour and the penny: NetSuite 0, SAP 5.75 h = GBP 575.00.
    assert sum(_sap(sap_sim).values()) == Decimal("5.75")

    # The trace shows the ERP of each posting and where the record now is.
    from psa_erp_sync.trace import format_text, trace

    with psycopg.connect(clean_ods) as conn:
        (record,) = [t for t in trace(conn, "psa", "2") if t["kind"] == "time_entry"]
    assert [(p["action"], p["target_erp"]) for p in record["ledger"]] == [
        ("post", "netsuite"),
        ("reverse", "netsuite"),
        ("post", "sap"),
    ]
    assert (record["erp"]["erp"], record["erp"]["in_erp"]) == ("sap", True)
    assert "4. ERP sap timebill psa-te-2" in format_text([record])
    # OpenLineage: one ERP dataset per ERP posted to, each in its own namespace.
    erp_outputs = [o for o in _lineage_outputs() if not o[0].startswith("postgres")]
    assert sorted(ns for ns, _ in erp_outputs) == sorted(
        [f"http://127.0.0.1:{erp_sim.port}", f"http://127.0.0.1:{sap_sim.port}"]
    ), erp_outputs
