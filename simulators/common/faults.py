"""Deterministic fault injection, driven only through each simulator's admin API.

A rule matches requests by method and path regex and then fires on a deterministic schedule:
``every_nth`` request, or with ``probability`` drawn from a ``random.Random(seed)`` owned by the
rule, at most ``max_hits`` times, optionally only after ``after`` matching requests. Actions:

``status``              answer ``status`` (e.g. 503) before the handler runs (nothing committed)
``status_after_commit`` run the handler (it commits), then answer ``status`` instead of its response
``latency``             sleep ``latency_ms`` before the handler runs (adds to any other rule that fires)
``drop_before_commit``  abort the TCP connection before the handler runs
``drop_after_commit``   run the handler (it commits), then abort the connection without a response
``throttle``            answer 429 with ``Retry-After: retry_after`` (a 429 storm when probability=1)
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Action = Literal[
    "status", "status_after_commit", "latency", "drop_before_commit", "drop_after_commit", "throttle"
]


class FaultRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    action: Action
    method: str | None = None
    path_regex: str = ".*"
    status: int = Field(default=503, ge=400, le=599)
    latency_ms: int = Field(default=0, ge=0, le=120_000)
    retry_after: int = Field(default=1, ge=0, le=3600)
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    every_nth: int | None = Field(default=None, ge=1)
    after: int = Field(default=0, ge=0)
    max_hits: int | None = Field(default=None, ge=0)
    seed: int = 0


class FaultState:
    """Rules plus their counters. Thread-safe: sync endpoints run in a thread pool."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[tuple[FaultRule, re.Pattern[str], random.Random, dict[str, int]]] = []

    def set_rules(self, rules: list[FaultRule]) -> None:
        with self._lock:
            self._rules = [
                (r, re.compile(r.path_regex), random.Random(r.seed), {"seen": 0, "hits": 0}) for r in rules
            ]

    def add_rule(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules = [x for x in self._rules if x[0].id != rule.id]
            self._rules.append(
                (rule, re.compile(rule.path_regex), random.Random(rule.seed), {"seen": 0, "hits": 0})
            )

    def clear(self) -> None:
        self.set_rules([])

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**r.model_dump(), **counters} for r, _, _, counters in self._rules]

    def pick(self, method: str, path: str) -> FaultRule | None:
        """The first non-latency rule that fires for this request (see :meth:`decide`)."""
        return self.decide(method, path)[1]

    def decide(self, method: str, path: str) -> tuple[int, FaultRule | None]:
        """Latency to add (every latency rule that fires adds up) and the first other rule that fires.

        Counters advance deterministically, so the same request sequence meets the same faults.
        """
        if path.startswith("/admin"):
            return 0, None
        latency = 0
        with self._lock:
            for rule, pattern, rng, counters in self._rules:
                if rule.method and rule.method.upper() != method.upper():
                    continue
                if not pattern.search(path):
                    continue
                counters["seen"] += 1
                if counters["seen"] <= rule.after:
                    continue
                if rule.max_hits is not None and counters["hits"] >= rule.max_hits:
                    continue
                if rule.every_nth is not None:
                    fire = (counters["seen"] - rule.after) % rule.every_nth == 0
                else:
                    fire = rng.random() < rule.probability
                if fire:
                    counters["hits"] += 1
                    if rule.action == "latency":
                        latency += rule.latency_ms
                        continue
                    return latency, rule
        return latency, None


def _abort(receive: Receive) -> bool:
    """Abort the client's TCP connection (uvicorn keeps the transport on the request cycle)."""
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None:
        return False
    transport.abort()
    return True


async def _respond(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
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


class FaultMiddleware:
    """ASGI middleware applying :class:`FaultState` rules to every non-admin request."""

    def __init__(self, app: ASGIApp, state: FaultState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        latency_ms, rule = self.state.decide(scope["method"], scope["path"])
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        if rule is None:
            await self.app(scope, receive, send)
            return
        if rule.action == "status":
            await _respond(send, rule.status, _error_body(rule.status, rule.id), [])
        elif rule.action == "throttle":
            await _respond(
                send, 429, _error_body(429, rule.id), [(b"retry-after", str(rule.retry_after).encode())]
            )
        elif rule.action == "drop_before_commit":
            if not _abort(receive):
                await _respond(send, 502, _error_body(502, rule.id), [])
        else:  # the handler commits, then the client never learns the outcome
            swallowed: list[Message] = []

            async def capture(message: Message) -> None:
                swallowed.append(message)

            await self.app(scope, receive, capture)
            if rule.action == "drop_after_commit" and _abort(receive):
                return
            await _respond(send, rule.status, _error_body(rule.status, rule.id), [])


def _error_body(status: int, rule_id: str) -> dict[str, Any]:
    return {
        "type": "https://httpstatuses.io/" + str(status),
        "title": "Injected fault",
        "status": status,
        "o:errorDetails": [{"detail": f"fault rule {rule_id}", "o:errorCode": "INJECTED_FAULT"}],
    }
