"""Workday HR simulator: the REST workers API, a RaaS custom report of cost rates, OAuth2.

Workday behaviour reproduced (also in docs/simulators.md, "Workday"):

* **OAuth2, refresh-token grant**: ``POST /ccx/oauth2/{tenant}/token`` with a form body
  ``grant_type=refresh_token&refresh_token=...`` and the API client's id and secret as HTTP Basic
  (or ``client_id``/``client_secret`` form fields). Answers ``{access_token, token_type: "Bearer",
  expires_in, refresh_token}``; an unknown refresh token is 400 ``invalid_grant``, a missing client
  401 ``invalid_client``. Access tokens expire after ``token_ttl_seconds``; an expired or unknown
  bearer token is 401 ``invalid_token`` on every API call.
* **Workers**: ``GET /ccx/api/v1/{tenant}/workers?limit=&offset=`` answers ``{total, data}``
  with worker summaries (``id`` = WID, ``descriptor``, ``href``, ``primaryWorkEmail``,
  ``businessTitle``) ordered by WID. ``limit`` defaults to 20 and must be 1..100, ``offset`` >= 0;
  anything else is 400 (Workday refuses, it does not clamp). Future hires (hire date after today)
  and terminated workers are listed too.
* **Worker detail**: ``GET /ccx/api/v1/{tenant}/workers/{id}`` adds ``workerId`` (Employee_ID),
  ``firstName``, ``lastName``, ``hireDate``, ``terminationDate`` (null while employed),
  ``company`` (``{id, descriptor}``: the simulator uses the Company_Reference_ID, our legal entity
  code such as ``LE-US1``, as the id) and ``costCenter`` (``{id, descriptor}`` or null).
* **RaaS**: ``GET /ccx/service/customreport2/{tenant}/{owner}/Worker_Cost_Rates?format=json``
  answers ``{"Report_Entry": [{Employee_ID, Effective_Date, Cost_Rate, Currency}]}``: every
  effective-dated cost rate, amounts as decimal strings. Only ``format=json`` is served.
* **Throttling**: over ``rate_limit_requests`` API calls per ``rate_limit_window_s`` (0 = off) the
  answer is 429 with ``Retry-After``; the common fault API (``/admin/faults``, action
  ``throttle``) injects 429 storms as for the other simulators.

Admin: ``POST /admin/seed`` (``workers``, ``cost_rates``; upsert by Employee_ID and by
(Employee_ID, Effective_Date)), ``PATCH /admin/workers/{employee_id}`` (hire, terminate, move
company or cost centre), ``DELETE /admin/workers/{employee_id}``, ``GET|PUT /admin/config`` (tenant, refresh tokens, token lifetime, rate
limit), ``POST /admin/oauth/expire`` (every issued access token expires now), ``GET /admin/stats``.
``POST /admin/reset`` also restores the default config.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections import deque
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from simulators.common.app import create_app, db_of

SCHEMA_SQL = Path(__file__).with_name("schema.sql").read_text()
MAX_LIMIT = 100
DEFAULT_LIMIT = 20
REPORT = "Worker_Cost_Rates"


class WorkdayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(default="acme", pattern=r"^[A-Za-z0-9_]{1,64}$")
    refresh_tokens: list[str] = Field(default_factory=lambda: ["local-workday-refresh-token"])
    token_ttl_seconds: int = Field(default=3600, ge=1, le=86_400)
    rate_limit_requests: int = Field(default=0, ge=0)  # 0 = no limit
    rate_limit_window_s: float = Field(default=1.0, gt=0)
    retry_after_s: int = Field(default=1, ge=0, le=3600)


class WorkdayState:
    """Config, counters and the sliding-window limiter. Thread-safe: sync handlers run in a pool."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.config = WorkdayConfig()
        self.calls: deque[float] = deque()
        self.stats = {
            "token_grants": 0,
            "token_refusals": 0,
            "api_calls": 0,
            "unauthorized": 0,
            "throttled": 0,
        }

    def reset(self) -> None:
        with self.lock:
            self.config = WorkdayConfig()
            self.calls.clear()
            self.stats = dict.fromkeys(self.stats, 0)

    def count(self, name: str) -> None:
        with self.lock:
            self.stats[name] += 1

    def over_limit(self) -> bool:
        with self.lock:
            limit = self.config.rate_limit_requests
            if not limit:
                return False
            now = time.monotonic()
            while self.calls and self.calls[0] <= now - self.config.rate_limit_window_s:
                self.calls.popleft()
            if len(self.calls) >= limit:
                return True
            self.calls.append(now)
            return False


