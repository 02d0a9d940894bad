"""ERPValidationOperator: its OpenLineage (inputs, outputs, DataQuality facet) as a unit, and its
execute against the ERP simulator and the ODS: verdicts and exception items, and an ERP outage
that fails the task clearly and leaves no verdict behind."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from psa_erp_sync.operators.erp_validation import ERPValidationOperator
from tests.conftest import RunningSimulator

RECORDS = [
    {"key": "opp-1", "customer": "psa-client-1", "legal_entity": "LE-US1", "currency": "USD"},
    {"key": "opp-2", "customer": "psa-client-2", "legal_entity": "LE-US1", "currency": "USD"},
    {"key": "opp-3", "customer_name": "Acme Ltd", "legal_entity": "LE-XX9", "currency": "USD"},
]


def _op() -> ERPValidationOperator:
    return ERPValidationOperator(
        task_id="validate_in_erp",
        records=RECORDS,
        domain="project_setup",
        record_type="opportunity",
        source_system="crm",
    )


def test_lineage_on_start_and_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.operators.test_operator_lineage import _check_facet, _validator

    monkeypatch.setenv(
        "AIRFLOW_CONN_ODS_DEFAULT",
        json.dumps(
            {"conn_type": "postgres", "host": "db.internal", "port": 5432, "login": "u", "schema": "ods"}
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERP_DEFAULT",
        json.dumps({"conn_type": "http", "host": "https://1234.suitetalk.api.netsuite.com", "password": "x"}),
    )
    op = _op()
    assert op.template_fields == ("records", "domain")
    start = op.get_openlineage_facets_on_start()
    erp = "https://1234.suitetalk.api.netsuite.com"
    assert [(d.namespace, d.name) for d in start.inputs] == [
        (erp, f"/services/rest/record/v1/{t}")
        for t in ("customer", "subsidiary", "currency", "taxcode", "job")
    ]
    assert [(d.namespace, d.name) for d in start.outputs] == [
        ("postgres://db.internal:5432", "ods.exceptions.item"),
        ("postgres://db.internal:5432", "ods.master.validation_verdict"),
    ]
    assert start.run_facets == {}
    op.summary = {"valid": 1, "invalid": 2, "by_reason": {"CUSTOMER_INACTIVE": 1, "LEGAL_ENTITY_UNKNOWN": 1}}
    complete = op.get_openlineage_facets_on_complete(None)
    facet = complete.run_facets["dataQuality"]
    assert (facet.valid, facet.quarantined, facet.quarantinedByReason) == (
        1,
        2,
        {"CUSTOMER_INACTIVE": 1, "LEGAL_ENTITY_UNKNOWN": 1},
    )
    _check_facet(facet, _validator())
    assert op.get_openlineage_facets_on_failure(None).run_facets["dataQuality"] == facet
    # No personal data: keys and codes only, never names.
    assert "Acme" not in json.dumps(facet.__dict__, default=str)


@pytest.fixture
def wired(
    erp_sim: RunningSimulator, erp_master: dict[str, Any], clean_master: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    from devtools.airflow_env import psycopg_parts

    monkeypatch.setenv(
        "AIRFLOW_CONN_ERP_DEFAULT",
        json.dumps(
            {"conn_type": "http", "host": erp_sim.base_url, "password": "t", "extra": {"account_id": "A1"}}
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_ODS_DEFAULT", json.dumps({"conn_type": "postgres", **psycopg_parts(clean_master)})
    )
    return clean_master


@pytest.mark.integration
def test_execute_records_verdicts_and_exception_items(wired: str) -> None:
    op = _op()
    result = op.execute({"run_id": "r1"})  # type: ignore[arg-type]
    assert (result["valid"], result["invalid"]) == (1, 2)
    assert result["by_reason"] == {"CUSTOMER_AMBIGUOUS": 1, "CUSTOMER_INACTIVE": 1, "LEGAL_ENTITY_UNKNOWN": 1}
    assert result["erp_queries"] <= 5
    assert [v["ok"] for v in result["verdicts"]] == [True, False, False]
    with psycopg.connect(wired) as conn:
        items = conn.execute(
            "SELECT source_id, reason_code, owner FROM exceptions.item WHERE status = 'open' ORDER BY 1, 2"
        ).fetchall()
    assert items == [
        ("opp-2", "CUSTOMER_INACTIVE", "sales-operations"),
        ("opp-3", "CUSTOMER_AMBIGUOUS", "sales-operations"),
        ("opp-3", "LEGAL_ENTITY_UNKNOWN", "sales-operations"),
    ]
    assert op.summary is not None and op.summary["invalid"] == 2


@pytest.mark.integration
def test_execute_fails_clearly_when_the_erp_is_down(
    wired: str, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from psa_erp_sync.clients import erp as erp_module
    from psa_erp_sync.clients.http import RetryPolicy
    from psa_erp_sync.masterdata.validation import ErpValidationUnavailable

    monkeypatch.setattr(erp_module, "RetryPolicy", lambda: RetryPolicy(max_attempts=4, base_delay_s=0.01))
    erp_sim.admin(
        "PUT", "/faults", json=[{"id": "down", "action": "status", "status": 502, "path_regex": "suiteql"}]
    )
    try:
        with pytest.raises(ErpValidationUnavailable, match="3 records not validated"):
            _op().execute({"run_id": "r1"})  # type: ignore[arg-type]
        assert erp_sim.admin("GET", "/faults")["rules"][0]["hits"] == 4
    finally:
        erp_sim.admin("DELETE", "/faults")
    with psycopg.connect(wired) as conn:
        assert conn.execute("SELECT count(*) FROM master.validation_verdict").fetchone() == (0,)
