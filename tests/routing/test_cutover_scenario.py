"""A month across LE-UK1's cutover from NetSuite to SAP, through the posting task (issue 15, deliverable 7).

Real PostgreSQL, the NetSuite simulator and the SAP simulator over loopback, and
``IdempotentPostingOperator`` without ``erp=``: one task posts each record to the ERP its posting
date routes to (config copy: LE-UK1 on NetSuite until 2026-12-31, on SAP from 2027-01-01,
``reverse_and_repost``). Then an unapproval on each side and a December entry moved into January
(reversed in NetSuite, posted in SAP), and the ERP totals per side, to the cent and the hour.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator, connect_airflow
from tests.routed_config import routed_config_dir
from tests.two_erps import NETSUITE_SEED, PARALLEL, ROUTING, SAP_SEED, UK

pytestmark = pytest.mark.integration


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


# -- the parallel run ---------------------------------------------------------------------------
# LE-UK1 posts December 2026 to NetSuite (its route, the book of record) and, as a shadow, to SAP
# (the ERP it moves to on 2027-01-01; the routing is tests/two_erps.PARALLEL); then both ERPs are read
# back and reconciled to the cent.
PARALLEL_SEED = copy.deepcopy(NETSUITE_SEED)
PARALLEL_SEED["jobs"].append(
    {**NETSUITE_SEED["jobs"][0], "external_id": "psa-project-43", "name": "Project 43"}
)


def _entry_on(
    conn: psycopg.Connection, source_id: int, day: str, version: str, hours: str, project: str
) -> None:
    _entry(conn, source_id, day, version, hours, 10_000)
    conn.execute(
        "UPDATE canonical.time_entry SET project_ref = %s WHERE source_id = %s", (project, str(source_id))
    )


def _sap_lanes(sim: RunningSimulator) -> dict[str, Decimal]:
    """Live SAP timesheet records by the source id their note names (a shadow's: ``<id>-shadow``)."""
    out: dict[str, Decimal] = {}
    for r in sim.admin("GET", "/timesheets")["items"]:
        if r["TimeSheetStatus"] in ("10", "20", "30", "40"):
            source = r["TimeSheetDataFields"]["TimeSheetNoteText"].split("] psa:")[1].split()[0]
            assert source not in out, f"two live SAP records for {source}"
            out[source] = Decimal(r["TimeSheetDataFields"]["RecordedHours"])
    return out


def _reconcile(run_id: str) -> dict[str, Any]:
    from psa_erp_sync.operators.posting import ParallelRunReconciliationOperator

    op = ParallelRunReconciliationOperator(task_id="reconcile_parallel_run", record_types=["timebill"])
    return op.execute({"ti": None, "run_id": run_id})  # type: ignore[arg-type,no-any-return]


def _change_in_sap(source: str, hours: str) -> None:
    """Someone changes a record in SAP itself (the ERP-side difference the check must find)."""
    from psa_erp_sync.clients import sap
    from psa_erp_sync.clients.sap_models import TimeSheetInput
    from psa_erp_sync.hooks.sap import SapHook

    with SapHook("sap_default").get_client() as client:
        (live,) = [
            e
            for e in client.timesheets("psa-user-7", "2010")
            if e.is_live and f"psa:{source} " in e.TimeSheetDataFields.TimeSheetNoteText + " "
        ]
        fields = live.TimeSheetDataFields
        entry = TimeSheetInput(
            person_work_agreement_external_id="psa-user-7",
            company_code="2010",
            day=live.TimeSheetDate,
            hours=Decimal(hours),
            activity_type=fields.ActivityType,
            wbs_element=fields.WBSElement,
            note=fields.TimeSheetNoteText,
        )
        body = entry.payload(operation="U", note=fields.TimeSheetNoteText, record=live.TimeSheetRecord)
        (result,) = client.batch([[sap.BatchRequest("POST", sap.TIMESHEETS, body)]])
        assert result.error is None, result.error


def _parallel_setup(
    dsn: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config_dir = routed_config_dir(tmp_path / "config", routing=PARALLEL)
    monkeypatch.setenv("PSA_ERP_SYNC_CONFIG_DIR", str(config_dir))
    connect_airflow(monkeypatch, dsn, erp=erp_sim)
    sap_conn = {
        "conn_type": "http",
        "host": sap_sim.base_url,
        "login": "PSA_COMM",
        "password": "secret",
        "extra": {"company_codes": {UK: "2010"}, "activity_type": "T001"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SAP_DEFAULT", json.dumps(sap_conn))
    erp_sim.admin("POST", "/seed", json=PARALLEL_SEED)
    sap_sim.admin("POST", "/seed", json=SAP_SEED)


def test_a_parallel_run_posts_both_erps_and_reconciles_them(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from psa_erp_sync.reconcile.parallel_run import ParallelRunMismatch

    _parallel_setup(clean_ods, erp_sim, sap_sim, monkeypatch, tmp_path)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entry_on(conn, 5, "2026-11-20", "b5", "1.00", "42")  # before the window: NetSuite only
        _entry_on(conn, 6, "2026-12-15", "b6", "0.75", "43")  # in the window: NetSuite and SAP
        _entry_on(conn, 1, "2026-12-30", "b1", "1.50", "42")
        _entry_on(conn, 2, "2026-12-31", "b2", "2.00", "42")
        _entry_on(conn, 3, "2027-01-01", "b3", "3.25", "42")  # after the cutover: SAP only
        _entry_on(conn, 4, "2027-01-04", "b4", "4.00", "42")
    first = _post("parallel-1")
    assert first["still_pending"] == 0 and first["rejected"] == 0, first
    # NetSuite: 5, 6, 1, 2 (their route); SAP: 3, 4 (their route) and the shadows of 6, 1, 2.
    assert (first["by_erp"]["netsuite"]["posted"], first["by_erp"]["sap"]["posted"]) == (4, 5), first
    assert {k: v[0] for k, v in _netsuite(erp_sim).items()} == {
        "5": Decimal("1.00"),
        "6": Decimal("0.75"),
        "1": Decimal("1.50"),
        "2": Decimal("2.00"),
    }
    assert _sap_lanes(sap_sim) == {
        "3": Decimal("3.25"),
        "4": Decimal("4.00"),
        "6-shadow": Decimal("0.75"),
        "1-shadow": Decimal("1.50"),
        "2-shadow": Decimal("2.00"),
    }
    with psycopg.connect(clean_ods) as conn:
        lanes = conn.execute(
            "SELECT target_erp, shadow, idempotency_key FROM ledger.posting WHERE source_id = '1' ORDER BY seq"
        ).fetchall()
    assert [(erp, shadow) for erp, shadow, _ in lanes] == [("netsuite", False), ("sap", True)]
    assert lanes[0][2] != lanes[1][2]  # one key per target ERP
    clean = _reconcile("parallel-check-1")["windows"][0]
    # NetSuite and SAP, December, projects 42 and 43: four lines, every cent equal.
    assert clean["reconciled"] and clean["compared"] == 4, clean

    # A second run changes nothing (exactly once in both ERPs).
    again = _post("parallel-1b")
    assert again["posted"] == 0 and again["still_pending"] == 0, again

    # Corrections and unapprovals in and across the window.
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute("UPDATE canonical.time_entry SET approved = false WHERE source_id IN ('1', '4')")
        _entry_on(conn, 2, "2027-01-02", "b2b", "2.50", "42")  # out of the window, past the cutover
        _entry_on(conn, 6, "2026-12-15", "b6b", "1.25", "43")  # corrected in the window: both ERPs
        _entry_on(conn, 5, "2026-12-10", "b5b", "1.00", "42")  # moved into the window: SAP too
    second = _post("parallel-2")
    assert second["still_pending"] == 0 and second["rejected"] == 0, second
    assert {k: v[0] for k, v in _netsuite(erp_sim).items()} == {"5": Decimal("1.00"), "6": Decimal("1.25")}
    assert _sap_lanes(sap_sim) == {
        "2": Decimal("2.50"),
        "3": Decimal("3.25"),  # SAP's own: 2 reposted past the cutover, 4 reversed
        "6-shadow": Decimal("1.25"),
        "5-shadow": Decimal("1.00"),  # the shadow: 1, 2 reversed, 5 added
    }
    with psycopg.connect(clean_ods) as conn:
        rows = conn.execute(
            "SELECT action, target_erp, shadow, state FROM ledger.posting WHERE source_id = '2' ORDER BY seq"
        ).fetchall()
        items = conn.execute("SELECT count(*) FROM exceptions.item WHERE status = 'open'").fetchone()
    assert rows == [
        ("post", "netsuite", False, "confirmed"),
        ("post", "sap", True, "confirmed"),
        ("reverse", "netsuite", False, "confirmed"),
        ("post", "sap", False, "confirmed"),
        ("reverse", "sap", True, "confirmed"),
    ], rows
    assert items == (0,)
    # The ERP totals per side: NetSuite 2.25 h (GBP 225.00); SAP 5.75 h of its own, 2.25 h shadow.
    assert sum(v[1] for v in _netsuite(erp_sim).values()) == Decimal("225.00")
    assert _reconcile("parallel-check-2")["windows"][0]["reconciled"]
    # The trace lists both lanes and places the record in its book of record.
    from psa_erp_sync.trace import format_text, trace

    with psycopg.connect(clean_ods) as conn:
        (traced,) = [t for t in trace(conn, "psa", "6") if t["kind"] == "time_entry"]
    assert (traced["erp"]["erp"], traced["erp"]["in_erp"]) == ("netsuite", True)
    assert format_text([traced]).count("erp=sap") == 2 and "(parallel-run shadow)" in format_text([traced])

    # Someone changes the shadow of 6 in SAP: 1.25 h -> 1.24 h (GBP 1.00 less).
    _change_in_sap("6-shadow", "1.24")
    with pytest.raises(ParallelRunMismatch) as failed:
        _reconcile("parallel-check-3")
    message = str(failed.value)
    assert "LE-UK1-2026-12 project psa-project-43 sap GBP: 124.00 held vs 125.00 in ledger" in message, (
        message
    )
    assert "records 6" in message and "in netsuite" in message, message
    with psycopg.connect(clean_ods) as conn:
        diffs = conn.execute(
            "SELECT d.kind, d.project, d.erp, d.expected_minor, d.held_minor, d.difference_minor, d.records"
            " FROM routing.parallel_difference d JOIN routing.parallel_check c USING (check_id)"
            " WHERE c.run_id = 'parallel-check-3' ORDER BY d.kind"
        ).fetchall()
    assert diffs == [
        ("ledger_vs_erp", "psa-project-43", "sap", 12_500, 12_400, -100, ["6"]),
        ("primary_vs_secondary", "psa-project-43", "sap", 12_500, 12_400, -100, ["6"]),
    ], diffs


def test_a_crash_between_the_primary_and_the_shadow_is_safe(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The primary pass runs alone (the task died before its SAP pass); the next full run posts the
    shadows and nothing again to NetSuite. A shadow left ``sent`` (the process died between sending
    and recording the answer) is read back from SAP by its key, never sent twice."""
    from psa_erp_sync.operators.posting import IdempotentPostingOperator

    _parallel_setup(clean_ods, erp_sim, sap_sim, monkeypatch, tmp_path)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entry_on(conn, 1, "2026-12-30", "c1", "1.50", "42")
        _entry_on(conn, 2, "2026-12-31", "c2", "2.00", "43")
    primary_only = IdempotentPostingOperator(task_id="post_timebills", record_type="timebill", erp="netsuite")
    alone = primary_only.execute({"ti": None, "run_id": "crash-1"})["outcome"]  # type: ignore[arg-type]
    assert alone["posted"] == 2 and set(_netsuite(erp_sim)) == {"1", "2"} and _sap_lanes(sap_sim) == {}
    full = _post("crash-2")
    assert (full["by_erp"]["netsuite"]["posted"], full["by_erp"]["sap"]["posted"]) == (0, 2), full
    assert _sap_lanes(sap_sim) == {"1-shadow": Decimal("1.50"), "2-shadow": Decimal("2.00")}
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute("UPDATE ledger.posting SET state = 'sent' WHERE shadow AND source_id = '1'")
    resumed = _post("crash-3")
    assert resumed["ambiguous_resolved"] == 1 and resumed["posted"] == 0, resumed
    assert _sap_lanes(sap_sim) == {"1-shadow": Decimal("1.50"), "2-shadow": Decimal("2.00")}
    with psycopg.connect(clean_ods) as conn:
        states = conn.execute(
            "SELECT shadow, state, count(*) FROM ledger.posting GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
    assert states == [(False, "confirmed", 2), (True, "confirmed", 1), (True, "resolved", 1)], states
    assert _reconcile("crash-check")["windows"][0]["reconciled"]
