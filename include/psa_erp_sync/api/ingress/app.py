"""Signed webhook ingress: PSA and ERP events into the durable ``inbox`` (issue 7).

Mounted by ``plugins/psa_erp_sync_plugin.py`` on the Airflow API server under ``/ingress``
(``POST /ingress/psa/events``, ``POST /ingress/erp/events``, OpenAPI at ``/ingress/openapi.json``).
Webhooks authenticate with their signature, not with Airflow's auth. Per request, in this order:

1. body size: ``Content-Length`` and the bytes actually read are capped (413);
2. content type must be ``application/json`` (415);
3. headers ``X-<SRC>-Delivery-Id``, ``-Event``, ``-Timestamp``, ``-Signature`` present and well formed (400);
4. ``X-<SRC>-Signature: sha256=<hex>`` = HMAC-SHA256(secret, timestamp + "." + raw body), compared
   in constant time against the current secret and, during a rotation, the previous one (401),
   before the body is parsed at all;
5. timestamp within +-300 s of the server clock (401): a captured request cannot be replayed later;
6. the body is parsed and validated strictly (pydantic); an authentic but malformed event is
   written to ``inbox.quarantine`` keyed by (source, sha256 of the signed body), never overwriting
   a stored body, with an item in the exception queue for its owner, and acknowledged (202, 200
   when that body was quarantined before) so the sender does not retry it for ever;
7. ``INSERT ... ON CONFLICT (source_system, delivery_id) DO NOTHING`` into ``inbox.event`` (delivery
   ids are unique per sender); the answer (202 new, 200 duplicate) is sent only after that
   transaction committed.

Failing safe: signing settings are validated when read (``previous_valid_until`` must carry a UTC
offset), and a bad one answers 503 with a logged configuration error. Database work runs on the
ingress's own few threads (``IngressThreads``) with bounded waits (``open_pool``), so a slow or
unreachable ODS gives quick 503s (with ``Retry-After``) and never starves the API server's other
routes.

Secrets come from the Airflow connections ``psa_webhook`` / ``erp_webhook`` (password = current
secret; extra ``previous_secret`` and ``previous_valid_until`` for the rotation overlap), with the
environment variables ``PSA_ERP_SYNC_WEBHOOK_SECRET_PSA`` / ``_ERP`` as a fallback for tests. They
are never logged. Nothing here does I/O when the app is built.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import psycopg
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from psa_erp_sync.api.ingress.schemas import (
    _DELIVERY_ID,
    _DIGITS,
    _EVENT,
    MODELS,
    Accepted,
    ErpEvent,
    PsaEvent,
    Rejected,
    error_detail,
    inline_schema,
)
from psa_erp_sync.api.ingress.signing import (
    SecretCache,
    SecretMisconfigured,
    Secrets,
    SecretUnavailable,
    secrets_from_airflow,
    verify,
)
from psa_erp_sync.api.ingress.writer import POOL_TIMEOUT_S, InboxWriter

# One logger for the whole ingress package (operators filter on it).
log = logging.getLogger(__package__ or __name__)
T = TypeVar("T")

MAX_BODY_BYTES = 64 * 1024
TIMESTAMP_TOLERANCE_S = 300
SOURCES = ("psa", "erp")
INGRESS_THREADS = 8
RETRY_AFTER_S = 10
INGRESS_CONN_ID = "ods_ingress"


class IngressBusy(RuntimeError):
    """Every ingress thread is taken (the ODS is slow): refuse quickly rather than queue."""


class IngressThreads:
    """The ingress's own worker threads, apart from the API server's shared pool (anyio's default
    limiter, 40 threads, which also runs the API server's synchronous routes such as task
    heartbeats). At most ``limit`` blocking calls run at once; a request waits at most ``wait_s``
    for one of them, then gets ``IngressBusy``. Limiters are made on first use, inside the loop."""

    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self._admission: Any = None
        self._threads: Any = None

    async def run(self, fn: Callable[[], T]) -> T:
        import anyio
        import anyio.to_thread

        if self._admission is None:
            self._admission = anyio.CapacityLimiter(self.limit)
            self._threads = anyio.CapacityLimiter(self.limit)
        try:
            with anyio.fail_after(self.wait_s):
                await self._admission.acquire()
        except TimeoutError:
            raise IngressBusy(f"all {self.limit} ingress threads busy for {self.wait_s} s") from None
        try:
            return await anyio.to_thread.run_sync(fn, limiter=self._threads)
        finally:
            self._admission.release()


def ingress_conn_id() -> str:
    """The ODS connection the ingress writes with: ``ods_ingress`` (a role that may only insert into
    the inbox, migration 0015) when the deployment defines it, else ``ods_default``."""
    try:
        from airflow.sdk import BaseHook

        BaseHook.get_connection(INGRESS_CONN_ID)
    except Exception:  # not defined (AirflowNotFoundException), or no Airflow here: the ODS's own
        return "ods_default"
    return INGRESS_CONN_ID


def _reject(status: int, error: str, reason_code: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"status": "rejected", "error": error, "reason_code": reason_code},
        status_code=status,
        headers={"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None,
    )


def _busy() -> JSONResponse:
    return _reject(503, "ingress busy; retry later", "BUSY")


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None when it exceeds ``limit`` bytes (read stops there)."""
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            return None
    return bytes(chunks)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Delivery:
    """One request's signed parts, once the headers are present and well formed."""

    source: str
    delivery_id: str
    event: str
    timestamp: str
    signature: str
    body: bytes
    content_type: str


