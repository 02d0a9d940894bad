"""Record the OpenLineage run id of each of our task tries in the ODS (``lineage.task_run``).

The provider derives a task instance's run id deterministically (``lineage_run_id`` macro); we store
it next to the step the task performed so that ``python -m psa_erp_sync.trace`` can print, for one
record, the lineage run of every step that touched it. Recording never fails a task: lineage is
observability, the posting is the product.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

log = logging.getLogger(__name__)


def ol_run_id(context: Any) -> str | None:
    """The OpenLineage run id of this task try, as the provider's listener computes it."""
    try:
        from airflow.providers.openlineage.plugins.macros import lineage_run_id

        return str(lineage_run_id(context["ti"]))
    except Exception:
        log.warning("could not compute the OpenLineage run id of this task", exc_info=True)
        return None


def ol_job_namespace() -> str | None:
    try:
        from airflow.providers.openlineage.plugins.macros import lineage_job_namespace

        return str(lineage_job_namespace())
    except Exception:
        return None


def record(dsn: str, context: Any, step: str) -> str | None:
    """Store (dag, run, task, try) -> OpenLineage run id and step on its own connection; idempotent
    per try. Returns the run id."""
    ti = context.get("ti") if hasattr(context, "get") else None
    if ti is None:  # called outside a task run (e.g. a unit test calling execute directly)
        return None
    dag_id, task_id = ti.dag_id, ti.task_id
    map_index = getattr(ti, "map_index", None)
    try_number = int(getattr(ti, "try_number", None) or 1)
    run = ol_run_id(context)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                """
                INSERT INTO lineage.task_run (dag_id, run_id, task_id, map_index, try_number, step,
                                              ol_run_id, ol_job_namespace, ol_job_name)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (dag_id, run_id, task_id, map_index, try_number)
                DO UPDATE SET step = EXCLUDED.step, ol_run_id = EXCLUDED.ol_run_id
                """,
                (
                    dag_id,
                    context["run_id"],
                    task_id,
                    -1 if map_index is None else int(map_index),
                    try_number,
                    step,
                    run,
                    ol_job_namespace(),
                    f"{dag_id}.{task_id}",
                ),
            )
    except psycopg.Error:
        log.warning("could not record the lineage run of %s.%s", dag_id, task_id, exc_info=True)
    return run
