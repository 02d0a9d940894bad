"""SAP S/4HANA simulator: OData V2 under ``/sap/opu/odata/sap/{service}/`` (see ``docs/simulators.md``).

- Authentication as a Communication Arrangement allows: ``Authorization: Basic`` (communication
  user) or ``Bearer`` (OAuth 2.0 client credentials); any non-empty credentials, else 401.
- CSRF: a GET with ``X-CSRF-Token: Fetch`` answers a token and session cookies; a write without a
  live token of its session answers 403 ``X-CSRF-Token: Required`` (``text/plain`` body
  ``CSRF token validation failed``). Tokens expire (``csrf_ttl_s``; ``POST /admin/csrf/expire``).
- ``$batch``: multipart/mixed; each changeset runs in its own transaction (atomic), retrievals on
  their own; the answer is 202 with one part per request or changeset.
- Load: every OData request is counted while it is in flight (``GET /admin/stats`` ``load``:
  ``in_flight``, ``max_in_flight``, ``requests``; ``DELETE /admin/load`` starts a new maximum), after
  an optional ``service_time_ms`` (``PUT /admin/config``): how many requests the system's clients
  sent at once, the measure of an account's concurrency budget.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from simulators.common.app import create_app, db_of
from simulators.sap import odata, service
from simulators.sap.odata import ODataError
from simulators.sap.service import Context, Reply

SCHEMA_SQL = (Path(__file__).parent / "schema.sql").read_text()
ROOT = "/sap/opu/odata/sap"
SESSION_COOKIE = "SAP_SESSIONID_S4H_100"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "MERGE", "DELETE"})


@dataclass
class SapConfig:
    page_size: int = 100
    csrf_ttl_s: int = 1800
    fail_batch_changeset: int = 0  # 1-based changeset of every $batch that fails after running; 0 = off
    service_time_ms: int = 0  # every OData request takes at least this long (counted in flight)


@dataclass
class Load:
    """OData requests in flight (the event loop serialises updates); ``max_in_flight`` since the
    last ``DELETE /admin/load``."""

    in_flight: int = 0
    max_in_flight: int = 0
    requests: int = 0

    def reset(self) -> None:
        self.max_in_flight = self.in_flight  # requests still in flight stay counted
        self.requests = 0


@dataclass
class SapState:
    config: SapConfig = field(default_factory=SapConfig)
    sessions: dict[str, tuple[str, float]] = field(default_factory=dict)  # session -> (token, expiry)
    counters: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    load: Load = field(default_factory=Load)

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def reset(self) -> None:
        with self.lock:
            self.config = SapConfig()
            self.sessions.clear()
            self.counters.clear()
            self.load.reset()


class LoadMiddleware:
    """Counts OData requests in flight (outside the fault middleware, so an injected latency is
    in flight too) and holds each for the configured ``service_time_ms``."""

    def __init__(self, app: ASGIApp, state: SapState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(ROOT):
            await self.app(scope, receive, send)
            return
        load = self.state.load
        load.requests += 1
        load.in_flight += 1
        load.max_in_flight = max(load.max_in_flight, load.in_flight)
        try:
            if self.state.config.service_time_ms:
                await asyncio.sleep(self.state.config.service_time_ms / 1000)
            await self.app(scope, receive, send)
        finally:
            load.in_flight -= 1


def _state(request: Request) -> SapState:
    state: SapState = request.app.state.sap
    return state


async def raw_body(request: Request) -> bytes:
    return await request.body()


RawBody = Annotated[bytes, Depends(raw_body)]
api = APIRouter(tags=["sap"])
admin = APIRouter(prefix="/admin", tags=["admin"])


# --------------------------------------------------------------------------- auth and CSRF


def _authenticated(request: Request) -> bool:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return bool(credentials.strip())
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except ValueError:
            return False
        return bool(user and password)
    return False


def _fetch_token(state: SapState, request: Request, response_headers: dict[str, str]) -> list[str]:
    """Token of the caller's live session, or a new session; returns the Set-Cookie values."""
    now = time.monotonic()
    session = request.cookies.get(SESSION_COOKIE, "")
    with state.lock:
        current = state.sessions.get(session)
        if current is not None and current[1] > now:
            response_headers["x-csrf-token"] = current[0]
            return []
        session = secrets.token_urlsafe(24)
        token = base64.b64encode(secrets.token_bytes(18)).decode()
        state.sessions[session] = (token, now + state.config.csrf_ttl_s)
        response_headers["x-csrf-token"] = token
    state.count("csrf_tokens_issued")
    return [f"{SESSION_COOKIE}={session}; path=/; HttpOnly", "sap-usercontext=sap-client=100; path=/"]


