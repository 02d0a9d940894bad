"""Task wiring per data domain, used by the thin DAG files in ``dags/``.

A flow module is wiring: it declares the tasks of one DAG and their order. A step is an operator of
:mod:`psa_erp_sync.operators` (which reads ids and as-of from its own ``execute(context)``, builds
its hooks and calls domain functions with explicit arguments), or a ``@task`` for an ODS-only step.
No SQL and no business rules here (``tests/test_layers.py``); return values stay XCom-sized.
``time_expense`` and ``forecast`` are shaped so; the other flows still wrap small functions of their own in
``ReportingPythonOperator`` (calls into domain code, no SQL), to become operators likewise.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "finance-integration",
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


def owner_digest() -> dict[str, Any]:
    """DAG arguments that send each owner of new exception items one digest when a run ends,
    successful or failed (:class:`~psa_erp_sync.notifications.owner_digest.OwnerDigestNotifier`).
    Building it does no I/O."""
    from psa_erp_sync.notifications.owner_digest import OwnerDigestNotifier

    notifier = OwnerDigestNotifier()
    return {"on_success_callback": notifier, "on_failure_callback": notifier}
