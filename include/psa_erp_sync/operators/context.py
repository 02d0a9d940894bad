"""Reading what a task needs from the Airflow context, the same way in every operator and flow.

An operator reads these in ``execute(context)`` and passes them to domain functions as plain
arguments (ids, as-of); domain code never sees the context.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def run_as_of(context: Any) -> datetime:
    """The instant a run is "as of": its data interval end, else when it was due to run.

    Never the wall clock and never ``logical_date`` (None for manual runs in Airflow 3).
    """
    end = context.get("data_interval_end")
    if end is not None:
        return end.astimezone(UTC)
    dag_run = context["dag_run"]
    run_after = getattr(dag_run, "run_after", None) or dag_run.start_date
    return run_after.astimezone(UTC)


def ids(context: Any) -> tuple[str, str]:
    """(dag_id, run_id) of the running task."""
    return context["dag"].dag_id, context["run_id"]


def is_scheduled(context: Any) -> bool:
    """Was this run started by the schedule (not manually, not by an asset)?"""
    return "scheduled" in str(getattr(context["dag_run"], "run_type", "")).lower()
