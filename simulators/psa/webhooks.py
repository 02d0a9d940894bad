"""Outbound webhooks of the PSA simulator (an extension: Harvest itself has none).

A mutation calls :func:`enqueue` inside its transaction: one outbox row per interested
subscription, whose body (``delivery_id, event, occurred_at, data``) is fixed at that moment.
:class:`Dispatcher`, a background thread, POSTs pending rows with the headers
``X-PSA-Delivery-Id`` (the same on every redelivery), ``X-PSA-Event``, ``X-PSA-Timestamp`` and
``X-PSA-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>``. A non-2xx answer
or a transport error is retried with exponential backoff until ``webhook_max_attempts``.

Faults, decided per delivery from ``random.Random(f"{webhook_seed}:{seq}")`` so a run replays:
``webhook_drop_rate`` (the notification is lost: status ``dropped``, never sent),
``webhook_duplicate_rate`` (sent twice, same delivery id and body) and ``webhook_reorder_window``
(pending deliveries are shuffled within groups of that size before sending).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
from pydantic import BaseModel, ConfigDict, Field

from simulators.common.db import SimDB
from simulators.psa.render import Kind, ts

log = logging.getLogger(__name__)

EVENTS = frozenset(
    {
        "time_entry.approved",
        "time_entry.updated",
        "time_entry.unapproved",
        "time_entry.deleted",
        "expense.approved",
        "milestone.completed",
    }
)


class PsaConfig(BaseModel):
    """Runtime knobs of the PSA simulator, changed with ``PUT /admin/config``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    rate_limit_requests: int = Field(default=100, ge=0)
    rate_limit_window_s: float = Field(default=15.0, gt=0)
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


def enqueue(conn: psycopg.Connection, kind: Kind, event: str, ids: list[int]) -> int:
    """Queue ``event`` for rows ``ids`` of ``kind`` (rendered now) to every subscriber of it."""
    if not ids:
        return 0
    cur = conn.execute(
        f"""
        WITH subs AS (SELECT id FROM webhook_subscriptions WHERE is_active AND %s = ANY(events)),
             d AS (SELECT gen_random_uuid() AS did, subs.id AS sid, x.id AS rid, x.j
                     FROM subs CROSS JOIN ({kind.select_json(f"{kind.alias}.id = ANY(%s)")}) x)
        INSERT INTO webhook_deliveries (delivery_id, subscription_id, event, body)
        SELECT did, sid, %s,
               json_build_object('delivery_id', did, 'event', %s::text,
                                 'occurred_at', {ts("clock_timestamp()")}, 'data', j)::text
          FROM d ORDER BY rid, sid""",
        (event, ids, event, event),
    )
    return cur.rowcount


class Dispatcher:
    """The background thread delivering the outbox; :meth:`wake` after a commit that enqueued."""

    def __init__(self, db_of: Callable[[], SimDB | None], config: Callable[[], PsaConfig]) -> None:
        self._db_of = db_of
        self._config = config
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="psa-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        with httpx.Client(headers={"User-Agent": "psa-sim-webhooks/1.0"}) as http:
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
        cfg: PsaConfig,
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
        for _ in range(2 if duplicate else 1):
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-PSA-Delivery-Id": delivery_id,
                "X-PSA-Event": event,
                "X-PSA-Timestamp": timestamp,
                "X-PSA-Signature": sign(secret, timestamp, raw),
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