def _token_valid(state: SapState, request: Request) -> bool:
    token = request.headers.get("x-csrf-token", "")
    with state.lock:
        current = state.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
    return (
        current is not None
        and bool(token)
        and secrets.compare_digest(current[0], token)
        and (current[1] > time.monotonic())
    )


# --------------------------------------------------------------------------- OData requests


def _context(request: Request) -> Context:
    return Context(
        root=str(request.base_url).rstrip("/") + ROOT + "/", page_size=_state(request).config.page_size
    )


def _json_response(reply: Reply, extra: dict[str, str], cookies: list[str]) -> Response:
    response = (
        JSONResponse(reply.body, reply.status)
        if reply.body is not None
        else Response(status_code=reply.status)
    )
    for name, value in {**reply.headers, **extra}.items():
        response.headers[name] = value
    for cookie in cookies:
        response.headers.append("set-cookie", cookie)
    response.headers["dataserviceversion"] = "2.0"
    return response


def _error(exc: ODataError, svc: str) -> Reply:
    return Reply(exc.status, exc.body(svc))


METHODS = ["GET", "POST", "PUT", "PATCH", "MERGE", "DELETE"]


@api.api_route(f"{ROOT}/{{svc}}", methods=METHODS)
def service_root(request: Request, svc: str, body: RawBody) -> Response:
    return _handle(request, svc, "", body)


@api.api_route(f"{ROOT}/{{svc}}/{{resource:path}}", methods=METHODS)
def odata_request(request: Request, svc: str, resource: str, body: RawBody) -> Response:
    return _handle(request, svc, resource, body)


def _handle(request: Request, svc: str, resource: str, body: bytes) -> Response:
    state = _state(request)
    if not _authenticated(request):
        return Response(
            "Logon failed",
            401,
            media_type="text/plain",
            headers={"www-authenticate": 'Basic realm="SAP NetWeaver Application Server [S4H/100]"'},
        )
    method = request.method.upper()
    extra: dict[str, str] = {}
    cookies: list[str] = []
    if method == "GET" and request.headers.get("x-csrf-token", "").lower() == "fetch":
        cookies = _fetch_token(state, request, extra)
    elif method in WRITE_METHODS and not _token_valid(state, request):
        state.count("csrf_refused")
        return Response(
            "CSRF token validation failed", 403, media_type="text/plain", headers={"x-csrf-token": "Required"}
        )
    if resource == "$batch":
        if method != "POST":
            return _json_response(
                _error(ODataError(405, "/IWBEP/CM_MGW_RT/021", "$batch takes POST"), svc), {}, []
            )
        return _batch(request, svc, body)
    try:
        with db_of(request).tx() as conn:
            reply = service.dispatch(
                conn, _context(request), svc, method, resource, dict(request.query_params), body
            )
    except ODataError as exc:
        reply = _error(exc, svc)
    return _json_response(reply, extra, cookies)


def _inner(request: Request, svc: str, inner: odata.InnerRequest) -> tuple[str, dict[str, str]]:
    split = urlsplit(inner.url)
    path = split.path
    prefix = f"{ROOT}/{svc}/"
    if path.startswith(prefix):
        path = path[len(prefix) :]
    return path.lstrip("/"), dict(parse_qsl(split.query, keep_blank_values=True))


def _reply_part(reply: Reply) -> bytes:
    payload = json.dumps(reply.body).encode() if reply.body is not None else b""
    return odata.http_part(reply.status, {**reply.headers, "dataserviceversion": "2.0"}, payload)


