"""ERP -> ODS master data from SAP beside NetSuite's (issue 15, deliverable 6).

Real PostgreSQL, the NetSuite and SAP simulators over loopback, the two-ERP routing of
``tests/two_erps.py`` (LE-UK1 on NetSuite until 2026-12-31, on SAP company code 2010 from
2027-01-01). SAP's customers, WBS elements and posting periods land in ``master.erp_record`` beside
NetSuite's records (the migrated customer ``psa-client-1`` in both); a re-read stages nothing new;
a rename or block in SAP queues a propagation for the PSA (after the cutover only); paging over
several pages; one malformed SAP entity is an exception item and the rest is synced; the freeze of
SAP's cross-reference for an entity that left SAP.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from psa_erp_sync.masterdata import propagate, sap_sync, sync
from tests.conftest import RunningSimulator
from tests.two_erps import COMPANY, SAP_EXTRA, UK, connect_two_erps

pytestmark = pytest.mark.integration

AFTER_CUTOVER = datetime(2027, 1, 4, 12, tzinfo=UTC)
BEFORE_CUTOVER = datetime(2026, 12, 15, 12, tzinfo=UTC)
CUSTOMERS = [("psa-client-1", "Acme Ltd"), ("psa-client-2", "Globex UK"), ("psa-client-3", "Initech UK")]
WBS = [("psa-project-42", "Project 42", "psa-client-1"), ("psa-project-43", "Project 43", "psa-client-2")]


@pytest.fixture
def two_erps(
    clean_master: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[dict[str, Any]]:
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.http import RetryPolicy
    from psa_erp_sync.clients.sap import S4HanaClient

    connect_two_erps(monkeypatch, tmp_path, clean_master, erp_sim, sap_sim)
    with psycopg.connect(clean_master, autocommit=True) as conn:
        conn.execute("TRUNCATE routing.xref, staging.raw_record, staging.extract_run, staging.watermark")
        conn.execute("DELETE FROM exceptions.item WHERE source_system = 'sap'")
    retry = RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02)
    with (
        S4HanaClient(base_url=sap_sim.base_url, user="PSA_COMM", password="secret", retry=retry) as sap,
        NetSuiteClient(base_url=erp_sim.base_url, account_id="A1", token="t", retry=retry) as netsuite,
    ):
        for customer, name in CUSTOMERS:
            sap.upsert_master("CustomerCollection", _customer(customer, name))
        for wbs, name, customer in WBS:
            sap.upsert_master("WBSElementCollection", _wbs(wbs, name, customer))
        yield {"dsn": clean_master, "sap": sap, "netsuite": netsuite, "sim": sap_sim}


def _customer(customer: str, name: str, *, blocked: bool = False) -> dict[str, Any]:
    return {
        "Customer": customer,
        "CompanyCode": COMPANY,
        "CustomerName": name,
        "Currency": "GBP",
        "IsBlocked": blocked,
    }


def _wbs(wbs: str, name: str, customer: str, *, closed: bool = False) -> dict[str, Any]:
    return {
        "WBSElement": wbs,
        "CompanyCode": COMPANY,
        "Description": name,
        "Customer": customer,
        "Currency": "GBP",
        "IsClosed": closed,
    }


def _sync_sap(env: dict[str, Any], run_id: str, as_of: datetime, page_size: int = 500) -> Any:
    from psa_erp_sync.config import load_config
    from psa_erp_sync.routing.route import router

    with psycopg.connect(env["dsn"]) as conn:
        return sap_sync.sync_sap(
            conn,
            env["sap"],
            SAP_EXTRA["company_codes"],
            router(),
            run_key=f"md/{run_id}/sap",
            run_id=run_id,
            as_of=as_of,
            owner_for=load_config().ownership.owner_for,
            page_size=page_size,
        )


def _sync_netsuite(env: dict[str, Any], run_id: str, as_of: datetime) -> None:
    from psa_erp_sync.routing.route import router

    with psycopg.connect(env["dsn"]) as conn:
        for record_type in ("customer", "job"):
            sync.sync_record_type(
                conn,
                env["netsuite"],
                record_type=record_type,
                run_key=f"md/{run_id}/{record_type}",
                run_id=run_id,
                as_of=as_of,
                overlap=timedelta(minutes=60),
                router=router(),
            )


def _held(dsn: str) -> dict[tuple[str, str, str, str], tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return {
            (erp, rt, cc, ext): (name, inactive, parent, entity)
            for erp, rt, cc, ext, name, inactive, parent, entity in conn.execute(
                "SELECT erp, record_type, company_code, external_id, name, is_inactive, parent, subsidiary"
                " FROM master.erp_record"
            )
        }


def test_sap_records_land_beside_netsuites_and_a_reread_stages_nothing(two_erps: dict[str, Any]) -> None:
    dsn = two_erps["dsn"]
    _sync_netsuite(two_erps, "r1", BEFORE_CUTOVER)  # populated before the cutover, as the freeze requires
    first = _sync_sap(two_erps, "r1", AFTER_CUTOVER)
    held = _held(dsn)
    # The migrated customer is held by both ERPs, each under its own key.
    assert held[("netsuite", "customer", "", "psa-client-1")][0] == "Acme Ltd"
    assert held[("sap", "sap_customer", COMPANY, "psa-client-1")] == ("Acme Ltd", False, None, UK)
    assert held[("netsuite", "job", "", "psa-project-42")][0] == "Project 42"
    assert held[("sap", "sap_wbs_element", COMPANY, "psa-project-43")] == (
        "Project 43",
        False,
        "psa-client-2",
        UK,
    )
    sap_types = {k[1] for k in held if k[0] == "sap"}
    assert sap_types == {"sap_customer", "sap_wbs_element", "sap_posting_period"}
    # Periods as the posting adapter names them: 2026 and 2027 seeded (2028 has none).
    periods = sorted(k[3] for k in held if k[1] == "sap_posting_period")
    assert len(periods) == 24 and periods[0] == f"{UK}-2026-01" and periods[-1] == f"{UK}-2027-12"
    totals = first.as_dict()
    assert totals["legal_entities"] == [UK]
    assert totals["extracted"] == totals["new_versions"] == len(CUSTOMERS) + len(WBS) + 24
    # No NetSuite reader sees SAP's rows: NetSuite's record types hold NetSuite's rows only.
    assert {k[0] for k in held if k[1] in ("customer", "job", "accountingperiod")} == {"netsuite"}
    with psycopg.connect(dsn) as conn:
        xrefs = conn.execute(
            "SELECT target_erp, kind, count(*) FROM routing.xref WHERE legal_entity = %s GROUP BY 1, 2 ORDER BY 1, 2",
            (UK,),
        ).fetchall()
    assert xrefs == [
        ("netsuite", "customer", 1),
        ("netsuite", "job", 1),
        ("sap", "customer", 3),
        ("sap", "job", 2),
    ]

    second = _sync_sap(two_erps, "r2", AFTER_CUTOVER).as_dict()
    assert second["new_versions"] == 0 and second["known_versions"] == second["extracted"] > 0
    assert second["changes_queued"] == 0
    with psycopg.connect(dsn) as conn:
        staged_new = conn.execute(
            "SELECT sum(staged_new) FROM staging.extract_run WHERE run_key LIKE 'md/r2/sap/%'"
        ).fetchone()
        rewritten = conn.execute("SELECT count(*) FROM master.erp_record WHERE last_run_id = 'r2'").fetchone()
    assert staged_new == (0,) and rewritten == (0,)


def test_a_rename_or_block_in_sap_queues_a_propagation_after_the_cutover(two_erps: dict[str, Any]) -> None:
    dsn, sap = two_erps["dsn"], two_erps["sap"]
    _sync_sap(two_erps, "r1", BEFORE_CUTOVER)
    # Before the cutover NetSuite speaks for LE-UK1: SAP's versions are held, nothing is carried.
    sap.upsert_master("CustomerCollection", _customer("psa-client-3", "Initech (SAP name)"))
    assert _sync_sap(two_erps, "r2", BEFORE_CUTOVER).as_dict()["changes_queued"] == 0

    sap.upsert_master("CustomerCollection", _customer("psa-client-1", "Acme Holdings Ltd"))
    sap.upsert_master("CustomerCollection", _customer("psa-client-2", "Globex UK", blocked=True))
    sap.upsert_master(
        "WBSElementCollection", _wbs("psa-project-43", "Project 43", "psa-client-2", closed=True)
    )
    result = _sync_sap(two_erps, "r3", AFTER_CUTOVER).as_dict()
    assert result["new_versions"] == 3 and result["changes_queued"] == 3
    with psycopg.connect(dsn) as conn:
        queued = conn.execute(
            "SELECT erp, company_code, record_type, external_id, change, status FROM master.propagation ORDER BY id"
        ).fetchall()
    assert sorted(queued) == [
        ("sap", COMPANY, "sap_customer", "psa-client-1", "rename", "pending"),
        ("sap", COMPANY, "sap_customer", "psa-client-2", "deactivate", "pending"),
        ("sap", COMPANY, "sap_wbs_element", "psa-project-43", "deactivate", "pending"),
    ]
    # A re-read queues nothing again.
    assert _sync_sap(two_erps, "r4", AFTER_CUTOVER).as_dict()["changes_queued"] == 0


def test_sap_changes_reach_the_psa(
    two_erps: dict[str, Any], psa_sim: RunningSimulator, psa_client: Any
) -> None:
    dsn, sap = two_erps["dsn"], two_erps["sap"]
    psa_sim.admin("POST", "/seed", json={"clients": [{"id": 1, "name": "Acme Ltd", "currency": "GBP"}]})
    _sync_sap(two_erps, "r1", AFTER_CUTOVER)
    sap.upsert_master("CustomerCollection", _customer("psa-client-1", "Acme Holdings Ltd", blocked=True))
    _sync_sap(two_erps, "r2", AFTER_CUTOVER)
    with psycopg.connect(dsn) as conn:
        applied = propagate.propagate_pending(conn, psa_client, run_id="r2")
    assert applied.by_change == {"deactivate": 1} and applied.applied == 1
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT name, is_active FROM sim_psa.clients WHERE id = 1").fetchone() == (
            "Acme Holdings Ltd",
            False,
        )


def test_a_company_code_is_read_over_several_pages(two_erps: dict[str, Any]) -> None:
    sap = two_erps["sap"]
    for i in range(10, 17):
        sap.upsert_master("CustomerCollection", _customer(f"psa-client-{i}", f"Customer {i}"))
    two_erps["sim"].admin("PUT", "/config", json={"page_size": 2})  # SAP answers 2 rows per response
    try:
        result = _sync_sap(two_erps, "r1", AFTER_CUTOVER, page_size=3)
    finally:
        two_erps["sim"].admin("PUT", "/config", json={"page_size": 100})
    [customers] = [s for s in result.sets if s.record_type == "sap_customer"]
    assert customers.extracted == customers.new_versions == 10
    assert customers.pages == 4  # 3 + 3 + 3 + 1 rows, each page of 3 in two responses
    held = _held(two_erps["dsn"])
    assert sum(1 for k in held if k[1] == "sap_customer") == 10


def test_one_malformed_sap_entity_is_an_exception_and_the_rest_is_synced(two_erps: dict[str, Any]) -> None:
    dsn = two_erps["dsn"]
    with psycopg.connect(dsn, autocommit=True) as conn:  # past SAP's own checks: straight into its tables
        conn.execute(
            "INSERT INTO sim_sap.customer VALUES ('psa-client-9', %s, 'Broken Ltd', 'pounds', false)",
            (COMPANY,),
        )
    result = _sync_sap(two_erps, "r1", AFTER_CUTOVER)
    [customers] = [s for s in result.sets if s.record_type == "sap_customer"]
    assert customers.invalid == 1 and customers.new_versions == len(CUSTOMERS)
    with psycopg.connect(dsn) as conn:
        items = conn.execute(
            "SELECT kind, domain, record_type, source_id, reason_code, owner, legal_entity, detail, status"
            " FROM exceptions.item WHERE source_system = 'sap'"
        ).fetchall()
    assert items == [
        (
            "quarantine",
            "master_data",
            "sap_customer",
            f"{COMPANY}/psa-client-9",
            "SAP_MASTER_INVALID",
            "finance-master-data",
            UK,
            {"fields": ["Currency"], "company_code": COMPANY},
            "open",
        )
    ]
    assert ("sap", "sap_customer", COMPANY, "psa-client-9") not in _held(dsn)

    # Corrected in SAP: the next read syncs it and resolves the item.
    two_erps["sap"].upsert_master("CustomerCollection", _customer("psa-client-9", "Broken Ltd"))
    _sync_sap(two_erps, "r2", AFTER_CUTOVER)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT status FROM exceptions.item WHERE source_system = 'sap'").fetchone() == (
            "resolved",
        )
    assert ("sap", "sap_customer", COMPANY, "psa-client-9") in _held(dsn)


def test_sap_cross_reference_is_frozen_for_an_entity_that_left_sap(two_erps: dict[str, Any]) -> None:
    from psa_erp_sync.config import load_config
    from psa_erp_sync.routing import xref
    from tests.routing.conftest import router_of

    # LE-UK1 on SAP until 2026-12-31, back on NetSuite from 2027-01-01.
    back = router_of(
        **{
            UK: {
                "effective": [
                    {"first_day": None, "last_day": "2026-12-31", "erp": "sap", "account": None},
                    {
                        "first_day": "2027-01-01",
                        "last_day": None,
                        "erp": "netsuite",
                        "account": None,
                        "correction_policy": "reverse_and_repost",
                    },
                ]
            }
        }
    )
    sap, dsn = two_erps["sap"], two_erps["dsn"]

    def run(run_id: str, as_of: datetime) -> Any:
        with psycopg.connect(dsn) as conn:
            return sap_sync.sync_sap(
                conn,
                sap,
                SAP_EXTRA["company_codes"],
                back,
                run_key=f"md/{run_id}/sap",
                run_id=run_id,
                as_of=as_of,
                owner_for=load_config().ownership.owner_for,
            )

    run("r1", BEFORE_CUTOVER)  # mapped while LE-UK1 is on SAP
    sap.upsert_master("CustomerCollection", _customer("psa-client-1", "Acme renamed"))
    run("r2", AFTER_CUTOVER)  # a rename keeps the mapping: no change, allowed
    sap.upsert_master("CustomerCollection", _customer("psa-client-77", "New after leaving"))
    with pytest.raises(xref.XrefFrozen, match="LE-UK1 left sap at its cutover on 2027-01-01"):
        run("r3", AFTER_CUTOVER)
    with psycopg.connect(dsn) as conn:  # nothing of that company code's read was kept
        assert conn.execute(
            "SELECT count(*) FROM master.erp_record WHERE external_id = 'psa-client-77'"
        ).fetchone() == (0,)


def test_netsuite_changes_of_an_entity_that_left_netsuite_are_held_not_carried(
    two_erps: dict[str, Any], erp_sim: RunningSimulator
) -> None:
    from tests.two_erps import NETSUITE_SEED

    dsn = two_erps["dsn"]
    _sync_netsuite(two_erps, "r1", BEFORE_CUTOVER)
    customer = NETSUITE_SEED["customers"][0]
    # Before the cutover NetSuite speaks for LE-UK1: a rename there is carried to the PSA.
    erp_sim.admin("POST", "/seed", json={"customers": [dict(customer, company_name="Acme (renamed in NS)")]})
    _sync_netsuite(two_erps, "r2", BEFORE_CUTOVER)
    # After it, finance deactivating the migrated customer in NetSuite must not archive the PSA
    # client SAP still holds active: the version is held, nothing is queued.
    erp_sim.admin("POST", "/seed", json={"customers": [dict(customer, is_inactive=True)]})
    _sync_netsuite(two_erps, "r3", AFTER_CUTOVER)
    with psycopg.connect(dsn) as conn:
        queued = conn.execute(
            "SELECT erp, external_id, change FROM master.propagation ORDER BY id"
        ).fetchall()
        held = conn.execute(
            "SELECT is_inactive FROM master.erp_record WHERE erp = 'netsuite' AND external_id = 'psa-client-1'"
        ).fetchone()
    assert queued == [("netsuite", "psa-client-1", "rename")]
    assert held == (True,)
