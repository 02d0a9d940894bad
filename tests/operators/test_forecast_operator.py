"""ForecastRefreshOperator's OpenLineage: ODS inputs, snapshot tables and the planning platform's
snapshot resource as outputs; a ControlTotals facet that validates against its schema."""

from __future__ import annotations

import json

import pytest

from psa_erp_sync.operators.forecast import ForecastRefreshOperator, ForecastSourceExtractOperator
from tests.operators.test_operator_lineage import _check_facet, _names, _validator

ODS = "postgres://db.internal:5432"


@pytest.fixture(autouse=True)
def connections(monkeypatch: pytest.MonkeyPatch) -> None:
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
    monkeypatch.setenv(
        "AIRFLOW_CONN_PSA_DEFAULT", json.dumps({"conn_type": "http", "host": "https://psa.example.com"})
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_CRM_DEFAULT", json.dumps({"conn_type": "http", "host": "https://crm.example.com"})
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_PLANNING_DEFAULT",
        json.dumps({"conn_type": "http", "host": "https://plan.example.com", "password": "x"}),
    )


def test_lineage_on_start_names_inputs_and_outputs() -> None:
    op = ForecastRefreshOperator(task_id="refresh_forecast")
    start = op.get_openlineage_facets_on_start()
    inputs = _names(start.inputs)
    for table in (
        "canonical.time_entry",
        "canonical.expense_entry",
        "ledger.posting",
        "forecast.src_project",
        "forecast.src_schedule",
        "forecast.src_milestone",
        "forecast.src_opportunity",
        "hr.cost_rate",
        "hr.worker",
    ):
        assert (ODS, f"ods.{table}") in inputs
    # actuals are the ERP's postings (read through the reconciled ledger)
    assert ("https://1234.suitetalk.api.netsuite.com", "/services/rest/record/v1/timebill") in inputs
    outputs = _names(start.outputs)
    assert (ODS, "ods.forecast.snapshot") in outputs and (ODS, "ods.forecast.line_series") in outputs
    assert ("https://plan.example.com", "/api/v1/snapshots") in outputs
    assert start.run_facets == {}


def test_lineage_without_planning_has_no_http_output() -> None:
    op = ForecastRefreshOperator(task_id="refresh_forecast", planning_conn_id=None)
    assert all(ns == ODS for ns, _ in _names(op.get_openlineage_facets_on_start().outputs))


def test_lineage_on_complete_carries_control_totals() -> None:
    op = ForecastRefreshOperator(task_id="refresh_forecast")
    op.outcome = {
        "snapshots": {
            "base": {
                "snapshot_id": "fc-base-20261109-aa",
                "written": True,
                "lines": 120,
                "totals": {"amount_minor_by_currency": {"USD": 123456, "GBP": 789}},
            },
            "worst": {"snapshot_id": "fc-worst-20261109-bb", "written": False, "lines": 100, "totals": {}},
        },
        "published": {"fc-base-20261109-aa": "created"},
    }
    facet = op.get_openlineage_facets_on_complete(None).run_facets["controlTotals"]
    assert facet.counts == {
        "lines.base": 120,
        "written.base": 1,
        "lines.worst": 100,
        "written.worst": 0,
        "published": 1,
    }
    assert facet.amounts == {"GBP": "789", "USD": "123456"}
    assert facet.hashTotal.isdigit()
    _check_facet(facet, _validator())
    failure = op.get_openlineage_facets_on_failure(None)
    assert "controlTotals" in failure.run_facets


def test_constructor_does_no_work() -> None:
    op = ForecastRefreshOperator(task_id="t", as_of="{{ ds }}", chart_dir="/tmp/x")
    assert op.template_fields == ("as_of", "chart_dir")
    assert op.outcome is None


def test_source_extracts_name_what_they_read_and_write() -> None:
    psa = ForecastSourceExtractOperator(
        task_id="extract_psa_plans", system="psa"
    ).get_openlineage_facets_on_start()
    assert _names(psa.inputs) == [
        ("https://psa.example.com", p)
        for p in ("/v2/projects", "/v2/users", "/v2/x/schedule", "/v2/x/milestones")
    ]
    assert _names(psa.outputs) == [
        (ODS, f"ods.forecast.{t}") for t in ("src_project", "src_person", "src_schedule", "src_milestone")
    ]
    crm = ForecastSourceExtractOperator(
        task_id="extract_crm_pipeline", system="crm"
    ).get_openlineage_facets_on_start()
    assert _names(crm.inputs) == [
        ("https://crm.example.com", "/api/v1/opportunities"),
        ("https://crm.example.com", "/api/v1/change_orders"),
    ]
    assert _names(crm.outputs) == [
        (ODS, "ods.forecast.src_opportunity"),
        (ODS, "ods.forecast.src_change_order"),
    ]


def test_a_source_extract_refuses_an_unknown_system() -> None:
    with pytest.raises(ValueError, match="system must be one of"):
        ForecastSourceExtractOperator(task_id="x", system="erp").execute({"run_id": "r"})  # type: ignore[arg-type]
