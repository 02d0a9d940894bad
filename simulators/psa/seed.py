"""``POST /admin/seed`` for the PSA: bulk upsert by id through COPY into a temp table.

Each list in the body is copied into a temporary table, then merged with one
``INSERT ... ON CONFLICT (id) DO UPDATE``. Re-sending a chunk is idempotent: a row whose seeded
columns did not change keeps its ``updated_at``; a changed row gets the seeded ``updated_at``
or, when the seed gives none, the time of the seed. Within one chunk the last row of an id wins.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

# (column, SQL type, default SQL when the seed row leaves it out or null)
Column = tuple[str, str, str | None]

_TS: list[Column] = [("created_at", "timestamptz", None), ("updated_at", "timestamptz", None)]

TABLES: dict[str, list[Column]] = {
    "clients": [
        ("id", "bigint", None),
        ("name", "text", None),
        ("is_active", "boolean", "true"),
        ("currency", "text", "'USD'"),
        ("address", "text", None),
    ],
    "users": [
        ("id", "bigint", None),
        ("first_name", "text", None),
        ("last_name", "text", None),
        ("email", "text", None),
        ("is_active", "boolean", "true"),
        ("is_contractor", "boolean", "false"),
        ("weekly_capacity", "integer", "126000"),
        ("default_hourly_rate", "numeric", None),
        ("cost_rate", "numeric", None),
        ("legal_entity", "text", None),
        ("practice", "text", None),
        ("timezone", "text", "'Etc/UTC'"),
        ("employee_id", "text", None),
    ],
    "tasks": [
        ("id", "bigint", None),
        ("name", "text", None),
        ("billable_by_default", "boolean", "true"),
        ("default_hourly_rate", "numeric", None),
        ("is_default", "boolean", "false"),
        ("is_active", "boolean", "true"),
    ],
    "projects": [
        ("id", "bigint", None),
        ("client_id", "bigint", None),
        ("name", "text", None),
        ("code", "text", None),
        ("is_active", "boolean", "true"),
        ("is_billable", "boolean", "true"),
        ("is_fixed_fee", "boolean", "false"),
        ("bill_by", "text", "'Project'"),
        ("budget", "numeric", None),
        ("budget_by", "text", "'none'"),
        ("cost_budget", "numeric", None),
        ("fee", "numeric", None),
        ("hourly_rate", "numeric", None),
        ("starts_on", "date", None),
        ("ends_on", "date", None),
        ("notes", "text", None),
        ("billing_type", "text", None),
        ("legal_entity", "text", None),
        ("currency", "text", None),
        ("practice", "text", None),
    ],
    "user_assignments": [
        ("id", "bigint", None),
        ("project_id", "bigint", None),
        ("user_id", "bigint", None),
        ("is_active", "boolean", "true"),
        ("is_project_manager", "boolean", "false"),
        ("hourly_rate", "numeric", None),
        ("budget", "numeric", None),
    ],
    "task_assignments": [
        ("id", "bigint", None),
        ("project_id", "bigint", None),
        ("task_id", "bigint", None),
        ("is_active", "boolean", "true"),
        ("billable", "boolean", "true"),
        ("hourly_rate", "numeric", None),
        ("budget", "numeric", None),
    ],
    "expense_categories": [
        ("id", "bigint", None),
        ("name", "text", None),
        ("unit_name", "text", None),
        ("unit_price", "numeric", None),
        ("is_active", "boolean", "true"),
    ],
    "time_entries": [
        ("id", "bigint", None),
        ("spent_date", "date", None),
        ("user_id", "bigint", None),
        ("project_id", "bigint", None),
        ("task_id", "bigint", None),
        ("hours", "numeric", "0"),
        ("notes", "text", None),
        ("billable", "boolean", "true"),
        ("billable_rate", "numeric", None),
        ("cost_rate", "numeric", None),
        ("is_closed", "boolean", "false"),
        ("is_locked", "boolean", "false"),
        ("locked_reason", "text", None),
        ("is_billed", "boolean", "false"),
        ("invoice_id", "bigint", None),
        ("invoice_number", "text", None),
        ("external_reference", "jsonb", None),
        ("started_time", "text", None),
        ("ended_time", "text", None),
    ],
    "expenses": [
        ("id", "bigint", None),
        ("spent_date", "date", None),
        ("user_id", "bigint", None),
        ("project_id", "bigint", None),
        ("expense_category_id", "bigint", None),
        ("total_cost", "numeric", "0"),
        ("units", "numeric", None),
        ("notes", "text", None),
        ("billable", "boolean", "true"),
        ("is_closed", "boolean", "false"),
        ("is_locked", "boolean", "false"),
        ("locked_reason", "text", None),
        ("is_billed", "boolean", "false"),
        ("invoice_id", "bigint", None),
        ("invoice_number", "text", None),
    ],
    "milestones": [
        ("id", "bigint", None),
        ("project_id", "bigint", None),
        ("name", "text", None),
        ("due_date", "date", None),
        ("amount", "numeric", None),
        ("status", "text", "'planned'"),
        ("completed_at", "timestamptz", None),
    ],
    "schedule": [
        ("id", "bigint", None),
        ("user_id", "bigint", None),
        ("project_id", "bigint", None),
        ("week_start", "date", None),
        ("hours", "numeric", "0"),
    ],
}


class SeedError(ValueError):
    """A seed body that cannot be loaded (unknown list, unknown column, missing id)."""


def _external_reference(value: Any) -> str | None:
    """Harvest's external_reference is an object; a bare string seeds its ``id``."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"id": value, "group_id": None, "account_id": None, "permalink": None, "service": "sim"}
        value["service_icon_url"] = None
    if not isinstance(value, dict):
        raise SeedError("external_reference must be a string, an object or null")
    return json.dumps(value)


