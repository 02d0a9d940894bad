"""ERPValidationOperator: validate a batch of records against the ERP, synchronously, in bulk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

#: ERP record types the validation reads (its OpenLineage inputs).
LOOKED_UP = ("customer", "subsidiary", "currency", "taxcode", "job")


class ERPValidationOperator(BaseOperator):
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

    def execute(self, context: Context) -> dict[str, Any]:
        from psa_erp_sync.config import load_config
        from psa_erp_sync.hooks.erp import ErpHook
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.masterdata import validation

        candidates = [validation.Candidate.model_validate(r) for r in (self.records or [])]
        ownership = load_config().ownership
        with ErpHook(self.erp_conn_id).get_client() as client:
            lookup = validation.ErpLookup(client)
            verdicts = validation.validate_batch(candidates, lookup)
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
        summary = validation.summarize(verdicts) | written | {"erp_queries": lookup.queries}
        self.summary = summary
        self.log.info(
            "validated %d records with %d ERP queries: %d valid, %d invalid %s",
            len(verdicts), lookup.queries, summary["valid"], summary["invalid"], summary["by_reason"],
        )  # fmt: skip
        if self.fail_on_invalid and summary["invalid"]:
            raise ValueError(f"{summary['invalid']} records failed ERP validation: {summary['by_reason']}")
        return {**summary, "verdicts": [v.as_dict() for v in verdicts]}

    # -- OpenLineage (found by name by the provider; imports stay inside) ----------------------
    def _lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        from psa_erp_sync.hooks.erp import ErpHook
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.lineage import naming

        ods = OdsHook(self.ods_conn_id)
        namespace, database = ods.openlineage_namespace(), ods.database()
        erp_namespace = ErpHook(self.erp_conn_id).openlineage_namespace()
        inputs = [naming.erp_record(erp_namespace, record_type) for record_type in LOOKED_UP]
        outputs = [
            naming.postgres(namespace, database, "exceptions", "item"),
            naming.postgres(namespace, database, "master", "validation_verdict"),
        ]
        return inputs, outputs

    def get_openlineage_facets_on_start(self) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage

        inputs, outputs = self._lineage_datasets()
        return OperatorLineage(inputs=inputs, outputs=outputs)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage

        from psa_erp_sync.lineage.facets import DataQualityRunFacet

        inputs, outputs = self._lineage_datasets()
        run_facets: dict[str, Any] = {}
        if self.summary is not None:
            run_facets["dataQuality"] = DataQualityRunFacet(
                valid=int(self.summary["valid"]),
                quarantined=int(self.summary["invalid"]),
                quarantinedByReason={str(k): int(v) for k, v in self.summary["by_reason"].items()},
            )
        return OperatorLineage(inputs=inputs, outputs=outputs, run_facets=run_facets)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        return self.get_openlineage_facets_on_complete(task_instance)
