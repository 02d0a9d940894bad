"""Client of the planning platform: publish forecast snapshots and read them back.

Pure Python over httpx. ``PUT /api/v1/snapshots/{id}`` is idempotent by snapshot id and content
(201 created, 200 unchanged, 409 conflict), so the PUT is retried like a read under the shared
:class:`~psa_erp_sync.clients.http.RetryPolicy`: on 408, 429, 5xx, timeouts and dropped
connections, with exponential backoff and full jitter honouring ``Retry-After``. After an
ambiguous failure (the platform committed, the answer was lost) the retry answers 200
``unchanged``: still a success. A 409 means the id was already used for other
content, which a deterministic snapshot id makes a bug, so it raises and is never retried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

import httpx

from psa_erp_sync import money
from psa_erp_sync.clients.http import RetryPolicy, send_with_retry

if TYPE_CHECKING:
    from psa_erp_sync.contracts.v1 import ForecastSnapshot

log = logging.getLogger(__name__)

USER_AGENT = "psa-erp-sync/0.1 (planning-client)"


class PlanningError(Exception):
    """The planning platform answered an error (after retries, for retryable ones)."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(f"planning {status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code


class SnapshotConflictError(PlanningError):
    """The snapshot id exists with other content: snapshots are immutable."""


@dataclass(frozen=True)
class SnapshotReceipt:
    """What the platform holds for a snapshot after a PUT."""

    snapshot_id: str
    status: Literal["created", "unchanged"]
    line_count: int
    content_hash: str
    totals: dict[str, Any]


def snapshot_payload(snapshot: ForecastSnapshot) -> dict[str, Any]:
    """The wire form of a canonical snapshot: minor units become decimal strings per currency."""
    return {
        "scenario": snapshot.scenario,
        "version": snapshot.version,
        "as_of": snapshot.as_of.isoformat(),
        "reporting_currency": snapshot.reporting_currency,
        "lines": [
            {
                "project_ref": line.project_ref,
                "practice": line.practice,
                "legal_entity": line.legal_entity,
                "layer": line.layer,
                "month": line.month.isoformat(),
                "currency": line.currency,
                "amount": money.format_minor(line.amount_minor, line.currency),
                "reporting_amount": money.format_minor(
                    line.reporting_amount_minor, snapshot.reporting_currency
                ),
            }
            for line in snapshot.lines
        ],
    }


class PlanningClient:
    """The planning platform API (``/api/v1``) with bearer auth and retries.

    :param base_url: scheme, host and port of the platform, e.g. ``http://127.0.0.1:18104``.
    :param token: bearer token.
    :param timeout: seconds per request (large snapshots take a while to store).
    :param transport: an httpx transport (tests, proxies).
    :param retry: retry policy; every call is safe to retry (GETs and the idempotent PUT).
    :param sleep: how to wait between attempts (tests pass a recorder).
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token:
            raise ValueError("a planning token is required")
        self.base_url = base_url.rstrip("/")
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            },
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PlanningClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put_snapshot(self, snapshot: ForecastSnapshot) -> SnapshotReceipt:
        """Publish a canonical snapshot under its ``snapshot_id``; safe to call again."""
        return self.put_snapshot_payload(snapshot.snapshot_id, snapshot_payload(snapshot))

    def put_snapshot_payload(self, snapshot_id: str, payload: Mapping[str, Any]) -> SnapshotReceipt:
        """Publish a snapshot already in wire form (decimal-string amounts)."""
        response = self._request(
            "PUT", f"/api/v1/snapshots/{quote(snapshot_id, safe='')}", json=dict(payload)
        )
        body = response.json()
        log.info(
            "planning snapshot %s %s (%d lines)", body["snapshot_id"], body["status"], body["line_count"]
        )
        return SnapshotReceipt(
            snapshot_id=body["snapshot_id"],
            status=body["status"],
            line_count=int(body["line_count"]),
            content_hash=body["content_hash"],
            totals=body["totals"],
        )

    def get_snapshot(self, snapshot_id: str, *, include_lines: bool = False) -> dict[str, Any] | None:
        """The stored snapshot summary (totals, line count; lines on request), or None if unknown."""
        params = {"include_lines": "true"} if include_lines else None
        try:
            response = self._request("GET", f"/api/v1/snapshots/{quote(snapshot_id, safe='')}", params=params)
        except PlanningError as exc:
            if exc.status_code == 404:
                return None
            raise
        body: dict[str, Any] = response.json()
        return body

    def iter_snapshots(
        self, *, scenario: str | None = None, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Summaries of every stored snapshot (of ``scenario``), ordered by id."""
        params: dict[str, Any] | None = {"limit": page_size}
        if scenario is not None and params is not None:
            params["scenario"] = scenario
        url: str | None = "/api/v1/snapshots"
        origin = urlsplit(self.base_url)[:2]
        while url is not None:
            body = self._request("GET", url, params=params).json()
            yield from body["data"]
            url = body.get("next")
            params = None
            if url is not None and "://" in url and urlsplit(url)[:2] != origin:
                raise PlanningError(502, "FOREIGN_NEXT_LINK", "the next link points to another origin")

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return send_with_retry(
            self._http,
            method,
            url,
            retry=self._retry,
            sleep=self._sleep,
            system="planning",
            error=_error,
            **kwargs,
        )


def _error(response: httpx.Response) -> PlanningError:
    code, message = "HTTP_ERROR", response.reason_phrase
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, dict):
        code = str(detail.get("code", code))
        message = str(detail.get("message", message))
    elif isinstance(detail, list):  # validation errors: field locations only, never values
        locations = [".".join(str(p) for p in e.get("loc", ())) for e in detail[:5] if isinstance(e, dict)]
        code, message = "VALIDATION_ERROR", "invalid fields: " + ", ".join(locations)
    cls = SnapshotConflictError if response.status_code == 409 else PlanningError
    return cls(response.status_code, code, message)