def _cell(column: str, value: Any) -> Any:
    if column == "external_reference":
        return _external_reference(value)
    if isinstance(value, (dict, list)):
        raise SeedError(f"column {column} takes a scalar, not {type(value).__name__}")
    return value


def upsert(conn: psycopg.Connection, table: str, rows: list[dict[str, Any]]) -> int:
    """Merge ``rows`` into ``table``; returns the number of rows sent."""
    if not rows:
        return 0
    spec = TABLES[table] + _TS
    names = [c[0] for c in spec]
    known = set(names)
    unknown: set[str] = set().union(*(r.keys() for r in rows)) - known
    if unknown:
        raise SeedError(f"{table}: unknown columns {sorted(unknown)}")
    tmp = f"_seed_{table}"
    conn.execute(f"DROP TABLE IF EXISTS {tmp}")
    conn.execute(
        f"CREATE TEMP TABLE {tmp} (_ord bigserial, "
        + ", ".join(f"{n} {t}" for n, t, _ in spec)
        + ") ON COMMIT DROP"
    )
    with conn.cursor() as cur, cur.copy(f"COPY {tmp} ({', '.join(names)}) FROM STDIN") as copy:
        for row in rows:
            if row.get("id") is None:
                raise SeedError(f"{table}: every row needs an id")
            copy.write_row([_cell(n, row.get(n)) for n in names])
    data_cols = [n for n, _, _ in spec if n not in ("id", "created_at", "updated_at")]
    select = ["s.id"] + [f"coalesce(s.{n}, {d})" if d else f"s.{n}" for n, _, d in spec if n in data_cols]
    sets = ", ".join(f"{n} = EXCLUDED.{n}" for n in data_cols)
    changed = f"ROW({', '.join('t.' + n for n in data_cols)}) IS DISTINCT FROM ROW({', '.join('EXCLUDED.' + n for n in data_cols)})"
    conn.execute(
        f"""
        INSERT INTO {table} AS t (id, {", ".join(data_cols)}, created_at, updated_at)
        SELECT {", ".join(select)}, coalesce(s.created_at, now()), coalesce(s.updated_at, now())
          FROM (SELECT DISTINCT ON (id) * FROM {tmp} ORDER BY id, _ord DESC) s
        ON CONFLICT (id) DO UPDATE SET {sets},
            created_at = CASE WHEN EXCLUDED.created_at <> now() THEN EXCLUDED.created_at ELSE t.created_at END,
            updated_at = CASE WHEN EXCLUDED.updated_at <> now() THEN EXCLUDED.updated_at
                              WHEN {changed} THEN now() ELSE t.updated_at END"""
    )
    conn.execute(f"DROP TABLE {tmp}")
    return len(rows)


def seed(conn: psycopg.Connection, body: dict[str, Any]) -> dict[str, int]:
    unknown = set(body) - set(TABLES)
    if unknown:
        raise SeedError(f"unknown seed lists {sorted(unknown)}; known: {sorted(TABLES)}")
    counts: dict[str, int] = {}
    for table in TABLES:
        rows = body.get(table)
        if rows is None:
            continue
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise SeedError(f"{table} must be a list of objects")
        counts[table] = upsert(conn, table, rows)
    return counts