def _state(request: Request) -> WorkdayState:
    state: WorkdayState = request.app.state.workday
    return state


def _error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


def _invalid(field: str, message: str) -> JSONResponse:
    """Workday's REST validation error shape."""
    return JSONResponse(
        {"error": "invalid request", "errors": [{"error": message, "field": field}]}, status_code=400
    )


def worker_wid(employee_id: str) -> str:
    """A stable WID for a seeded worker that names none (32 hex characters, like Workday's)."""
    return hashlib.md5(f"worker:{employee_id}".encode(), usedforsecurity=False).hexdigest()


# --- OAuth2 --------------------------------------------------------------------------------------

oauth = APIRouter(tags=["oauth2"])


@oauth.post("/ccx/oauth2/{tenant}/token")
async def token(request: Request, tenant: str) -> Response:
    state = _state(request)
    if tenant != state.config.tenant:
        return _error(404, "not_found", "unknown tenant")
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            client_id = None
    if not client_id or not client_secret:
        state.count("token_refusals")
        return _error(401, "invalid_client", "client authentication failed")
    if form.get("grant_type") != "refresh_token":
        state.count("token_refusals")
        return _error(400, "unsupported_grant_type", "only the refresh_token grant is supported")
    refresh = form.get("refresh_token", "")
    if refresh not in state.config.refresh_tokens:
        state.count("token_refusals")
        return _error(400, "invalid_grant", "invalid refresh token")
    access = secrets.token_urlsafe(24)
    ttl = state.config.token_ttl_seconds

    def store() -> None:
        with db_of(request).tx() as conn:
            conn.execute(
                "INSERT INTO access_tokens (token, client_id, expires_at)"
                " VALUES (%s, %s, clock_timestamp() + make_interval(secs => %s))",
                (access, client_id, ttl),
            )

    await run_in_threadpool(store)
    state.count("token_grants")
    return JSONResponse(
        {"access_token": access, "token_type": "Bearer", "expires_in": ttl, "refresh_token": refresh}
    )


