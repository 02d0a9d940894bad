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
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import psycopg
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BODY_BYTES = 64 * 1024
TIMESTAMP_TOLERANCE_S = 300
SECRET_CACHE_S = 30.0
SOURCES = ("psa", "erp")
# The ODS may be slow or unreachable; the ingress then answers 503 quickly and holds no more than
# its own threads (docs/streaming.md, "Failing safe").
INGRESS_THREADS = 8
POOL_MAX_SIZE = 4
POOL_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 5000
RETRY_AFTER_S = 10
# Quarantined deliveries in the exception queue: domain (owner via config/ownership.yaml), record type.
EXCEPTION_DOMAIN = "webhook_ingress"
EXCEPTION_RECORD_TYPE = "webhook_delivery"
CONN_IDS = {"psa": "psa_webhook", "erp": "erp_webhook"}
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
_SIGNATURE = re.compile(r"^sha256=([0-9a-f]{64})$")
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")  # a \u0000 escape that is not itself escaped
_SAFE_LOC = re.compile(r"[^A-Za-z0-9_.-]")  # field paths may hold the sender's keys: keep them inert
_DIGITS = re.compile(r"^[0-9]{1,19}$")
_EVENT = re.compile(r"^[a-z_]{1,40}\.[a-z_]{1,40}$")

PSA_EVENTS = (
    "time_entry.approved",
    "time_entry.updated",
    "time_entry.unapproved",
    "time_entry.deleted",
    "expense.approved",
    "milestone.completed",
)
ERP_EVENTS = ("invoice.created", "invoice.paid", "accountingperiod.closed")


# -- payload contracts (strict; the envelope is ours, the record inside is the sender's shape) --


class PsaRecordRef(BaseModel):
    """The announced PSA record. Only its identity is trusted: the stream re-reads it by id."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: StrictInt = Field(gt=0, le=2**53)
    updated_at: datetime | None = None


class PsaEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    delivery_id: StrictStr = Field(pattern=_DELIVERY_ID.pattern)
    event: Literal[
        "time_entry.approved",
        "time_entry.updated",
        "time_entry.unapproved",
        "time_entry.deleted",
        "expense.approved",
        "milestone.completed",
    ]
    occurred_at: datetime
    data: PsaRecordRef


class ErpRecordRef(BaseModel):
    """An ERP record: internal id and, where it has one, our external id."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: StrictStr = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    externalId: StrictStr | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,128}$")


class ErpEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    delivery_id: StrictStr = Field(pattern=_DELIVERY_ID.pattern)
    event: Literal["invoice.created", "invoice.paid", "accountingperiod.closed"]
    occurred_at: datetime
    data: ErpRecordRef


MODELS: dict[str, type[PsaEvent] | type[ErpEvent]] = {"psa": PsaEvent, "erp": ErpEvent}


class Accepted(BaseModel):
    status: Literal["accepted", "duplicate"]
    delivery_id: str


class Rejected(BaseModel):
    status: Literal["rejected", "quarantined"]
    error: str
    reason_code: str | None = None


# -- secrets ------------------------------------------------------------------------------------


class SecretUnavailable(RuntimeError):
    """No secret is configured for a source: the ingress refuses rather than accepts unsigned."""


class SecretMisconfigured(SecretUnavailable):
    """The signing settings of a source are present but invalid (e.g. ``previous_valid_until``
    without a UTC offset): the ingress refuses (503) and logs the configuration error."""


