"""Outbound signed webhooks shared by the simulators (PSA and ERP): outbox, signing, dispatcher, admin.

A mutation queues an event inside its own transaction (:func:`enqueue_bodies`, or a simulator's own
SQL-rendering enqueue): one outbox row per interested subscription, whose body
(``delivery_id, event, occurred_at, data``) is fixed at that moment. :class:`Dispatcher`, a
background thread, POSTs pending rows with the headers ``X-<SRC>-Delivery-Id`` (the same on every
redelivery), ``X-<SRC>-Event``, ``X-<SRC>-Timestamp`` and
``X-<SRC>-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>`` (``<SRC>`` is
``PSA`` or ``ERP``: the scheme ``include/psa_erp_sync/api/ingress/signing.py`` verifies). A non-2xx answer or
a transport error is retried with exponential backoff until ``webhook_max_attempts``.

Faults, decided per delivery from ``random.Random(f"{webhook_seed}:{seq}")`` so a run replays:
``webhook_drop_rate`` (the notification is lost: status ``dropped``, never sent),
``webhook_duplicate_rate`` (sent twice, same delivery id and body) and ``webhook_reorder_window``
(pending deliveries are shuffled within groups of that size before sending).

The tables (``webhook_subscriptions``, ``webhook_deliveries``) are in :data:`WEBHOOK_SQL`, appended
to each simulator's ``schema.sql``; :func:`webhook_admin_router` adds the admin routes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from simulators.common.app import db_of
from simulators.common.db import SimDB

log = logging.getLogger(__name__)

WEBHOOK_SQL = (Path(__file__).with_name("webhooks.sql")).read_text()


class WebhookConfig(BaseModel):
    """Webhook knobs every simulator with webhooks has (its runtime config extends this)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    webhook_drop_rate: float = Field(default=0.0, ge=0, le=1)
    webhook_duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    webhook_reorder_window: int = Field(default=0, ge=0, le=1000)
    webhook_seed: int = 0
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    webhook_retry_base_s: float = Field(default=0.2, ge=0, le=60)
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=60)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return "sha256=" + digest