def _guard(request: Request, tenant: str) -> Response | None:
    """Tenant, bearer token and rate limit of one API call; None when it may proceed."""
    state = _state(request)
    if tenant != state.config.tenant:
        return _error(404, "not_found", "unknown tenant")
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        state.count("unauthorized")
        return _error(401, "invalid_token", "missing bearer token", {"WWW-Authenticate": "Bearer"})
    with db_of(request).tx() as conn:
        valid = conn.execute(
            "SELECT 1 FROM access_tokens WHERE token = %s AND expires_at > clock_timestamp()",
            (auth[7:].strip(),),
        ).fetchone()
    if valid is None:
        state.count("unauthorized")
        return _error(
            401,
            "invalid_token",
            "access token expired or unknown",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if state.over_limit():
        state.count("throttled")
        retry = str(state.config.retry_after_s)
        return _error(429, "too_many_requests", "rate limit exceeded", {"Retry-After": retry})
    state.count("api_calls")
    return None


# --- REST workers ---------------------------------------------------------------------------------

api = APIRouter(tags=["workday"])

_SUMMARY = """json_build_object('id', w.id, 'descriptor', w.first_name || ' ' || w.last_name,
    'href', %(base)s || w.id, 'primaryWorkEmail', w.email, 'businessTitle', w.business_title)"""
_DETAIL = """json_build_object('id', w.id, 'descriptor', w.first_name || ' ' || w.last_name,
    'href', %(base)s || w.id, 'primaryWorkEmail', w.email, 'businessTitle', w.business_title,
    'workerId', w.employee_id, 'firstName', w.first_name, 'lastName', w.last_name,
    'hireDate', w.hire_date, 'terminationDate', w.termination_date,
    'company', json_build_object('id', w.company, 'descriptor', w.company),
    'costCenter', CASE WHEN w.cost_center IS NULL THEN NULL
                       ELSE json_build_object('id', w.cost_center, 'descriptor', w.cost_center) END)"""


def _int_param(request: Request, name: str, default: int) -> int | str:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        return f"{name} must be an integer"


@api.get("/ccx/api/v1/{tenant}/workers")
def list_workers(request: Request, tenant: str) -> Response:
    """Worker summaries, ``limit`` 1..100 (default 20) from ``offset``; ``{total, data}``."""
    if (refused := _guard(request, tenant)) is not None:
        return refused
    limit = _int_param(request, "limit", DEFAULT_LIMIT)
    offset = _int_param(request, "offset", 0)
    if isinstance(limit, str) or not 1 <= limit <= MAX_LIMIT:
        return _invalid(
            "limit", limit if isinstance(limit, str) else f"limit must be between 1 and {MAX_LIMIT}"
        )
    if isinstance(offset, str) or offset < 0:
        return _invalid("offset", offset if isinstance(offset, str) else "offset must not be negative")
    base = f"{str(request.base_url).rstrip('/')}/ccx/api/v1/{tenant}/workers/"
    with db_of(request).tx() as conn:
        row = conn.execute(
            f"""SELECT (SELECT count(*) FROM workers),
                       coalesce((SELECT json_agg(x.j ORDER BY x.id) FROM (
                           SELECT w.id, {_SUMMARY} AS j FROM workers w ORDER BY w.id LIMIT %(limit)s OFFSET %(offset)s
                       ) x), '[]'::json)::text""",
            {"base": base, "limit": limit, "offset": offset},
        ).fetchone()
    assert row is not None
    return Response(content=f'{{"total": {int(row[0])}, "data": {row[1]}}}', media_type="application/json")


@api.get("/ccx/api/v1/{tenant}/workers/{worker_id}")
def get_worker(request: Request, tenant: str, worker_id: str) -> Response:
    if (refused := _guard(request, tenant)) is not None:
        return refused
    base = f"{str(request.base_url).rstrip('/')}/ccx/api/v1/{tenant}/workers/"
    with db_of(request).tx() as conn:
        row = conn.execute(
            f"SELECT {_DETAIL}::text FROM workers w WHERE w.id = %(id)s", {"base": base, "id": worker_id}
        ).fetchone()
    if row is None:
        return _error(404, "not_found", "no worker with this id")
    return Response(content=str(row[0]), media_type="application/json")


@api.get("/ccx/service/customreport2/{tenant}/{owner}/{report}")
def custom_report(request: Request, tenant: str, owner: str, report: str) -> Response:
    """RaaS: the effective-dated cost rates of every worker, as JSON."""
    if (refused := _guard(request, tenant)) is not None:
        return refused
    if report != REPORT:
        return _error(404, "not_found", f"no report {report} for {owner}")
    if request.query_params.get("format", "").lower() != "json":
        return _invalid("format", "this simulator serves format=json only")
    with db_of(request).tx() as conn:
        row = conn.execute(
            """SELECT coalesce(json_agg(json_build_object('Employee_ID', employee_id,
                   'Effective_Date', effective_date, 'Cost_Rate', cost_rate::text, 'Currency', currency)
                   ORDER BY employee_id, effective_date), '[]'::json)::text FROM cost_rates"""
        ).fetchone()
    assert row is not None
    return Response(content=f'{{"Report_Entry": {row[0]}}}', media_type="application/json")


# --- admin ----------------------------------------------------------------------------------------

admin = APIRouter(prefix="/admin", tags=["admin"])


class SeedWorker(BaseModel):
    model_config = ConfigDict(extra="forbid")

    employee_id: str = Field(min_length=1, max_length=64)
    id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    first_name: str = Field(min_length=1)
    last_name: str = Field(min_length=1)
    email: str | None = None
    business_title: str | None = None
    company: str = Field(min_length=1)
    cost_center: str | None = None
    hire_date: date
    termination_date: date | None = None


class SeedRate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    employee_id: str = Field(min_length=1, max_length=64)
    effective_date: date
    cost_rate: Decimal = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class SeedBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workers: list[SeedWorker] = []
    cost_rates: list[SeedRate] = []


class WorkerChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    company: str | None = None
    cost_center: str | None = None
    hire_date: date | None = None
    termination_date: date | None = None


_WORKER_COLS = (
    "id",
    "employee_id",
    "first_name",
    "last_name",
    "email",
    "business_title",
    "company",
    "cost_center",
    "hire_date",
    "termination_date",
)


@admin.post("/seed")
def seed(request: Request, body: SeedBody) -> dict[str, Any]:
    """Upsert workers by Employee_ID and cost rates by (Employee_ID, Effective_Date)."""
    with db_of(request).tx() as conn, conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO workers ({', '.join(_WORKER_COLS)}) VALUES ({', '.join(['%s'] * len(_WORKER_COLS))})"
            " ON CONFLICT (employee_id) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in _WORKER_COLS[2:])
            + ", updated_at = clock_timestamp()",
            [
                (
                    w.id or worker_wid(w.employee_id),
                    w.employee_id,
                    w.first_name,
                    w.last_name,
                    w.email,
                    w.business_title,
                    w.company,
                    w.cost_center,
                    w.hire_date,
                    w.termination_date,
                )
                for w in body.workers
            ],
        )
        cur.executemany(
            "INSERT INTO cost_rates (employee_id, effective_date, cost_rate, currency) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (employee_id, effective_date) DO UPDATE SET cost_rate = EXCLUDED.cost_rate,"
            " currency = EXCLUDED.currency",
            [(r.employee_id, r.effective_date, r.cost_rate, r.currency) for r in body.cost_rates],
        )
    return {"upserted": {"workers": len(body.workers), "cost_rates": len(body.cost_rates)}}