def _check_headers(
    source: str, delivery_id: str | None, event: str | None, timestamp: str | None, signature: str | None
) -> JSONResponse | None:
    """400 for a missing or malformed ``X-<SRC>-`` header, else None."""
    prefix = f"X-{source.upper()}"
    headers = (
        ("Delivery-Id", delivery_id),
        ("Event", event),
        ("Timestamp", timestamp),
        ("Signature", signature),
    )
    missing = [name for name, value in headers if not value]
    if missing:
        return _reject(400, f"missing headers: {', '.join(f'{prefix}-{m}' for m in missing)}", "HEADERS")
    assert delivery_id and event and timestamp
    if not _DELIVERY_ID.fullmatch(delivery_id):
        return _reject(400, f"{prefix}-Delivery-Id must match {_DELIVERY_ID.pattern}", "HEADERS")
    if not _EVENT.fullmatch(event):
        return _reject(400, f"{prefix}-Event is not an event name", "HEADERS")
    if not _DIGITS.fullmatch(timestamp) or len(timestamp) > 12:
        return _reject(400, f"{prefix}-Timestamp must be Unix seconds", "HEADERS")
    return None


def _parse(delivery: Delivery) -> tuple[PsaEvent | ErpEvent | None, str | None, dict[str, Any]]:
    """The validated event, or why the (authentic) body is quarantined and where it is wrong."""
    try:
        delivery.body.decode("utf-8")
    except UnicodeDecodeError:
        return None, "INVALID_UTF8", {}
    try:
        parsed = MODELS[delivery.source].model_validate_json(delivery.body)
    except ValidationError as exc:
        json_error = any(e["type"] in ("json_invalid", "recursion_loop") for e in exc.errors())
        return None, "INVALID_JSON" if json_error else "SCHEMA", error_detail(exc)
    if parsed.delivery_id != delivery.delivery_id or parsed.event != delivery.event:
        return None, "HEADER_BODY_MISMATCH", {"fields": ["delivery_id", "event"]}
    return parsed, None, {}


