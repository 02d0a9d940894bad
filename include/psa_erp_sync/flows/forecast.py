"""Revenue forecast refresh: extract plans and pipeline, then refresh, store, publish and chart.

Task graph (built by :func:`build`)::

    extract_psa_plans ──┐
    extract_crm_pipeline ┴─> refresh_forecast  (outlet: the forecast asset)

The extracts are full reads replaced atomically per source, each recording a content hash: the
data versions a snapshot cites. Retrying or clearing any task is safe.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psa_erp_sync import assets

DAILY_CRON = "30 5 * * *"  # after the overnight posting runs, before the working day


def schedule() -> Any:
    """Run when posting, master data or project data change, and at least daily."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(DAILY_CRON, timezone="UTC"),
        assets=(assets.POSTING | assets.MASTER_DATA | assets.PROJECT_DATA),
    )


START_DATE = datetime(2026, 1, 1)


def build() -> None:
    """Declare the tasks of the forecast DAG (call inside a DAG context)."""
    from psa_erp_sync.operators.forecast import ForecastRefreshOperator, ForecastSourceExtractOperator

    # Projects, people (capacity, cost rates), the resource schedule and milestones.
    psa_plans = ForecastSourceExtractOperator(task_id="extract_psa_plans", system="psa")
    # Opportunities (open pipeline, won contract values) and change orders.
    crm_pipeline = ForecastSourceExtractOperator(task_id="extract_crm_pipeline", system="crm")
    refresh = ForecastRefreshOperator(task_id="refresh_forecast", outlets=[assets.FORECAST])
    [psa_plans, crm_pipeline] >> refresh
