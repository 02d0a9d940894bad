"""Project setup and change orders: CRM closed-won -> ERP validation -> ERP job -> PSA project.

Task graph (built by :func:`build`)::

    collect_closed_won -> validate_in_erp (ERPValidationOperator) -> provision_projects
        -> apply_change_orders -> reconcile_change_orders (outlet: the PROJECT_DATA asset)

Every step is keyed on the opportunity (and the run id for audit), never on the try number:
retrying or clearing a task resumes from ``master.project_setup`` and creates nothing twice.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import Param, get_current_context

from psa_erp_sync.flows.context import ids

log = logging.getLogger(__name__)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "sales-operations",
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


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


def _collect(extra_ids: list[int]) -> list[dict[str, Any]]:
    from psa_erp_sync.hooks.crm import CrmHook
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.masterdata import setup

    _, run_id = ids(get_current_context())
    with CrmHook().get_client() as crm, OdsHook().get_conn() as conn:
        return setup.collect(conn, crm, run_id=run_id, extra_ids=[int(i) for i in extra_ids])


def _provision(validated: dict[str, Any] | None) -> dict[str, Any]:
    from psa_erp_sync.config import load_config
    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.hooks.psa import PsaHook
    from psa_erp_sync.masterdata import setup

    _, run_id = ids(get_current_context())
    ownership = load_config().ownership
    with ErpHook().get_client() as erp, PsaHook().get_client() as psa, OdsHook().get_conn() as conn:
        return setup.provision(
            conn,
            erp,
            psa,
            run_id=run_id,
            verdicts=(validated or {}).get("verdicts", []),
            owner_for=ownership.owner_for,
        )


def _apply_change_orders() -> dict[str, Any]:
    from psa_erp_sync.hooks.crm import CrmHook
    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.hooks.psa import PsaHook
    from psa_erp_sync.masterdata import change_orders

    _, run_id = ids(get_current_context())
    with (
        CrmHook().get_client() as crm,
        ErpHook().get_client() as erp,
        PsaHook().get_client() as psa,
        OdsHook().get_conn() as conn,
    ):
        return change_orders.apply_approved(conn, crm, erp, psa, run_id=run_id)


def _reconcile_change_orders() -> dict[str, Any]:
    from psa_erp_sync.config import load_config
    from psa_erp_sync.hooks.crm import CrmHook
    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.hooks.psa import PsaHook
    from psa_erp_sync.masterdata import change_orders

    _, run_id = ids(get_current_context())
    owner = load_config().authority.owner_of("change_order")
    with (
        CrmHook().get_client() as crm,
        ErpHook().get_client() as erp,
        PsaHook().get_client() as psa,
        OdsHook().get_conn() as conn,
    ):
        report = change_orders.reconcile(conn, crm, erp, psa, run_id=run_id, owner=owner)
    log.info(
        "revenue leakage this run: CRM %d change orders, %s; PSA %d projects over the ERP contract value, %s;"
        " won opportunities without an ERP job: %d",
        report["leaked_change_orders"],
        report["leaked_amount"],
        report["psa_leaked_projects"],
        report["psa_leaked_amount"],
        report["jobs_missing"],
    )
    return report


def _collect_task(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Closed-won events since the cursor, requested ids, and setups not yet complete."""
    return _collect(list((params or {}).get("opportunity_ids") or []))


def build() -> None:
    """Declare the tasks of the project-setup DAG (call inside a DAG context)."""
    from psa_erp_sync.assets import PROJECT_DATA
    from psa_erp_sync.lineage.refs import crm, erp, ods, psa
    from psa_erp_sync.operators.erp_validation import ERPValidationOperator
    from psa_erp_sync.operators.python import ReportingPythonOperator

    candidates = ReportingPythonOperator(
        task_id="collect_closed_won",
        python_callable=_collect_task,
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
    provisioned = ReportingPythonOperator(
        task_id="provision_projects",
        python_callable=_provision,
        op_kwargs={"validated": validate.output},
        inputs=[ods("master.project_setup"), ods("master.validation_verdict")],
        outputs=[erp("job"), psa("/v2/projects"), ods("master.project_setup"), ods("exceptions.item")],
    )
    # Approved change orders -> ERP contract value and PSA budget (absolute values).
    applied = ReportingPythonOperator(
        task_id="apply_change_orders",
        python_callable=_apply_change_orders,
        inputs=[crm("/api/v1/events"), crm("/api/v1/change_orders"), ods("master.project_setup")],
        outputs=[erp("job"), psa("/v2/projects"), ods("master.change_order")],
    )
    # Revenue leakage: approved change orders absent from the ERP, and PSA budgets above the ERP
    # contract value that no approved change order explains (count and amount, by source system).
    reconciled = ReportingPythonOperator(
        task_id="reconcile_change_orders",
        python_callable=_reconcile_change_orders,
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
