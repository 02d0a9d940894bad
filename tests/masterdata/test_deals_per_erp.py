"""CRM deals during a transition (issue 15, deliverable 6): validated against the ERP their legal entity
routes to on the run's date, and a job's PSA link written, in a later run, to the ERP holding the job.

Real NetSuite and SAP simulators over loopback (tests/two_erps.py: LE-UK1 on NetSuite until
2026-12-31, on SAP from 2027-01-01), the ODS, ``ERPValidationOperator.execute`` and the project setup
step with the domain-step operator's ERP factory. The PSA side of the setup is a stand-in (the test is
about where the ERP calls go).
"""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator
from tests.two_erps import COMPANY, UK, connect_two_erps

pytestmark = pytest.mark.integration

DEALS = [
    # Only in SAP's master data (company code 2010): ok in SAP, unknown to NetSuite.
    {"key": "opp-1", "customer": "psa-client-2", "legal_entity": UK, "currency": "GBP"},
    # Only in NetSuite's: ok in NetSuite, unknown to SAP.
    {"key": "opp-2", "customer": "psa-client-1", "legal_entity": UK, "currency": "GBP"},
    # SAP's customer, the wrong currency, a closed WBS element.
    {"key": "opp-3", "customer": "psa-client-2", "legal_entity": UK, "currency": "USD"},
    {"key": "opp-4", "customer": "psa-client-2", "legal_entity": UK, "project_code": "psa-project-44"},
    # By name, in SAP.
    {"key": "opp-5", "customer_name": "Globex Ltd", "legal_entity": UK, "currency": "GBP"},
]


def _sap_master(sap_sim: RunningSimulator) -> None:
    from psa_erp_sync.clients.sap import S4HanaClient

    with S4HanaClient(base_url=sap_sim.base_url, user="PSA_COMM", password="secret") as sap:
        sap.upsert_master(
            "CustomerCollection",
            {
                "Customer": "psa-client-2",
                "CompanyCode": COMPANY,
                "CustomerName": "Globex Ltd",
                "Currency": "GBP",
                "IsBlocked": False,
            },
        )
        sap.upsert_master(
            "WBSElementCollection",
            {
                "WBSElement": "psa-project-44",
                "CompanyCode": COMPANY,
                "Description": "Project 44",
                "Customer": "psa-client-2",
                "Currency": "GBP",
                "IsClosed": True,
            },
        )


def _validate(day: datetime, run_id: str) -> dict[str, Any]:
    from psa_erp_sync.operators.erp_validation import ERPValidationOperator

    op = ERPValidationOperator(
        task_id="validate_in_erp",
        records=DEALS,
        domain="project_setup",
        record_type="opportunity",
        source_system="crm",
    )
    return op.execute({"run_id": run_id, "data_interval_end": day})  # type: ignore[arg-type]


