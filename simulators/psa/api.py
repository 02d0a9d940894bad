"""The Harvest API v2 routes of the PSA simulator (``/v2/...``) plus the ``/v2/x/...`` extensions."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from psycopg.types.json import Jsonb

from simulators.common.app import db_of
from simulators.psa import render
from simulators.psa.paging import BadRequest, paginate
from simulators.psa.render import Kind
from simulators.psa.state import psa_of
from simulators.psa.webhooks import enqueue

v2 = APIRouter(prefix="/v2", tags=["harvest v2"])


def error(status: int, message: str) -> JSONResponse:
    """Harvest's error body (the spec's ``Error`` schema)."""
    return JSONResponse({"code": status, "message": message}, status_code=status)


def _datetime(name: str, raw: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError as exc:
        raise BadRequest(422, f"{name} must be an ISO 8601 date-time") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _date(name: str, raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequest(422, f"{name} must be a date YYYY-MM-DD") from exc


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError as exc:
        raise BadRequest(422, f"{name} must be an integer") from exc


def _bool(name: str, raw: str) -> bool:
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise BadRequest(422, f"{name} must be true or false")


class Filters:
    """Translate Harvest query filters into SQL conditions on one alias (values as parameters)."""

    def __init__(self, request: Request, alias: str) -> None:
        self.q = request.query_params
        self.a = alias
        self.where: list[str] = []
        self.params: list[Any] = []

    def add(self, sql: str, *values: Any) -> None:
        self.where.append(sql)
        self.params.extend(values)

    def updated_since(self) -> Filters:
        # Inclusive at second granularity: updated_at is rendered to the second, so a client that
        # passes the largest updated_at it has seen re-reads that second rather than missing rows.
        if (raw := self.q.get("updated_since")) is not None:
            self.add(
                f"{self.a}.updated_at >= date_trunc('second', %s::timestamptz)",
                _datetime("updated_since", raw),
            )
        return self

    def date_range(self, column: str, low: str = "from", high: str = "to") -> Filters:
        if (raw := self.q.get(low)) is not None:
            self.add(f"{self.a}.{column} >= %s", _date(low, raw))
        if (raw := self.q.get(high)) is not None:
            self.add(f"{self.a}.{column} <= %s", _date(high, raw))
        return self

    def eq_int(self, *names: str) -> Filters:
        for name in names:
            if (raw := self.q.get(name)) is not None:
                self.add(f"{self.a}.{name} = %s", _int(name, raw))
        return self

    def eq_bool(self, *names: str) -> Filters:
        for name in names:
            if (raw := self.q.get(name)) is not None:
                self.add(f"{self.a}.{name} = %s", _bool(name, raw))
        return self

    def client_via_project(self) -> Filters:
        if (raw := self.q.get("client_id")) is not None:
            self.add(
                f"{self.a}.project_id IN (SELECT id FROM projects WHERE client_id = %s)",
                _int("client_id", raw),
            )
        return self


def _list(request: Request, kind: Kind, filters: Filters) -> Response:
    with db_of(request).tx() as conn:
        return paginate(conn, request, kind, filters.where, filters.params)


def render_one(conn: psycopg.Connection, kind: Kind, record_id: int) -> str | None:
    row = conn.execute(
        f"SELECT x.j::text FROM ({kind.select_json(f'{kind.alias}.id = %s')}) x", (record_id,)
    ).fetchone()
    return None if row is None else str(row[0])


def _one(request: Request, kind: Kind, record_id: int) -> Response:
    with db_of(request).tx() as conn:
        body = render_one(conn, kind, record_id)
    if body is None:
        return error(404, "Not found")
    return Response(content=body, media_type="application/json")


# --- master data -------------------------------------------------------------------------------


@v2.get("/clients")
def list_clients(request: Request) -> Response:
    """Clients. Filters: ``is_active``, ``updated_since``. Paging: ``per_page``, ``cursor``/``page``."""
    return _list(request, render.CLIENT, Filters(request, "c").eq_bool("is_active").updated_since())


@v2.get("/clients/{client_id}")
def get_client(request: Request, client_id: int) -> Response:
    return _one(request, render.CLIENT, client_id)


@v2.get("/projects")
def list_projects(request: Request) -> Response:
    """Projects (with extension fields). Filters: ``is_active``, ``client_id``, ``updated_since``."""
    f = Filters(request, "p").eq_bool("is_active").eq_int("client_id").updated_since()
    return _list(request, render.PROJECT, f)


@v2.get("/projects/{project_id}")
def get_project(request: Request, project_id: int) -> Response:
    return _one(request, render.PROJECT, project_id)


@v2.get("/projects/{project_id}/user_assignments")
def list_project_user_assignments(request: Request, project_id: int) -> Response:
    f = Filters(request, "ua").eq_bool("is_active").updated_since()
    f.add("ua.project_id = %s", project_id)
    return _list(request, render.USER_ASSIGNMENT, f)


@v2.get("/projects/{project_id}/task_assignments")
def list_project_task_assignments(request: Request, project_id: int) -> Response:
    f = Filters(request, "ta").eq_bool("is_active").updated_since()
    f.add("ta.project_id = %s", project_id)
    return _list(request, render.TASK_ASSIGNMENT, f)


@v2.get("/users")
def list_users(request: Request) -> Response:
    """Users (with extension fields). Filters: ``is_active``, ``updated_since``."""
    return _list(request, render.USER, Filters(request, "u").eq_bool("is_active").updated_since())


@v2.get("/users/{user_id}")
def get_user(request: Request, user_id: int) -> Response:
    return _one(request, render.USER, user_id)


@v2.get("/tasks")
def list_tasks(request: Request) -> Response:
    """Tasks. Filters: ``is_active``, ``updated_since``."""
    return _list(request, render.TASK, Filters(request, "t").eq_bool("is_active").updated_since())


@v2.get("/tasks/{task_id}")
def get_task(request: Request, task_id: int) -> Response:
    return _one(request, render.TASK, task_id)


@v2.get("/user_assignments")
def list_user_assignments(request: Request) -> Response:
    """User assignments. Filters: ``is_active``, ``project_id``, ``user_id``, ``updated_since``."""
    f = Filters(request, "ua").eq_bool("is_active").eq_int("project_id", "user_id").updated_since()
    return _list(request, render.USER_ASSIGNMENT, f)


@v2.get("/task_assignments")
def list_task_assignments(request: Request) -> Response:
    """Task assignments. Filters: ``is_active``, ``project_id``, ``task_id``, ``updated_since``."""
    f = Filters(request, "ta").eq_bool("is_active").eq_int("project_id", "task_id").updated_since()
    return _list(request, render.TASK_ASSIGNMENT, f)


@v2.get("/expense_categories")
def list_expense_categories(request: Request) -> Response:
    """Expense categories. Filters: ``is_active``, ``updated_since``."""
    return _list(
        request, render.EXPENSE_CATEGORY, Filters(request, "ec").eq_bool("is_active").updated_since()
    )


@v2.get("/expense_categories/{category_id}")
def get_expense_category(request: Request, category_id: int) -> Response:
    return _one(request, render.EXPENSE_CATEGORY, category_id)


# --- time entries ------------------------------------------------------------------------------


def _time_entry_filters(request: Request) -> Filters:
    return (
        Filters(request, "te")
        .updated_since()
        .date_range("spent_date")
        .eq_int("project_id", "user_id", "task_id")
        .eq_bool("is_billed")
        .client_via_project()
    )


@v2.get("/time_entries")
def list_time_entries(request: Request) -> Response:
    """Time entries, ordered by id (keyset). Filters: ``updated_since`` (inclusive, second
    granularity), ``from``/``to`` (on spent_date, inclusive), ``is_billed``, ``project_id``,
    ``user_id``, ``client_id``, ``task_id``. Paging: ``per_page`` (1..2000), ``cursor`` or ``page``."""
    return _list(request, render.TIME_ENTRY, _time_entry_filters(request))


@v2.get("/time_entries/{entry_id}")
def get_time_entry(request: Request, entry_id: int) -> Response:
    return _one(request, render.TIME_ENTRY, entry_id)


def _money(name: str, value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadRequest(422, f"{name} must be a number")
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise BadRequest(422, f"{name} must be a number") from exc


# Columns a client may set, with a converter from JSON; shared by v2 and admin mutations.
TIME_ENTRY_FIELDS: dict[str, Any] = {
    "spent_date": lambda v: _date("spent_date", str(v)),
    "user_id": lambda v: _int("user_id", str(v)),
    "project_id": lambda v: _int("project_id", str(v)),
    "task_id": lambda v: _int("task_id", str(v)),
    "hours": lambda v: _money("hours", v),
    "notes": lambda v: None if v is None else str(v),
    "started_time": lambda v: None if v is None else str(v),
    "ended_time": lambda v: None if v is None else str(v),
    "external_reference": lambda v: None if v is None else Jsonb(v),
    "billable": lambda v: _bool("billable", str(v)),
    "billable_rate": lambda v: _money("billable_rate", v),
    "cost_rate": lambda v: _money("cost_rate", v),
    "is_billed": lambda v: _bool("is_billed", str(v)),
    "is_locked": lambda v: _bool("is_locked", str(v)),
    "locked_reason": lambda v: None if v is None else str(v),
    "invoice_id": lambda v: None if v is None else _int("invoice_id", str(v)),
    "invoice_number": lambda v: None if v is None else str(v),
}
PUBLIC_TIME_ENTRY_FIELDS = (
    "spent_date",
    "user_id",
    "project_id",
    "task_id",
    "hours",
    "notes",
    "started_time",
    "ended_time",
    "external_reference",
)

EXPENSE_FIELDS: dict[str, Any] = {
    "spent_date": TIME_ENTRY_FIELDS["spent_date"],
    "user_id": TIME_ENTRY_FIELDS["user_id"],
    "project_id": TIME_ENTRY_FIELDS["project_id"],
    "expense_category_id": lambda v: _int("expense_category_id", str(v)),
    "total_cost": lambda v: _money("total_cost", v),
    "units": lambda v: _money("units", v),
    "notes": TIME_ENTRY_FIELDS["notes"],
    "billable": TIME_ENTRY_FIELDS["billable"],
    "is_billed": TIME_ENTRY_FIELDS["is_billed"],
    "is_locked": TIME_ENTRY_FIELDS["is_locked"],
    "locked_reason": TIME_ENTRY_FIELDS["locked_reason"],
    "invoice_id": TIME_ENTRY_FIELDS["invoice_id"],
    "invoice_number": TIME_ENTRY_FIELDS["invoice_number"],
}


def changes_of(body: Any, allowed: dict[str, Any], names: tuple[str, ...] | None = None) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(422, "body must be a JSON object")
    permitted = names or tuple(allowed)
    unknown = set(body) - set(permitted)
    if unknown:
        raise BadRequest(422, f"unknown or read-only fields: {sorted(unknown)}")
    return {k: allowed[k](v) for k, v in body.items()}


def update_row(conn: psycopg.Connection, table: str, record_id: int, changes: dict[str, Any]) -> bool:
    """Apply ``changes`` (whitelisted column names) and bump ``updated_at``; False if no such row."""
    sets = "".join(f"{col} = %s, " for col in changes)
    cur = conn.execute(
        f"UPDATE {table} SET {sets}updated_at = clock_timestamp() WHERE id = %s",
        [*changes.values(), record_id],
    )
    return cur.rowcount == 1


async def _json_body(request: Request) -> Any:
    import json

    try:
        return json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise BadRequest(400, "body is not valid JSON") from exc


@v2.post("/time_entries", status_code=201)
async def create_time_entry(request: Request) -> Response:
    """Create a time entry (duration style). Required: ``project_id``, ``task_id``, ``spent_date``.
    Rates come from the assignments, project, task and user as Harvest derives them."""
    from starlette.concurrency import run_in_threadpool

    body = await _json_body(request)
    changes = changes_of(body, TIME_ENTRY_FIELDS, PUBLIC_TIME_ENTRY_FIELDS)
    missing = {"project_id", "task_id", "spent_date"} - set(changes)
    if missing:
        return error(422, f"missing required fields: {sorted(missing)}")
    return await run_in_threadpool(_create_time_entry, request, changes)


def _create_time_entry(request: Request, changes: dict[str, Any]) -> Response:
    with db_of(request).tx() as conn:
        row = conn.execute(
            """
            WITH src AS (SELECT %s::bigint AS project_id, %s::bigint AS task_id,
                                coalesce(%s::bigint, (SELECT min(id) FROM users WHERE is_active)) AS user_id)
            INSERT INTO time_entries (id, spent_date, user_id, project_id, task_id, hours, notes,
                                      started_time, ended_time, external_reference,
                                      billable, billable_rate, cost_rate)
            SELECT nextval('time_entries_new_id_seq'), %s, src.user_id, src.project_id, src.task_id,
                   coalesce(%s::numeric, 0), %s, %s, %s, %s,
                   coalesce(ta.billable, t.billable_by_default, TRUE) AND coalesce(p.is_billable, TRUE),
                   coalesce(ua.hourly_rate, ta.hourly_rate, p.hourly_rate, t.default_hourly_rate,
                            u.default_hourly_rate),
                   u.cost_rate
              FROM src
              LEFT JOIN projects p ON p.id = src.project_id
              LEFT JOIN tasks t ON t.id = src.task_id
              LEFT JOIN users u ON u.id = src.user_id
              LEFT JOIN LATERAL (SELECT * FROM user_assignments x WHERE x.project_id = src.project_id
                                  AND x.user_id = src.user_id ORDER BY x.id LIMIT 1) ua ON TRUE
              LEFT JOIN LATERAL (SELECT * FROM task_assignments x WHERE x.project_id = src.project_id
                                  AND x.task_id = src.task_id ORDER BY x.id LIMIT 1) ta ON TRUE
            RETURNING id""",
            (
                changes["project_id"],
                changes["task_id"],
                changes.get("user_id"),
                changes["spent_date"],
                changes.get("hours"),
                changes.get("notes"),
                changes.get("started_time"),
                changes.get("ended_time"),
                changes.get("external_reference"),
            ),
        ).fetchone()
        assert row is not None
        body = render_one(conn, render.TIME_ENTRY, int(row[0]))
    return Response(content=body, media_type="application/json", status_code=201)


def _is_locked(conn: psycopg.Connection, table: str, record_id: int) -> bool | None:
    row = conn.execute(f"SELECT is_locked FROM {table} WHERE id = %s FOR UPDATE", (record_id,)).fetchone()
    return None if row is None else bool(row[0])


@v2.patch("/time_entries/{entry_id}")
async def update_time_entry(request: Request, entry_id: int) -> Response:
    """Update a time entry; a locked (approved or invoiced) entry answers 422."""
    from starlette.concurrency import run_in_threadpool

    changes = changes_of(await _json_body(request), TIME_ENTRY_FIELDS, PUBLIC_TIME_ENTRY_FIELDS)
    return await run_in_threadpool(_update_time_entry, request, entry_id, changes)


def _update_time_entry(request: Request, entry_id: int, changes: dict[str, Any]) -> Response:
    with db_of(request).tx() as conn:
        locked = _is_locked(conn, "time_entries", entry_id)
        if locked is None:
            return error(404, "Not found")
        if locked:
            return error(422, "This time entry is locked and cannot be changed")
        update_row(conn, "time_entries", entry_id, changes)
        enqueue(conn, render.TIME_ENTRY, "time_entry.updated", [entry_id])
        body = render_one(conn, render.TIME_ENTRY, entry_id)
    psa_of(request).dispatcher.wake()
    return Response(content=body, media_type="application/json")


@v2.delete("/time_entries/{entry_id}")
def delete_time_entry(request: Request, entry_id: int) -> Response:
    """Delete a time entry; a locked entry answers 422."""
    with db_of(request).tx() as conn:
        locked = _is_locked(conn, "time_entries", entry_id)
        if locked is None:
            return error(404, "Not found")
        if locked:
            return error(422, "This time entry is locked and cannot be deleted")
        enqueue(conn, render.TIME_ENTRY, "time_entry.deleted", [entry_id])
        conn.execute("DELETE FROM time_entries WHERE id = %s", (entry_id,))
    psa_of(request).dispatcher.wake()
    return Response(status_code=200)


# --- expenses ----------------------------------------------------------------------------------


@v2.get("/expenses")
def list_expenses(request: Request) -> Response:
    """Expenses. Filters: ``updated_since``, ``from``/``to`` (spent_date), ``is_billed``,
    ``project_id``, ``user_id``, ``client_id``."""
    f = (
        Filters(request, "ex")
        .updated_since()
        .date_range("spent_date")
        .eq_int("project_id", "user_id")
        .eq_bool("is_billed")
        .client_via_project()
    )
    return _list(request, render.EXPENSE, f)


@v2.get("/expenses/{expense_id}")
def get_expense(request: Request, expense_id: int) -> Response:
    return _one(request, render.EXPENSE, expense_id)


# --- extensions --------------------------------------------------------------------------------


@v2.get("/x/schedule")
def list_schedule(request: Request) -> Response:
    """Extension: scheduled hours per user, project and week (``week_start`` is a Monday).
    Filters: ``user_id``, ``project_id``, ``from``/``to`` (on week_start), ``updated_since``."""
    f = Filters(request, "s").eq_int("user_id", "project_id").date_range("week_start").updated_since()
    return _list(request, render.SCHEDULE, f)


@v2.get("/x/milestones")
def list_milestones(request: Request) -> Response:
    """Extension: project milestones. Filters: ``project_id``, ``status``, ``updated_since``."""
    f = Filters(request, "m").eq_int("project_id").updated_since()
    if (status := request.query_params.get("status")) is not None:
        f.add("m.status = %s", status)
    return _list(request, render.MILESTONE, f)


@v2.get("/x/milestones/{milestone_id}")
def get_milestone(request: Request, milestone_id: int) -> Response:
    """Extension: one milestone (what a ``milestone.completed`` webhook announces)."""
    return _one(request, render.MILESTONE, milestone_id)


# --- projects and clients (writes) ---------------------------------------------------------------

_BILL_BY = ("Project", "Tasks", "People", "none")
_BUDGET_BY = ("project", "project_cost", "task", "task_fees", "person", "none")
_BILLING_TYPES = ("time_and_materials", "fixed_fee", "milestone", "retainer")


def _text(name: str, limit: int = 255) -> Any:
    def convert(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise BadRequest(422, f"{name} must be a string")
        if len(value) > limit or "\x00" in value:
            raise BadRequest(422, f"{name} is too long or holds a NUL character")
        return value

    return convert


def _choice(name: str, options: tuple[str, ...]) -> Any:
    def convert(value: Any) -> str:
        if value not in options:
            raise BadRequest(422, f"{name} must be one of {list(options)}")
        return str(value)

    return convert


def _code(name: str) -> Any:
    def convert(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.isupper() or len(value) != 3:
            raise BadRequest(422, f"{name} must be an ISO 4217 code")
        return value

    return convert


PROJECT_FIELDS: dict[str, Any] = {
    "client_id": lambda v: _int("client_id", str(v)),
    "name": _text("name"),
    "code": _text("code", 100),
    "is_active": lambda v: _bool("is_active", str(v)),
    "is_billable": lambda v: _bool("is_billable", str(v)),
    "is_fixed_fee": lambda v: _bool("is_fixed_fee", str(v)),
    "bill_by": _choice("bill_by", _BILL_BY),
    "hourly_rate": lambda v: _money("hourly_rate", v),
    "budget": lambda v: _money("budget", v),
    "budget_by": _choice("budget_by", _BUDGET_BY),
    "cost_budget": lambda v: _money("cost_budget", v),
    "fee": lambda v: _money("fee", v),
    "notes": _text("notes", 5000),
    "starts_on": lambda v: None if v is None else _date("starts_on", str(v)),
    "ends_on": lambda v: None if v is None else _date("ends_on", str(v)),
    # Extensions (documented in docs/simulators.md).
    "billing_type": lambda v: None if v is None else _choice("billing_type", _BILLING_TYPES)(v),
    "legal_entity": _text("legal_entity", 50),
    "currency": _code("currency"),
    "practice": _text("practice", 100),
}
CLIENT_FIELDS: dict[str, Any] = {
    "name": _text("name"),
    "is_active": lambda v: _bool("is_active", str(v)),
    "address": _text("address", 1000),
    "currency": _code("currency"),
}


def _client_exists(conn: psycopg.Connection, client_id: int) -> bool:
    return conn.execute("SELECT 1 FROM clients WHERE id = %s", (client_id,)).fetchone() is not None


@v2.post("/projects", status_code=201)
async def create_project(request: Request) -> Response:
    """Create a project. Required (as in Harvest): ``client_id``, ``name``, ``is_billable``,
    ``bill_by``, ``budget_by``. Harvest has no idempotency key: a retried POST creates a second
    project, so callers look a project up by ``code`` before creating it."""
    from starlette.concurrency import run_in_threadpool

    changes = changes_of(await _json_body(request), PROJECT_FIELDS)
    missing = {"client_id", "name", "is_billable", "bill_by", "budget_by"} - set(changes)
    if missing or not changes.get("name"):
        return error(
            422,
            f"missing required fields: {sorted(missing | ({'name'} if not changes.get('name') else set()))}",
        )
    return await run_in_threadpool(_create_project, request, changes)


def _create_project(request: Request, changes: dict[str, Any]) -> Response:
    with db_of(request).tx() as conn:
        if not _client_exists(conn, changes["client_id"]):
            return error(422, "client_id does not name a client")
        cols = list(changes)
        row = conn.execute(
            f"INSERT INTO projects (id, {', '.join(cols)}, created_at, updated_at) "
            f"VALUES (nextval('projects_new_id_seq'), {', '.join(['%s'] * len(cols))}, "
            "clock_timestamp(), clock_timestamp()) RETURNING id",
            list(changes.values()),
        ).fetchone()
        assert row is not None
        body = render_one(conn, render.PROJECT, int(row[0]))
    return Response(content=body, media_type="application/json", status_code=201)


@v2.patch("/projects/{project_id}")
async def update_project(request: Request, project_id: int) -> Response:
    """Update a project's fields (the same fields as create)."""
    from starlette.concurrency import run_in_threadpool

    changes = changes_of(await _json_body(request), PROJECT_FIELDS)
    return await run_in_threadpool(_update_project, request, project_id, changes)


