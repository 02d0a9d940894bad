"""HR: Workday -> ODS (workers, cost rates) -> PSA users -> ERP employees.

Task graph (built by :func:`build`)::

    sync_workers -> sync_cost_rates -> propagate_to_psa -> propagate_to_erp

The run's date (``as_of``, UTC) decides which hires and terminations are in effect. Every task can
be retried or cleared: the ODS writes are upserts, the PSA user is looked up before it is created,
and PATCH/PUT carry absolute values.
"""

from __future__ import annotations

from typing import Any

from psa_erp_sync.flows import default_args

DEFAULT_ARGS: dict[str, Any] = default_args("people-operations")


def build() -> None:
    """Declare the tasks of the hr_sync DAG (call inside a DAG context)."""
    from psa_erp_sync.hr import steps
    from psa_erp_sync.lineage.refs import erp, ods, psa, workday
    from psa_erp_sync.operators.step import DomainStepOperator

    workers = DomainStepOperator(
        task_id="sync_workers",
        call=steps.sync_workers_step,
        inputs=[workday("/ccx/api/v1/workers")],
        outputs=[ods("hr.worker"), ods("hr.worker_version"), ods("exceptions.item")],
        step="hr_sync:workers",
    )
    rates = DomainStepOperator(
        task_id="sync_cost_rates",
        call=steps.sync_cost_rates_step,
        inputs=[workday("/ccx/service/customreport2/Worker_Cost_Rates")],
        outputs=[ods("hr.cost_rate"), ods("exceptions.item")],
        step="hr_sync:cost_rates",
    )
    to_psa = DomainStepOperator(
        task_id="propagate_to_psa",
        call=steps.propagate_to_psa_step,
        inputs=[ods("hr.worker"), ods("hr.cost_rate"), psa("/v2/users")],
        outputs=[psa("/v2/users"), ods("hr.worker"), ods("exceptions.item")],
        step="hr_sync:psa_users",
    )
    to_erp = DomainStepOperator(
        task_id="propagate_to_erp",
        call=steps.propagate_to_erp_step,
        inputs=[ods("hr.worker")],
        outputs=[erp("employee"), ods("hr.worker"), ods("exceptions.item")],
        step="hr_sync:erp_employees",
    )
    workers >> rates >> to_psa >> to_erp
