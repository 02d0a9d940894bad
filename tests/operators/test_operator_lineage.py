"""Operators' OpenLineage: datasets named per the spec and our convention; custom facets validate
against their JSON Schemas (which reference the official OpenLineage.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from psa_erp_sync.lineage import facets
from psa_erp_sync.operators.posting import IdempotentPostingOperator
from psa_erp_sync.sensors.month_end import MonthEndWindowSensor

SHARED = Path(__file__).resolve().parents[3] / "shared"
OUTCOME = {
    "record_type": "timebill",
    "posted": 10,
    "already_posted": 2,
    "ambiguous_resolved": 1,
    "reversed": 1,
    "rejected": 3,
    "parked": 1,
    "still_pending": 0,
    "erp_requests": 7,
    "rejected_by_code": {"INACTIVE_RECORD": 3},
}


@pytest.fixture(autouse=True)
def connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_ODS_DEFAULT",
        json.dumps(
            {"conn_type": "postgres", "host": "db.internal", "port": 5432, "login": "u", "schema": "ods"}
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_PSA_DEFAULT",
        json.dumps({"conn_type": "http", "host": "https://api.harvestapp.com", "password": "x"}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERP_DEFAULT",
        json.dumps({"conn_type": "http", "host": "https://1234.suitetalk.api.netsuite.com", "password": "x"}),
    )


def _names(datasets: list[Any]) -> list[tuple[str, str]]:
    return [(d.namespace, d.name) for d in datasets]


def _validator() -> Any:
    spec_path = (
        Path(__import__("os").environ.get("PSA_ERP_SYNC_SHARED_DIR", SHARED))
        / "openlineage-spec"
        / "OpenLineage.json"
    )
    if not spec_path.exists():
        pytest.skip(f"OpenLineage spec not found at {spec_path}")
    spec = json.loads(spec_path.read_text())
    resources = [("https://openlineage.io/spec/2-0-2/OpenLineage.json", Resource.from_contents(spec))]
    for path in facets.SCHEMA_DIR.glob("*.json"):
        doc = json.loads(path.read_text())
        resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources)


def _check_facet(facet: Any, registry: Any) -> None:
    from openlineage.client.serde import Serde

    body = json.loads(Serde.to_json(facet))
    url = body["_schemaURL"]
    assert url == facets.schema_url(type(facet).__name__)
    name = url.rsplit("/", 1)[-1].split(".json")[0]
    schema = {"$ref": f"{facets.DEFAULT_BASE}{name}.json#/$defs/{name}"}
    Draft202012Validator(schema, registry=registry).validate(body)


def test_posting_operator_lineage_on_start_and_complete() -> None:
    op = IdempotentPostingOperator(task_id="post_timebills", record_type="timebill")
    start = op.get_openlineage_facets_on_start()
    assert _names(start.inputs) == [
        ("postgres://db.internal:5432", "ods.canonical.time_entry"),
        ("postgres://db.internal:5432", "ods.ledger.posting"),
    ]
    assert ("https://1234.suitetalk.api.netsuite.com", "/services/rest/record/v1/timebill") in _names(
        start.outputs
    )
    assert start.run_facets == {}
    op.outcome = OUTCOME
    complete = op.get_openlineage_facets_on_complete(None)
    facet = complete.run_facets["postingOutcome"]
    assert (facet.posted, facet.alreadyPosted, facet.ambiguousResolved, facet.rejected) == (10, 2, 1, 3)
    _check_facet(facet, _validator())


def test_invoice_operator_lineage() -> None:
    from psa_erp_sync.operators.billing import InvoicePostingOperator

    op = InvoicePostingOperator(task_id="invoice")
    start = op.get_openlineage_facets_on_start()
    erp = "https://1234.suitetalk.api.netsuite.com"
    assert _names(start.inputs) == [
        ("postgres://db.internal:5432", "ods.billing.event"),
        ("postgres://db.internal:5432", "ods.billing.document"),
        ("postgres://db.internal:5432", "ods.billing.document_line"),
        ("postgres://db.internal:5432", "ods.ledger.posting"),
        (erp, "/services/rest/record/v1/accountingperiod"),
    ]
    outputs = _names(start.outputs)
    assert (erp, "/services/rest/record/v1/invoice") in outputs
    assert (erp, "/services/rest/record/v1/creditmemo") in outputs
    assert ("postgres://db.internal:5432", "ods.billing.document") in outputs
    op.outcome = OUTCOME | {"record_type": "invoice"}
    facet = op.get_openlineage_facets_on_complete(None).run_facets["postingOutcome"]
    assert facet.recordType == "invoice"
    _check_facet(facet, _validator())
    assert "invoiceTotals" not in op.get_openlineage_facets_on_complete(None).run_facets  # before execute
    op.totals = {
        "documents": {"invoice": 3, "creditmemo": 1},
        "lines": {"invoice": 40, "creditmemo": 2},
        "totals": {"USD": {"invoiced": 1234567, "credited": 4500}, "JPY": {"invoiced": 90000, "credited": 0}},
        "by_state": {"posted": 3, "parked": 1},
    }
    totals = op.get_openlineage_facets_on_complete(None).run_facets["invoiceTotals"]
    assert (totals.invoices, totals.creditMemos, totals.invoiceLines, totals.creditMemoLines) == (3, 1, 40, 2)
    assert totals.totals["USD"] == {"invoiced": "1234567", "credited": "4500", "net": "1230067"}
    _check_facet(totals, _validator())
    from jsonschema import ValidationError
    from openlineage.client.serde import Serde

    ref = {"$ref": f"{facets.DEFAULT_BASE}InvoiceTotalsRunFacet.json#/$defs/InvoiceTotalsRunFacet"}
    for bad in ({"USD": {"invoiced": 12.5, "credited": "0", "net": "0"}}, {"usd": totals.totals["USD"]}):
        body = json.loads(Serde.to_json(totals)) | {"totals": bad}  # a float amount, a lower-case code
        with pytest.raises(ValidationError):
            Draft202012Validator(ref, registry=_validator()).validate(body)


def test_journal_operator_lineage() -> None:
    from psa_erp_sync.operators.revenue import JournalPostingOperator

    start = JournalPostingOperator(task_id="post_journals").get_openlineage_facets_on_start()
    assert ("postgres://db.internal:5432", "ods.revenue.journal") in _names(start.inputs)
    assert ("https://1234.suitetalk.api.netsuite.com", "/services/rest/record/v1/journalentry") in _names(
        start.outputs
    )


def test_month_end_sensor_lineage() -> None:
    sensor = MonthEndWindowSensor(
        task_id="w", wait_for="period_open", legal_entity="LE-UK1", day="2026-12-01"
    )
    assert _names(sensor.get_openlineage_facets_on_start().inputs) == [
        ("https://1234.suitetalk.api.netsuite.com", "/services/rest/record/v1/accountingperiod")
    ]
    sensor.waited_for = {"period": "LE-UK1-2026-12"}
    facet = sensor.get_openlineage_facets_on_complete(None).run_facets["periodContext"]
    assert (facet.legalEntity, facet.period, facet.waitedFor) == ("LE-UK1", "LE-UK1-2026-12", "period_open")
    _check_facet(facet, _validator())


def test_every_custom_facet_validates_and_holds_no_personal_data() -> None:
    registry = _validator()
    samples = [
        facets.ControlTotalsRunFacet(
            counts={"extracted": 3}, hours="7.50", amounts={"USD": "12345"}, hashTotal="99"
        ),
        facets.PostingOutcomeRunFacet.from_outcome(OUTCOME),
        facets.DataQualityRunFacet(valid=2, quarantined=1, quarantinedByReason={"RATE_MISSING": 1}),
        facets.PeriodContextRunFacet(legalEntity="LE-US1", period="LE-US1-2026-11"),
        facets.ErpRoutesRunFacet(
            recordType="timebill",
            routes=[
                {
                    "erp": "sap",
                    "namespace": "https://sap.example",
                    "dataset": "/sap/x",
                    "legalEntity": "LE-UK1",
                    "firstDate": "2027-01-01",
                    "lastDate": "2027-01-04",
                    "postings": 2,
                }
            ],
        ),
    ]
    for facet in samples:
        _check_facet(facet, registry)
    for path in facets.SCHEMA_DIR.glob("*.json"):
        text = path.read_text().lower()
        for personal in ('"name"', '"email"', '"notes"', '"firstname"'):
            assert personal not in text, (path.name, personal)


ODS = "postgres://db.internal:5432"


def test_extract_operator_lineage() -> None:
    from psa_erp_sync.operators.time_expense import PsaExtractOperator

    op = PsaExtractOperator(task_id="extract_time_entries", endpoints=["/v2/time_entries"])
    start = op.get_openlineage_facets_on_start()
    assert _names(start.inputs) == [("https://api.harvestapp.com", "/v2/time_entries")]
    assert _names(start.outputs) == [(ODS, "ods.staging.raw_record"), (ODS, "ods.staging.extract_run")]
    assert start.run_facets == {}
    op.summary = {
        "/v2/time_entries": {
            "extracted": 5,
            "staged": 5,
            "new_versions": 4,
            "known_versions": 1,
            "duplicates_in_extract": 0,
            "mode": "sweep",
            "rows_per_second": 9,
        }
    }
    facet = op.get_openlineage_facets_on_complete(None).run_facets["controlTotals"]
    assert facet.counts == {
        "extracted": 5,
        "staged": 5,
        "new_versions": 4,
        "known_versions": 1,
        "duplicates_in_extract": 0,
    }
    _check_facet(facet, _validator())


def test_validation_operator_lineage() -> None:
    from psa_erp_sync.operators.time_expense import StagedRecordValidationOperator

    op = StagedRecordValidationOperator(task_id="validate_expenses", kind="expense_entry")
    start = op.get_openlineage_facets_on_start()
    assert _names(start.inputs) == [(ODS, "ods.staging.raw_record")]
    assert _names(start.outputs) == [(ODS, "ods.canonical.expense_entry"), (ODS, "ods.exceptions.item")]
    op.result = {"kind": "expense_entry", "valid": 7, "quarantined": 2, "by_reason": {"RATE_MISSING": 2}}
    facet = op.get_openlineage_facets_on_failure(None).run_facets["dataQuality"]
    assert (facet.valid, facet.quarantined, facet.quarantinedByReason) == (7, 2, {"RATE_MISSING": 2})
    _check_facet(facet, _validator())


def test_reconcile_operators_lineage_and_control_totals() -> None:
    from psa_erp_sync.operators.time_expense import ControlTotalsOperator, ErpReconciliationOperator

    totals = {"count": 2, "hours": "3.25", "amounts_minor": {"USD": 1050, "GBP": 7}, "hash_total": "11"}
    recon = ControlTotalsOperator(task_id="reconcile", extracted=[], validated=[])
    assert _names(recon.get_openlineage_facets_on_start().outputs) == [(ODS, "ods.audit.control_total")]
    recon.report = {
        "time_entry": {"canonical_approved": totals},
        "expense_entry": {"canonical_approved": {**totals, "hours": "0", "hash_total": "4"}},
    }
    facet = recon.get_openlineage_facets_on_complete(None).run_facets["controlTotals"]
    assert facet.counts == {"expense_entry": 2, "time_entry": 2}
    assert (facet.hours, facet.amounts, facet.hashTotal) == ("3.25", {"GBP": "14", "USD": "2100"}, "15")
    _check_facet(facet, _validator())

    erp = ErpReconciliationOperator(task_id="reconcile_erp")
    start = erp.get_openlineage_facets_on_start()
    assert ("https://1234.suitetalk.api.netsuite.com", "/services/rest/record/v1/timebill") in _names(
        start.inputs
    )
    assert ("https://1234.suitetalk.api.netsuite.com", "/services/rest/record/v1/expensereport") in _names(
        start.inputs
    )
    erp.report = {"timebill": {"erp": totals}}
    assert erp.get_openlineage_facets_on_complete(None).run_facets["controlTotals"].counts == {"timebill": 2}


def test_domain_step_operator_resolves_declared_datasets() -> None:
    from psa_erp_sync.lineage.facets import ControlTotalsRunFacet
    from psa_erp_sync.lineage.refs import erp, ods, psa
    from psa_erp_sync.operators.step import DomainStepOperator

    op = DomainStepOperator(
        task_id="propagate_to_psa",
        call=lambda: {"applied": 3},
        inputs=[ods("master.propagation"), erp("customer")],
        outputs=[psa("/v2/clients")],
        run_facets=lambda result: {"controlTotals": ControlTotalsRunFacet(counts=result)},
    )
    start = op.get_openlineage_facets_on_start()
    assert _names(start.inputs) == [
        (ODS, "ods.master.propagation"),
        ("https://1234.suitetalk.api.netsuite.com", "/services/rest/record/v1/customer"),
    ]
    assert _names(start.outputs) == [("https://api.harvestapp.com", "/v2/clients")]
    assert start.run_facets == {}
    op.result = {"applied": 3}
    assert op.get_openlineage_facets_on_complete(None).run_facets["controlTotals"].counts == {"applied": 3}
    with pytest.raises(ValueError, match=r"schema\.table"):
        ods("propagation")


def test_every_operator_and_sensor_reports_lineage() -> None:
    """Every custom operator and sensor has the provider's three methods, and no flow step that calls
    an HTTP system is a plain ``@task`` (the provider would drop its datasets)."""
    import ast
    import importlib
    import inspect
    import pkgutil

    from airflow.sdk import BaseOperator

    import psa_erp_sync.operators
    import psa_erp_sync.sensors

    classes = []
    for package in (psa_erp_sync.operators, psa_erp_sync.sensors):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            classes += [
                c
                for _, c in inspect.getmembers(module, inspect.isclass)
                if issubclass(c, BaseOperator) and c.__module__ == module.__name__
            ]
    assert len(classes) >= 9, classes
    for cls in classes:
        for method in (
            "get_openlineage_facets_on_start",
            "get_openlineage_facets_on_complete",
            "get_openlineage_facets_on_failure",
        ):
            assert callable(getattr(cls, method, None)), (cls.__name__, method)

    flows = Path(psa_erp_sync.operators.__file__).parents[1] / "flows"
    for path in flows.glob("*.py"):
        tree = ast.parse(path.read_text())
        functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and any(
                "task" in ast.unparse(d) for d in node.decorator_list
            ):
                assert not _calls_http(node, functions, {node.name}), (
                    f"{path.name}: @task {node.name} calls an HTTP system"
                )


HTTP_HOOKS = {"PsaHook", "ErpHook", "CrmHook", "PlanningHook"}


def _calls_http(node: Any, functions: dict[str, Any], seen: set[str]) -> bool:
    """Does this function (or a module function it calls, transitively) build an HTTP hook?"""
    import ast

    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id in HTTP_HOOKS:
            return True
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in functions:
            name = sub.func.id
            if name not in seen and _calls_http(functions[name], functions, seen | {name}):
                return True
    return False