def test_a_deal_is_validated_against_the_erp_its_entity_routes_to(
    clean_master: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    connect_two_erps(monkeypatch, tmp_path, clean_master, erp_sim, sap_sim)
    _sap_master(sap_sim)

    after = _validate(datetime(2027, 1, 5, tzinfo=UTC), "after")
    reasons = {v["key"]: v["reasons"] for v in after["verdicts"]}
    assert reasons == {
        "opp-1": [],
        "opp-2": ["CUSTOMER_UNKNOWN"],
        "opp-3": ["CURRENCY_MISMATCH"],
        "opp-4": ["PROJECT_INACTIVE"],
        "opp-5": [],
    }
    assert {v["key"]: v["customer"] for v in after["verdicts"]}["opp-5"] == "psa-client-2"
    assert after["erp_queries"] == 2  # customers and WBS elements of company code 2010, once
    with psycopg.connect(clean_master) as conn:
        verdicts = dict(conn.execute("SELECT record_key, ok FROM master.validation_verdict").fetchall())
        items = conn.execute(
            "SELECT source_id, reason_code FROM exceptions.item WHERE status = 'open' ORDER BY 1"
        ).fetchall()
    assert verdicts == {"opp-1": True, "opp-2": False, "opp-3": False, "opp-4": False, "opp-5": True}
    assert items == [
        ("opp-2", "CUSTOMER_UNKNOWN"),
        ("opp-3", "CURRENCY_MISMATCH"),
        ("opp-4", "PROJECT_INACTIVE"),
    ]

    # Before the cutover the same deals are NetSuite's to judge: SAP's customer is unknown there.
    before = _validate(datetime(2026, 12, 15, tzinfo=UTC), "before")
    reasons = {v["key"]: v["reasons"] for v in before["verdicts"]}
    assert reasons["opp-1"] == ["CUSTOMER_UNKNOWN"] and reasons["opp-2"] == []


def test_sap_being_down_validates_nothing() -> None:
    from psa_erp_sync.masterdata import sap_validation
    from psa_erp_sync.masterdata.validation import Candidate, ErpValidationUnavailable

    class Down:
        def master_records(self, entity_set: str, company_code: str) -> list[Any]:
            from psa_erp_sync.clients.sap import SapUnavailable

            raise SapUnavailable(f"connection refused: {entity_set}")

    with pytest.raises(ErpValidationUnavailable, match="2 records not validated"):
        sap_validation.validate_in_sap(
            [Candidate.model_validate(d) for d in DEALS[:2]], Down(), {UK: COMPANY}
        )


class _Psa:
    """The PSA side of the setup: fails the first run after the ERP job, then finds nothing and creates."""

    def __init__(self) -> None:
        self.down = True

    def iter_client_projects(self, client_id: int) -> list[dict[str, Any]]:
        from psa_erp_sync.clients.psa import PsaApiError

        if self.down:
            raise PsaApiError(503, "/v2/projects", "PSA unavailable")
        return []

    def create_project(self, fields: dict[str, Any]) -> dict[str, Any]:
        return {"id": 4242}


def _setup_row(conn: psycopg.Connection, opp_id: int, state: str) -> None:
    conn.execute(
        "INSERT INTO master.project_setup (opportunity_id, job_external_id, state, customer_external_id,"
        " legal_entity, currency, contract_minor, spec, last_run_id)"
        " VALUES (%s, %s, %s, 'psa-client-2', %s, 'GBP', 500000, '{\"name\": \"Deal\"}', 'r0')",
        (opp_id, f"crm-opp-{opp_id}", state, UK),
    )
    conn.execute(
        "INSERT INTO master.validation_verdict (domain, record_key, ok, reason_codes, run_id)"
        " VALUES ('project_setup', %s, true, '{}', 'r0')",
        (f"opp-{opp_id}",),
    )


def _provision(conn: psycopg.Connection, run_id: str, as_of: datetime, psa: _Psa) -> dict[str, Any]:
    from psa_erp_sync.config import load_config
    from psa_erp_sync.masterdata import steps
    from psa_erp_sync.operators.step import _erp_factory

    with ExitStack() as stack:
        erp_for = _erp_factory(stack)
        return steps.provision_projects(
            conn,
            erp_for("erp_default"),
            psa,
            run_id=run_id,
            config=load_config(),
            validated=None,
            erp_for=erp_for,
            as_of=as_of,
        )


def test_a_later_runs_psa_link_goes_to_the_erp_holding_the_job(
    clean_master: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from psa_erp_sync.clients.psa import PsaApiError

    connect_two_erps(monkeypatch, tmp_path, clean_master, erp_sim, sap_sim)
    _sap_master(sap_sim)
    psa = _Psa()
    with psycopg.connect(clean_master) as conn:
        _setup_row(conn, 7001, "pending")
        conn.commit()
        # Run 1, on 2027-01-05: the job goes to SAP (a WBS element), then the PSA fails.
        with pytest.raises(PsaApiError):
            _provision(conn, "r1", datetime(2027, 1, 5, tzinfo=UTC), psa)
        assert conn.execute(
            "SELECT state, erp_name FROM master.project_setup WHERE opportunity_id = 7001"
        ).fetchone() == ("erp_job", "sap")
        psa.down = False
        # Run 2, dated before the cutover (a re-run of an older interval): the link still goes where
        # the job is, SAP, not where the date routes.
        linked = [_provision(conn, "r2", datetime(2026, 12, 15, tzinfo=UTC), psa)["linked"]]
        # A job written before migration 0033 (no erp_name): its entity's route on the run's date.
        _setup_row(conn, 7002, "psa_project")
        conn.execute("UPDATE master.project_setup SET psa_project_id = 99 WHERE opportunity_id = 7002")
        conn.commit()
        counts = _provision(conn, "r3", datetime(2027, 1, 6, tzinfo=UTC), psa)
        linked.append(counts["linked"])
        states = conn.execute(
            "SELECT opportunity_id, state, erp_name FROM master.project_setup ORDER BY 1"
        ).fetchall()
    assert linked == [1, 1] and (counts["failed"], counts["erp_jobs"]) == (0, 0)
    assert states == [(7001, "linked", "sap"), (7002, "linked", None)]
    # NetSuite never heard of either job: the links went to SAP (which keeps no PSA link).
    netsuite_jobs = {
        j["externalId"] for j in erp_sim.admin("GET", "/records/job", params={"limit": 100})["items"]
    }
    assert not {"crm-opp-7001", "crm-opp-7002"} & netsuite_jobs
    from psa_erp_sync.clients.sap import S4HanaClient

    with S4HanaClient(base_url=sap_sim.base_url, user="PSA_COMM", password="secret") as sap:
        wbs = {r.model_dump()["WBSElement"] for r in sap.master_records("WBSElementCollection", COMPANY)}
    assert "crm-opp-7001" in wbs
