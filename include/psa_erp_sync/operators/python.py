"""``ReportingPythonOperator``: a PythonOperator that reports the datasets it touches.

Plain ``@task`` functions that call HTTP systems lose their lineage: the provider reads ``@task``
lineage from the hook lineage collector, which has no converter for ``https://`` URIs. Flow steps
that call the PSA, ERP, CRM or planning platform are therefore declared with this operator and
their :mod:`~psa_erp_sync.lineage.refs`::

    ReportingPythonOperator(
        task_id="propagate_to_psa",
        python_callable=_propagate,
        inputs=[ods("master.propagation")],
        outputs=[psa("/v2/clients"), psa("/v2/projects"), ods("master.propagation")],
    )

The callable runs exactly as under ``@task`` (context keys such as ``params`` are passed by name;
``op_kwargs`` may hold XComArgs); its return value goes to XCom and, through ``run_facets``, may
describe the run in a facet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.python import PythonOperator

from psa_erp_sync.operators.base import LineageReportingOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from psa_erp_sync.lineage.refs import DatasetRef


class ReportingPythonOperator(LineageReportingOperator, PythonOperator):
    """Run a Python callable; report declared inputs and outputs to OpenLineage.

    :param inputs: datasets the callable reads.
    :param outputs: datasets the callable writes.
    :param step: the step recorded with this try's OpenLineage run id (default: the task id).
    :param run_facets: builds run facets from the callable's return value.
    :param conn_ids: connection id per system when not ``{system}_default``.
    """

    def __init__(
        self,
        *,
        inputs: Sequence[DatasetRef] = (),
        outputs: Sequence[DatasetRef] = (),
        step: str | None = None,
        run_facets: Callable[[Any], dict[str, Any]] | None = None,
        conn_ids: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lineage_inputs = tuple(inputs)
        self.lineage_outputs = tuple(outputs)
        self.step = step
        self.run_facets_of = run_facets
        self.conn_ids = dict(conn_ids or {})
        self.ods_conn_id = self.conn_ids.get("ods", "ods_default")
        self.result: Any = None

    def execute(self, context: Context) -> Any:
        self.record_lineage_run(context, self.step or self.task_id)
        self.result = super().execute(context)
        return self.result

    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        from psa_erp_sync.lineage.refs import resolve

        return resolve(self.lineage_inputs, self.conn_ids), resolve(self.lineage_outputs, self.conn_ids)

    def lineage_run_facets(self) -> dict[str, Any]:
        if self.run_facets_of is None or self.result is None:
            return {}
        return self.run_facets_of(self.result)