@dataclass(frozen=True)
class Ingress:
    """What every request of one app shares: the inbox, the secrets, the threads, the limits."""

    writer: InboxWriter
    cache: SecretCache
    threads: IngressThreads
    max_body_bytes: int
    clock: Callable[[], float]

    async def receive(
        self,
        source: str,
        request: Request,
        delivery_id: str | None,
        event: str | None,
        timestamp: str | None,
        signature: str | None,
    ) -> JSONResponse:
        """Steps 1 to 7 of the module's docstring, in that order."""
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not _DIGITS.fullmatch(declared) or int(declared) > limit):
            return _reject(413, f"body larger than {limit} bytes", "TOO_LARGE")
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            return _reject(415, "Content-Type must be application/json", "UNSUPPORTED_MEDIA_TYPE")
        try:
            body = await _read_capped(request, limit)
        except ClientDisconnect:
            return _reject(400, "client disconnected before the body was read", "DISCONNECTED")
        if body is None:
            return _reject(413, f"body larger than {limit} bytes", "TOO_LARGE")
        refused = _check_headers(source, delivery_id, event, timestamp, signature)
        if refused is not None:
            return refused
        assert delivery_id and event and timestamp and signature
        delivery = Delivery(source, delivery_id, event, timestamp, signature, body, content_type)
        refused = await self._authenticate(delivery)
        if refused is not None:
            return refused
        # Authentic from here on: a delivery that does not parse is quarantined, never dropped.
        parsed, reason, detail = _parse(delivery)
        if reason is not None or parsed is None:
            return await self._quarantine(delivery, reason or "SCHEMA", detail)
        return await self._accept(delivery, parsed)

    async def _authenticate(self, delivery: Delivery) -> JSONResponse | None:
        """401 / 503 unless the signature matches a valid secret and the timestamp is fresh."""
        source = delivery.source
        try:
            keys = await self.threads.run(lambda: self.cache.get(source))
        except SecretMisconfigured as exc:
            log.error("webhook ingress: configuration error for %s: %s; refusing deliveries", source, exc)
            return _reject(503, "ingress misconfigured for this source", "MISCONFIGURED")
        except SecretUnavailable:
            log.error("webhook ingress: no secret configured for %s; refusing deliveries", source)
            return _reject(503, "ingress not configured for this source", "NOT_CONFIGURED")
        except IngressBusy:
            return _busy()
        now = self.clock()
        if not verify(
            keys, delivery.timestamp, delivery.body, delivery.signature, datetime.fromtimestamp(now, UTC)
        ):
            log.warning("webhook %s: bad signature (delivery %s)", source, _sha(delivery.delivery_id))
            return _reject(401, "signature does not match", "BAD_SIGNATURE")
        if abs(now - int(delivery.timestamp)) > TIMESTAMP_TOLERANCE_S:
            return _reject(401, f"timestamp outside +-{TIMESTAMP_TOLERANCE_S} s", "STALE_TIMESTAMP")
        return None

    async def _quarantine(self, delivery: Delivery, reason_code: str, detail: dict[str, Any]) -> JSONResponse:
        source = delivery.source
        try:
            new = await self.threads.run(
                lambda: self.writer.quarantine(
                    delivery_id=delivery.delivery_id,
                    source_system=source,
                    event_type=delivery.event,
                    reason_code=reason_code,
                    detail=detail,
                    body=delivery.body,
                    content_type=delivery.content_type[:100],
                )
            )
        except IngressBusy:
            return _busy()
        except Exception:
            log.exception("webhook %s: quarantine write failed", source)
            return _reject(503, "inbox unavailable; retry later", "INBOX_UNAVAILABLE")
        log.info("webhook %s: delivery %s quarantined (%s)", source, _sha(delivery.delivery_id), reason_code)
        # Acknowledged: the sender cannot fix it by retrying, and the body is kept with an owner.
        return JSONResponse(
            {"status": "quarantined", "error": "authentic but malformed event", "reason_code": reason_code},
            status_code=202 if new else 200,
        )

    async def _accept(self, delivery: Delivery, parsed: PsaEvent | ErpEvent) -> JSONResponse:
        try:
            new = await self.threads.run(
                lambda: self.writer.accept(
                    delivery_id=delivery.delivery_id,
                    source_system=delivery.source,
                    event_type=parsed.event,
                    source_id=str(parsed.data.id),
                    occurred_at=parsed.occurred_at,
                    body=delivery.body,
                )
            )
        except (
            psycopg.DataError
        ) as exc:  # parsed, but PostgreSQL refuses it (Infinity, NaN): kept, in quarantine
            return await self._quarantine(delivery, "UNSTORABLE_JSON", {"error": type(exc).__name__})
        except IngressBusy:
            return _busy()
        except Exception as exc:
            # Pool timeouts are expected while the ODS is away: one line, not a traceback each.
            log.error("webhook %s: inbox write failed (%s)", delivery.source, type(exc).__name__)
            return _reject(503, "inbox unavailable; retry later", "INBOX_UNAVAILABLE")
        return JSONResponse(
            {"status": "accepted" if new else "duplicate", "delivery_id": delivery.delivery_id},
            status_code=202 if new else 200,
        )


