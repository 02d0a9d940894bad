"""Base class for our operators: OpenLineage reporting in one place.

The provider finds ``get_openlineage_facets_on_start/_on_complete/_on_failure`` by name. Subclasses
say which datasets they read and write (``lineage_datasets``, built from constructor-time fields
only, so ``on_start`` is right before ``execute`` has run) and which run facets describe what
``execute`` did (``lineage_run_facets``, from state kept on ``self``). OpenLineage imports stay
inside the methods, so nothing is imported at DAG parse time.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator


class LineageReportingOperator(BaseOperator):
    """An operator that returns its own OpenLineage inputs, outputs and run facets."""

    ods_conn_id: str = "ods_default"

    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        """(inputs, outputs) as OpenLineage datasets."""
        raise NotImplementedError

    def lineage_run_facets(self) -> dict[str, Any]:
        """Run facets from what ``execute`` recorded on ``self`` (empty before it ran)."""
        return {}

    def ods_dataset(self, schema: str, table: str) -> Any:
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.lineage import naming

        ods = OdsHook(self.ods_conn_id)
        return naming.postgres(ods.openlineage_namespace(), ods.database(), schema, table)

    def record_lineage_run(self, context: Any, step: str) -> None:
        """Store this try's OpenLineage run id and step for the per-record trace."""
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.lineage import runs

        runs.record(OdsHook(self.ods_conn_id).dsn(), context, step)

    def get_openlineage_facets_on_start(self) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage

        inputs, outputs = self.lineage_datasets()
        return OperatorLineage(inputs=inputs, outputs=outputs)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage

        inputs, outputs = self.lineage_datasets()
        return OperatorLineage(inputs=inputs, outputs=outputs, run_facets=self.lineage_run_facets())

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        return self.get_openlineage_facets_on_complete(task_instance)