def _batch(request: Request, svc: str, body: bytes) -> Response:
    state = _state(request)
    ctx = _context(request)
    db = db_of(request)
    try:
        parts = odata.split_multipart(body, odata.boundary_of(request.headers.get("content-type", "")))
    except ODataError as exc:
        return _json_response(_error(exc, svc), {}, [])
    state.count("batches")
    out: list[tuple[str, bytes]] = []
    changeset = 0
    for part in parts:
        content_type = part.headers.get("content-type", "")
        try:
            if content_type.lower().startswith("multipart/mixed"):
                changeset += 1
                cs_boundary = odata.boundary_of(content_type)
                inners = [odata.parse_inner(p) for p in odata.split_multipart(part.body, cs_boundary)]
                if any(inner.method not in WRITE_METHODS for inner in inners):
                    raise odata.bad_request(
                        "A changeset holds only changing requests", "/IWBEP/CM_MGW_RT/056"
                    )
                with db.tx() as conn:
                    replies = []
                    for inner in inners:
                        path, query = _inner(request, svc, inner)
                        replies.append(
                            service.dispatch(conn, ctx, svc, inner.method, path, query, inner.body)
                        )
                    if changeset == state.config.fail_batch_changeset:
                        raise ODataError(
                            500, "/IWBEP/CM_MGW_RT/004", f"Injected failure of changeset {changeset}"
                        )
                response_boundary = f"changesetresponse_{uuid.uuid4()}"
                out.append(
                    (
                        f"multipart/mixed; boundary={response_boundary}",
                        odata.multipart(response_boundary, [("", _reply_part(r)) for r in replies]),
                    )
                )
                continue
            inner = odata.parse_inner(part)
            if inner.method != "GET":
                raise odata.bad_request("A change outside a changeset is not allowed", "/IWBEP/CM_MGW_RT/056")
            path, query = _inner(request, svc, inner)
            with db.tx() as conn:
                reply = service.dispatch(conn, ctx, svc, "GET", path, query, b"")
        except ODataError as exc:
            if content_type.lower().startswith("multipart/mixed"):
                state.count("changesets_failed")
            reply = _error(exc, svc)
        out.append(("", _reply_part(reply)))
    boundary = f"batchresponse_{uuid.uuid4()}"
    return Response(
        odata.multipart(boundary, out),
        202,
        media_type=f"multipart/mixed; boundary={boundary}",
        headers={"dataserviceversion": "2.0"},
    )


# --------------------------------------------------------------------------- admin


class ConfigUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    page_size: int | None = Field(default=None, ge=1, le=5000)
    csrf_ttl_s: int | None = Field(default=None, ge=0, le=86_400)
    fail_batch_changeset: int | None = Field(default=None, ge=0, le=1000)
    service_time_ms: int | None = Field(default=None, ge=0, le=60_000)


class CompanyCodeSeed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    company_code: str = Field(pattern=r"^[A-Z0-9]{4}$")
    name: str = ""
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class WorkAgreementSeed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: str = Field(min_length=1, max_length=20)
    company_code: str
    person_work_agreement: str = Field(pattern=r"^\d{8}$")


class PeriodSeed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    company_code: str
    fiscal_year: int = Field(ge=1990, le=2100)
    period: int = Field(ge=1, le=12)
    open: bool = True


class Seed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    company_codes: list[CompanyCodeSeed] = []
    work_agreements: list[WorkAgreementSeed] = []
    posting_periods: list[PeriodSeed] = []


def _upsert_periods(conn: Any, periods: list[PeriodSeed]) -> None:
    for p in periods:
        start = date(p.fiscal_year, p.period, 1)
        end = date(p.fiscal_year + (p.period == 12), p.period % 12 + 1, 1)
        conn.execute(
            """
            INSERT INTO posting_period (company_code, fiscal_year, period, start_date, end_date, is_open)
            VALUES (%s, %s, %s, %s, %s::date - 1, %s)
            ON CONFLICT (company_code, fiscal_year, period) DO UPDATE SET is_open = EXCLUDED.is_open
            """,
            (p.company_code, p.fiscal_year, p.period, start, end, p.open),
        )


@admin.get("/config")
def get_config(request: Request) -> dict[str, Any]:
    return asdict(_state(request).config)


@admin.put("/config")
def put_config(request: Request, update: ConfigUpdate) -> dict[str, Any]:
    config = _state(request).config
    for name, value in update.model_dump(exclude_none=True).items():
        setattr(config, name, value)
    return asdict(config)


