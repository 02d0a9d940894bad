"""Airflow plugin entry point: mounts psa-erp-sync's HTTP app on the API server.

Only wiring lives here; the app is ``psa_erp_sync.api.exceptions_app``. Building the app does no
I/O (the ODS is reached per request).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from psa_erp_sync.api.exceptions_app import create_app


class PsaErpSyncPlugin(AirflowPlugin):
    name = "psa_erp_sync"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/psa-erp-sync", "name": "psa-erp-sync"}]