@admin.patch("/workers/{employee_id}")
def change_worker(request: Request, employee_id: str, change: WorkerChange) -> Response:
    """Hire, terminate (``termination_date``), or move a worker; only the fields sent change."""
    fields = change.model_dump(exclude_unset=True)
    if not fields:
        return _invalid("body", "nothing to change")
    sets = ", ".join(f"{name} = %s" for name in fields)
    with db_of(request).tx() as conn:
        cur = conn.execute(
            f"UPDATE workers SET {sets}, updated_at = clock_timestamp() WHERE employee_id = %s RETURNING id",
            [*fields.values(), employee_id],
        )
        if cur.fetchone() is None:
            return _error(404, "not_found", "no worker with this Employee_ID")
    return JSONResponse({"employee_id": employee_id, "changed": sorted(fields)})


@admin.delete("/workers/{employee_id}")
def delete_worker(request: Request, employee_id: str) -> Response:
    """Remove a worker (a rescinded hire, a data purge) and its cost rates; 404 when unknown."""
    with db_of(request).tx() as conn:
        gone = conn.execute("DELETE FROM workers WHERE employee_id = %s", (employee_id,)).rowcount
        conn.execute("DELETE FROM cost_rates WHERE employee_id = %s", (employee_id,))
    if not gone:
        return _error(404, "not_found", "no worker with this Employee_ID")
    return JSONResponse({"deleted": employee_id})


@admin.get("/config")
def get_config(request: Request) -> dict[str, Any]:
    return _state(request).config.model_dump()


@admin.put("/config")
def put_config(request: Request, config: dict[str, Any]) -> Response:
    state = _state(request)
    try:
        merged = WorkdayConfig.model_validate({**state.config.model_dump(), **config})
    except ValidationError as exc:
        return JSONResponse(
            {"error": "invalid config", "errors": exc.errors(include_url=False)}, status_code=422
        )
    with state.lock:
        state.config = merged
        state.calls.clear()
    return JSONResponse(merged.model_dump())


@admin.post("/oauth/expire")
def expire_tokens(request: Request) -> dict[str, int]:
    """Every access token issued so far expires now (the next API call is 401 until a refresh)."""
    with db_of(request).tx() as conn:
        cur = conn.execute(
            "UPDATE access_tokens SET expires_at = clock_timestamp() WHERE expires_at > clock_timestamp()"
        )
        return {"expired": cur.rowcount}


@admin.get("/stats")
def stats(request: Request) -> dict[str, Any]:
    state = _state(request)
    with db_of(request).tx() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM workers), (SELECT count(*) FROM cost_rates)"
        ).fetchone()
    assert row is not None
    with state.lock:
        return {"workers": int(row[0]), "cost_rates": int(row[1]), **state.stats}


def _on_reset(app: FastAPI) -> None:
    app.state.workday.reset()


def create(dsn: str | None = None) -> FastAPI:
    """Build the Workday simulator app; its state lives in schema ``sim_workday``."""
    app = create_app(
        name="workday",
        title="Workday HR simulator (REST workers, RaaS, OAuth2)",
        schema="sim_workday",
        schema_sql=SCHEMA_SQL,
        description=__doc__ or "",
        dsn=dsn,
        on_reset=_on_reset,
    )
    app.state.workday = WorkdayState()
    app.include_router(oauth)
    app.include_router(api)
    app.include_router(admin)
    return app
