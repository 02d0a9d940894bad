"""Harvest's request guard for ``/v2``: authentication headers and the per-account rate limit.

Every ``/v2`` request needs ``Authorization: Bearer <token>`` and ``Harvest-Account-Id`` (any
non-empty values; missing -> 401 like Harvest) and a ``User-Agent`` (missing -> 400). Requests
are limited per account id with a sliding window (default 100 per 15 s); over the limit the
answer is 429 with ``Retry-After`` in whole seconds until the oldest request leaves the window.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass
class RateLimiter:
    requests: int = 100
    window_s: float = 15.0
    _hits: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def configure(self, requests: int, window_s: float) -> None:
        with self._lock:
            self.requests = requests
            self.window_s = window_s

    def clear(self) -> None:
        with self._lock:
            self._hits.clear()

    def check(self, account: str, now: float | None = None) -> int | None:
        """Record one request; return ``None`` if allowed, else the seconds to wait."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self.requests <= 0:
                return None
            hits = self._hits[account]
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            if len(hits) >= self.requests:
                return max(1, math.ceil(hits[0] + self.window_s - now))
            hits.append(now)
            return None


async def _reply(
    send: Send, status: int, body: dict[str, object], headers: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class HarvestGuard:
    """ASGI middleware enforcing auth headers and the rate limit on ``/v2`` paths."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v2"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        auth = headers.get("authorization", "")
        account = headers.get("harvest-account-id", "").strip()
        if not auth.startswith("Bearer ") or not auth[7:].strip() or not account:
            await _reply(
                send,
                401,
                {
                    "code": 401,
                    "message": "Unauthorized",
                    "error": "invalid_token",
                    "error_description": "The access token provided is expired, revoked, malformed or invalid "
                    "for other reasons, or the Harvest-Account-Id header is missing.",
                },
                [(b"www-authenticate", b'Bearer realm="harvest"')],
            )
            return
        if not headers.get("user-agent", "").strip():
            await _reply(send, 400, {"code": 400, "message": "A User-Agent header is required"}, [])
            return
        wait = self.limiter.check(account)
        if wait is not None:
            await _reply(
                send,
                429,
                {"code": 429, "message": "Too many requests; retry after the Retry-After seconds"},
                [(b"retry-after", str(wait).encode())],
            )
            return
        await self.app(scope, receive, send)
