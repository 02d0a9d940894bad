"""Operators of the time & expense flow: extract from the PSA, validate into canonical records,
reconcile control totals, reconcile the ERP.

Each takes what it needs from its own ``execute(context)`` (DAG and run ids, the run's as-of),
builds its hooks there, and calls a domain function with explicit arguments
(:mod:`psa_erp_sync.extract.time_expense`, :mod:`psa_erp_sync.validation.run_step`,
:mod:`psa_erp_sync.reconcile.time_expense`); none imports a flow. Each step reports its
own OpenLineage inputs, outputs and facets: the provider drops hook-level lineage for HTTP(S)
systems, so the PSA and ERP datasets are returned explicitly, named as in
:mod:`psa_erp_sync.lineage.naming`. Each try also records its OpenLineage run id in
``lineage.task_run`` for the per-record trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psa_erp_sync.contracts.kinds import KINDS
from psa_erp_sync.operators.base import LineageReportingOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The canonical table (in schema ``canonical``) of each kind.
CANONICAL: dict[str, str] = {kind.name: kind.table for kind in KINDS.values()}


class PsaExtractOperator(LineageReportingOperator):
    """Read PSA endpoints (incremental with an overlapping window, or a sweep) into staging by COPY.

    :param endpoints: PSA resource paths, e.g. ``["/v2/time_entries"]``. (templated)
    :param mode: ``auto``, ``incremental``, ``sweep`` or ``full``. (templated)
    :param psa_conn_id: Airflow connection of the PSA.
    :param ods_conn_id: Airflow connection of the ODS.
    """

    template_fields: Sequence[str] = ("endpoints", "mode")
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        endpoints: Sequence[str],
        mode: str = "auto",
        psa_conn_id: str = "psa_default",
        ods_conn_id: str = "ods_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.endpoints = endpoints
        self.mode = mode
        self.psa_conn_id = psa_conn_id
        self.ods_conn_id = ods_conn_id
        self.summary: dict[str, Any] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from psa_erp_sync.config import load_config
        from psa_erp_sync.extract.time_expense import extract_endpoints
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.hooks.psa import PsaHook
        from psa_erp_sync.operators.context import ids, run_as_of

        self.record_lineage_run(context, "extract:" + ",".join(self.endpoints))
        dag_id, run_id = ids(context)
        with PsaHook(self.psa_conn_id).get_client() as client, OdsHook(self.ods_conn_id).get_conn() as conn:
            self.summary = extract_endpoints(
                conn,
                client,
                endpoints=list(self.endpoints),
                mode=self.mode or "auto",
                dag_id=dag_id,
                run_id=run_id,
                as_of=run_as_of(context),
                config=load_config(),
            )
        return self.summary

    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        from psa_erp_sync.hooks.psa import PsaHook
        from psa_erp_sync.lineage import naming

        namespace = PsaHook(self.psa_conn_id).openlineage_namespace()
        inputs = [naming.http(namespace, endpoint) for endpoint in self.endpoints]
        outputs = [self.ods_dataset("staging", "raw_record"), self.ods_dataset("staging", "extract_run")]
        return inputs, outputs

    def lineage_run_facets(self) -> dict[str, Any]:
        from psa_erp_sync.lineage.facets import ControlTotalsRunFacet

        if not self.summary:
            return {}
        counts: dict[str, int] = {}
        for figures in self.summary.values():
            for key in ("extracted", "staged", "new_versions", "known_versions", "duplicates_in_extract"):
                counts[key] = counts.get(key, 0) + int(figures.get(key, 0))
        return {"controlTotals": ControlTotalsRunFacet(counts=counts)}


class StagedRecordValidationOperator(LineageReportingOperator):
    """Validate a run's staged PSA versions into canonical records; quarantine the rest with a
    reason code and an owner. Asserts staged versions = valid + quarantined.

    :param kind: ``time_entry`` or ``expense_entry``. (templated)
    :param ods_conn_id: Airflow connection of the ODS.
    """

    template_fields: Sequence[str] = ("kind",)
    ui_color = "#fef7e0"

    def __init__(self, *, kind: str, ods_conn_id: str = "ods_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.ods_conn_id = ods_conn_id
        self.result: dict[str, Any] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from psa_erp_sync.config import load_config
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.operators.context import ids, run_as_of
        from psa_erp_sync.validation.run_step import validate_staged

        if self.kind not in CANONICAL:
            raise ValueError(f"kind must be one of {sorted(CANONICAL)}, not {self.kind!r}")
        self.record_lineage_run(context, f"validate:{self.kind}")
        dag_id, run_id = ids(context)
        with OdsHook(self.ods_conn_id).get_conn() as conn:
            self.result = validate_staged(
                conn,
                kind=self.kind,
                dag_id=dag_id,
                run_id=run_id,
                as_of=run_as_of(context),
                config=load_config(),
            )
        return self.result

    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        inputs = [self.ods_dataset("staging", "raw_record")]
        outputs = [
            self.ods_dataset("canonical", CANONICAL.get(self.kind, self.kind)),
            self.ods_dataset("exceptions", "item"),
        ]
        return inputs, outputs

    def lineage_run_facets(self) -> dict[str, Any]:
        from psa_erp_sync.lineage.facets import DataQualityRunFacet

        if not self.result:
            return {}
        return {
            "dataQuality": DataQualityRunFacet(
                valid=int(self.result.get("valid", 0)),
                quarantined=int(self.result.get("quarantined", 0)),
                quarantinedByReason={
                    str(k): int(v) for k, v in dict(self.result.get("by_reason", {})).items()
                },
            )
        }


def _totals_facet(report: dict[str, Any], key: str) -> Any:
    """One ControlTotals facet from per-record-type totals (``as_dict`` of ``Totals``)."""
    from decimal import Decimal

    from psa_erp_sync.lineage.facets import ControlTotalsRunFacet

    counts: dict[str, int] = {}
    amounts: dict[str, int] = {}
    hours = Decimal(0)
    hash_total = 0
    for record_type, figures in sorted(report.items()):
        totals = figures.get(key)
        if not isinstance(totals, dict):
            continue
        counts[record_type] = int(totals.get("count", 0))
        for currency, minor in dict(totals.get("amounts_minor", {})).items():
            amounts[currency] = amounts.get(currency, 0) + int(minor)
        hours += Decimal(str(totals.get("hours", "0")))
        hash_total += int(totals.get("hash_total", 0))
    return ControlTotalsRunFacet(
        counts=counts,
        hours=str(hours),
        amounts={currency: str(minor) for currency, minor in sorted(amounts.items())},
        hashTotal=str(hash_total),
    )


class ControlTotalsOperator(LineageReportingOperator):
    """Assert extracted = staged = valid + quarantined per record type and record control totals.

    :param extracted: the extract summaries (XCom of the extract tasks). (templated)
    :param validated: the validation results (XCom of the validation tasks). (templated)
    """

    template_fields: Sequence[str] = ("extracted", "validated")
    ui_color = "#e6f4ea"

    def __init__(
        self, *, extracted: Any, validated: Any, ods_conn_id: str = "ods_default", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.extracted = extracted
        self.validated = validated
        self.ods_conn_id = ods_conn_id
        self.report: dict[str, Any] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.operators.context import ids
        from psa_erp_sync.reconcile.time_expense import reconcile_run

        self.record_lineage_run(context, "reconcile")
        dag_id, run_id = ids(context)
        extracted: dict[str, Any] = {}
        for part in self.extracted if isinstance(self.extracted, list | tuple) else [self.extracted]:
            extracted.update(part)
        with OdsHook(self.ods_conn_id).get_conn() as conn:
            self.report = reconcile_run(
                conn, dag_id=dag_id, run_id=run_id, extracted=extracted, validated=list(self.validated)
            )
        return self.report

    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        inputs = [
            self.ods_dataset("staging", "extract_run"),
            self.ods_dataset("canonical", "time_entry"),
            self.ods_dataset("canonical", "expense_entry"),
        ]
        return inputs, [self.ods_dataset("audit", "control_total")]

    def lineage_run_facets(self) -> dict[str, Any]:
        return {"controlTotals": _totals_facet(self.report, "canonical_approved")} if self.report else {}


class ErpReconciliationOperator(LineageReportingOperator):
    """Read every routed ERP back and prove it equals the approved PSA set to the cent.

    With one ERP in force (``config/erp_routing.yaml``) it reads ``erp_conn_id``; during a
    transition each ERP the routing file sends anything to is read through the connection the
    file names, and reconciled with what that ERP should hold (docs/multi-erp.md, "Downstream per
    ERP").

    :param record_types: ERP record types to reconcile. (templated)
    :param erp_conn_id: Airflow connection of the ERP when the routing names only NetSuite.
    """

    template_fields: Sequence[str] = ("record_types",)
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        record_types: Sequence[str] = ("timebill", "expensereport"),
        erp_conn_id: str = "erp_default",
        ods_conn_id: str = "ods_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.record_types = record_types
        self.erp_conn_id = erp_conn_id
        self.ods_conn_id = ods_conn_id
        self.report: dict[str, Any] | None = None

    def _erp_hooks(self) -> list[tuple[str, Any]]:
        """(ERP, hook) of each ERP in force: ``erp_conn_id`` alone when that is only NetSuite."""
        from psa_erp_sync.hooks.erp import ErpHook
        from psa_erp_sync.hooks.sap import SapHook
        from psa_erp_sync.routing.route import router

        routing = router()
        erps = routing.erps_in_force()
        if erps == ["netsuite"]:
            return [("netsuite", ErpHook(self.erp_conn_id))]
        conn = routing.routing.connection_of
        return [(erp, SapHook(conn(erp)) if erp == "sap" else ErpHook(conn(erp))) for erp in erps]

    def execute(self, context: Context) -> dict[str, Any]:
        from contextlib import ExitStack

        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.operators.context import ids
        from psa_erp_sync.reconcile.time_expense import reconcile_erp
        from psa_erp_sync.routing.route import RouteNotFound, router

        self.record_lineage_run(context, "reconcile_erp")
        dag_id, run_id = ids(context)
        routing = router()

        def route_of(legal_entity: str, day: Any) -> str | None:
            try:
                return routing.route(legal_entity, day).erp
            except RouteNotFound:
                return None

        with ExitStack() as stack, OdsHook(self.ods_conn_id).get_conn() as conn:
            erps = {
                erp: hook.adapter(stack.enter_context(hook.get_client())) for erp, hook in self._erp_hooks()
            }
            self.report = reconcile_erp(
                conn,
                None,
                dag_id=dag_id,
                run_id=run_id,
                record_types=tuple(self.record_types),
                erps=erps,
                route_of=route_of,
            )
        return self.report

    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        from psa_erp_sync.lineage import naming

        # One dataset per ERP read back, each in that ERP's own namespace.
        inputs = [
            naming.erp_dataset(erp, hook.openlineage_namespace(), record_type)
            for erp, hook in self._erp_hooks()
            for record_type in self.record_types
        ]
        inputs += [self.ods_dataset("ledger", "posting")]
        inputs += [
            self.ods_dataset("canonical", naming.CANONICAL_TABLE.get(rt, rt)) for rt in self.record_types
        ]
        return inputs, [self.ods_dataset("audit", "control_total")]

    def lineage_run_facets(self) -> dict[str, Any]:
        return {"controlTotals": _totals_facet(self.report, "erp")} if self.report else {}
