"""ERP simulator speaking NetSuite SuiteTalk REST: records, upsert by external id, SuiteQL, async batch.

Routes (all under ``/services/rest``, all requiring ``Authorization: Bearer <anything>``):

- ``GET|PUT|PATCH|DELETE /record/v1/{type}/{id | eid:externalId}``; PUT by external id is a true
  upsert (``INSERT ... ON CONFLICT``) answering 204 with ``Location`` of the record;
- ``GET /record/v1/{type}?limit&offset&q=`` collections;
- ``POST /record/v1/{type}/batch`` with ``X-NetSuite-idempotency-key``: our stand-in for NetSuite's
  async bulk (at most 100 items, each validated and upserted on its own), then
  ``GET /async/v1/job/{id}`` and ``GET /async/v1/job/{id}/result``;
- ``POST /query/v1/suiteql`` (the subset in :mod:`simulators.erp.suiteql`), over every record type
  and the read-only ``transactionline`` (lines of invoices, credit memos, payments and journals).

Billing (``docs/simulators.md``, "ERP billing side"): ``invoice``/``creditmemo`` lines name their
source, ``customerpayment`` applies to invoices, ``journalentry`` must balance per currency,
``currencyrate``; signed outbound webhooks ``invoice.created``, ``invoice.paid`` and
``accountingperiod.closed`` (:mod:`simulators.common.webhooks`, headers ``X-ERP-*``); admin
``POST /admin/invoices/{id}/payments`` and ``/void``.

The account's concurrency limit is shared by every client of the account (``X-NetSuite-Account``):
over it a request is answered 429 ``SSS_REQUEST_LIMIT_EXCEEDED`` with ``Retry-After``.
``PUT /admin/config`` sets the limit and a simulated per-request service time;
``GET /admin/concurrency`` reports the highest number of requests in flight per account. See ``simulators/erp/README.md`` for fields and error codes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from simulators.common.app import create_app, db_of
from simulators.common.webhooks import (
    WEBHOOK_SQL,
    Dispatcher,
    WebhookConfig,
    enqueue_bodies,
    webhook_admin_router,
)
from simulators.erp import store
from simulators.erp.records import RECORD_TYPES, catalog, ref_key
from simulators.erp.store import NetSuiteError, bad_request, iso, not_found
from simulators.erp.suiteql import QueryError, order_sql, parse_q, parse_suiteql, where_sql
from simulators.erp.validation import ErrorDetail, existing_period_errors, load_lookup, parse_decimal

SCHEMA_SQL = (Path(__file__).parent / "schema.sql").read_text() + "\n" + WEBHOOK_SQL
#: Outbound webhook events (signed with ``X-ERP-Signature``; ``simulators.common.webhooks``).
EVENTS = frozenset({"invoice.created", "invoice.paid", "accountingperiod.closed"})
MAX_PAGE = 1000


# --------------------------------------------------------------------------- concurrency governor


@dataclass
class ErpConfig:
    concurrency_limit: int = 15
    service_time_ms: int = 0
    retry_after_s: int = 1


@dataclass
class AccountLoad:
    """Requests of one account (``X-NetSuite-Account``) since the last reset.

    ``max_in_flight`` counts admitted requests (never above the limit); ``max_requested`` counts
    every request at the moment it arrived, including the one answered 429: above the limit means
    the account's clients together sent more at once than the account allows.
    """

    in_flight: int = 0
    max_in_flight: int = 0
    max_requested: int = 0
    requests: int = 0
    throttled: int = 0


@dataclass
class Governor:
    """In-flight request accounting per account (the event loop serialises updates)."""

    config: ErpConfig
    accounts: dict[str, AccountLoad] = field(default_factory=dict)

    def reset(self) -> None:
        self.config = ErpConfig()
        self.reset_load()

    def reset_load(self) -> None:
        # Requests still in flight stay counted: they decrement the same counter when they end.
        for load in self.accounts.values():
            load.max_in_flight = load.max_requested = load.in_flight
            load.requests = load.throttled = 0

    def load(self, account: str) -> AccountLoad:
        found = self.accounts.get(account)
        if found is None:
            found = self.accounts[account] = AccountLoad()
        return found

    def total(self, name: str) -> int:
        return sum(getattr(load, name) for load in self.accounts.values())


DEFAULT_ACCOUNT = "default"


def _account_of(scope: Scope) -> str:
    for key, value in scope.get("headers", ()):
        if key == b"x-netsuite-account":
            return str(value.decode("latin-1")) or DEFAULT_ACCOUNT
    return DEFAULT_ACCOUNT


class ConcurrencyLimit:
    """ASGI middleware: at most ``concurrency_limit`` API requests in flight per account, else 429.

    The account is the ``X-NetSuite-Account`` header (NetSuite reads it from the host name,
    ``<account>.suitetalk.api.netsuite.com``); requests without it share the account ``default``.
    """

    def __init__(self, app: ASGIApp, governor: Governor) -> None:
        self.app = app
        self.governor = governor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith("/services/"):
            await self.app(scope, receive, send)
            return
        gov = self.governor
        load = gov.load(_account_of(scope))
        load.requests += 1
        load.max_requested = max(load.max_requested, load.in_flight + 1)
        if load.in_flight >= gov.config.concurrency_limit:
            load.throttled += 1
            error = NetSuiteError(
                429,
                [
                    ErrorDetail(
                        "SSS_REQUEST_LIMIT_EXCEEDED",
                        "",
                        "Request blocked by the concurrency limit of the account "
                        f"({gov.config.concurrency_limit} concurrent requests).",
                    )
                ],
            )
            payload = json.dumps(error.as_json()).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                        (b"retry-after", str(gov.config.retry_after_s).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return
        load.in_flight += 1
        load.max_in_flight = max(load.max_in_flight, load.in_flight)
        try:
            if gov.config.service_time_ms:
                await asyncio.sleep(gov.config.service_time_ms / 1000)
            await self.app(scope, receive, send)
        finally:
            load.in_flight -= 1


# --------------------------------------------------------------------------- helpers


async def json_body(request: Request) -> Any:
    """The request body parsed with decimals kept exact (``parse_float=Decimal``)."""
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw, parse_float=Decimal)
    except ValueError as exc:
        raise bad_request("INVALID_CONTENT", "", f"The request body is not valid JSON: {exc}.") from exc


Body = Annotated[Any, Depends(json_body)]


def require_bearer(authorization: Annotated[str | None, Header()] = None) -> None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NetSuiteError(
            401,
            [ErrorDetail("INVALID_LOGIN", "", "Invalid login attempt: a Bearer token is required.")],
            headers={"WWW-Authenticate": "Bearer"},
        )


def record_type_of(record_type: str) -> str:
    lowered = record_type.lower()
    if lowered not in RECORD_TYPES:
        raise bad_request("INVALID_RCRD_TYPE", "type", f"Record type {record_type!r} does not exist.", 404)
    return lowered


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("INVALID_CONTENT", "", "The request body must be a JSON object.")
    return body


def _wake(request: Request) -> None:
    """Let the webhook dispatcher deliver what the committed write queued (it also polls)."""
    dispatcher: Dispatcher = request.app.state.dispatcher
    dispatcher.wake()


def _page_args(limit: int, offset: int) -> tuple[int, int]:
    if not 1 <= limit <= MAX_PAGE:
        raise bad_request("INVALID_PARAMETER", "limit", f"limit must be between 1 and {MAX_PAGE}.")
    if offset < 0:
        raise bad_request("INVALID_PARAMETER", "offset", "offset must not be negative.")
    return limit, offset


def _page_links(url: str, limit: int, offset: int, total: int) -> list[dict[str, str]]:
    links = [{"rel": "self", "href": f"{url}?limit={limit}&offset={offset}"}]
    if offset + limit < total:
        links.append({"rel": "next", "href": f"{url}?limit={limit}&offset={offset + limit}"})
    if offset > 0:
        links.append({"rel": "previous", "href": f"{url}?limit={limit}&offset={max(offset - limit, 0)}"})
    return links


# --------------------------------------------------------------------------- REST API

api = APIRouter(prefix="/services/rest", dependencies=[Depends(require_bearer)], tags=["SuiteTalk REST"])


@api.get("/record/v1/{record_type}")
def list_records(
    request: Request,
    record_type: str,
    limit: int = 1000,
    offset: int = 0,
    q: str | None = None,
) -> dict[str, Any]:
    rtype = record_type_of(record_type)
    limit, offset = _page_args(limit, offset)
    try:
        conditions = parse_q(q, rtype) if q else []
        where, params = where_sql(rtype, conditions)
    except (QueryError, KeyError) as exc:
        raise bad_request("INVALID_PARAMETER", "q", f"Invalid search query: {exc}") from exc
    base = base_url(request)
    with db_of(request).tx() as conn:
        try:
            total = conn.execute(f"SELECT count(*) FROM record r WHERE {where}", params).fetchone()
            rows = conn.execute(
                f"SELECT r.id FROM record r WHERE {where} ORDER BY r.id LIMIT %s OFFSET %s",
                [*params, limit, offset],
            ).fetchall()
        except psycopg.DataError as exc:
            raise bad_request("INVALID_PARAMETER", "q", f"Invalid search query: {exc}") from exc
    total_results = int(total[0]) if total else 0
    url = f"{base}/services/rest/record/v1/{rtype}"
    return {
        "links": _page_links(url, limit, offset, total_results),
        "count": len(rows),
        "hasMore": offset + len(rows) < total_results,
        "items": [{"id": str(r[0]), "links": [{"rel": "self", "href": f"{url}/{r[0]}"}]} for r in rows],
        "offset": offset,
        "totalResults": total_results,
    }


@api.get("/record/v1/{record_type}/{ident}")
def get_record(request: Request, record_type: str, ident: str) -> dict[str, Any]:
    rtype = record_type_of(record_type)
    with db_of(request).tx() as conn:
        found = store.get(conn, rtype, ident)
    if found is None:
        raise not_found(rtype, ident)
    return found.as_json(base_url(request))


@api.put("/record/v1/{record_type}/{ident}", status_code=204)
def upsert_record(request: Request, record_type: str, ident: str, body: Body) -> Response:
    rtype = record_type_of(record_type)
    if not ident.startswith("eid:"):
        raise bad_request(
            "INVALID_KEY_OR_REF", "id", "Upsert needs an external id: PUT .../{type}/eid:{externalId}."
        )
    with db_of(request).tx() as conn:
        rid, _ = store.upsert_one(conn, rtype, ident[4:], _object(body))
    _wake(request)
    return Response(
        status_code=204, headers={"Location": f"{base_url(request)}/services/rest/record/v1/{rtype}/{rid}"}
    )


@api.patch("/record/v1/{record_type}/{ident}", status_code=204)
def patch_record(request: Request, record_type: str, ident: str, body: Body) -> Response:
    rtype = record_type_of(record_type)
    with db_of(request).tx() as conn:
        updated = store.patch_one(conn, rtype, ident, _object(body))
    _wake(request)
    return Response(
        status_code=204,
        headers={"Location": f"{base_url(request)}/services/rest/record/v1/{rtype}/{updated.id}"},
    )


@api.delete("/record/v1/{record_type}/{ident}", status_code=204)
def delete_record(request: Request, record_type: str, ident: str) -> Response:
    rtype = record_type_of(record_type)
    with db_of(request).tx() as conn:
        store.delete_one(conn, rtype, ident)
    _wake(request)
    return Response(status_code=204)


@api.post("/record/v1/{record_type}/batch", status_code=202)
def submit_batch(
    request: Request,
    record_type: str,
    body: Body,
    idempotency_key: Annotated[str | None, Header(alias="X-NetSuite-idempotency-key")] = None,
) -> JSONResponse:
    rtype = record_type_of(record_type)
    if not idempotency_key or len(idempotency_key) > 255:
        raise bad_request(
            "MISSING_REQUIRED_FIELD",
            "X-NetSuite-idempotency-key",
            "The header X-NetSuite-idempotency-key (at most 255 characters) is required.",
        )
    items = _object(body).get("items")
    if not isinstance(items, list) or not items:
        raise bad_request(
            "INVALID_CONTENT", "items", 'The body must be {"items": [ ... ]} with at least one item.'
        )
    if len(items) > store.MAX_BATCH:
        raise bad_request(
            "EXCEEDED_MAX_RECORDS",
            "items",
            f"A batch takes at most {store.MAX_BATCH} items, got {len(items)}.",
            413,
        )
    base = base_url(request)
    try:
        with db_of(request).tx() as conn:
            job = store.run_batch(conn, rtype, idempotency_key, items)
    except store.IdempotencyConflict as conflict:
        raise NetSuiteError(
            409,
            [
                ErrorDetail(
                    "IDEMPOTENCY_ERROR",
                    "X-NetSuite-idempotency-key",
                    f"The idempotency key was already used by job {conflict.job_id}.",
                )
            ],
            extra={"jobId": str(conflict.job_id), "links": _job_links(base, conflict.job_id)},
        ) from None
    _wake(request)
    return JSONResponse(
        status_code=202,
        content={"jobId": str(job.id), "links": _job_links(base, job.id)},
        headers={"Location": f"{base}/services/rest/async/v1/job/{job.id}"},
    )


def _job_links(base: str, job_id: int) -> list[dict[str, str]]:
    return [
        {"rel": "self", "href": f"{base}/services/rest/async/v1/job/{job_id}"},
        {"rel": "result", "href": f"{base}/services/rest/async/v1/job/{job_id}/result"},
    ]


def _job(request: Request, job_id: str) -> store.Job:
    if not job_id.isdigit():
        raise not_found("job", job_id)
    with db_of(request).tx() as conn:
        job = store.get_job(conn, int(job_id))
    if job is None:
        raise bad_request("NONEXISTENT_ID", "jobId", f"The async job {job_id} does not exist.", 404)
    return job


@api.get("/async/v1/job/{job_id}")
def job_status(request: Request, job_id: str) -> dict[str, Any]:
    job = _job(request, job_id)
    return {
        "id": str(job.id),
        "status": job.status,
        "recordType": job.type,
        "itemCount": job.item_count,
        "succeededCount": job.succeeded_count,
        "failedCount": job.failed_count,
        "createdAt": iso(job.created_at),
        "completedAt": iso(job.completed_at) if job.completed_at else None,
        "links": _job_links(base_url(request), job.id),
    }


@api.get("/async/v1/job/{job_id}/result")
def job_result(request: Request, job_id: str) -> dict[str, Any]:
    job = _job(request, job_id)
    return {
        "jobId": str(job.id),
        "status": job.status,
        "recordType": job.type,
        "count": len(job.results),
        "items": job.results,
        "links": _job_links(base_url(request), job.id),
    }


def _suiteql_value(record_type: str, name: str, value: Any) -> Any:
    kind = catalog(record_type).get(name)
    if kind == "ref" or isinstance(value, dict):
        return ref_key(value)
    if isinstance(value, bool):
        return "T" if value else "F"
    return value


@api.post("/query/v1/suiteql")
def suiteql(
    request: Request,
    body: Body,
    limit: Annotated[int, Query()] = MAX_PAGE,
    offset: Annotated[int, Query()] = 0,
    prefer: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    text = _object(body).get("q")
    if not isinstance(text, str) or not text.strip():
        raise bad_request("INVALID_CONTENT", "q", 'The body must be {"q": "SELECT ..."}.')
    limit, offset = _page_args(limit, offset)
    try:
        parsed = parse_suiteql(text)
        where, where_params = where_sql(parsed.record_type, parsed.conditions)
        order, order_params = order_sql(parsed.record_type, parsed.order)
    except QueryError as exc:
        raise bad_request("INVALID_PARAMETER", "q", f"Invalid search query: {exc}") from exc
    rtype = parsed.record_type
    table = "record_line" if rtype == "transactionline" else "record"
    with db_of(request).tx() as conn:
        try:
            total = conn.execute(f"SELECT count(*) FROM {table} r WHERE {where}", where_params).fetchone()
            rows = conn.execute(
                f"SELECT r.id, r.external_id, r.body, r.is_inactive, r.created_at, r.last_modified "
                f"FROM {table} r WHERE {where} ORDER BY {order} LIMIT %s OFFSET %s",
                [*where_params, *order_params, limit, offset],
            ).fetchall()
        except psycopg.DataError as exc:  # e.g. a malformed timestamp literal
            raise bad_request("INVALID_PARAMETER", "q", f"Invalid search query: {exc}") from exc
    total_results = int(total[0]) if total else 0
    items = []
    for rid, ext, rbody, inactive, created, modified in rows:
        full = {
            "id": str(rid),
            "externalid": ext,
            "isinactive": "T" if inactive else "F",
            "datecreated": iso(created),
            "lastmodifieddate": iso(modified),
        }
        for name, value in rbody.items():
            full.setdefault(name.lower(), _suiteql_value(rtype, name, value))
        item = full if parsed.columns is None else {column: full.get(column) for column in parsed.columns}
        item["links"] = []
        items.append(item)
    url = f"{base_url(request)}/services/rest/query/v1/suiteql"
    return {
        "links": _page_links(url, limit, offset, total_results),
        "count": len(items),
        "hasMore": offset + len(items) < total_results,
        "items": items,
        "offset": offset,
        "totalResults": total_results,
    }


# --------------------------------------------------------------------------- admin API

admin = APIRouter(prefix="/admin", tags=["erp admin"])


class ConfigUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency_limit: int | None = Field(default=None, ge=1, le=1000)
    service_time_ms: int | None = Field(default=None, ge=0, le=60_000)
    retry_after_s: int | None = Field(default=None, ge=0, le=3600)
    # Outbound webhook faults and retries (simulators.common.webhooks.WebhookConfig).
    webhook_drop_rate: float | None = Field(default=None, ge=0, le=1)
    webhook_duplicate_rate: float | None = Field(default=None, ge=0, le=1)
    webhook_reorder_window: int | None = Field(default=None, ge=0, le=1000)
    webhook_seed: int | None = None
    webhook_max_attempts: int | None = Field(default=None, ge=1, le=100)
    webhook_retry_base_s: float | None = Field(default=None, ge=0, le=60)
    webhook_timeout_s: float | None = Field(default=None, gt=0, le=60)


class PeriodUpdate(BaseModel):
    """Close, lock or reopen an accounting period (only the flags given change)."""

    model_config = ConfigDict(extra="forbid")

    closed: bool | None = None
    allLocked: bool | None = None
    arLocked: bool | None = None
    apLocked: bool | None = None


def _governor(request: Request) -> Governor:
    gov: Governor = request.app.state.governor
    return gov


def _webhook_config(request: Request) -> WebhookConfig:
    config: WebhookConfig = request.app.state.webhook_config
    return config


@admin.get("/config")
def get_config(request: Request) -> dict[str, Any]:
    return {**asdict(_governor(request).config), **_webhook_config(request).model_dump()}


@admin.put("/config")
def put_config(request: Request, update: ConfigUpdate) -> dict[str, Any]:
    config = _governor(request).config
    hooks = _webhook_config(request)
    for name, value in update.model_dump(exclude_none=True).items():
        setattr(hooks if name.startswith("webhook_") else config, name, value)
    return get_config(request)


@admin.post("/periods/{external_id}")
def set_period_state(request: Request, external_id: str, update: PeriodUpdate) -> dict[str, Any]:
    flags = update.model_dump(exclude_none=True)
    with db_of(request).tx() as conn:
        before = store.get(conn, "accountingperiod", "eid:" + external_id, for_update=True)
        row = conn.execute(
            """
            UPDATE record SET body = body || %s::jsonb, last_modified = clock_timestamp()
             WHERE type = 'accountingperiod' AND external_id = %s
            RETURNING id
            """,
            (json.dumps(flags), external_id),
        ).fetchone()
        if row is None:
            raise not_found("accountingperiod", external_id)
        found = store.get(conn, "accountingperiod", str(row[0]))
        assert found is not None and before is not None
        if found.body.get("closed") is True and before.body.get("closed") is not True:
            enqueue_bodies(conn, "accountingperiod.closed", [_period_event(found)])
    _wake(request)
    return found.as_json(base_url(request))


def _period_event(period: store.Stored) -> dict[str, Any]:
    return {
        "id": str(period.id),
        "externalId": period.external_id,
        "recordType": "accountingperiod",
        "periodName": period.body.get("periodName"),
        "startDate": period.body.get("startDate"),
        "endDate": period.body.get("endDate"),
        "subsidiary": ref_key(period.body.get("subsidiary")),
    }


class PaymentIn(BaseModel):
    """``POST /admin/invoices/{id}/payments``: the customer pays (all that remains by default)."""

    model_config = ConfigDict(extra="forbid")

    amount: Decimal | None = Field(default=None, gt=0, decimal_places=2)
    tranDate: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    externalId: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,255}$")
    memo: str | None = None


def _invoice(conn: psycopg.Connection, ident: str) -> store.Stored:
    found = store.get(conn, "invoice", ident, for_update=True)
    if found is None:
        raise not_found("invoice", ident)
    return found


@admin.post("/invoices/{ident}/payments")
def record_payment(request: Request, ident: str, payment: PaymentIn) -> dict[str, Any]:
    """Record a customer payment applied to one invoice (a ``customerpayment`` record, validated like
    any other): the invoice's amountRemaining drops, at zero it is Paid In Full and ``invoice.paid``
    is queued."""
    base = base_url(request)
    with db_of(request).tx() as conn:
        invoice = _invoice(conn, ident)
        remaining = parse_decimal(invoice.body.get("amountRemaining"))
        amount = payment.amount if payment.amount is not None else remaining
        if amount is None or amount <= 0:
            raise bad_request("INVALID_FLD_VALUE", "amount", "The invoice has nothing left to pay.")
        count = conn.execute(
            "SELECT count(*) FROM application WHERE invoice_id = %s", (invoice.id,)
        ).fetchone()
        ext = payment.externalId or f"pay-{invoice.external_id}-{int(count[0]) + 1 if count else 1}"
        body: dict[str, Any] = {
            "tranDate": payment.tranDate or invoice.body.get("tranDate"),
            "customer": invoice.body.get("entity"),
            "subsidiary": invoice.body.get("subsidiary"),
            "currency": invoice.body.get("currency"),
            "payment": str(amount),
            "apply": {"items": [{"doc": {"id": str(invoice.id)}, "amount": str(amount)}]},
        }
        if payment.memo is not None:
            body["memo"] = payment.memo
        rid, _ = store.upsert_one(conn, "customerpayment", ext, body)
        paid = store.get(conn, "customerpayment", str(rid))
        after = store.get(conn, "invoice", str(invoice.id))
    _wake(request)
    assert paid is not None and after is not None
    return {"payment": paid.as_json(base), "invoice": after.as_json(base)}


@admin.post("/invoices/{ident}/void")
def void_invoice(request: Request, ident: str) -> dict[str, Any]:
    """Void an invoice: status Voided, amountRemaining 0. Refused when payments or credits are
    applied (``DEPENDENT_RECORDS``) or its period is closed or AR-locked (``PERIOD_CLOSED``)."""
    with db_of(request).tx() as conn:
        invoice = _invoice(conn, ident)
        old = {**invoice.body, "isInactive": invoice.is_inactive}
        errors = existing_period_errors("invoice", old, load_lookup(conn, "invoice", [old]))
        if conn.execute("SELECT 1 FROM application WHERE invoice_id = %s LIMIT 1", (invoice.id,)).fetchone():
            errors.append(
                ErrorDetail("DEPENDENT_RECORDS", "id", "The invoice has payments or credits applied.")
            )
        if errors:
            raise NetSuiteError(400, errors)
        conn.execute(
            """UPDATE record SET body = body || '{"voided": true}'::jsonb, last_modified = clock_timestamp()
                WHERE id = %s""",
            (invoice.id,),
        )
        store.refresh_invoices(conn, [invoice.id])
        after = store.get(conn, "invoice", str(invoice.id))
    assert after is not None
    return after.as_json(base_url(request))


@admin.get("/stats")
def stats(request: Request) -> dict[str, Any]:
    with db_of(request).tx() as conn:
        rows = conn.execute(
            "SELECT type, count(*), sum(hours), sum(amount) FROM record GROUP BY type ORDER BY type"
        ).fetchall()
        jobs = conn.execute("SELECT count(*), coalesce(sum(item_count), 0) FROM batch_job").fetchone()
    gov = _governor(request)
    return {
        "records": {t: n for t, n, _, _ in rows},
        "hours": {t: str(h) for t, _, h, _ in rows if h is not None},
        "amounts": {t: str(a) for t, _, _, a in rows if a is not None},
        "batch_jobs": int(jobs[0]) if jobs else 0,
        "batch_items": int(jobs[1]) if jobs else 0,
        # Sums over accounts (one account in most tests); per account: GET /admin/concurrency.
        "requests": gov.total("requests"),
        "throttled": gov.total("throttled"),
        "in_flight": gov.total("in_flight"),
        "max_in_flight": max((load.max_in_flight for load in gov.accounts.values()), default=0),
        "config": asdict(gov.config),
    }


@admin.get("/concurrency")
def concurrency(request: Request) -> dict[str, Any]:
    """Per account: requests in flight now, the highest admitted and the highest requested at once
    (including requests answered 429), requests and 429s, since the last reset."""
    gov = _governor(request)
    return {
        "concurrency_limit": gov.config.concurrency_limit,
        "accounts": {name: asdict(load) for name, load in sorted(gov.accounts.items())},
    }


@admin.post("/concurrency/reset")
def reset_concurrency(request: Request) -> dict[str, Any]:
    """Start counting afresh (records and config stay)."""
    _governor(request).reset_load()
    return concurrency(request)


@admin.get("/records/{record_type}")
def dump_records(
    request: Request, record_type: str, limit: int = 1000, offset: int = 0, after_id: int = 0
) -> dict[str, Any]:
    """Every record of a type with its stored body, ordered by internal id (paged; ``after_id`` for keyset)."""
    rtype = record_type_of(record_type)
    if not 1 <= limit <= 10_000:
        raise bad_request("INVALID_PARAMETER", "limit", "limit must be between 1 and 10000.")
    with db_of(request).tx() as conn:
        total = conn.execute("SELECT count(*) FROM record WHERE type = %s", (rtype,)).fetchone()
        rows = conn.execute(
            "SELECT id, type, external_id, body, is_inactive, created_at, last_modified FROM record "
            "WHERE type = %s AND id > %s ORDER BY id LIMIT %s OFFSET %s",
            (rtype, after_id, limit, offset),
        ).fetchall()
    base = base_url(request)
    items = [store.Stored(*r).as_json(base) for r in rows]
    return {
        "count": len(items),
        "totalResults": int(total[0]) if total else 0,
        "offset": offset,
        "items": items,
    }


# Seed rows -> (type, external id, body, is_inactive).
_SEED_KEYS = (
    "subsidiaries",
    "currencies",
    "tax_codes",
    "employees",
    "customers",
    "jobs",
    "accounting_periods",
    "records",
)


def _ref(value: Any, key: str = "externalId") -> dict[str, str] | None:
    return {key: str(value)} if value not in (None, "") else None


def _dec(value: Any, where: str) -> str | None:
    if value in (None, ""):
        return None
    number = parse_decimal(value)
    if number is None:
        raise bad_request("INVALID_FLD_VALUE", where, f"{where} must be a decimal string.")
    return str(number)


def _seed_record(kind: str, row: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    def need(name: str) -> str:
        value = row.get(name)
        if value in (None, ""):
            raise bad_request("MISSING_REQUIRED_FIELD", f"{kind}.{name}", f"{kind} rows need {name}.")
        return str(value)

    if kind == "subsidiaries":
        body = {
            "name": row.get("name"),
            "country": row.get("country"),
            "currency": _ref(row.get("currency"), "refName"),
        }
        return "subsidiary", need("external_id"), body
    if kind == "currencies":
        return "currency", need("symbol"), {"symbol": need("symbol"), "name": row.get("name")}
    if kind == "tax_codes":
        body = {
            "itemId": row.get("code"),
            "country": row.get("country"),
            "rate": _dec(row.get("rate"), "tax_codes.rate"),
        }
        return "taxcode", need("external_id"), body
    if kind == "employees":
        return "employee", need("external_id"), {"subsidiary": _ref(row.get("subsidiary"))}
    if kind == "customers":
        body = {
            "companyName": row.get("company_name"),
            "subsidiary": _ref(row.get("subsidiary")),
            "currency": _ref(row.get("currency"), "refName"),
            "taxCode": _ref(row.get("tax_code")),
        }
        return "customer", need("external_id"), body
    if kind == "jobs":
        body = {
            "companyName": row.get("name"),
            "parent": _ref(row.get("customer")),
            "subsidiary": _ref(row.get("subsidiary")),
            "currency": _ref(row.get("currency"), "refName"),
            "billingType": row.get("billing_type"),
            "contractValue": _dec(row.get("contract_value"), "jobs.contract_value"),
        }
        return "job", need("external_id"), body
    if kind == "accounting_periods":
        body = {
            "periodName": row.get("period_name"),
            "startDate": str(row.get("start_date") or ""),
            "endDate": str(row.get("end_date") or ""),
            "subsidiary": _ref(row.get("subsidiary")),
            "closed": bool(row.get("closed", False)),
            "allLocked": bool(row.get("all_locked", False)),
            "arLocked": bool(row.get("ar_locked", False)),
            "apLocked": bool(row.get("ap_locked", False)),
            "isQuarter": bool(row.get("is_quarter", False)),
            "isYear": bool(row.get("is_year", False)),
        }
        return "accountingperiod", need("external_id"), body
    # ``records``: any record type in REST shape, unvalidated ({"type", "externalId", ...fields}).
    rtype = record_type_of(need("type"))
    body = {k: v for k, v in row.items() if k not in ("type", "externalId", "isInactive")}
    body = store.normalize(rtype, body)
    return rtype, need("externalId"), body


@admin.post("/seed")
def seed(request: Request, body: Body) -> dict[str, Any]:
    """Bulk upsert master data (``docs/simulators.md``); re-sending a chunk changes nothing."""
    payload = _object(body)
    unknown = sorted(set(payload) - set(_SEED_KEYS))
    if unknown:
        raise bad_request("INVALID_FIELD", unknown[0], f"Unknown seed lists: {', '.join(unknown)}.")
    grouped: dict[str, dict[str, dict[str, Any]]] = {}
    for kind in _SEED_KEYS:
        for row in payload.get(kind) or []:
            if not isinstance(row, dict):
                raise bad_request("INVALID_CONTENT", kind, f"{kind} must be a list of objects.")
            rtype, ext, rbody = _seed_record(kind, row)
            full = {k: v for k, v in rbody.items() if v is not None}
            inactive = row.get("is_inactive", row.get("isInactive", False))
            full["isInactive"] = bool(inactive)
            grouped.setdefault(rtype, {})[ext] = full  # the last row of an external id wins
    counts: dict[str, int] = {}
    with db_of(request).tx() as conn:
        for rtype, rows in grouped.items():
            written = store.upsert_rows(conn, rtype, list(rows.items()))
            store.after_write(conn, rtype, written, rows)
            counts[rtype] = len(rows)
    return {"upserted": counts}


# --------------------------------------------------------------------------- app factory


def _on_reset(app: FastAPI) -> None:
    app.state.governor.reset()
    app.state.webhook_config = WebhookConfig()


def create(dsn: str | None = None) -> FastAPI:
    app = create_app(
        name="erp",
        title="ERP simulator (NetSuite SuiteTalk REST)",
        schema="sim_erp",
        schema_sql=SCHEMA_SQL,
        description=__doc__ or "",
        dsn=dsn,
        on_reset=_on_reset,
    )
    governor = Governor(ErpConfig())
    app.state.governor = governor
    # Added last, so it wraps the fault middleware: injected faults hold a slot like real requests.
    app.add_middleware(ConcurrencyLimit, governor=governor)

    @app.exception_handler(NetSuiteError)
    async def netsuite_error(request: Request, exc: NetSuiteError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content=exc.as_json(), headers=exc.headers)

    app.state.webhook_config = WebhookConfig()
    dispatcher = Dispatcher(
        lambda: getattr(app.state, "db", None), lambda: app.state.webhook_config, source="ERP"
    )
    app.state.dispatcher = dispatcher
    app.include_router(api)
    app.include_router(admin)
    app.include_router(webhook_admin_router(EVENTS, _admin_error))

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[None]:
        async with inner(app_):
            dispatcher.start()
            try:
                yield
            finally:
                dispatcher.stop()

    app.router.lifespan_context = lifespan
    return app


def _admin_error(status: int, message: str) -> Response:
    code = "NONEXISTENT_ID" if status == 404 else "INVALID_FLD_VALUE"
    return JSONResponse(
        status_code=status, content=NetSuiteError(status, [ErrorDetail(code, "", message)]).as_json()
    )
