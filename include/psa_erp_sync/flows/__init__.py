"""Task wiring per data domain, used by the thin DAG files in ``dags/``.

A flow module turns domain logic into Airflow tasks: it reads the run's context, builds clients
through hooks, calls the domain functions and returns small summaries (XCom-sized).
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