def _update_project(request: Request, project_id: int, changes: dict[str, Any]) -> Response:
    with db_of(request).tx() as conn:
        if "client_id" in changes and not _client_exists(conn, changes["client_id"]):
            return error(422, "client_id does not name a client")
        if not update_row(conn, "projects", project_id, changes):
            return error(404, "Not found")
        body = render_one(conn, render.PROJECT, project_id)
    return Response(content=body, media_type="application/json")


@v2.patch("/clients/{client_id}")
async def update_client(request: Request, client_id: int) -> Response:
    """Update a client: ``name``, ``is_active``, ``address``, ``currency``."""
    from starlette.concurrency import run_in_threadpool

    changes = changes_of(await _json_body(request), CLIENT_FIELDS)
    return await run_in_threadpool(_update_client, request, client_id, changes)


def _update_client(request: Request, client_id: int, changes: dict[str, Any]) -> Response:
    with db_of(request).tx() as conn:
        if not update_row(conn, "clients", client_id, changes):
            return error(404, "Not found")
        body = render_one(conn, render.CLIENT, client_id)
    return Response(content=body, media_type="application/json")


# --- users (writes) ------------------------------------------------------------------------------

USER_FIELDS: dict[str, Any] = {
    "first_name": _text("first_name"),
    "last_name": _text("last_name"),
    "email": _text("email"),
    "timezone": _text("timezone", 64),
    "is_contractor": lambda v: _bool("is_contractor", str(v)),
    "is_active": lambda v: _bool("is_active", str(v)),
    "weekly_capacity": lambda v: _int("weekly_capacity", str(v)),
    "default_hourly_rate": lambda v: _money("default_hourly_rate", v),
    "cost_rate": lambda v: _money("cost_rate", v),
    # Extensions (documented in docs/simulators.md).
    "legal_entity": _text("legal_entity", 50),
    "practice": _text("practice", 100),
    "employee_id": _text("employee_id", 64),
}