def _ods_dsn() -> str:
    from psa_erp_sync.hooks.ods import OdsHook

    return OdsHook(ingress_conn_id()).dsn()


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(model)}}}
    }


_EVENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Accepted, "description": "duplicate delivery id (or body already quarantined)"},
    202: {"description": "accepted (committed), or authentic but malformed: quarantined"},
}


def _add_routes(app: FastAPI, ingress: Ingress) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Framework-level refusals (unknown path, wrong method) in the same shape as ours.
        return _reject(exc.status_code, str(exc.detail), "HTTP")

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _reject(400, "malformed request", "HEADERS")

    @app.post("/psa/events", status_code=202, responses=_EVENT_RESPONSES, openapi_extra=_body_doc(PsaEvent))
    async def psa_events(
        request: Request,
        x_psa_delivery_id: Annotated[str | None, Header(alias="X-PSA-Delivery-Id")] = None,
        x_psa_event: Annotated[str | None, Header(alias="X-PSA-Event")] = None,
        x_psa_timestamp: Annotated[str | None, Header(alias="X-PSA-Timestamp")] = None,
        x_psa_signature: Annotated[str | None, Header(alias="X-PSA-Signature")] = None,
    ) -> JSONResponse:
        """A PSA event: time entry approved / updated / unapproved / deleted, expense approved,
        milestone completed. Accepted (202) once committed to the inbox; a repeated delivery id 200."""
        return await ingress.receive(
            "psa", request, x_psa_delivery_id, x_psa_event, x_psa_timestamp, x_psa_signature
        )

    @app.post("/erp/events", status_code=202, responses=_EVENT_RESPONSES, openapi_extra=_body_doc(ErpEvent))
    async def erp_events(
        request: Request,
        x_erp_delivery_id: Annotated[str | None, Header(alias="X-ERP-Delivery-Id")] = None,
        x_erp_event: Annotated[str | None, Header(alias="X-ERP-Event")] = None,
        x_erp_timestamp: Annotated[str | None, Header(alias="X-ERP-Timestamp")] = None,
        x_erp_signature: Annotated[str | None, Header(alias="X-ERP-Signature")] = None,
    ) -> JSONResponse:
        """An ERP event: invoice created / paid, accounting period closed."""
        return await ingress.receive(
            "erp", request, x_erp_delivery_id, x_erp_event, x_erp_timestamp, x_erp_signature
        )


def create_app(
    *,
    dsn: str | Callable[[], str] | None = None,
    secrets: Callable[[str], Secrets] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    clock: Callable[[], float] = time.time,
    max_threads: int = INGRESS_THREADS,
    wait_s: float = POOL_TIMEOUT_S,
) -> FastAPI:
    """Build the ingress app. ``dsn``: the ODS (default: the ``ods_ingress`` connection, else
    ``ods_default``, resolved on the first request); ``secrets``: lookup per source (default:
    Airflow connection / env); ``max_threads`` / ``wait_s``: the ingress's own threads and how long
    a request waits for one."""
    ingress = Ingress(
        writer=InboxWriter(dsn if dsn is not None else _ods_dsn),
        cache=SecretCache(secrets or secrets_from_airflow),
        threads=IngressThreads(max_threads, wait_s),
        max_body_bytes=max_body_bytes,
        clock=clock,
    )
    app = FastAPI(
        title="psa-erp-sync webhook ingress",
        version="1.0.0",
        description=__doc__,
        responses={
            400: {"model": Rejected, "description": "missing or malformed headers"},
            401: {"model": Rejected, "description": "bad signature or stale timestamp"},
            413: {"model": Rejected, "description": "body too large"},
            415: {"model": Rejected, "description": "not application/json"},
            503: {
                "model": Rejected,
                "description": "no secret configured, signing settings invalid, the inbox is unavailable"
                " or the ingress is busy (Retry-After)",
            },
        },
    )
    app.state.inbox_writer = ingress.writer
    _add_routes(app, ingress)
    return app
