"""ODS retention: one daily task that applies ``config/retention.yaml``
(:mod:`psa_erp_sync.ods.retention`) as of the run's data interval end."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import get_current_context

from psa_erp_sync.flows.context import run_as_of

log = logging.getLogger(__name__)


def _enforce() -> dict[str, Any]:
    from psa_erp_sync.config import load_retention
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.ods import retention

    as_of = run_as_of(get_current_context())
    with OdsHook().get_conn() as conn:
        result = retention.enforce(conn, load_retention(), as_of=as_of)
    log.info(
        "retention as of %s: staged versions dropped %s, webhook events pseudonymised %d,"
        " quarantined bodies dropped %d",
        as_of.isoformat(),
        result.staged_dropped,
        result.events_pseudonymised,
        result.quarantine_bodies_dropped,
    )
    return result.as_dict()


def build() -> None:
    """Declare the retention task (call inside a DAG context)."""
    from psa_erp_sync.lineage.refs import ods
    from psa_erp_sync.operators.python import ReportingPythonOperator

    tables = [ods("staging.raw_record"), ods("inbox.event"), ods("inbox.quarantine")]
    ReportingPythonOperator(
        task_id="enforce_retention",
        python_callable=_enforce,
        step="retention",
        inputs=tables,
        outputs=tables,
    )
