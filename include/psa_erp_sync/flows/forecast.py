"""Revenue forecast refresh: extract plans and pipeline, then refresh, store, publish and chart.

Task graph (built by :func:`build`)::

    extract_psa_plans ──┐
    extract_crm_pipeline ┴─> refresh_forecast  (outlet: the forecast asset)

The extracts are full reads replaced atomically per source, each recording a content hash: the
data versions a snapshot cites. Retrying or clearing any task is safe.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from psa_erp_sync import assets

log = logging.getLogger(__name__)

DAILY_CRON = "30 5 * * *"  # after the overnight posting runs, before the working day


def schedule() -> Any:
    """Run when posting, master data or project data change, and at least daily."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(DAILY_CRON, timezone="UTC"),
        assets=(assets.POSTING | assets.MASTER_DATA | assets.PROJECT_DATA),
    )


START_DATE = datetime(2026, 1, 1)


def _extract(system: str) -> dict[str, Any]:
    from airflow.sdk import get_current_context

    from psa_erp_sync.config import load_config
    from psa_erp_sync.forecast import inputs
    from psa_erp_sync.hooks.ods import OdsHook

    context = get_current_context()
    run_id = context["run_id"]
    with OdsHook().get_conn() as conn:
        if system == "psa":
            from psa_erp_sync.hooks.psa import PsaHook

            with PsaHook().get_client() as client:
                summary = inputs.extract_psa(conn, client, run_id=run_id, config=load_config())
        else:
            from psa_erp_sync.hooks.crm import CrmHook

            with CrmHook().get_client() as client:
                summary = inputs.extract_crm(conn, client, run_id=run_id)
    log.info("extracted %s", {k: v["rows"] for k, v in summary.items()})
    return {k: {"rows": v["rows"], "content_hash": v["content_hash"][:16]} for k, v in summary.items()}


def build() -> None:
    """Declare the tasks of the forecast DAG (call inside a DAG context)."""
    from psa_erp_sync.lineage.refs import crm, ods, psa
    from psa_erp_sync.operators.forecast import ForecastRefreshOperator
    from psa_erp_sync.operators.python import ReportingPythonOperator

    # Projects, people (capacity, cost rates), the resource schedule and milestones.
    psa_plans = ReportingPythonOperator(
        task_id="extract_psa_plans",
        python_callable=_extract,
        op_args=["psa"],
        inputs=[psa("/v2/projects"), psa("/v2/users"), psa("/v2/x/schedule"), psa("/v2/x/milestones")],
        outputs=[
            ods("forecast.src_project"),
            ods("forecast.src_person"),
            ods("forecast.src_schedule"),
            ods("forecast.src_milestone"),
        ],
    )
    # Opportunities (open pipeline, won contract values) and change orders.
    crm_pipeline = ReportingPythonOperator(
        task_id="extract_crm_pipeline",
        python_callable=_extract,
        op_args=["crm"],
        inputs=[crm("/api/v1/opportunities"), crm("/api/v1/change_orders")],
        outputs=[ods("forecast.src_opportunity"), ods("forecast.src_change_order")],
    )
    refresh = ForecastRefreshOperator(task_id="refresh_forecast", outlets=[assets.FORECAST])
    [psa_plans, crm_pipeline] >> refresh