@v2.post("/users", status_code=201)
async def create_user(request: Request) -> Response:
    """Create a user. Required (as in Harvest): ``first_name``, ``last_name``, ``email``; an email
    already in use is 422. No idempotency key: callers look a user up (by ``employee_id``) first."""
    from starlette.concurrency import run_in_threadpool

    changes = changes_of(await _json_body(request), USER_FIELDS)
    missing = sorted(k for k in ("first_name", "last_name", "email") if not changes.get(k))
    if missing:
        return error(422, f"missing required fields: {missing}")
    return await run_in_threadpool(_create_user, request, changes)


def _create_user(request: Request, changes: dict[str, Any]) -> Response:
    with db_of(request).tx() as conn:
        if conn.execute("SELECT 1 FROM users WHERE lower(email) = lower(%s)", (changes["email"],)).fetchone():
            return error(422, "Email has already been taken")
        cols = list(changes)
        row = conn.execute(
            f"INSERT INTO users (id, {', '.join(cols)}, created_at, updated_at) "
            f"VALUES (nextval('users_new_id_seq'), {', '.join(['%s'] * len(cols))}, "
            "clock_timestamp(), clock_timestamp()) RETURNING id",
            list(changes.values()),
        ).fetchone()
        assert row is not None
        body = render_one(conn, render.USER, int(row[0]))
    return Response(content=body, media_type="application/json", status_code=201)


@v2.patch("/users/{user_id}")
async def update_user(request: Request, user_id: int) -> Response:
    """Update a user (the same fields as create); ``is_active: false`` archives the user, as in Harvest."""
    from starlette.concurrency import run_in_threadpool

    changes = changes_of(await _json_body(request), USER_FIELDS)
    return await run_in_threadpool(_update_user, request, user_id, changes)


def _update_user(request: Request, user_id: int, changes: dict[str, Any]) -> Response:
    with db_of(request).tx() as conn:
        if not update_row(conn, "users", user_id, changes):
            return error(404, "Not found")
        body = render_one(conn, render.USER, user_id)
    return Response(content=body, media_type="application/json")
