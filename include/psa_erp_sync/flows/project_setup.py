"""Project setup and change orders: CRM closed-won -> ERP validation -> ERP job -> PSA project.

Task graph (built by :func:`build`)::

    collect_closed_won -> validate_in_erp (ERPValidationOperator) -> provision_projects
        -> apply_change_orders -> reconcile_change_orders (outlet: the PROJECT_DATA asset)

Every step is keyed on the opportunity (and the run id for audit), never on the try number:
retrying or clearing a task resumes from ``master.project_setup`` and creates nothing twice.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from psa_erp_sync.flows import default_args

DEFAULT_ARGS: dict[str, Any] = default_args("sales-operations")


def params() -> dict[str, Param]:
    """The trigger form's parameters, built afresh for each DAG (Airflow writes a run's conf into the
    Param objects it is given)."""
    return {
        "opportunity_ids": Param(
            [],
            type="array",
            items={"type": "integer"},
            examples=[],
            description="Also (re)provision these won opportunities, e.g. after an owner fixed a validation failure.",
        ),
    }


def build() -> None:
    """Declare the tasks of the project-setup DAG (call inside a DAG context)."""
    from psa_erp_sync.assets import PROJECT_DATA
    from psa_erp_sync.lineage.refs import crm, erp, ods, psa
    from psa_erp_sync.masterdata import change_orders, steps
    from psa_erp_sync.operators.erp_validation import ERPValidationOperator
    from psa_erp_sync.operators.step import DomainStepOperator

    candidates = DomainStepOperator(
        task_id="collect_closed_won",
        call=steps.collect_closed_won,
        inputs=[crm("/api/v1/events"), crm("/api/v1/opportunities"), ods("master.crm_cursor")],
        outputs=[ods("master.project_setup"), ods("master.crm_cursor")],
    )
    validate = ERPValidationOperator(
        task_id="validate_in_erp",
        records=candidates.output,
        domain="project_setup",
        record_type="opportunity",
        source_system="crm",
    )
    # ERP job by external id, then PSA project (found by code or created), then the links.
    provisioned = DomainStepOperator(
        task_id="provision_projects",
        call=steps.provision_projects,
        op_kwargs={"validated": validate.output},
        inputs=[ods("master.project_setup"), ods("master.validation_verdict")],
        outputs=[erp("job"), psa("/v2/projects"), ods("master.project_setup"), ods("exceptions.item")],
    )
    # Approved change orders -> ERP contract value and PSA budget (absolute values).
    applied = DomainStepOperator(
        task_id="apply_change_orders",
        call=change_orders.apply_approved,
        inputs=[crm("/api/v1/events"), crm("/api/v1/change_orders"), ods("master.project_setup")],
        outputs=[erp("job"), psa("/v2/projects"), ods("master.change_order")],
    )
    # Revenue leakage: approved change orders absent from the ERP, and PSA budgets above the ERP
    # contract value that no approved change order explains (count and amount, by source system).
    reconciled = DomainStepOperator(
        task_id="reconcile_change_orders",
        call=steps.reconcile_change_orders,
        inputs=[
            crm("/api/v1/opportunities"),
            crm("/api/v1/change_orders"),
            erp("job"),
            psa("/v2/projects"),
            ods("master.change_order"),
            ods("master.project_setup"),
        ],
        outputs=[ods("master.leakage_run"), ods("exceptions.item")],
        outlets=[PROJECT_DATA],
    )
    provisioned >> applied >> reconciled