def enqueue_bodies(conn: psycopg.Connection, event: str, datas: Iterable[dict[str, Any]]) -> int:
    """Queue ``event`` once per ``data`` object (rendered by the caller) to every subscriber of it."""
    datas = list(datas)
    if not datas:
        return 0
    subs = [
        int(r[0])
        for r in conn.execute(
            "SELECT id FROM webhook_subscriptions WHERE is_active AND %s = ANY(events) ORDER BY id", (event,)
        ).fetchall()
    ]
    if not subs:
        return 0
    occurred = conn.execute(
        """SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
    ).fetchone()
    assert occurred is not None
    ids: list[str] = []
    sub_ids: list[int] = []
    bodies: list[str] = []
    for data in datas:
        for sub in subs:
            did = str(uuid.uuid4())
            ids.append(did)
            sub_ids.append(sub)
            body = {"delivery_id": did, "event": event, "occurred_at": occurred[0], "data": data}
            bodies.append(json.dumps(body, separators=(",", ":"), default=str))
    if not ids:
        return 0
    conn.execute(
        """INSERT INTO webhook_deliveries (delivery_id, subscription_id, event, body)
           SELECT u.did::uuid, u.sid, %s, u.body
             FROM unnest(%s::text[], %s::bigint[], %s::text[]) WITH ORDINALITY AS u(did, sid, body, n)
            ORDER BY u.n""",
        (event, ids, sub_ids, bodies),
    )
    return len(ids)


class Dispatcher:
    """The background thread delivering the outbox; :meth:`wake` after a commit that enqueued.

    ``source`` names the header prefix (``PSA`` -> ``X-PSA-Signature``) and the thread.
    """

    def __init__(
        self,
        db_of: Callable[[], SimDB | None],
        config: Callable[[], WebhookConfig],
        *,
        source: str = "PSA",
    ) -> None:
        self._db_of = db_of
        self._config = config
        self.source = source.upper()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.source.lower()}-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        agent = f"{self.source.lower()}-sim-webhooks/1.0"
        with httpx.Client(headers={"User-Agent": agent}) as http:
            while not self._stop.is_set():
                self._wake.wait(timeout=0.2)
                self._wake.clear()
                try:
                    while not self._stop.is_set() and self._drain(http):
                        pass
                except psycopg.Error:
                    log.exception("webhook dispatcher: database error")
                    time.sleep(0.5)

    def _drain(self, http: httpx.Client) -> bool:
        """Deliver one batch of due rows; True if there may be more."""
        db = self._db_of()
        if db is None:
            return False
        cfg = self._config()
        with db.tx() as conn:
            rows = conn.execute(
                """SELECT d.seq, d.delivery_id::text, d.event, d.body, d.attempts, s.url, s.secret
                     FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id
                    WHERE d.status = 'pending' AND d.next_attempt_at <= clock_timestamp()
                    ORDER BY d.seq LIMIT 200"""
            ).fetchall()
        if not rows:
            return False
        if cfg.webhook_reorder_window > 1:
            rng = random.Random(f"{cfg.webhook_seed}:reorder:{rows[0][0]}")
            window = cfg.webhook_reorder_window
            shuffled: list[Any] = []
            for start in range(0, len(rows), window):
                group = list(rows[start : start + window])
                rng.shuffle(group)
                shuffled.extend(group)
            rows = shuffled
        for row in rows:
            if self._stop.is_set():
                return False
            self._deliver(db, http, cfg, *row)
        return len(rows) == 200

    def _deliver(
        self,
        db: SimDB,
        http: httpx.Client,
        cfg: WebhookConfig,
        seq: int,
        delivery_id: str,
        event: str,
        body: str,
        attempts: int,
        url: str,
        secret: str,
    ) -> None:
        duplicate = False
        if attempts == 0:
            rng = random.Random(f"{cfg.webhook_seed}:{seq}")
            drop, dup = rng.random(), rng.random()
            if drop < cfg.webhook_drop_rate:
                with db.tx() as conn:
                    conn.execute("UPDATE webhook_deliveries SET status = 'dropped' WHERE seq = %s", (seq,))
                return
            duplicate = dup < cfg.webhook_duplicate_rate
        raw = body.encode()
        status: int | None = None
        error: str | None = None
        sends = 0
        prefix = f"X-{self.source}"
        for _ in range(2 if duplicate else 1):
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                f"{prefix}-Delivery-Id": delivery_id,
                f"{prefix}-Event": event,
                f"{prefix}-Timestamp": timestamp,
                f"{prefix}-Signature": sign(secret, timestamp, raw),
            }
            sends += 1
            try:
                status = http.post(
                    url, content=raw, headers=headers, timeout=cfg.webhook_timeout_s
                ).status_code
                error = None
            except httpx.HTTPError as exc:
                status, error = None, type(exc).__name__
            if status is None or not 200 <= status < 300:
                break
        ok = status is not None and 200 <= status < 300
        attempts += 1
        with db.tx() as conn:
            if ok:
                conn.execute(
                    """UPDATE webhook_deliveries SET status = 'delivered', attempts = %s, sends = sends + %s,
                              last_status = %s, last_error = NULL, delivered_at = clock_timestamp()
                        WHERE seq = %s""",
                    (attempts, sends, status, seq),
                )
            else:
                final = attempts >= cfg.webhook_max_attempts
                delay = min(cfg.webhook_retry_base_s * 2 ** (attempts - 1), 30.0)
                conn.execute(
                    """UPDATE webhook_deliveries SET status = %s, attempts = %s, sends = sends + %s,
                              last_status = %s, last_error = %s,
                              next_attempt_at = clock_timestamp() + make_interval(secs => %s)
                        WHERE seq = %s""",
                    ("failed" if final else "pending", attempts, sends, status, error, delay, seq),
                )
                log.info("webhook delivery %s attempt %d failed (status %s)", delivery_id, attempts, status)


# --- admin routes ------------------------------------------------------------------------------


class Subscription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, pattern=r"^https?://")
    secret: str = Field(min_length=1)
    events: list[str] = Field(min_length=1)


class SubscriptionChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=8, pattern=r"^https?://")
    secret: str | None = Field(default=None, min_length=1)
    events: list[str] | None = Field(default=None, min_length=1)
    is_active: bool | None = None


def webhook_admin_router(events: frozenset[str], error: Callable[[int, str], Response]) -> APIRouter:
    """``POST|GET /admin/webhooks``, ``PATCH|DELETE /admin/webhooks/{id}``,
    ``GET /admin/webhooks/deliveries``; ``error`` renders the simulator's own error body."""
    router = APIRouter(prefix="/admin", tags=["admin"])

    @router.post("/webhooks", status_code=201)
    def add_webhook(request: Request, sub: Subscription) -> Response:
        unknown = set(sub.events) - events
        if unknown:
            return error(422, f"unknown events {sorted(unknown)}; known: {sorted(events)}")
        with db_of(request).tx() as conn:
            row = conn.execute(
                "INSERT INTO webhook_subscriptions (url, secret, events) VALUES (%s, %s, %s) RETURNING id",
                (sub.url, sub.secret, sub.events),
            ).fetchone()
        assert row is not None
        return JSONResponse({"id": row[0], "url": sub.url, "events": sub.events}, status_code=201)

    @router.get("/webhooks")
    def list_webhooks(request: Request) -> dict[str, Any]:
        with db_of(request).tx() as conn:
            rows = conn.execute(
                "SELECT id, url, events, is_active FROM webhook_subscriptions ORDER BY id"
            ).fetchall()
        return {"webhooks": [{"id": r[0], "url": r[1], "events": r[2], "is_active": r[3]} for r in rows]}

    @router.patch("/webhooks/{webhook_id}")
    def change_webhook(request: Request, webhook_id: int, change: SubscriptionChange) -> Response:
        """Change a subscription, e.g. rotate its signing secret: deliveries sent from now on (retries
        included) are signed with the new secret."""
        unknown = set(change.events or ()) - events
        if unknown:
            return error(422, f"unknown events {sorted(unknown)}; known: {sorted(events)}")
        with db_of(request).tx() as conn:
            row = conn.execute(
                """UPDATE webhook_subscriptions SET url = coalesce(%s, url), secret = coalesce(%s, secret),
                          events = coalesce(%s, events), is_active = coalesce(%s, is_active)
                    WHERE id = %s RETURNING id, url, events, is_active""",
                (change.url, change.secret, change.events, change.is_active, webhook_id),
            ).fetchone()
        if row is None:
            return error(404, "Not found")
        return JSONResponse({"id": row[0], "url": row[1], "events": row[2], "is_active": row[3]})

    @router.delete("/webhooks/{webhook_id}")
    def delete_webhook(request: Request, webhook_id: int) -> dict[str, Any]:
        with db_of(request).tx() as conn:
            n = conn.execute("DELETE FROM webhook_subscriptions WHERE id = %s", (webhook_id,)).rowcount
            conn.execute(
                "UPDATE webhook_deliveries SET status = 'failed', last_error = 'unsubscribed' "
                "WHERE subscription_id = %s AND status = 'pending'",
                (webhook_id,),
            )
        return {"deleted": n}

    @router.get("/webhooks/deliveries")
    def list_deliveries(request: Request, status: str | None = None) -> dict[str, Any]:
        """The outbox, oldest first: delivery id, event, status, attempts, sends (duplicates count)."""
        with db_of(request).tx() as conn:
            rows = conn.execute(
                """SELECT seq, delivery_id::text, subscription_id, event, status, attempts, sends, last_status
                     FROM webhook_deliveries WHERE %s::text IS NULL OR status = %s ORDER BY seq""",
                (status, status),
            ).fetchall()
        keys = (
            "seq",
            "delivery_id",
            "subscription_id",
            "event",
            "status",
            "attempts",
            "sends",
            "last_status",
        )
        return {"deliveries": [dict(zip(keys, r, strict=True)) for r in rows]}

    return router
