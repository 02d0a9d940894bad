"""The demo's second ERP at a tiny scale: the cutover routing it writes, and its per-ERP section.

Real PostgreSQL, the NetSuite and SAP simulators over loopback and ``IdempotentPostingOperator``
(the posting task of ``time_expense_posting``) with the routing copy the demo writes: LE-UK1 on
NetSuite through November, on SAP from 2026-12-01. Two entries on each side, then one moved across
the cutover; :func:`devtools.demo_erps.erp_section` must show each ERP's records and reconcile
both, and must name a record SAP holds differently.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from devtools import demo_erps
from tests import two_erps
from tests.conftest import ROOT, RunningSimulator, connect_airflow

CUTOVER = date(2026, 12, 1)
UK = demo_erps.ENTITY


def test_the_cutover_routing_is_a_new_version_that_moves_only_the_uk_entity(tmp_path: Path) -> None:
    from psa_erp_sync.routing.route import Router
    from psa_erp_sync.routing.settings import load_routing

    config = demo_erps.write_config(tmp_path / "config", CUTOVER)
    routing = load_routing(config)
    before = yaml.safe_load((ROOT / "config" / "erp_routing.yaml").read_text(encoding="utf-8"))
    assert [v.version for v in routing.versions] == [*(v["version"] for v in before["versions"]), 2]
    router = Router(routing)
    assert router.route(UK, date(2026, 11, 30)).erp == "netsuite"
    assert router.route(UK, CUTOVER).erp == "sap"
    assert router.route("LE-US1", CUTOVER).erp == "netsuite"


def test_failures_name_an_empty_sap_and_an_erp_that_does_not_reconcile() -> None:
    empty = {"count": 0, "hours": "0", "amounts_minor": {}}
    side = {"record_types": {"timebill": {"in_erp": empty}}, "reconciled": True}
    assert demo_erps.failures({"netsuite": side, "sap": side}) == [
        "SAP holds nothing: the cutover posted nothing to SAP"
    ]
    held = {"record_types": {"timebill": {"in_erp": {**empty, "count": 1}}}, "reconciled": False}
    assert demo_erps.failures({"netsuite": side, "sap": held}) == [
        "sap does not reconcile with the ledger and the approved PSA set"
    ]


# The two-ERP scenario's NetSuite (tests/two_erps.py), with the two months the demo's cutover spans.
NETSUITE_SEED = {
    **two_erps.NETSUITE_SEED,
    "accounting_periods": [
        p for p in two_erps.NETSUITE_SEED["accounting_periods"] if p["period_name"] in ("2026-11", "2026-12")
    ],
}


def _entry(conn: psycopg.Connection, source_id: int, day: str, version: str, hours: str) -> None:
    amount = int(Decimal(hours) * 10_000)
    conn.execute(
        """
        INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref, project_ref,
            legal_entity, hours, billable, bill_rate_minor, amount_minor, currency, approved, fingerprint,
            source_updated_at, record)
        VALUES ('psa', %s, %s, %s, '7', '42', %s, %s, true, 10000, %s, 'GBP', true, %s, now(), '{}'::jsonb)
        ON CONFLICT (source_system, source_id) DO UPDATE SET version_hash = EXCLUDED.version_hash,
            spent_date = EXCLUDED.spent_date, hours = EXCLUDED.hours, amount_minor = EXCLUDED.amount_minor
        """,
        (str(source_id), version, day, UK, hours, amount, version),
    )


def _post(run_id: str) -> dict[str, Any]:
    from psa_erp_sync.operators.posting import IdempotentPostingOperator

    op = IdempotentPostingOperator(task_id="post_timebills", record_type="timebill")
    return op.execute({"ti": None, "run_id": run_id})["outcome"]  # type: ignore[arg-type,no-any-return]


@pytest.mark.integration
def test_the_erp_section_shows_and_reconciles_both_sides_of_the_cutover(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from psa_erp_sync.clients.erp import NetSuiteClient

    monkeypatch.setenv("PSA_ERP_SYNC_CONFIG_DIR", str(demo_erps.write_config(tmp_path / "config", CUTOVER)))
    connect_airflow(monkeypatch, clean_ods, erp=erp_sim)
    sap_conn = demo_erps.sap_connection_for(sap_sim.base_url)
    monkeypatch.setenv("AIRFLOW_CONN_SAP_DEFAULT", json.dumps(sap_conn))
    erp_sim.admin("POST", "/seed", json=NETSUITE_SEED)
    sap_sim.admin("POST", "/seed", json=demo_erps.sap_seed([7], [2026, 2027]))
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entry(conn, 1, "2026-11-27", "a1", "1.50")  # NetSuite
        _entry(conn, 2, "2026-11-30", "a2", "2.00")
        _entry(conn, 3, "2026-12-01", "a3", "3.25")  # SAP
        _entry(conn, 4, "2026-12-02", "a4", "4.00")
    assert _post("demo-erps-1")["by_erp"]["sap"]["posted"] == 2
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entry(conn, 2, "2026-12-01", "a2b", "2.00")  # moved across the cutover: reverse and repost
    assert _post("demo-erps-2")["still_pending"] == 0

    def section() -> dict[str, Any]:
        with (
            NetSuiteClient(base_url=erp_sim.base_url, account_id="A1", token="t") as netsuite,
            psycopg.connect(clean_ods) as conn,
        ):
            return demo_erps.erp_section(
                conn,
                {
                    "netsuite": lambda rt: demo_erps.netsuite_holds(netsuite, rt),
                    "sap": lambda rt: demo_erps.sap_holds(conn, rt),
                },
            )

    both = section()
    ns, sap = both["netsuite"]["record_types"]["timebill"], both["sap"]["record_types"]["timebill"]
    assert (both["netsuite"]["reconciled"], both["sap"]["reconciled"]) == (True, True), both
    assert ns["per_ledger"] == ns["in_erp"] == {"count": 1, "hours": "1.50", "amounts_minor": {"GBP": 15_000}}
    assert ns["ledger_rows"] == {"confirmed": 3}  # 1 and 2 posted, 2 reversed
    assert sap["per_ledger"] == {"count": 3, "hours": "9.25", "amounts_minor": {"GBP": 92_500}}
    assert sap["in_erp"] == {"count": 3, "hours": "9.25", "amounts_minor": {}}  # SAP keeps hours, no amount
    assert demo_erps.failures(both) == []
    text = "\n".join(demo_erps.lines({"erps": both}))
    assert "sap: reconciled yes" in text and "netsuite: reconciled yes" in text

    # SAP holding other hours than the ledger is a difference naming the record.
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute(
            "UPDATE sim_sap.timesheet_record SET hours = hours + 1"
            " WHERE data_fields->>'TimeSheetNoteText' LIKE '%%] psa:4 %%'"
        )
    broken = section()
    assert broken["sap"]["record_types"]["timebill"]["differences"] == {
        "erp_differs_from_ledger": {"count": 1, "examples": ["4"]}
    }
    assert demo_erps.failures(broken) == ["sap does not reconcile with the ledger and the approved PSA set"]
