"""Workday client: OAuth2 refresh-token auth, offset paging of workers, the RaaS cost-rate report.

Pure Python on httpx (no Airflow). Workday's REST API takes a short-lived bearer token obtained
with the refresh-token grant (``POST /ccx/oauth2/{tenant}/token``, the API client's id and secret
as HTTP Basic). The client fetches a token on first use, refreshes it shortly before it expires,
and on a 401 refreshes once and repeats the call (a token revoked or expired early). A refused
refresh (``invalid_grant``: the refresh token was revoked) raises :class:`WorkdayAuthError` at once:
retrying cannot help, a person must issue a new refresh token.

Lists are paged with ``limit`` (at most 100, Workday refuses more) and ``offset`` until ``offset``
reaches the ``total`` the last page reported. Offset paging loses a row when an earlier row is
deleted mid-walk, so a walk that saw ``total`` change is walked again (new rows only). Every call
is a read, so 429 (honouring ``Retry-After``), 5xx and transport errors are retried with the shared
:class:`~psa_erp_sync.clients.http.RetryPolicy`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from psa_erp_sync.clients.http import RetryPolicy, parse_retry_after
from psa_erp_sync.clients.workday_models import WorkersPage

log = logging.getLogger(__name__)

MAX_LIMIT = 100
MAX_WALKS = 3
COST_RATE_REPORT = "Worker_Cost_Rates"
_REFRESH_EARLY_S = 60.0  # refresh this long before the token's stated expiry


class WorkdayApiError(Exception):
    """Workday answered an error we will not retry (or retries ran out); ``status`` None = no answer."""

    def __init__(self, status: int | None, endpoint: str, message: str) -> None:
        self.status = status
        self.endpoint = endpoint
        super().__init__(
            f"Workday {endpoint} failed with {status if status is not None else 'no response'}: {message}"
        )


class WorkdayAuthError(WorkdayApiError):
    """The token endpoint refused our client or refresh token: a person must fix the credentials."""


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "error"
    if isinstance(body, dict):
        if isinstance(body.get("errors"), list) and body["errors"]:
            return "; ".join(str(e.get("error", e))[:200] for e in body["errors"] if isinstance(e, dict))
        for key in ("error_description", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])[:300]
    return response.reason_phrase or "error"


class WorkdayClient:
    """Reads Workday (or the simulator) for one tenant.

    :param base_url: the Workday host, e.g. ``https://wd2-impl-services1.workday.com``.
    :param tenant: the tenant name in every path.
    :param client_id: the API client's id (HTTP Basic user on the token endpoint).
    :param client_secret: the API client's secret.
    :param refresh_token: the integration system user's refresh token.
    :param report_owner: the account that owns the custom report (RaaS path segment).
    :param page_size: ``limit`` per page, 1..100.
    :param retry: retry policy of reads (and of the token call on 5xx/transport errors).
    :param transport: an httpx transport (tests, proxies).
    :param sleep: how to wait between retries (tests pass a fake).
    :param clock: monotonic seconds, for token expiry (tests pass a fake).
    """

    def __init__(
        self,
        *,
        base_url: str,
        tenant: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        report_owner: str = "ISU_PSA_ERP_SYNC",
        page_size: int = MAX_LIMIT,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (tenant.strip() and client_id.strip() and client_secret.strip() and refresh_token.strip()):
            raise ValueError("a Workday tenant, client id, client secret and refresh token are required")
        if not 1 <= page_size <= MAX_LIMIT:
            raise ValueError(f"page_size must be 1..{MAX_LIMIT} (Workday refuses a larger limit)")
        self._root = base_url.rstrip("/")
        self._tenant = quote(tenant, safe="")
        self._auth = (client_id, client_secret)
        self._refresh_token = refresh_token
        self._owner = quote(report_owner, safe="")
        self._page_size = page_size
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._http = httpx.Client(
            timeout=timeout, transport=transport, headers={"Accept": "application/json"}
        )
        self._token: str | None = None
        self._token_expires = 0.0
        self.requests_made = 0
        self.token_refreshes = 0
        self.throttled = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WorkdayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- auth ------------------------------------------------------------------------------------
    def _refresh(self) -> str:
        url = f"{self._root}/ccx/oauth2/{self._tenant}/token"
        form = {"grant_type": "refresh_token", "refresh_token": self._refresh_token}
        attempt = 0
        while True:
            attempt += 1
            self.requests_made += 1
            try:
                response = self._http.post(url, data=form, auth=self._auth)
            except httpx.TransportError as exc:
                if not self._retry.should_retry(attempt, None):
                    raise WorkdayApiError(None, "oauth2/token", type(exc).__name__) from exc
                self._sleep(self._retry.delay(attempt))
                continue
            if response.is_success:
                break
            if response.status_code in (400, 401, 403):
                raise WorkdayAuthError(response.status_code, "oauth2/token", _message(response))
            if not self._retry.should_retry(attempt, response.status_code):
                raise WorkdayApiError(response.status_code, "oauth2/token", _message(response))
            self._sleep(
                self._retry.delay(
                    attempt, status=response.status_code, retry_after=parse_retry_after(response.headers)
                )
            )
        body = response.json()
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise WorkdayAuthError(response.status_code, "oauth2/token", "no access_token in the answer")
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 3600.0
        self._token = token
        self._token_expires = self._clock() + max(lifetime - _REFRESH_EARLY_S, lifetime / 2)
        self.token_refreshes += 1
        log.info("Workday access token refreshed (valid %.0fs)", lifetime)
        return token

    def _bearer(self) -> str:
        if self._token is None or self._clock() >= self._token_expires:
            return self._refresh()
        return self._token

    # -- reads -----------------------------------------------------------------------------------
    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        url = f"{self._root}{path}"
        endpoint = path.split("?", 1)[0]
        attempt = 0
        reauthenticated = False
        while True:
            attempt += 1
            headers = {"Authorization": f"Bearer {self._bearer()}"}
            self.requests_made += 1
            try:
                response = self._http.get(url, params=dict(params or {}), headers=headers)
            except httpx.TransportError as exc:
                if not self._retry.should_retry(attempt, None):
                    raise WorkdayApiError(None, endpoint, type(exc).__name__) from exc
                self._sleep(self._retry.delay(attempt))
                continue
            status = response.status_code
            if response.is_success:
                return response.json()
            if status == 401 and not reauthenticated:
                reauthenticated = True  # expired or revoked early: one refresh, then the same call
                self._token = None
                attempt -= 1
                continue
            if status == 404:
                return None
            if status == 429:
                self.throttled += 1
            if not self._retry.should_retry(attempt, status):
                raise WorkdayApiError(status, endpoint, _message(response))
            delay = self._retry.delay(attempt, status=status, retry_after=parse_retry_after(response.headers))
            log.warning("Workday %s answered %d; retry %d in %.2fs", endpoint, status, attempt, delay)
            self._sleep(delay)

    def iter_workers(self) -> Iterator[dict[str, Any]]:
        """Every worker summary (``id``, ``descriptor``, ...), page by page up to ``total``.

        Offset paging skips a row when an earlier one is deleted mid-walk. So a walk whose ``total``
        changed (or that met an empty page before ``total``) is walked again from offset 0, yielding
        only workers not yielded yet, until one walk sees a stable list (at most ``MAX_WALKS``).
        """
        path = f"/ccx/api/v1/{self._tenant}/workers"
        seen: set[Any] = set()
        for walk in range(1, MAX_WALKS + 1):
            offset, total, first_total, stable = 0, None, None, True
            while total is None or offset < total:
                raw = self._get(path, {"limit": self._page_size, "offset": offset})
                if raw is None:
                    raise WorkdayApiError(404, path, "the workers resource is missing")
                page = WorkersPage.model_validate(raw)
                first_total = page.total if first_total is None else first_total
                stable = stable and page.total == first_total
                total = page.total
                if not page.data:
                    stable = stable and offset >= total
                    break
                for item in page.data:
                    key = item.get("id")
                    if key in seen:
                        continue  # a worker added before our offset shifts the list: skip the repeat
                    seen.add(key)
                    yield item
                offset += len(page.data)
            if stable:
                return
            log.warning(
                "Workday workers changed during walk %d (total %s -> %s); walking again",
                walk,
                first_total,
                total,
            )
        raise WorkdayApiError(200, path, f"the worker list kept changing during {MAX_WALKS} walks")

    def get_worker(self, worker_id: str) -> dict[str, Any] | None:
        """The worker's detail, or None when Workday has no such worker."""
        result = self._get(f"/ccx/api/v1/{self._tenant}/workers/{quote(worker_id, safe='')}")
        return result if isinstance(result, dict) else None

    def cost_rate_report(self, report: str = COST_RATE_REPORT) -> list[dict[str, Any]]:
        """The ``Report_Entry`` rows of the cost-rate custom report (RaaS, JSON)."""
        path = f"/ccx/service/customreport2/{self._tenant}/{self._owner}/{quote(report, safe='')}"
        raw = self._get(path, {"format": "json"})
        if not isinstance(raw, dict) or not isinstance(raw.get("Report_Entry"), list):
            raise WorkdayApiError(200 if raw is not None else 404, path, "no Report_Entry list in the answer")
        return list(raw["Report_Entry"])
