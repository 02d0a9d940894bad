"""Airflow Assets the DAGs publish and consume: one place for their names and URIs.

Producers add the asset to a task's ``outlets``; consumers schedule on it. The URIs use the
project's own scheme, so Airflow treats them as opaque identifiers (no provider validation).

- ``POSTING``: the ERP holds a new set of posted time and expenses (``time_expense_posting``).
- ``MASTER_DATA``: customers, legal entities, periods or jobs changed (``master_data_sync``).
- ``PROJECT_DATA``: projects, resource plans, milestones or contract values changed (``project_setup``).
- ``FORECAST``: a new revenue forecast snapshot was written (``revenue_forecast_refresh``).
"""

from __future__ import annotations

from airflow.sdk import Asset

POSTING = Asset(name="ods_ledger_posting", uri="psa-erp-sync://ods/ledger/posting", group="psa_erp_sync")
MASTER_DATA = Asset(name="ods_master_data", uri="psa-erp-sync://ods/master", group="psa_erp_sync")
PROJECT_DATA = Asset(name="psa_project_data", uri="psa-erp-sync://psa/projects", group="psa_erp_sync")
FORECAST = Asset(
    name="ods_forecast_snapshot", uri="psa-erp-sync://ods/forecast/snapshot", group="psa_erp_sync"
)
