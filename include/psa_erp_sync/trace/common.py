"""What the trace's parts share: the cursor type, JSON-plain values, run keys and lineage rows."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg

Cursor = psycopg.Cursor[dict[str, Any]]


def plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def split_run_key(run_key: str) -> dict[str, str]:
    """``{dag_id}/{run_id}/{endpoint}`` (the endpoint starts with ``/``)."""
    head, _, endpoint = run_key.partition("//")
    dag_id, _, run_id = head.partition("/")
    return {"dag_id": dag_id, "run_id": run_id, "endpoint": "/" + endpoint}


def lineage(
    conn: Cursor, *, run_id: str | None, step: str, try_number: int | None = None, dag_id: str | None = None
) -> list[dict[str, Any]]:
    if not run_id:
        return []
    clauses = ["run_id = %s", "step = %s"]
    params: list[Any] = [run_id, step]
    if try_number is not None:
        clauses.append("try_number = %s")
        params.append(try_number)
    if dag_id is not None:
        clauses.append("dag_id = %s")
        params.append(dag_id)
    query = (
        "SELECT dag_id, task_id, try_number, ol_run_id, ol_job_namespace, ol_job_name, started_at"
        " FROM lineage.task_run WHERE {} ORDER BY started_at, try_number"
    )
    rows = conn.execute(query.format(" AND ".join(clauses)), params).fetchall()
    if not rows:  # an event-driven run does every step in one task, recorded as step 'stream'
        params[1] = "stream"
        rows = conn.execute(query.format(" AND ".join(clauses)), params).fetchall()
    return [plain(dict(row)) for row in rows]


def table_exists(conn: Cursor, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (name,)).fetchone()
    return bool(row and row["present"])