@admin.post("/seed")
def seed(request: Request, body: Seed) -> dict[str, int]:
    with db_of(request).tx() as conn:
        for c in body.company_codes:
            conn.execute(
                "INSERT INTO company_code VALUES (%s, %s, %s) ON CONFLICT (company_code) "
                "DO UPDATE SET name = EXCLUDED.name, currency = EXCLUDED.currency",
                (c.company_code, c.name, c.currency),
            )
        for w in body.work_agreements:
            conn.execute(
                "INSERT INTO work_agreement VALUES (%s, %s, %s) ON CONFLICT (external_id, company_code) "
                "DO UPDATE SET person_work_agreement = EXCLUDED.person_work_agreement",
                (w.external_id, w.company_code, w.person_work_agreement),
            )
        _upsert_periods(conn, body.posting_periods)
    return {k: len(v) for k, v in body.model_dump().items()}


@admin.post("/periods")
def set_periods(request: Request, periods: list[PeriodSeed]) -> dict[str, int]:
    """Open or close posting periods (upsert): how tests close a period in the middle of a run."""
    with db_of(request).tx() as conn:
        _upsert_periods(conn, periods)
    return {"periods": len(periods)}


@admin.post("/csrf/expire")
def expire_tokens(request: Request) -> dict[str, int]:
    """Every CSRF token issued so far expires now (sessions stay; the next write answers 403)."""
    state = _state(request)
    with state.lock:
        expired = len(state.sessions)
        state.sessions = {s: (token, 0.0) for s, (token, _) in state.sessions.items()}
    return {"expired": expired}


def _set_status(request: Request, record: str, new: str) -> dict[str, Any]:
    with db_of(request).tx() as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "UPDATE timesheet_record SET status = %s, changed_at = clock_timestamp() "
            "WHERE record = %s AND status = '20' RETURNING *",
            (new, record),
        ).fetchone()
        if row is None:
            found = cur.execute("SELECT status FROM timesheet_record WHERE record = %s", (record,)).fetchone()
            status = 404 if found is None else 409
            detail = "no such record" if found is None else f"record has status {found['status']}, not 20"
            raise ODataError(status, "SIM/ADMIN", detail)
    return service.timesheet_entity(row)


@admin.post("/timesheets/{record}/approve")
def approve(request: Request, record: str) -> dict[str, Any]:
    """20 (released for approval) -> 30 (approved); other statuses answer 409."""
    return _set_status(request, record, "30")


@admin.post("/timesheets/{record}/reject")
def reject(request: Request, record: str) -> dict[str, Any]:
    """20 -> 40 (approval rejected)."""
    return _set_status(request, record, "40")


class RecordedHours(BaseModel):
    """New hours of a stored record, as someone editing it in SAP directly (not through our API)."""

    model_config = ConfigDict(extra="forbid")

    hours: str = Field(pattern=r"^\d{1,6}(\.\d{1,2})?$")


@admin.put("/timesheets/{record}/hours")
def set_hours(request: Request, record: str, body: RecordedHours) -> dict[str, Any]:
    """Change a record's recorded hours in place (any status): a change made in SAP behind the
    integration's back, for the read-back and close-report tests. 404: no such record."""
    with db_of(request).tx() as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "UPDATE timesheet_record SET hours = %s, changed_at = clock_timestamp() WHERE record = %s RETURNING *",
            (Decimal(body.hours), record),
        ).fetchone()
        if row is None:
            raise ODataError(404, "SIM/ADMIN", "no such record")
    return service.timesheet_entity(row)


@admin.get("/timesheets")
def dump_timesheets(request: Request) -> dict[str, Any]:
    """Every stored record (any status) in record order: the remote side as tests check it."""
    with db_of(request).tx() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT * FROM timesheet_record ORDER BY record").fetchall()
    return {"count": len(rows), "items": [service.timesheet_entity(r) for r in rows]}


class CustomerPayment(BaseModel):
    """A customer's incoming payment on one invoice, as accounts receivable posts it (F-28)."""

    model_config = ConfigDict(extra="forbid")

    company_code: str
    fiscal_year: int = Field(ge=1990, le=2100)
    accounting_document: str = Field(min_length=1, max_length=10)
    amount: str | None = Field(default=None, pattern=r"^\d{1,13}(\.\d{1,2})?$")  # default: all that is open
    posting_date: date
    bank_account: str = Field(default="1100", min_length=1, max_length=10)


