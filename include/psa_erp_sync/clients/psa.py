"""Harvest API v2 client: authenticated, paginated, rate-limit aware reads of the PSA.

Pure Python on httpx (no Airflow). Pagination follows ``links.next`` only (never page
arithmetic), so a cursor-paginated server is walked exactly as it intends; a ``next`` link to
another origin is refused so the token never leaves the configured host. GETs are safe to
retry: 429 waits for ``Retry-After``, 5xx, timeouts and connection errors back off with full
jitter (:class:`~psa_erp_sync.clients.http.RetryPolicy`). Any other 4xx raises
:class:`PsaApiError` naming the status and endpoint. Items are yielded as raw dicts: the pipeline
stages raw payloads and validates them later with :mod:`psa_erp_sync.clients.psa_models`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from psa_erp_sync.clients.http import RetryPolicy, parse_retry_after
from psa_erp_sync.clients.psa_models import Invoice, InvoicePayment

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = "psa-erp-sync/0.1 (ops@example.com)"
MAX_PER_PAGE = 2000
_decode = msgspec.json.Decoder().decode
_split_body = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_split_list = msgspec.json.Decoder(list[msgspec.Raw]).decode


def _split_page(content: bytes) -> Any:
    """A page's top level with each member's JSON left raw (a body that is not an object: decoded)."""
    try:
        return _split_body(content)
    except msgspec.ValidationError:
        return _decode(content)


def _split_items(raw: msgspec.Raw) -> list[msgspec.Raw] | None:
    """The raw JSON of each item of the list ``raw`` holds, or None when it holds no list."""
    try:
        return _split_list(raw)
    except msgspec.ValidationError:
        return None


class PsaApiError(Exception):
    """The PSA answered an error we will not retry (or retries ran out).

    ``status`` is None when the last failure was a transport error.
    """

    def __init__(self, status: int | None, endpoint: str, message: str) -> None:
        self.status = status
        self.endpoint = endpoint
        super().__init__(
            f"PSA {endpoint} failed with {status if status is not None else 'no response'}: {message}"
        )


class PsaEndpointNotFound(PsaApiError):
    """A 404 that is not the PSA saying "no such record": a wrong base URL or route, a proxy's page.

    Never read as a deletion. See :func:`is_record_not_found`.
    """


def is_record_not_found(response: httpx.Response) -> bool:
    """Is this 404 the PSA's answer for a missing record?

    Harvest answers a missing record with 404 and its ``Error`` schema, ``{"code": 404, "message":
    "..."}`` (contracts/harvest-openapi.yaml). Anything else (a framework's ``{"detail": ...}``, an
    HTML page, an empty body, another API's error shape) comes from something that is not the
    PSA's record lookup, so it proves nothing about the record.
    """
    if response.status_code != 404:
        return False
    if "json" not in response.headers.get("content-type", ""):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return (
        isinstance(body, dict)
        and type(body.get("code")) is int
        and body["code"] == 404
        and isinstance(body.get("message"), str)
    )


def format_since(value: datetime) -> str:
    """UTC, second precision, floored: with Harvest's inclusive ``updated_since`` nothing is skipped."""
    if value.tzinfo is None:
        raise ValueError("updated_since must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "error"
    if isinstance(body, dict):
        for key in ("message", "error_description", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])[:300]
    return response.reason_phrase or "error"


class HarvestClient:
    """Reads Harvest API v2 (or the PSA simulator) page by page.

    :param base_url: API root, with or without the ``/v2`` suffix (``https://api.harvestapp.com/v2``).
    :param token: personal access token, sent as ``Authorization: Bearer``.
    :param account_id: sent as ``Harvest-Account-Id``.
    :param user_agent: Harvest requires one naming the application and a contact.
    :param timeout: seconds per request.
    :param retry: the retry policy for GETs.
    :param transport: an httpx transport (tests, proxies).
    :param sleep: how to wait between retries (tests pass a fake).
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        account_id: str,
        user_agent: str = DEFAULT_USER_AGENT,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token.strip() or not account_id.strip():
            raise ValueError("a PSA token and account id are required")
        root = base_url.rstrip("/")
        self._root = root[: -len("/v2")] if root.endswith("/v2") else root
        self._origin = urlsplit(self._root)[:2]
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._http = httpx.Client(
            headers={
                "Authorization": f"Bearer {token}",
                "Harvest-Account-Id": account_id,
                "User-Agent": user_agent,
                "Accept": "application/json",
            },
            timeout=timeout,
            transport=transport,
        )
        self.requests_made = 0
        self.pages_fetched = 0
        self.retries = 0

    # -- plumbing ----------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HarvestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        """``/v2/time_entries``, ``v2/time_entries`` or ``time_entries`` -> absolute URL."""
        path = "/" + path.lstrip("/")
        if not path.startswith("/v2/"):
            path = "/v2" + path
        return self._root + path

    @staticmethod
    def _endpoint(url: str) -> str:
        return urlsplit(url).path

    def _get(self, url: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        """One GET with retries; returns a 2xx or 404 response, raises :class:`PsaApiError` otherwise."""
        endpoint = self._endpoint(url)
        attempt = 0
        while True:
            attempt += 1
            self.requests_made += 1
            try:
                response = self._http.get(url, params=params)
            except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
                raise PsaApiError(None, endpoint, f"request could not be sent: {type(exc).__name__}") from exc
            except httpx.TransportError as exc:
                if not self._retry.should_retry(attempt, None):
                    raise PsaApiError(None, endpoint, type(exc).__name__) from exc
                delay = self._retry.delay(attempt)
                log.warning("PSA %s: %s, retry %d in %.2fs", endpoint, type(exc).__name__, attempt, delay)
                self._pause(delay)
                continue
            status = response.status_code
            if status < 300 or status == 404:
                return response
            if not self._retry.should_retry(attempt, status):
                raise PsaApiError(status, endpoint, _error_message(response))
            delay = self._retry.delay(attempt, status=status, retry_after=parse_retry_after(response.headers))
            log.warning("PSA %s answered %d, retry %d in %.2fs", endpoint, status, attempt, delay)
            self._pause(delay)

    def _pause(self, seconds: float) -> None:
        self.retries += 1
        self._sleep(seconds)

    # -- generic -----------------------------------------------------------------------------

    def iter_pages(
        self, path: str, params: Mapping[str, Any] | None = None, *, key: str | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield each page's items (the list under ``key``, by default the endpoint's last path
        segment), following ``links.next``."""
        # msgspec: the same values as json.loads (floats, ints, str), 1.5x faster on pages of
        # 2,000 items.
        yield from self._pages(path, params, key, _decode)

    def iter_raw_pages(
        self, path: str, params: Mapping[str, Any] | None = None, *, key: str | None = None
    ) -> Iterator[list[msgspec.Raw]]:
        """Like :meth:`iter_pages`, but each item is the raw JSON bytes the PSA sent for it
        (:class:`msgspec.Raw`): the page is split, not decoded (staging keeps what was sent)."""
        yield from self._pages(path, params, key, _split_page)

    def _pages(
        self, path: str, params: Mapping[str, Any] | None, key: str | None, decode: Callable[[bytes], Any]
    ) -> Iterator[Any]:
        url = self.url(path)
        endpoint = self._endpoint(url)
        key = key or endpoint.rstrip("/").rsplit("/", 1)[-1]
        query: Mapping[str, Any] | None = {k: v for k, v in (params or {}).items() if v is not None}
        total = 0
        while True:
            response = self._get(url, query)
            if response.status_code == 404:
                raise PsaApiError(404, endpoint, _error_message(response))
            try:
                body = decode(response.content)
                items = body.get(key) if isinstance(body, dict) else None
                if isinstance(items, msgspec.Raw):
                    items = _split_items(items)
                links = body.get("links") if isinstance(body, dict) else None
                if isinstance(links, msgspec.Raw):
                    links = _decode(links)
            except msgspec.DecodeError as exc:
                raise PsaApiError(response.status_code, endpoint, "response is not valid JSON") from exc
            if not isinstance(items, list):
                raise PsaApiError(response.status_code, endpoint, f"response has no list under {key!r}")
            self.pages_fetched += 1
            total += len(items)
            log.info("PSA %s page %d: %d items (%d so far)", endpoint, self.pages_fetched, len(items), total)
            yield items
            next_url = (links if isinstance(links, dict) else {}).get("next")
            if not next_url:
                return
            if urlsplit(next_url)[:2] != self._origin:
                raise PsaApiError(None, endpoint, "links.next points to another origin; refusing to follow")
            url, query = next_url, None  # the link carries every parameter, cursor included

    def iter_items(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        for page in self.iter_pages(path, params):
            yield from page

    # -- typed endpoints ---------------------------------------------------------------------

    @staticmethod
    def _window(
        updated_since: datetime | None, from_date: date | None, to_date: date | None, per_page: int
    ) -> dict[str, Any]:
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be 1..{MAX_PER_PAGE}")
        params: dict[str, Any] = {"per_page": per_page}
        if updated_since is not None:
            params["updated_since"] = format_since(updated_since)
        if from_date is not None:
            params["from"] = from_date.isoformat()
        if to_date is not None:
            params["to"] = to_date.isoformat()
        return params

    def iter_time_entries(
        self,
        *,
        updated_since: datetime | None = None,
        from_date: date | None = None,
        to_date: date | None = None,
        per_page: int = MAX_PER_PAGE,
        **filters: Any,
    ) -> Iterator[dict[str, Any]]:
        """Time entries; extra ``filters`` (``project_id``, ``user_id``, ``is_billed``, ...) pass through."""
        params = self._window(updated_since, from_date, to_date, per_page) | _filters(filters)
        return self.iter_items("/v2/time_entries", params)

    def iter_expenses(
        self,
        *,
        updated_since: datetime | None = None,
        from_date: date | None = None,
        to_date: date | None = None,
        per_page: int = MAX_PER_PAGE,
        **filters: Any,
    ) -> Iterator[dict[str, Any]]:
        params = self._window(updated_since, from_date, to_date, per_page) | _filters(filters)
        return self.iter_items("/v2/expenses", params)

    def iter_clients(self, *, updated_since: datetime | None = None) -> Iterator[dict[str, Any]]:
        return self.iter_items("/v2/clients", self._window(updated_since, None, None, MAX_PER_PAGE))

    def iter_projects(self, *, updated_since: datetime | None = None) -> Iterator[dict[str, Any]]:
        return self.iter_items("/v2/projects", self._window(updated_since, None, None, MAX_PER_PAGE))

    def iter_users(self, *, updated_since: datetime | None = None) -> Iterator[dict[str, Any]]:
        return self.iter_items("/v2/users", self._window(updated_since, None, None, MAX_PER_PAGE))

    def iter_tasks(self, *, updated_since: datetime | None = None) -> Iterator[dict[str, Any]]:
        return self.iter_items("/v2/tasks", self._window(updated_since, None, None, MAX_PER_PAGE))

    def iter_task_assignments(self, *, updated_since: datetime | None = None) -> Iterator[dict[str, Any]]:
        return self.iter_items("/v2/task_assignments", self._window(updated_since, None, None, MAX_PER_PAGE))

    def iter_user_assignments(self, *, updated_since: datetime | None = None) -> Iterator[dict[str, Any]]:
        return self.iter_items("/v2/user_assignments", self._window(updated_since, None, None, MAX_PER_PAGE))

    def iter_expense_categories(self) -> Iterator[dict[str, Any]]:
        return self.iter_items("/v2/expense_categories", {"per_page": MAX_PER_PAGE})

    def iter_schedule(
        self,
        *,
        from_date: date | None = None,
        to_date: date | None = None,
        user_id: int | None = None,
        project_id: int | None = None,
        updated_since: datetime | None = None,
        per_page: int = MAX_PER_PAGE,
    ) -> Iterator[dict[str, Any]]:
        """Extension ``/v2/x/schedule``: scheduled hours per user, project and week."""
        params = self._window(updated_since, from_date, to_date, per_page)
        params |= _filters({"user_id": user_id, "project_id": project_id})
        return self.iter_items("/v2/x/schedule", params)

    def iter_milestones(
        self,
        *,
        project_id: int | None = None,
        updated_since: datetime | None = None,
        per_page: int = MAX_PER_PAGE,
    ) -> Iterator[dict[str, Any]]:
        """Extension ``/v2/x/milestones``."""
        params = self._window(updated_since, None, None, per_page) | _filters({"project_id": project_id})
        return self.iter_items("/v2/x/milestones", params)

    def _get_one(self, path: str) -> dict[str, Any] | None:
        """One record by id: the record, or None when the PSA says it has no such record.

        Raises :class:`PsaEndpointNotFound` for a 404 in any other words (see
        :func:`is_record_not_found`) and for a record that comes back under another id.
        """
        url = self.url(path)
        endpoint = self._endpoint(url)
        response = self._get(url)
        if response.status_code == 404:
            if is_record_not_found(response):
                return None
            raise PsaEndpointNotFound(
                404, endpoint, "not the PSA's answer for a missing record (wrong base URL or route?)"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise PsaApiError(response.status_code, endpoint, "response is not valid JSON") from exc
        wanted = endpoint.rstrip("/").rsplit("/", 1)[-1]
        if not isinstance(body, dict) or str(body.get("id")) != wanted:
            got = body.get("id") if isinstance(body, dict) else None
            raise PsaEndpointNotFound(
                response.status_code, endpoint, f"answered a record with id {got}, not {wanted}"
            )
        return body

    def get_time_entry(self, entry_id: int) -> dict[str, Any] | None:
        """One time entry, or None when the PSA says it has none (deleted)."""
        return self._get_one(f"/v2/time_entries/{int(entry_id)}")

    def get_expense(self, expense_id: int) -> dict[str, Any] | None:
        """One expense, or None when the PSA says it has none (deleted)."""
        return self._get_one(f"/v2/expenses/{int(expense_id)}")

    def get_milestone(self, milestone_id: int) -> dict[str, Any] | None:
        """One milestone (extension ``/v2/x/milestones/{id}``), or None when the PSA has none."""
        return self._get_one(f"/v2/x/milestones/{int(milestone_id)}")

    # -- writes (project setup and master-data propagation) ------------------------------------

    def _write(self, method: str, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """One POST/PATCH. Harvest has no idempotency key, so a write is retried only when it
        certainly never reached the PSA (connection refused, or a 429 before the handler); any
        other failure raises :class:`PsaWriteUncertain` or :class:`PsaApiError` and the caller
        looks the record up before trying again."""
        url = self.url(path)
        endpoint = self._endpoint(url)
        attempt = 0
        while True:
            attempt += 1
            self.requests_made += 1
            try:
                response = self._http.request(method, url, json=dict(body))
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                if not self._retry.should_retry(attempt, None):
                    raise PsaApiError(None, endpoint, type(exc).__name__) from exc
                self._pause(self._retry.delay(attempt))
                continue
            except httpx.TransportError as exc:
                raise PsaWriteUncertain(None, endpoint, f"outcome unknown: {type(exc).__name__}") from exc
            status = response.status_code
            if status < 300:
                result: dict[str, Any] = response.json()
                return result
            if status == 429 and self._retry.should_retry(attempt, status):
                self._pause(
                    self._retry.delay(attempt, status=status, retry_after=parse_retry_after(response.headers))
                )
                continue
            if status >= 500:
                raise PsaWriteUncertain(status, endpoint, _error_message(response))
            raise PsaApiError(status, endpoint, _error_message(response))

    def create_project(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v2/projects``; returns the created project. Not idempotent: look up by code first."""
        return self._write("POST", "/v2/projects", fields)

    def update_project(self, project_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH /v2/projects/{id}`` with absolute values (so a repeat is harmless)."""
        return self._write("PATCH", f"/v2/projects/{int(project_id)}", fields)

    def update_client(self, client_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH /v2/clients/{id}`` with absolute values (so a repeat is harmless)."""
        return self._write("PATCH", f"/v2/clients/{int(client_id)}", fields)

    def create_user(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v2/users``; returns the created user. Not idempotent: look up by employee id first."""
        return self._write("POST", "/v2/users", fields)

    def update_user(self, user_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH /v2/users/{id}`` with absolute values; ``is_active: false`` archives the user."""
        return self._write("PATCH", f"/v2/users/{int(user_id)}", fields)

    def get_project(self, project_id: int) -> dict[str, Any] | None:
        """One project, or None when the PSA has none with this id."""
        return self._get_one(f"/v2/projects/{int(project_id)}")

    def get_client(self, client_id: int) -> dict[str, Any] | None:
        """One client, or None when the PSA has none with this id."""
        return self._get_one(f"/v2/clients/{int(client_id)}")

    def iter_client_projects(self, client_id: int) -> Iterator[dict[str, Any]]:
        """Every project (active or archived) of one client."""
        return self.iter_items("/v2/projects", {"client_id": int(client_id), "per_page": MAX_PER_PAGE})

    # -- invoices (billing) ---------------------------------------------------------------------

    def iter_invoices(
        self,
        *,
        updated_since: datetime | None = None,
        state: str | None = None,
        client_id: int | None = None,
        per_page: int = MAX_PER_PAGE,
    ) -> Iterator[Invoice]:
        """``GET /v2/invoices``, each validated as :class:`Invoice`."""
        params = self._window(updated_since, None, None, per_page) | _filters(
            {"state": state, "client_id": client_id}
        )
        for item in self.iter_items("/v2/invoices", params):
            yield Invoice.model_validate(item)

    def get_invoice(self, invoice_id: int) -> Invoice | None:
        found = self._get_one(f"/v2/invoices/{int(invoice_id)}")
        return None if found is None else Invoice.model_validate(found)

    def create_invoice(
        self,
        *,
        client_id: int,
        number: str,
        time_entry_ids: Sequence[int] = (),
        expense_ids: Sequence[int] = (),
        line_items: Sequence[Mapping[str, Any]] = (),
        issue_date: date | None = None,
        due_date: date | None = None,
        currency: str | None = None,
        subject: str | None = None,
    ) -> Invoice:
        """``POST /v2/invoices`` billing exactly these time entries and expenses (they become
        ``is_billed`` with ``invoice: {id, number}``). Not idempotent (Harvest has no key): on
        :class:`PsaWriteUncertain`, look for the ``number`` with :meth:`find_invoice` first."""
        body: dict[str, Any] = {"client_id": int(client_id), "number": number}
        if time_entry_ids or expense_ids:
            body["line_items_import"] = {
                "time_entry_ids": [int(i) for i in time_entry_ids],
                "expense_ids": [int(i) for i in expense_ids],
            }
        if line_items:
            body["line_items"] = [dict(item) for item in line_items]
        for name, value in (("issue_date", issue_date), ("due_date", due_date)):
            if value is not None:
                body[name] = value.isoformat()
        if currency is not None:
            body["currency"] = currency
        if subject is not None:
            body["subject"] = subject
        return Invoice.model_validate(self._write("POST", "/v2/invoices", body))

    def find_invoice(self, number: str, *, client_id: int | None = None) -> Invoice | None:
        """The invoice with this number (to resolve an uncertain :meth:`create_invoice`)."""
        for invoice in self.iter_invoices(client_id=client_id):
            if invoice.number == number:
                return invoice
        return None

    def mark_invoice(self, invoice_id: int, event_type: str) -> Invoice:
        """``POST /v2/invoices/{id}/messages`` with ``send`` (draft->open), ``close``, ``re-open``
        or ``draft`` (Harvest answers the message); returns the invoice read back in its new state."""
        if event_type not in ("send", "close", "re-open", "draft"):
            raise ValueError(f"unknown invoice event {event_type!r}")
        message = self._write("POST", f"/v2/invoices/{int(invoice_id)}/messages", {"event_type": event_type})
        if message.get("event_type") != event_type:
            raise PsaApiError(
                None, "/v2/invoices/{id}/messages", f"answered event {message.get('event_type')!r}"
            )
        found = self.get_invoice(invoice_id)
        if found is None:
            raise PsaApiError(404, f"/v2/invoices/{int(invoice_id)}", "invoice gone after its message")
        return found

    def record_invoice_payment(
        self, invoice_id: int, amount: Decimal, *, paid_date: date | None = None, notes: str | None = None
    ) -> InvoicePayment:
        """``POST /v2/invoices/{id}/payments``; the invoice becomes ``paid`` when nothing is due.
        Not idempotent: on :class:`PsaWriteUncertain`, compare :meth:`iter_invoice_payments`."""
        if not isinstance(amount, Decimal) or amount <= 0:
            raise ValueError("amount must be a positive Decimal")
        body: dict[str, Any] = {"amount": str(amount)}
        if paid_date is not None:
            body["paid_date"] = paid_date.isoformat()
        if notes is not None:
            body["notes"] = notes
        return InvoicePayment.model_validate(
            self._write("POST", f"/v2/invoices/{int(invoice_id)}/payments", body)
        )

    def iter_invoice_payments(self, invoice_id: int) -> Iterator[InvoicePayment]:
        path = f"/v2/invoices/{int(invoice_id)}/payments"
        for page in self.iter_pages(path, {"per_page": MAX_PER_PAGE}, key="invoice_payments"):
            for item in page:
                yield InvoicePayment.model_validate(item)


class PsaWriteUncertain(PsaApiError):
    """A write reached the PSA (or may have) and its outcome is unknown: look it up before retrying."""


def _filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in filters.items():
        if value is None:
            continue
        out[name] = ("true" if value else "false") if isinstance(value, bool) else value
    return out
