"""Airflow plugin entry point: mounts psa-erp-sync's HTTP apps on the API server.

Only wiring lives here:

- ``/psa-erp-sync``: ``psa_erp_sync.api.exceptions_app`` (exception queue JSON and the exceptions
  console at ``/psa-erp-sync/console``, ``psa_erp_sync.api.console``; Airflow auth, failing closed);
- ``/ingress``: ``psa_erp_sync.api.ingress`` (signed PSA / ERP webhooks into the inbox; the HMAC
  signature is the authentication, OpenAPI at ``/ingress/openapi.json``).

It also registers the custom deadline reference of the close-path Deadline Alerts
(``psa_erp_sync.notifications.deadlines.CloseDeadline``), which the scheduler and API server look
up here when they create a run's deadlines.

The console is linked into the UI by ``external_views``: a navigation entry (Browse menu) and a
tab on every DAG page (Airflow has no per-DAG tabs), each shown in an iframe on the same origin, so
the UI's session cookie authenticates it. ``href`` is relative (no leading slash) so the UI
resolves it against its base URL.

Building the apps does no I/O (the ODS and the webhook secrets are reached per request).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from psa_erp_sync.api import ingress
from psa_erp_sync.api.exceptions_app import create_app
from psa_erp_sync.notifications.deadlines import CloseDeadline


class PsaErpSyncPlugin(AirflowPlugin):
    name = "psa_erp_sync"
    fastapi_apps = [
        {"app": create_app(), "url_prefix": "/psa-erp-sync", "name": "psa-erp-sync"},
        {"app": ingress.create_app(), "url_prefix": "/ingress", "name": "psa-erp-sync-ingress"},
    ]
    deadline_references = [CloseDeadline]
    external_views = [
        {
            "name": "Exceptions console",
            "href": "psa-erp-sync/console/",
            "url_route": "psa-erp-sync-console",
            "destination": "nav",
            "category": "browse",
        },
        {
            "name": "Exceptions",
            "href": "psa-erp-sync/console/",
            "url_route": "psa-erp-sync-dag-exceptions",
            "destination": "dag",
        },
        {
            "name": "Replay dead letters",
            "href": "psa-erp-sync/console/replay",
            "url_route": "psa-erp-sync-replay",
            "destination": "nav",
            "category": "browse",
        },
    ]