@admin.post("/customer-payments")
def customer_payment(request: Request, body: CustomerPayment) -> dict[str, Any]:
    """Post a payment document (type DZ: debit the bank, credit the customer with the invoice as
    reference). The invoice's open item is cleared once payments and credit memos cover it; a
    smaller payment leaves it open for the rest. Answers the payment document (409: nothing open)."""
    with db_of(request).tx() as conn, conn.cursor(row_factory=dict_row) as cur:
        item = cur.execute(
            f"SELECT {service.ITEMS_WITH_OPEN_AMOUNT} WHERE company_code = %s AND fiscal_year = %s"
            " AND accounting_document = %s AND customer <> '' AND invoice_reference = '' LIMIT 1",
            (body.company_code, body.fiscal_year, body.accounting_document),
        ).fetchone()
        if item is None:
            raise ODataError(404, "SIM/ADMIN", "no customer item in that document")
        amount = Decimal(body.amount) if body.amount is not None else Decimal(item["open_amount"])
        if amount <= 0 or item["clearing_document"]:
            raise ODataError(409, "SIM/ADMIN", "nothing open on that invoice")
        text = f"payment of {body.accounting_document}"
        payload = {
            "CompanyCode": body.company_code,
            "AccountingDocumentType": "DZ",
            "DocumentDate": odata.sap_date(body.posting_date),
            "PostingDate": odata.sap_date(body.posting_date),
            "TransactionCurrency": item["currency"],
            "DocumentHeaderText": text[:25],
            "to_Item": [
                {
                    "GLAccount": body.bank_account,
                    "AmountInTransactionCurrency": f"{amount:.2f}",
                    "DebitCreditCode": "S",
                    "DocumentItemText": text,
                },
                {
                    "GLAccount": item["gl_account"],
                    "AmountInTransactionCurrency": f"{amount:.2f}",
                    "DebitCreditCode": "H",
                    "DocumentItemText": text,
                    "Customer": item["customer"],
                    "InvoiceReference": body.accounting_document,
                    "InvoiceReferenceFiscalYear": str(body.fiscal_year),
                },
            ],
        }
        reply = service.post_journal_entry(conn, _context(request), payload)
    assert reply.body is not None
    return dict(reply.body["d"])


@admin.get("/stats")
def stats(request: Request) -> dict[str, Any]:
    with db_of(request).tx() as conn:
        by_status = dict(
            conn.execute("SELECT status, count(*) FROM timesheet_record GROUP BY status").fetchall()
        )
        docs = conn.execute("SELECT count(*) FROM journal_entry").fetchone()
        items = conn.execute("SELECT count(*) FROM journal_entry_item").fetchone()
    state = _state(request)
    with state.lock:
        counters = dict(state.counters)
    return {
        "timesheet_records": by_status,
        "journal_entries": docs[0] if docs else 0,
        "journal_entry_items": items[0] if items else 0,
        "counters": counters,
        "config": asdict(state.config),
        "load": asdict(state.load),
    }


@admin.delete("/load")
def reset_load(request: Request) -> dict[str, Any]:
    """Start a new maximum of requests in flight (the data and the configuration stay)."""
    load = _state(request).load
    load.reset()
    return asdict(load)


def _on_reset(app: FastAPI) -> None:
    app.state.sap.reset()
    with app.state.db.tx() as conn:
        conn.execute("ALTER SEQUENCE timesheet_record_no RESTART")
        conn.execute("ALTER SEQUENCE accounting_document_no RESTART")


def create(dsn: str | None = None) -> FastAPI:
    """The SAP simulator app, its state in schema ``sim_sap`` of the PostgreSQL at ``dsn``."""
    app = create_app(
        name="sap",
        title="SAP S/4HANA simulator",
        schema="sim_sap",
        schema_sql=SCHEMA_SQL,
        description=__doc__ or "",
        dsn=dsn,
        on_reset=_on_reset,
    )
    app.state.sap = SapState()
    app.add_middleware(LoadMiddleware, state=app.state.sap)

    @app.exception_handler(ODataError)
    async def odata_error(request: Request, exc: ODataError) -> JSONResponse:
        return JSONResponse(exc.body(), exc.status)

    app.include_router(api)
    app.include_router(admin)
    return app
