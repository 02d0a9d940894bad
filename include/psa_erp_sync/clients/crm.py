"""Client of the CRM REST API: accounts, opportunities, change orders and the event feed.

Pure Python over httpx; the Airflow hook builds it from a connection. Every call is a GET, so
every call is retried under the shared :class:`~psa_erp_sync.clients.http.RetryPolicy` (408,
429, 5xx and transport errors; exponential backoff with full jitter, honouring ``Retry-After``). Lists are keyset-paginated: the client follows ``next``
(only to the configured origin, so the token never leaves it) and yields records one at a time,
raw as the CRM sent them, for staging. The event feed is at-least-once: consumers dedupe by
event ``id`` and persist ``seq`` as their position.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from psa_erp_sync.clients.http import RetryPolicy, send_with_retry

log = logging.getLogger(__name__)

USER_AGENT = "psa-erp-sync/0.1 (crm-client)"


class CrmError(Exception):
    """The CRM answered an error (after retries, for retryable ones)."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(f"CRM {status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code


class CrmNotFoundError(CrmError):
    """The requested record does not exist."""


@dataclass(frozen=True)
class CrmEvent:
    """One delivery from the event feed. The same ``id`` may arrive again under a later ``seq``."""

    seq: int
    id: str
    type: str
    occurred_at: str
    data: dict[str, Any]


@dataclass(frozen=True)
class EventPage:
    """One page of the event feed; ``next_after`` is the position to persist once it is handled."""

    events: tuple[CrmEvent, ...]
    next_after: int
    has_more: bool


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("updated_since must be timezone-aware")
    return value.isoformat()


class CrmClient:
    """The CRM API (``/api/v1``) with bearer auth, pagination and retries.

    :param base_url: scheme, host and port of the CRM, e.g. ``http://127.0.0.1:18102``.
    :param token: bearer token.
    :param timeout: seconds per request.
    :param transport: an httpx transport (tests, proxies).
    :param retry: retry policy of every call (all are GETs, so all are safe to retry).
    :param page_size: records per page (the CRM allows up to 1000).
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
        page_size: int = 500,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token:
            raise ValueError("a CRM token is required")
        self.base_url = base_url.rstrip("/")
        self.page_size = page_size
        self._origin = urlsplit(self.base_url)[:2]
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

    def __enter__(self) -> CrmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- records ----------------------------------------------------------------------------

    def iter_accounts(self, *, updated_since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Every account (changed at or after ``updated_since``), ordered by id."""
        return self._paginate("/api/v1/accounts", {"updated_since": updated_since})

    def iter_opportunities(
        self,
        *,
        updated_since: datetime | None = None,
        stage: str | None = None,
        is_won: bool | None = None,
        account_id: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Opportunities matching the filters, ordered by id."""
        params = {"updated_since": updated_since, "stage": stage, "is_won": is_won, "account_id": account_id}
        return self._paginate("/api/v1/opportunities", params)

    def get_opportunity(self, opportunity_id: int) -> dict[str, Any]:
        """One opportunity; :class:`CrmNotFoundError` when it does not exist."""
        body: dict[str, Any] = self._get(f"/api/v1/opportunities/{int(opportunity_id)}", {}).json()
        return body

    def iter_change_orders(
        self,
        *,
        updated_since: datetime | None = None,
        opportunity_id: int | None = None,
        status: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Change orders matching the filters, ordered by id."""
        params = {"updated_since": updated_since, "opportunity_id": opportunity_id, "status": status}
        return self._paginate("/api/v1/change_orders", params)

    # --- events -----------------------------------------------------------------------------

    def read_events(
        self, *, after: int = 0, limit: int | None = None, event_type: str | None = None
    ) -> EventPage:
        """One page of events with ``seq > after``."""
        params: dict[str, Any] = {"after": after, "limit": limit or self.page_size, "type": event_type}
        body = self._get("/api/v1/events", params).json()
        events = tuple(
            CrmEvent(seq=e["seq"], id=e["id"], type=e["type"], occurred_at=e["occurred_at"], data=e["data"])
            for e in body["events"]
        )
        return EventPage(events=events, next_after=int(body["next_after"]), has_more=bool(body["has_more"]))

    def iter_events(self, *, after: int = 0, event_type: str | None = None) -> Iterator[CrmEvent]:
        """Every event after ``after`` until the feed is drained (duplicates included)."""
        while True:
            page = self.read_events(after=after, event_type=event_type)
            yield from page.events
            after = page.next_after
            if not page.has_more:
                return

    def get_account(self, account_id: int) -> dict[str, Any]:
        """One account; :class:`CrmNotFoundError` when it does not exist."""
        body: dict[str, Any] = self._get(f"/api/v1/accounts/{int(account_id)}", {}).json()
        return body

    # --- transport --------------------------------------------------------------------------

    def _paginate(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        url: str | None = path
        query: dict[str, Any] | None = {**params, "limit": self.page_size}
        pages = 0
        while url is not None:
            body = self._get(url, query).json()
            pages += 1
            yield from body["data"]
            url = body.get("next")
            query = None  # the next link carries the whole query
            if url is not None and "://" in url and urlsplit(url)[:2] != self._origin:
                raise CrmError(502, "FOREIGN_NEXT_LINK", "the next link points to another origin")
        log.debug("crm %s: %d pages", path, pages)

    def _get(self, url: str, params: dict[str, Any] | None) -> httpx.Response:
        query = None
        if params is not None:
            query = {
                k: (_iso(v) if isinstance(v, datetime) else str(v).lower() if isinstance(v, bool) else v)
                for k, v in params.items()
                if v is not None
            }
        return send_with_retry(
            self._http,
            "GET",
            url,
            retry=self._retry,
            sleep=self._sleep,
            system="crm",
            error=_error,
            params=query,
        )


def _error(response: httpx.Response) -> CrmError:
    code, message = "HTTP_ERROR", response.reason_phrase
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, dict):
        code = str(detail.get("code", code))
        message = str(detail.get("message", message))
    cls = CrmNotFoundError if response.status_code == 404 else CrmError
    return cls(response.status_code, code, message)
