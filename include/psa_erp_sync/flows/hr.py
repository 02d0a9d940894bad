"""HR: Workday -> ODS (workers, cost rates) -> PSA users -> ERP employees.

Task graph (built by :func:`build`)::

    sync_workers -> sync_cost_rates -> propagate_to_psa -> propagate_to_erp

The run's date (``as_of``, UTC) decides which hires and terminations are in effect. Every task can
be retried or cleared: the ODS writes are upserts, the PSA user is looked up before it is created,
and PATCH/PUT carry absolute values.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import get_current_context

from psa_erp_sync.flows.context import ids, run_as_of

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "people-operations",
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


def _authority_check() -> None:
    """The DAG runs only while the configuration says HR owns people and cost rates."""
    from psa_erp_sync.config import load_config

    authority = load_config().authority
    for domain in ("resource", "cost_rate"):
        if authority.authority_of(domain) != "hr" or authority.flows_from(domain) != "hr":
            raise ValueError(
                f"{domain} is not HR-owned, or does not propagate from HR, in"
                " config/systems_of_authority.yaml; refusing to sync it"
            )


def _sync_workers() -> dict[str, Any]:
    from psa_erp_sync.config import load_config
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.hooks.workday import WorkdayHook
    from psa_erp_sync.hr import sync

    _authority_check()
    context = get_current_context()
    _, run_id = ids(context)
    with WorkdayHook().get_client() as client, OdsHook().get_conn() as conn:
        result = sync.sync_workers(
            conn, client, as_of=run_as_of(context).date(), run_id=run_id, config=load_config()
        )
        return {**result.as_dict(), "workday_requests": client.requests_made, "throttled": client.throttled}


def _sync_cost_rates() -> dict[str, Any]:
    from psa_erp_sync.config import load_config
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.hooks.workday import WorkdayHook
    from psa_erp_sync.hr import sync

    _, run_id = ids(get_current_context())
    with WorkdayHook().get_client() as client, OdsHook().get_conn() as conn:
        return sync.sync_cost_rates(conn, client, run_id=run_id, config=load_config())


def _propagate_to_psa() -> dict[str, Any]:
    from psa_erp_sync.config import load_config
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.hooks.psa import PsaHook
    from psa_erp_sync.hr import propagate

    _authority_check()
    context = get_current_context()
    _, run_id = ids(context)
    with PsaHook().get_client() as psa, OdsHook().get_conn() as conn:
        return propagate.propagate_to_psa(
            conn, psa, as_of=run_as_of(context).date(), run_id=run_id, config=load_config()
        ).as_dict()


def _propagate_to_erp() -> dict[str, Any]:
    from psa_erp_sync.config import load_config
    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.hr import propagate

    context = get_current_context()
    _, run_id = ids(context)
    clients: dict[str, Any] = {}

    def erp_for(conn_id: str) -> Any:
        if conn_id not in clients:
            clients[conn_id] = ErpHook(conn_id).get_client()
        return clients[conn_id]

    try:
        with OdsHook().get_conn() as conn:
            return propagate.propagate_to_erp(
                conn, erp_for, as_of=run_as_of(context).date(), run_id=run_id, config=load_config()
            ).as_dict()
    finally:
        for client in clients.values():
            client.close()


def build() -> None:
    """Declare the tasks of the hr_sync DAG (call inside a DAG context)."""
    from psa_erp_sync.lineage.refs import erp, ods, psa, workday
    from psa_erp_sync.operators.python import ReportingPythonOperator

    workers = ReportingPythonOperator(
        task_id="sync_workers",
        python_callable=_sync_workers,
        inputs=[workday("/ccx/api/v1/workers")],
        outputs=[ods("hr.worker"), ods("hr.worker_version"), ods("exceptions.item")],
        step="hr_sync:workers",
    )
    rates = ReportingPythonOperator(
        task_id="sync_cost_rates",
        python_callable=_sync_cost_rates,
        inputs=[workday("/ccx/service/customreport2/Worker_Cost_Rates")],
        outputs=[ods("hr.cost_rate"), ods("exceptions.item")],
        step="hr_sync:cost_rates",
    )
    to_psa = ReportingPythonOperator(
        task_id="propagate_to_psa",
        python_callable=_propagate_to_psa,
        inputs=[ods("hr.worker"), ods("hr.cost_rate"), psa("/v2/users")],
        outputs=[psa("/v2/users"), ods("hr.worker"), ods("exceptions.item")],
        step="hr_sync:psa_users",
    )
    to_erp = ReportingPythonOperator(
        task_id="propagate_to_erp",
        python_callable=_propagate_to_erp,
        inputs=[ods("hr.worker")],
        outputs=[erp("employee"), ods("hr.worker"), ods("exceptions.item")],
        step="hr_sync:erp_employees",
    )
    workers >> rates >> to_psa >> to_erp
