"""The posting command line and the stream route per ERP as the batch task does (issue 15,
deliverable 6).

Real PostgreSQL and the NetSuite and SAP simulators over loopback; LE-UK1 on NetSuite until
2026-12-31, on SAP from 2027-01-01. ``python -m psa_erp_sync.posting`` (in-process ``main``) posts
each side to its ERP; then the stream's posting step (``_post_kinds`` with the adapters of every
routed ERP, what ``process_inbox_step`` receives as ``erp_adapters``) does the same for new entries.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.conftest import RunningSimulator
from tests.two_erps import COMPANY, UK, connect_two_erps, time_entry

pytestmark = pytest.mark.integration


def _sap_hours(sap_sim: RunningSimulator) -> dict[str, Decimal]:
    out = {}
    for r in sap_sim.admin("GET", "/timesheets")["items"]:
        if r["TimeSheetStatus"] in ("10", "20", "30", "40"):
            source = r["TimeSheetDataFields"]["TimeSheetNoteText"].split("] psa:")[1].split()[0]
            out[source] = Decimal(r["TimeSheetDataFields"]["RecordedHours"])
    return out


def _netsuite_ids(erp_sim: RunningSimulator) -> set[str]:
    items = erp_sim.admin("GET", "/records/timebill", params={"limit": 100})["items"]
    return {i["externalId"] for i in items}


def test_the_command_line_and_the_stream_post_each_side_to_its_erp(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.sap import S4HanaClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting.__main__ import main
    from psa_erp_sync.posting.adapter import SapMapping, adapter_for
    from psa_erp_sync.stream.time_expense import StreamResult, _post_kinds

    connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 1, "2026-12-30", "a1", "1.50")
        time_entry(conn, 3, "2027-01-01", "a3", "3.25")
    base = [
        "--dsn",
        clean_ods,
        "--erp-url",
        erp_sim.base_url,
        "--record-type",
        "timebill",
        "--run-id",
        "cli-per-erp",
    ]
    # The routing names SAP: the command line refuses to run without it.
    with pytest.raises(SystemExit):
        main(base)
    capsys.readouterr()
    sap = [
        "--sap-url",
        sap_sim.base_url,
        "--sap-password",
        "secret",
        "--sap-company-code",
        f"{UK}={COMPANY}",
        "--sap-activity-type",
        "T001",
    ]
    assert main([*base, *sap]) == 0
    outcome = json.loads(capsys.readouterr().out)["outcome"]
    assert (outcome["by_erp"]["netsuite"]["posted"], outcome["by_erp"]["sap"]["posted"]) == (1, 1), outcome
    assert _netsuite_ids(erp_sim) == {"psa-te-1"}
    assert _sap_hours(sap_sim) == {"3": Decimal("3.25")}

    # The stream's posting step with every routed ERP's adapter.
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 5, "2026-12-29", "a5", "0.75")
        time_entry(conn, 6, "2027-01-05", "a6", "6.00")
    result = StreamResult()
    with (
        NetSuiteClient(base_url=erp_sim.base_url, account_id="A1", token="t") as netsuite,
        S4HanaClient(base_url=sap_sim.base_url, user="PSA_COMM", password="secret") as client,
    ):
        adapters = {
            "netsuite": adapter_for("netsuite", netsuite),
            "sap": adapter_for("sap", client, sap_mapping=SapMapping({UK: COMPANY}, activity_type="T001")),
        }
        _post_kinds(
            ["time_entry"],
            dsn=clean_ods,
            erp_client=adapters,
            config=load_config(),
            engine_settings=None,
            run_id="stream-per-erp",
            result=result,
        )
    by_erp = result.posted["timebill"]["by_erp"]
    assert (by_erp["netsuite"]["posted"], by_erp["sap"]["posted"]) == (1, 1), by_erp
    assert _netsuite_ids(erp_sim) == {"psa-te-1", "psa-te-5"}
    assert _sap_hours(sap_sim) == {"3": Decimal("3.25"), "6": Decimal("6.00")}
    with psycopg.connect(clean_ods) as conn:
        targets = dict(
            conn.execute("SELECT source_id, target_erp FROM ledger.posting ORDER BY source_id").fetchall()
        )
    assert targets == {"1": "netsuite", "3": "sap", "5": "netsuite", "6": "sap"}