def parse_valid_until(value: object, where: str) -> datetime:
    """``previous_valid_until``: an ISO 8601 time *with* a UTC offset (a naive time is ambiguous
    and cannot be compared with the aware clock). The value itself is not echoed."""
    if not isinstance(value, str):
        raise SecretMisconfigured(
            f"{where}: previous_valid_until must be an ISO 8601 string with a UTC offset"
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SecretMisconfigured(
            f"{where}: previous_valid_until is not an ISO 8601 time (e.g. 2026-12-07T12:00:00+00:00)"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise SecretMisconfigured(f"{where}: previous_valid_until has no UTC offset (e.g. +00:00 or Z)")
    return parsed


@dataclass(frozen=True)
class Secrets:
    current: bytes
    previous: bytes | None = None
    previous_valid_until: datetime | None = None

    def __post_init__(self) -> None:
        until = self.previous_valid_until
        if until is not None and (until.tzinfo is None or until.utcoffset() is None):
            raise SecretMisconfigured("previous_valid_until has no UTC offset")

    def candidates(self, now: datetime) -> list[bytes]:
        keys = [self.current]
        if self.previous and (self.previous_valid_until is None or now <= self.previous_valid_until):
            keys.append(self.previous)
        return keys


def secrets_from_airflow(source: str) -> Secrets:
    """Current (and previous) signing secret of ``source``: Airflow connection, else environment."""
    conn_id = CONN_IDS[source]
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
    except Exception:  # not defined (or no Airflow here): the documented env fallback applies
        conn = None
    if conn is not None and conn.password:
        extra = dict(conn.extra_dejson)
        until = extra.get("previous_valid_until")
        return Secrets(
            conn.password.encode(),
            str(extra["previous_secret"]).encode() if extra.get("previous_secret") else None,
            parse_valid_until(until, f"connection {conn_id}") if until else None,
        )
    value = os.environ.get(f"PSA_ERP_SYNC_WEBHOOK_SECRET_{source.upper()}")
    if not value:
        raise SecretUnavailable(f"no webhook secret configured for {source} (connection {conn_id})")
    previous = os.environ.get(f"PSA_ERP_SYNC_WEBHOOK_PREVIOUS_SECRET_{source.upper()}")
    return Secrets(value.encode(), previous.encode() if previous else None)


class _SecretCache:
    """Secrets looked up at most every ``SECRET_CACHE_S`` seconds (a rotation shows within that)."""

    def __init__(self, lookup: Callable[[str], Secrets]) -> None:
        self._lookup = lookup
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Secrets | SecretMisconfigured]] = {}

    def get(self, source: str) -> Secrets:
        """The secrets, or ``SecretUnavailable`` / ``SecretMisconfigured``. A misconfiguration is
        cached like a result, so a broken setting does not cost a lookup per delivery."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(source)
        if hit is None or now - hit[0] >= SECRET_CACHE_S:
            try:
                result: Secrets | SecretMisconfigured = self._lookup(source)
            except SecretMisconfigured as exc:
                result = exc
            hit = (now, result)
            with self._lock:
                self._cache[source] = hit
        if isinstance(hit[1], SecretMisconfigured):
            raise SecretMisconfigured(str(hit[1]))
        return hit[1]


def signature_of(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secrets: Secrets, timestamp: str, body: bytes, signature: str, now: datetime) -> bool:
    """Constant-time comparison against every valid secret (all are computed, none short-circuits)."""
    match = _SIGNATURE.fullmatch(signature)
    if match is None:
        return False
    given = match.group(1).encode()
    ok = False
    for key in secrets.candidates(now):
        expected = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest().encode()
        ok |= hmac.compare_digest(expected, given)
    return ok


# -- the inbox repository --------------------------------------------------------------------


def _limit_statements(conn: Any) -> None:
    conn.execute(f"SET statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")


def open_pool(conninfo: str) -> Any:
    """The ingress's own small pool. Every wait is bounded so a slow or unreachable ODS turns into
    a quick 503 (the sender retries) instead of held threads: a connection is waited for at most
    ``POOL_TIMEOUT_S``, a connection attempt lasts at most ``CONNECT_TIMEOUT_S``, a statement at
    most ``STATEMENT_TIMEOUT_MS``. Opening does not wait for the first connection. The pool comes
    from ``ods.connections`` (every extra ODS connection opens from the full parameters)."""
    from psa_erp_sync.ods import connections

    return connections.pool(
        conninfo,
        min_size=1,
        max_size=POOL_MAX_SIZE,
        timeout=POOL_TIMEOUT_S,
        kwargs={
            "autocommit": True,
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": "psa-erp-sync-ingress",
        },
        # SET, not an ``options`` parameter: that would replace any options of the connection.
        configure=_limit_statements,
        name="psa-erp-sync-ingress",
        open=True,
    )


class InboxWriter:
    """Commits accepted events and quarantined deliveries; a small pool, opened on first use."""

    def __init__(self, dsn: str | Callable[[], str]) -> None:
        self._dsn = dsn
        self._pool: Any = None
        self._lock = threading.Lock()
        self._owner: str | None = None

    def _conn(self) -> Any:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = open_pool(self._dsn() if callable(self._dsn) else self._dsn)
        return self._pool.connection()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def owner(self) -> str:
        """Who owns quarantined deliveries in the exception queue (``config/ownership.yaml``)."""
        if self._owner is None:
            from psa_erp_sync.config import load_config

            self._owner = load_config().ownership.owner_for(EXCEPTION_DOMAIN)
        return self._owner

    def accept(
        self,
        *,
        delivery_id: str,
        source_system: str,
        event_type: str,
        source_id: str,
        occurred_at: datetime,
        body: bytes,
    ) -> bool:
        """True if new. The row is committed when this returns (autocommit, one statement)."""
        if b"\\u0000" in body:  # jsonb cannot hold U+0000: keep it as the literal text, as staging does
            body = _NUL_ESCAPE.sub(rb"\1\\\\u0000", body)
        with self._conn() as conn:
            row = conn.execute(
                "INSERT INTO inbox.event (delivery_id, source_system, event_type, source_id, occurred_at, payload)"
                " VALUES (%s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (source_system, delivery_id) DO NOTHING"
                " RETURNING seq",
                (delivery_id, source_system, event_type, source_id, occurred_at, body.decode()),
            ).fetchone()
        return row is not None

    def quarantine(
        self,
        *,
        delivery_id: str,
        source_system: str,
        event_type: str | None,
        reason_code: str,
        detail: dict[str, Any],
        body: bytes,
        content_type: str | None,
    ) -> bool:
        """Keep an authentic but malformed delivery, keyed by (source, sha256 of the signed body),
        and open (or see again) its item in the exception queue, in one transaction. A stored body
        is never overwritten. True if this body was not quarantined before."""
        from psycopg.types.json import Jsonb

        from psa_erp_sync.ods import exceptions

        body_sha256 = hashlib.sha256(body).hexdigest()
        owner = self.owner()
        with self._conn() as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO inbox.quarantine AS q (delivery_id, last_delivery_id, source_system, event_type,"
                " reason_code, detail, body, body_sha256, content_type)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (source_system, body_sha256) DO UPDATE SET occurrences = q.occurrences + 1,"
                " last_seen = now(), last_delivery_id = EXCLUDED.last_delivery_id,"
                # a body the retention job dropped may be kept again; a stored body is never replaced
                " body = CASE WHEN q.body_purged_at IS NULL THEN q.body ELSE EXCLUDED.body END,"
                " body_purged_at = NULL"
                # occurrences is 1 only for a new row (reading xmax would need table-wide SELECT,
                # which the ingress's insert-only role does not have: migration 0015)
                " RETURNING occurrences",
                (
                    delivery_id,
                    delivery_id,
                    source_system,
                    event_type,
                    reason_code,
                    Jsonb(detail),
                    body,
                    body_sha256,
                    content_type,
                ),
            ).fetchone()
            exceptions.quarantine_many(
                conn,
                [
                    exceptions.Item(
                        kind="quarantine",
                        domain=EXCEPTION_DOMAIN,
                        source_system=source_system,
                        record_type=EXCEPTION_RECORD_TYPE,
                        source_id=body_sha256,
                        reason_code=f"WEBHOOK_{reason_code}",
                        owner=owner,
                        detail={"delivery_id": delivery_id, "event_type": event_type, **detail},
                    )
                ],
                run_id=f"webhook:{delivery_id}",
            )
        return bool(row and row[0] == 1)


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


# -- the app -----------------------------------------------------------------------------------


INGRESS_CONN_ID = "ods_ingress"


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


def _error_detail(exc: ValidationError) -> dict[str, Any]:
    """Where and what kind of error, never the offending values (they may be personal data)."""
    return {
        "errors": [
            {"loc": [_SAFE_LOC.sub("?", str(p))[:64] for p in e["loc"]][:8], "type": e["type"]}
            for e in exc.errors(include_input=False)
        ][:20]
    }


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None when it exceeds ``limit`` bytes (read stops there)."""
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            return None
    return bytes(chunks)


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema with its ``$defs`` inlined: the body is documented by hand (it is
    read raw, to verify the signature first), so the schema must stand alone."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


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

    def ods_dsn() -> str:
        from psa_erp_sync.hooks.ods import OdsHook

        return OdsHook(ingress_conn_id()).dsn()

    writer = InboxWriter(dsn if dsn is not None else ods_dsn)
    cache = _SecretCache(secrets or secrets_from_airflow)
    threads = IngressThreads(max_threads, wait_s)
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
    app.state.inbox_writer = writer

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Framework-level refusals (unknown path, wrong method) in the same shape as ours.
        return _reject(exc.status_code, str(exc.detail), "HTTP")

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _reject(400, "malformed request", "HEADERS")

    async def receive(
        source: str,
        request: Request,
        delivery_id: str | None,
        event: str | None,
        timestamp: str | None,
        signature: str | None,
    ) -> JSONResponse:
        prefix = f"X-{source.upper()}"
        declared = request.headers.get("content-length")
        if declared is not None and (not _DIGITS.fullmatch(declared) or int(declared) > max_body_bytes):
            return _reject(413, f"body larger than {max_body_bytes} bytes", "TOO_LARGE")
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            return _reject(415, "Content-Type must be application/json", "UNSUPPORTED_MEDIA_TYPE")
        try:
            body = await _read_capped(request, max_body_bytes)
        except ClientDisconnect:
            return _reject(400, "client disconnected before the body was read", "DISCONNECTED")
        if body is None:
            return _reject(413, f"body larger than {max_body_bytes} bytes", "TOO_LARGE")
        missing = [
            name
            for name, value in (
                ("Delivery-Id", delivery_id),
                ("Event", event),
                ("Timestamp", timestamp),
                ("Signature", signature),
            )
            if not value
        ]
        if missing:
            return _reject(400, f"missing headers: {', '.join(f'{prefix}-{m}' for m in missing)}", "HEADERS")
        assert delivery_id and event and timestamp and signature
        if not _DELIVERY_ID.fullmatch(delivery_id):
            return _reject(400, f"{prefix}-Delivery-Id must match {_DELIVERY_ID.pattern}", "HEADERS")
        if not _EVENT.fullmatch(event):
            return _reject(400, f"{prefix}-Event is not an event name", "HEADERS")
        if not _DIGITS.fullmatch(timestamp) or len(timestamp) > 12:
            return _reject(400, f"{prefix}-Timestamp must be Unix seconds", "HEADERS")
        try:
            keys = await threads.run(lambda: cache.get(source))
        except SecretMisconfigured as exc:
            log.error("webhook ingress: configuration error for %s: %s; refusing deliveries", source, exc)
            return _reject(503, "ingress misconfigured for this source", "MISCONFIGURED")
        except SecretUnavailable:
            log.error("webhook ingress: no secret configured for %s; refusing deliveries", source)
            return _reject(503, "ingress not configured for this source", "NOT_CONFIGURED")
        except IngressBusy:
            return _reject(503, "ingress busy; retry later", "BUSY")
        now = clock()
        if not verify(keys, timestamp, body, signature, datetime.fromtimestamp(now, UTC)):
            log.warning("webhook %s: bad signature (delivery %s)", source, _sha(delivery_id))
            return _reject(401, "signature does not match", "BAD_SIGNATURE")
        if abs(now - int(timestamp)) > TIMESTAMP_TOLERANCE_S:
            return _reject(401, f"timestamp outside +-{TIMESTAMP_TOLERANCE_S} s", "STALE_TIMESTAMP")
        # Authentic from here on: a delivery that does not parse is quarantined, never dropped.
        model = MODELS[source]
        reason: str | None = None
        detail: dict[str, Any] = {}
        parsed: PsaEvent | ErpEvent | None = None
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            reason = "INVALID_UTF8"
        if reason is None:
            try:
                parsed = model.model_validate_json(body)
            except ValidationError as exc:
                json_error = any(e["type"] in ("json_invalid", "recursion_loop") for e in exc.errors())
                reason = "INVALID_JSON" if json_error else "SCHEMA"
                detail = _error_detail(exc)
        if parsed is not None and (parsed.delivery_id != delivery_id or parsed.event != event):
            reason, detail = "HEADER_BODY_MISMATCH", {"fields": ["delivery_id", "event"]}

        async def quarantine(reason_code: str, detail: dict[str, Any]) -> JSONResponse:
            try:
                new = await threads.run(
                    lambda: writer.quarantine(
                        delivery_id=delivery_id,
                        source_system=source,
                        event_type=event,
                        reason_code=reason_code,
                        detail=detail,
                        body=body,
                        content_type=content_type[:100],
                    )
                )
            except IngressBusy:
                return _reject(503, "ingress busy; retry later", "BUSY")
            except Exception:
                log.exception("webhook %s: quarantine write failed", source)
                return _reject(503, "inbox unavailable; retry later", "INBOX_UNAVAILABLE")
            log.info("webhook %s: delivery %s quarantined (%s)", source, _sha(delivery_id), reason_code)
            # Acknowledged: the sender cannot fix it by retrying, and the body is kept with an owner.
            return JSONResponse(
                {
                    "status": "quarantined",
                    "error": "authentic but malformed event",
                    "reason_code": reason_code,
                },
                status_code=202 if new else 200,
            )

        if reason is not None or parsed is None:
            return await quarantine(reason or "SCHEMA", detail)
        record_id = str(parsed.data.id)
        try:
            new = await threads.run(
                lambda: writer.accept(
                    delivery_id=delivery_id,
                    source_system=source,
                    event_type=parsed.event,
                    source_id=record_id,
                    occurred_at=parsed.occurred_at,
                    body=body,
                )
            )
        except (
            psycopg.DataError
        ) as exc:  # parsed, but PostgreSQL refuses it (Infinity, NaN): kept, in quarantine
            return await quarantine("UNSTORABLE_JSON", {"error": type(exc).__name__})
        except IngressBusy:
            return _reject(503, "ingress busy; retry later", "BUSY")
        except Exception as exc:
            # Pool timeouts are expected while the ODS is away: one line, not a traceback each.
            log.error("webhook %s: inbox write failed (%s)", source, type(exc).__name__)
            return _reject(503, "inbox unavailable; retry later", "INBOX_UNAVAILABLE")
        return JSONResponse(
            {"status": "accepted" if new else "duplicate", "delivery_id": delivery_id},
            status_code=202 if new else 200,
        )

    def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
        return {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": inline_schema(model)}},
            }
        }

    @app.post(
        "/psa/events",
        status_code=202,
        responses={
            200: {"model": Accepted, "description": "duplicate delivery id (or body already quarantined)"},
            202: {"description": "accepted (committed), or authentic but malformed: quarantined"},
        },
        openapi_extra=_body_doc(PsaEvent),
    )
    async def psa_events(
        request: Request,
        x_psa_delivery_id: Annotated[str | None, Header(alias="X-PSA-Delivery-Id")] = None,
        x_psa_event: Annotated[str | None, Header(alias="X-PSA-Event")] = None,
        x_psa_timestamp: Annotated[str | None, Header(alias="X-PSA-Timestamp")] = None,
        x_psa_signature: Annotated[str | None, Header(alias="X-PSA-Signature")] = None,
    ) -> JSONResponse:
        """A PSA event: time entry approved / updated / unapproved / deleted, expense approved,
        milestone completed. Accepted (202) once committed to the inbox; a repeated delivery id 200."""
        return await receive("psa", request, x_psa_delivery_id, x_psa_event, x_psa_timestamp, x_psa_signature)

    @app.post(
        "/erp/events",
        status_code=202,
        responses={
            200: {"model": Accepted, "description": "duplicate delivery id (or body already quarantined)"},
            202: {"description": "accepted (committed), or authentic but malformed: quarantined"},
        },
        openapi_extra=_body_doc(ErpEvent),
    )
    async def erp_events(
        request: Request,
        x_erp_delivery_id: Annotated[str | None, Header(alias="X-ERP-Delivery-Id")] = None,
        x_erp_event: Annotated[str | None, Header(alias="X-ERP-Event")] = None,
        x_erp_timestamp: Annotated[str | None, Header(alias="X-ERP-Timestamp")] = None,
        x_erp_signature: Annotated[str | None, Header(alias="X-ERP-Signature")] = None,
    ) -> JSONResponse:
        """An ERP event: invoice created / paid, accounting period closed."""
        return await receive("erp", request, x_erp_delivery_id, x_erp_event, x_erp_timestamp, x_erp_signature)

    return app
