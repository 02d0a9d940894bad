"""ERPValidationOperator: validate a batch of records against the ERP, synchronously, in bulk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psa_erp_sync.operators.base import LineageReportingOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

#: ERP record types the validation reads (its OpenLineage inputs), per ERP: NetSuite's SuiteQL
#: look-ups; SAP's master-data reads (customers and WBS elements of each company code).
LOOKED_UP = ("customer", "subsidiary", "currency", "taxcode", "job")
SAP_LOOKED_UP = ("customer", "job")


class ERPValidationOperator(LineageReportingOperator):
    """Validate customer, legal entity, contract, project code, tax code and currency of a batch.

    Bulk SuiteQL look-ups and a per-run cache (never one call per record); a verdict per record
    with reason codes; failures become ``validation`` exception items with the owner from
    ``config/ownership.yaml``; the latest verdict per record is stored, and nothing downstream
    activates a record whose verdict is not ok. An ERP outage is retried with backoff by the
    client and then fails the task with a clear message: never a silent pass.

    :param records: the candidates, dicts of
        :class:`~psa_erp_sync.masterdata.validation.Candidate` fields. (templated)
    :param domain: data domain the verdicts belong to, e.g. ``project_setup``. (templated)
    :param record_type: record type of the exception items, e.g. ``opportunity``.
    :param source_system: system the records come from, e.g. ``crm``.
    :param fail_on_invalid: fail the task when any record is invalid (default: only report).
    :param erp_conn_id: Airflow connection of the ERP.
    :param ods_conn_id: Airflow connection of the ODS.
    """

    template_fields: Sequence[str] = ("records", "domain")
    ui_color = "#fde9d9"

    def __init__(
        self,
        *,
        records: Any,
        domain: str,
        record_type: str,
        source_system: str,
        fail_on_invalid: bool = False,
        erp_conn_id: str = "erp_default",
        ods_conn_id: str = "ods_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.records = records
        self.domain = domain
        self.record_type = record_type
        self.source_system = source_system
        self.fail_on_invalid = fail_on_invalid
        self.erp_conn_id = erp_conn_id
        self.ods_conn_id = ods_conn_id
        self.summary: dict[str, Any] | None = None
        self.erps_used: list[tuple[str, str]] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from psa_erp_sync.config import load_config
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.masterdata import validation
        from psa_erp_sync.operators.context import run_as_of

        self.record_lineage_run(context, f"erp_validation:{self.domain}")
        candidates = [validation.Candidate.model_validate(r) for r in (self.records or [])]
        ownership = load_config().ownership
        self.erps_used = []
        verdicts, queries = _validate_routed(
            candidates, self.erp_conn_id, lambda: run_as_of(context).date(), self.erps_used
        )
        with OdsHook(self.ods_conn_id).get_conn() as conn, conn.transaction():
            written = validation.record_verdicts(
                conn,
                verdicts,
                domain=self.domain,
                record_type=self.record_type,
                source_system=self.source_system,
                owner_for=ownership.owner_for,
                run_id=context["run_id"],
            )
        summary = validation.summarize(verdicts) | written | {"erp_queries": queries}
        self.summary = summary
        self.log.info(
            "validated %d records with %d ERP queries: %d valid, %d invalid %s",
            len(verdicts),
            queries,
            summary["valid"],
            summary["invalid"],
            summary["by_reason"],
        )
        if self.fail_on_invalid and summary["invalid"]:
            raise ValueError(f"{summary['invalid']} records failed ERP validation: {summary['by_reason']}")
        return {**summary, "verdicts": [v.as_dict() for v in verdicts]}

    # -- OpenLineage (methods of LineageReportingOperator, found by name by the provider) -------
    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        return _validation_datasets(self, LOOKED_UP, SAP_LOOKED_UP)

    def lineage_run_facets(self) -> dict[str, Any]:
        return _data_quality(self.summary)


def _validate_routed(
    candidates: list[Any], erp_conn_id: str, as_of: Any, used: list[tuple[str, str]] | None = None
) -> tuple[list[Any], int]:
    """Each candidate judged by the ERP its legal entity routes to on ``as_of()`` (NetSuite's
    SuiteQL look-ups, or SAP's master data: :mod:`psa_erp_sync.masterdata.sap_validation`), in
    order, and the ERP queries it took. A candidate without a route (or an entity) goes to NetSuite,
    which judges its legal entity. ``used`` receives (ERP, connection) of each ERP looked up."""
    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.hooks.sap import SapHook
    from psa_erp_sync.masterdata import sap_validation, validation
    from psa_erp_sync.routing.route import RouteNotFound, router

    routing = router()
    only_netsuite = routing.erps_in_force() == ["netsuite"]
    day = None if only_netsuite else as_of()  # the run's date, read only during a transition
    by_erp: dict[str, list[int]] = {}
    for i, candidate in enumerate(candidates):
        try:
            erp = "netsuite" if day is None else routing.route(candidate.legal_entity or "", day).erp
        except RouteNotFound:
            erp = "netsuite"
        by_erp.setdefault(erp, []).append(i)
    verdicts: dict[int, Any] = {}
    queries = 0
    for erp, indexes in sorted(by_erp.items()):
        batch = [candidates[i] for i in indexes]
        conn_id = erp_conn_id if only_netsuite else routing.routing.connection_of(erp)
        if used is not None:
            used.append((erp, conn_id))
        if erp == "sap":
            hook = SapHook(conn_id)
            with hook.get_client() as client:
                found, asked = sap_validation.validate_in_sap(batch, client, hook.sap_mapping().company_codes)
        else:
            with ErpHook(conn_id).get_client() as client:
                lookup = validation.ErpLookup(client)
                found, asked = validation.validate_batch(batch, lookup), lookup.queries
        verdicts.update(zip(indexes, found, strict=True))
        queries += asked
    return [verdicts[i] for i in range(len(candidates))], queries


def _erps_in_force(erp_conn_id: str) -> list[tuple[str, str]]:
    """(ERP, connection) of each ERP the routing file in force sends anything to (``erp_conn_id``
    when it names only NetSuite)."""
    from psa_erp_sync.routing.route import router

    routing = router()
    in_force = routing.erps_in_force()
    if in_force == ["netsuite"]:
        return [("netsuite", erp_conn_id)]
    return [(erp, routing.routing.connection_of(erp)) for erp in in_force]


def _validation_datasets(
    op: Any, looked_up: Sequence[str], sap_looked_up: Sequence[str]
) -> tuple[list[Any], list[Any]]:
    """Inputs: what each ERP was asked (once ``execute`` ran: the ERPs it looked up; before, every
    ERP in force), each in that ERP's own namespace; resolved when lineage is asked for."""
    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.hooks.sap import SapHook
    from psa_erp_sync.lineage import naming

    erps = op.erps_used if op.erps_used else _erps_in_force(op.erp_conn_id)
    inputs: list[Any] = []
    for erp, conn_id in dict.fromkeys(erps):
        if erp == "sap":
            namespace = SapHook(conn_id).openlineage_namespace()
            inputs += [naming.erp_dataset(erp, namespace, t) for t in sap_looked_up]
        else:
            namespace = ErpHook(conn_id).openlineage_namespace()
            inputs += [naming.erp_record(namespace, t) for t in looked_up]
    outputs = [op.ods_dataset("exceptions", "item"), op.ods_dataset("master", "validation_verdict")]
    return inputs, outputs


def _data_quality(summary: dict[str, Any] | None) -> dict[str, Any]:
    from psa_erp_sync.lineage.facets import DataQualityRunFacet

    if summary is None:
        return {}
    return {
        "dataQuality": DataQualityRunFacet(
            valid=int(summary["valid"]),
            quarantined=int(summary["invalid"]),
            quarantinedByReason={str(k): int(v) for k, v in summary["by_reason"].items()},
        )
    }


class ProjectPrecheckOperator(LineageReportingOperator):
    """Posting pre-check: validate, in bulk against the ERP, every project the approved canonical
    time and expenses use (job exists and is active, customer active, subsidiary and currency match).

    Each use is judged by the ERP its legal entity and date route to (``config/erp_routing.yaml``):
    NetSuite as above; SAP by its company codes and posting periods
    (:func:`psa_erp_sync.masterdata.precheck.precheck_in_sap`, docs/multi-erp.md).

    Each blocked project becomes one ``validation`` exception item per reason, owned per legal
    entity, and is resolved by the first run after the fix. The pre-check reports; it does not hold
    entries back: the ERP stays the final judge, and an entry it rejects follows the single recovery
    path of dead letters and replay. An ERP outage fails the task (retried by Airflow): never a pass.

    :param erp_conn_id: Airflow connection of the ERP (NetSuite's, when the routing names only it).
    :param ods_conn_id: Airflow connection of the ODS.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#fde9d9"

    def __init__(
        self, *, erp_conn_id: str = "erp_default", ods_conn_id: str = "ods_default", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.erp_conn_id = erp_conn_id
        self.ods_conn_id = ods_conn_id
        self.summary: dict[str, Any] | None = None
        self.erps_used: list[tuple[str, str]] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from psa_erp_sync.config import load_config
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.masterdata import precheck, validation

        self.record_lineage_run(context, "precheck:projects")
        with OdsHook(self.ods_conn_id).get_conn() as conn:
            by_erp = _uses_by_erp(conn)
        verdicts: dict[str, validation.Verdict] = {}
        queries = 0
        in_force = dict(_erps_in_force(self.erp_conn_id))
        self.erps_used = [(erp, in_force.get(erp, self.erp_conn_id)) for erp in by_erp]
        for erp, uses in by_erp.items():
            found, asked = _precheck(erp, uses, self.erp_conn_id)
            verdicts.update(found)
            queries += asked
        ownership = load_config().ownership
        with OdsHook(self.ods_conn_id).get_conn() as conn, conn.transaction():
            written = validation.record_verdicts(
                conn,
                list(verdicts.values()),
                domain="time_expense",
                record_type="project",
                source_system="psa",
                owner_for=ownership.owner_for,
                run_id=context["run_id"],
            )
        blocked = precheck.blocked_projects(verdicts)
        self.summary = validation.summarize(list(verdicts.values())) | written | {"erp_queries": queries}
        self.log.info(
            "pre-checked %d projects with %d ERP queries: %d blocked %s",
            len(verdicts),
            queries,
            len(blocked),
            self.summary["by_reason"],
        )
        return {**self.summary, "blocked_projects": {k: list(v) for k, v in sorted(blocked.items())}}

    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        inputs, outputs = _validation_datasets(
            self, ("job", "customer", "subsidiary", "currency"), ("accountingperiod",)
        )
        return [
            self.ods_dataset("canonical", "time_entry"),
            self.ods_dataset("canonical", "expense_entry"),
            *inputs,
        ], outputs

    def lineage_run_facets(self) -> dict[str, Any]:
        return _data_quality(self.summary)


def _uses_by_erp(conn: Any) -> dict[str, list[tuple[Any, Any]]]:
    """The approved entries' (project use, date) per ERP their legal entity and date route to
    (an unrouted use is left to the posting, which parks it ``NO_ERP_ROUTE``)."""
    from psa_erp_sync.masterdata import precheck
    from psa_erp_sync.routing.route import RouteNotFound, router

    routing = router()
    by_erp: dict[str, list[tuple[Any, Any]]] = {}
    for use, day in precheck.project_uses_by_day(conn):
        try:
            erp = routing.route(use.legal_entity, day).erp
        except RouteNotFound:
            continue
        by_erp.setdefault(erp, []).append((use, day))
    return by_erp


def _precheck(erp: str, uses: list[tuple[Any, Any]], erp_conn_id: str) -> tuple[dict[str, Any], int]:
    """The verdicts on ``uses`` by the ERP ``erp`` (NetSuite: ``erp_conn_id`` when the routing
    names only NetSuite, else the connection the routing file names), and the queries it took."""
    import dataclasses

    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.hooks.sap import SapHook
    from psa_erp_sync.masterdata import precheck, validation
    from psa_erp_sync.posting.adapter import adapter_for
    from psa_erp_sync.posting.periods import PeriodBook
    from psa_erp_sync.routing.route import router

    routing = router()
    if erp != "sap":
        conn_id = (
            erp_conn_id if routing.erps_in_force() == ["netsuite"] else routing.routing.connection_of(erp)
        )
        with ErpHook(conn_id).get_client() as client:
            lookup = validation.ErpLookup(client)
            return precheck.precheck_projects([u for u, _ in uses], lookup), lookup.queries
    hook = SapHook(routing.routing.connection_of(erp))
    with hook.get_client() as client:
        mapping = dataclasses.replace(
            hook.sap_mapping(), fiscal_years=tuple(sorted({d.year for _, d in uses}))
        )
        rows = adapter_for("sap", client, sap_mapping=mapping).read_periods()
    entities = {str(r["subsidiary"]) for r in rows}
    found = precheck.precheck_in_sap(
        uses, legal_entities=entities, periods=PeriodBook.from_rows(rows), erp=erp
    )
    return found, len(mapping.company_codes) * len(mapping.fiscal_years)
