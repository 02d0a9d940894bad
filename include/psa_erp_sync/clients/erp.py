"""NetSuite SuiteTalk REST client: record reads and upserts, async batches, SuiteQL.

Pure Python on httpx (no Airflow). Retries are deliberately asymmetric, because money is at stake:

- reads (GET, SuiteQL) retry with exponential backoff and full jitter on 429, 5xx, timeouts and
  connection errors, honouring ``Retry-After``;
- writes (PUT, PATCH, DELETE, batch POST) retry only when the ERP certainly did nothing: a 429
  (the concurrency governor refused the request) or a connection that could not be opened. Once a
  write has been sent, a timeout, a dropped connection or a 5xx raises :class:`ErpAmbiguous`: the
  ERP may have committed. The caller resolves it by reading the record by external id, or, for a
  batch, by submitting the same items again under the same idempotency key (the ERP answers
  ``IDEMPOTENCY_ERROR`` and :meth:`NetSuiteClient.submit_batch` returns the earlier job's result).

Every answer is classified (the table is in ``docs/posting.md``): 401/403 raise
:class:`ErpAuthFailed` (our credentials: fail the task, retry later); a 4xx on a request is
:class:`ErpRejected` (nothing written; :attr:`ErpRejected.per_record` says whether it is a business
rejection of the record, with an ``o:errorDetails`` code, or a refusal of the request itself); and
once a batch has been accepted (202, or 409 naming the earlier job), *any* failure to read its
result is :class:`ErpAmbiguous` carrying the ``job_id``: the items may have landed.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
from pydantic import ValidationError

from psa_erp_sync.clients.erp_models import (
    FINISHED_JOB_STATES,
    READ_MODELS,
    BatchAccepted,
    BatchResult,
    BillingRecord,
    CurrencyRate,
    ErpCustomerPayment,
    ErpInvoice,
    ErrorBody,
    ErrorDetail,
    SuiteQLPage,
    TransactionLine,
)
from psa_erp_sync.clients.http import RetryPolicy, parse_retry_after

log = logging.getLogger(__name__)

MAX_BATCH_ITEMS = 100
_RECORD_TYPE = re.compile(r"^[a-z][a-z0-9_]*$")
_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


# --------------------------------------------------------------------------- errors


class ErpError(Exception):
    """Base of every ERP client error."""


class ErpRejected(ErpError):
    """The ERP refused the request (4xx): nothing was written. ``details`` say why, per field."""

    def __init__(self, status: int, details: Sequence[ErrorDetail], message: str | None = None) -> None:
        self.status = status
        self.details = list(details)
        summary = "; ".join(f"{d.code} at {d.path or '-'}" for d in self.details) or "no details"
        super().__init__(message or f"ERP rejected the request ({status}): {summary}")

    @property
    def codes(self) -> list[str]:
        return [d.code for d in self.details]

    @property
    def per_record(self) -> bool:
        """A business rejection of the record (validation, closed period, missing reference), as
        opposed to a refusal of the request itself (no error code, 404 route, 405, 413, 415...)."""
        return self.status in BUSINESS_REJECTION_STATUS and any(
            d.code and d.code != "UNKNOWN" for d in self.details
        )


# A 4xx with an error code in ``o:errorDetails`` under these statuses is NetSuite's refusal of the
# record itself (validation, period, references): a business rejection, a dead letter for its owner.
BUSINESS_REJECTION_STATUS = frozenset({400, 422})
AUTH_STATUS = frozenset({401, 403})


class ErpAuthFailed(ErpError):
    """401/403: the token is expired, revoked or lacks a permission. Nothing was written by the
    refused request; the task should fail (and be retried once the credentials are fixed).

    ``job_id`` is set when the refusal came while reading the result of a batch the ERP had already
    accepted: those items may have landed and must be read back before anything is resent.
    """

    def __init__(self, status: int, details: Sequence[ErrorDetail], *, job_id: str | None = None) -> None:
        self.status = status
        self.details = list(details)
        self.job_id = job_id
        codes = ", ".join(d.code for d in self.details) or "no details"
        where = f" while reading accepted job {job_id}" if job_id else ""
        super().__init__(f"ERP refused our credentials ({status}: {codes}){where}")


class ErpThrottled(ErpError):
    """429 / ``SSS_REQUEST_LIMIT_EXCEEDED`` after every retry; ``retry_after`` in seconds if given."""

    def __init__(self, retry_after: float | None) -> None:
        self.retry_after = retry_after
        super().__init__(f"ERP concurrency limit exceeded (retry after {retry_after}s)")


class ErpUnavailable(ErpError):
    """5xx or no connection on a request that had no effect (a read, or a write never sent)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ErpAmbiguous(ErpError):
    """A write was sent and its outcome is unknown (timeout, dropped connection, 5xx).

    Do not resend blindly: read the record back by external id, or resubmit a batch with the same
    ``idempotency_key``.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        path: str,
        status: int | None = None,
        idempotency_key: str | None = None,
        external_ids: Sequence[str] = (),
        job_id: str | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.idempotency_key = idempotency_key
        self.external_ids = list(external_ids)
        self.job_id = job_id  # a batch the ERP accepted whose result could not be read
        super().__init__(message)


# --------------------------------------------------------------------------- helpers


def _error_details(response: httpx.Response) -> ErrorBody:
    try:
        return ErrorBody.model_validate(response.json())
    except (ValueError, ValidationError):
        return ErrorBody(status=response.status_code, title=response.reason_phrase)


# Raised by httpx before any byte of the request reached the server: always safe to retry.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Raised after the request (or part of it) was sent: the outcome of a write is unknown.
_MAYBE_SENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


# --------------------------------------------------------------------------- client


class NetSuiteClient:
    """A client of one NetSuite account's SuiteTalk REST API.

    :param base_url: the account's REST host, e.g. ``https://1234567.suitetalk.api.netsuite.com``.
    :param account_id: the NetSuite account id (sent as ``X-NetSuite-Account``; logged).
    :param token: bearer token (never logged).
    :param timeout: seconds per request.
    :param retry: backoff for retryable failures (exponential, full jitter, ``Retry-After``).
    :param transport: an httpx transport (tests).
    :param sleep: how to wait between attempts (tests pass a recorder).
    :param job_poll_timeout: seconds to wait for an async job to finish.
    :param concurrency_limit: the account's limit of requests in flight, shared by every process
        that sends to the account (None: the configured default, see
        :func:`psa_erp_sync.posting.budget.account_limit`).
    """

    def __init__(
        self,
        *,
        base_url: str,
        account_id: str,
        token: str,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        job_poll_timeout: float = 300.0,
        concurrency_limit: int | None = None,
    ) -> None:
        if not token:
            raise ValueError("an ERP token is required")
        self.account_id = account_id
        self.concurrency_limit = concurrency_limit
        # Taken around each HTTP request when set: the account's budget shared across processes
        # (psa_erp_sync.posting.budget). A plain client has none.
        self.request_slot: Callable[[], AbstractContextManager[Any]] | None = None
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.job_poll_timeout = job_poll_timeout
        self._lock = threading.Lock()
        self._requests = 0
        self._request_seconds = 0.0
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": "psa-erp-sync",
                "X-NetSuite-Account": account_id,
            },
            timeout=timeout,
            transport=transport,
            # Shorter than any server's keep-alive, so a write never goes out on a connection the
            # server is closing (which would make it needlessly ambiguous).
            limits=httpx.Limits(keepalive_expiry=2.0),
        )

    # -- lifecycle and accounting

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far (every attempt counts, retries included)."""
        return self._requests

    @property
    def request_seconds(self) -> float:
        """Time spent waiting for the ERP, summed over requests: divided by a wall time, the mean
        number of requests in flight (how well a caller keeps the account's concurrency busy)."""
        return self._request_seconds

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NetSuiteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one place requests are sent

    def _request(
        self,
        method: str,
        path: str,
        content: bytes | None,
        params: Mapping[str, Any] | None,
        headers: dict[str, str],
    ) -> httpx.Response:
        """One request (counted and timed), in a request slot when the client has them."""
        with self._lock:
            self._requests += 1
        with self.request_slot() if self.request_slot is not None else nullcontext():
            sent_at = time.monotonic()
            try:
                return self._http.request(method, path, content=content, params=params, headers=headers)
            finally:
                waited = time.monotonic() - sent_at
                with self._lock:
                    self._request_seconds += waited

    def _send(
        self,
        method: str,
        path: str,
        *,
        write: bool,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        expect: tuple[int, ...] = (200,),
        pass_through: tuple[int, ...] = (),
        idempotency_key: str | None = None,
        external_ids: Sequence[str] = (),
    ) -> httpx.Response:
        """Send with retries; returns responses whose status is in ``expect`` or ``pass_through``."""
        # Encoded once, by msgspec (a batch of 100 records: several times faster than httpx's json=).
        content = None if json is None else msgspec.json.encode(json, enc_hook=str)
        send_headers = dict(headers or {})
        if content is not None:
            send_headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._request(method, path, content, params, send_headers)
            except _NOT_SENT as exc:
                if attempt < self.retry.max_attempts:
                    self._pause(attempt, None, None, "connection failed", method, path)
                    continue
                raise ErpUnavailable(f"ERP unreachable: {type(exc).__name__}") from exc
            except _MAYBE_SENT as exc:
                if write:
                    raise ErpAmbiguous(
                        f"outcome of {method} {path} unknown: {type(exc).__name__}",
                        method=method,
                        path=path,
                        idempotency_key=idempotency_key,
                        external_ids=external_ids,
                    ) from exc
                if attempt < self.retry.max_attempts:
                    self._pause(attempt, None, None, type(exc).__name__, method, path)
                    continue
                raise ErpUnavailable(f"ERP did not answer: {type(exc).__name__}") from exc

            status = response.status_code
            if status in expect or status in pass_through:
                return response
            if status == 429:
                retry_after = parse_retry_after(response.headers)
                if attempt < self.retry.max_attempts:
                    self._pause(attempt, status, retry_after, "throttled", method, path)
                    continue
                raise ErpThrottled(retry_after)
            if status >= 500:
                if write:
                    raise ErpAmbiguous(
                        f"outcome of {method} {path} unknown: HTTP {status}",
                        method=method,
                        path=path,
                        status=status,
                        idempotency_key=idempotency_key,
                        external_ids=external_ids,
                    )
                if attempt < self.retry.max_attempts:
                    self._pause(
                        attempt, status, parse_retry_after(response.headers), f"HTTP {status}", method, path
                    )
                    continue
                raise ErpUnavailable(f"ERP answered HTTP {status} to {method} {path}", status)
            body = _error_details(response)
            if status in AUTH_STATUS:
                raise ErpAuthFailed(status, body.details)
            raise ErpRejected(status, body.details)

    def _pause(
        self, attempt: int, status: int | None, retry_after: float | None, reason: str, method: str, path: str
    ) -> None:
        delay = self.retry.delay(attempt, status=status, retry_after=retry_after)
        log.warning("ERP %s %s: %s, retry %d in %.2fs", method, path, reason, attempt, delay)
        self._sleep(delay)

    # -- records

    def get_record(self, record_type: str, external_id: str) -> dict[str, Any] | None:
        """The record with this external id, or None when the ERP has none."""
        path = _record_path(record_type, external_id)
        response = self._send("GET", path, write=False, pass_through=(404,))
        if response.status_code == 404:
            return None
        record: dict[str, Any] = response.json()
        return record

    def upsert(self, record_type: str, external_id: str, body: Mapping[str, Any]) -> str:
        """Create or update the record with this external id; returns its internal id.

        :raises ErpRejected: validation failed (nothing written); ``details`` name code and field.
        :raises ErpAmbiguous: the PUT was sent but its outcome is unknown.
        """
        path = _record_path(record_type, external_id)
        response = self._send(
            "PUT", path, write=True, json=dict(body), expect=(200, 204), external_ids=[external_id]
        )
        location = response.headers.get("Location", "")
        internal = location.rstrip("/").rsplit("/", 1)[-1]
        if internal.isdigit():
            return internal
        record = self.get_record(record_type, external_id)  # some gateways drop Location
        if record is None or "id" not in record:
            raise ErpUnavailable(
                f"upsert of {record_type} answered without a Location and cannot be read back"
            )
        return str(record["id"])

    def delete(self, record_type: str, external_id: str) -> bool:
        """Delete the record with this external id (a reversal). True if it existed, False if the
        ERP had none (already reversed: deleting is idempotent in effect).

        :raises ErpRejected: refused, e.g. ``PERIOD_CLOSED`` for a transaction in a closed period.
        :raises ErpAmbiguous: the DELETE was sent but its outcome is unknown; read back to decide.
        """
        path = _record_path(record_type, external_id)
        response = self._send(
            "DELETE", path, write=True, expect=(200, 204), pass_through=(404,), external_ids=[external_id]
        )
        if response.status_code == 404:
            body = _error_details(response)
            # Only NetSuite's "no such record" proves the record is gone; a 404 for the record
            # type or from a gateway says nothing about the record.
            if "NONEXISTENT_ID" not in [d.code for d in body.details]:
                raise ErpRejected(404, body.details)
            return False
        return True

    # -- async batches

    def submit_batch(
        self, record_type: str, items: Sequence[Mapping[str, Any]], idempotency_key: str
    ) -> BatchResult:
        """Upsert up to 100 records by external id in one async job and return its per-item result.

        A repeated ``idempotency_key`` changes nothing in the ERP: the earlier job's result comes
        back with ``replayed=True``. Item failures are results, not exceptions.

        :raises ErpRejected: the whole submission was refused (e.g. too many items).
        :raises ErpAmbiguous: the POST was sent but its outcome is unknown; resubmit with the same key.
        """
        if not items:
            raise ValueError("a batch needs at least one item")
        if len(items) > MAX_BATCH_ITEMS:
            raise ValueError(f"a batch takes at most {MAX_BATCH_ITEMS} items, got {len(items)}")
        if not idempotency_key:
            raise ValueError("an idempotency key is required")
        _check_type(record_type)
        external_ids = [str(item.get("externalId", "")) for item in items]
        response = self._send(
            "POST",
            f"/services/rest/record/v1/{record_type}/batch",
            write=True,
            json={"items": [dict(item) for item in items]},
            headers={"X-NetSuite-idempotency-key": idempotency_key},
            expect=(202,),
            pass_through=(409,),
            idempotency_key=idempotency_key,
            external_ids=external_ids,
        )
        if response.status_code == 409:
            body = _error_details(response)
            if "IDEMPOTENCY_ERROR" not in [d.code for d in body.details] or not body.job_id:
                raise ErpRejected(409, body.details)
            log.info("ERP batch key reused: reading the earlier job %s", body.job_id)
            replayed = self._accepted_result(body.job_id, idempotency_key, external_ids)
            return replayed.model_copy(update={"replayed": True})
        try:
            accepted = BatchAccepted.model_validate_json(response.content)
        except ValidationError as exc:  # a 202 we cannot read: the ERP took the batch, we lost its id
            raise ErpAmbiguous(
                f"batch accepted (202) with an unreadable answer: {exc.errors()[0]['msg']}",
                method="POST",
                path=f"/services/rest/record/v1/{record_type}/batch",
                status=202,
                idempotency_key=idempotency_key,
                external_ids=external_ids,
            ) from exc
        return self._accepted_result(accepted.job_id, idempotency_key, external_ids)

    def _accepted_result(self, job_id: str, idempotency_key: str, external_ids: Sequence[str]) -> BatchResult:
        """The result of a job the ERP accepted. Whatever goes wrong while reading it (401/403,
        404, 429 after every retry, 5xx, a timeout, a body we cannot read) leaves the items'
        outcome unknown: :class:`ErpAmbiguous` (or :class:`ErpAuthFailed` with ``job_id`` set),
        never a rejection and never a reason to re-POST without a read-back."""
        path = f"/services/rest/async/v1/job/{job_id}/result"
        try:
            return self.batch_result(job_id)
        except ErpAuthFailed as exc:
            raise ErpAuthFailed(exc.status, exc.details, job_id=job_id) from exc
        except (ErpError, ValidationError, ValueError) as exc:
            status = getattr(exc, "status", None)
            raise ErpAmbiguous(
                f"batch accepted as job {job_id}, its result unknown: {type(exc).__name__}: {exc}",
                method="GET",
                path=path,
                status=status if isinstance(status, int) else None,
                idempotency_key=idempotency_key,
                external_ids=external_ids,
                job_id=job_id,
            ) from exc

    def batch_result(self, job_id: str) -> BatchResult:
        """The per-item result of an async job, polling while it is still pending."""
        if not str(job_id).isdigit():
            raise ValueError(f"invalid job id {job_id!r}")
        deadline = time.monotonic() + self.job_poll_timeout
        attempt = 0
        while True:
            response = self._send("GET", f"/services/rest/async/v1/job/{job_id}/result", write=False)
            result = BatchResult.model_validate_json(response.content)
            if result.status in FINISHED_JOB_STATES:
                return result
            if time.monotonic() > deadline:
                raise ErpUnavailable(
                    f"async job {job_id} still {result.status} after {self.job_poll_timeout}s"
                )
            attempt += 1
            self._sleep(self.retry.delay(min(attempt, 6)))

    # -- SuiteQL

    def suiteql(self, query: str, *, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Rows of a SuiteQL query, page by page (``limit``/``offset``, following ``hasMore``).

        Give the query an ``ORDER BY`` on a unique key when rows may change while paging.
        """
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        offset = 0
        while True:
            response = self._send(
                "POST",
                "/services/rest/query/v1/suiteql",
                write=False,
                json={"q": query},
                params={"limit": page_size, "offset": offset},
                headers={"Prefer": "transient"},
            )
            page = SuiteQLPage.model_validate_json(response.content)
            for item in page.items:
                item.pop("links", None)
                yield item
            if not page.has_more:
                return
            if page.count == 0:
                raise ErpUnavailable("SuiteQL reported more rows but returned an empty page")
            offset += page.count

    # -- billing: invoices, credit memos, journals, payments, currency rates

    def post_billing(self, records: Sequence[BillingRecord], idempotency_key: str) -> BatchResult:
        """Upsert billing records of one type by external id through the async batch, the path
        timebills take (the engine calls :meth:`submit_batch` with the same ``to_payload()`` dicts).

        :raises ValueError: records of different types in one batch.
        """
        types = {type(record).RECORD_TYPE for record in records}
        if len(types) != 1:
            raise ValueError(f"a batch holds one record type, got {sorted(types)}")
        return self.submit_batch(types.pop(), [r.to_payload() for r in records], idempotency_key)

    def upsert_billing(self, record: BillingRecord) -> str:
        """Upsert one billing record (``PUT .../eid:...``); returns its internal id."""
        payload = record.to_payload()
        external_id = str(payload.pop("externalId"))
        return self.upsert(type(record).RECORD_TYPE, external_id, payload)

    def read_billing(self, record_type: str, external_id: str) -> Any:
        """A billing record read back by external id, validated by its read model
        (:data:`~psa_erp_sync.clients.erp_models.READ_MODELS`), or None when the ERP has none."""
        model = READ_MODELS.get(record_type)
        if model is None:
            raise ValueError(f"no read model for {record_type!r}")
        found = self.get_record(record_type, external_id)
        return None if found is None else model.model_validate(found)

    def _modified(
        self, record_type: str, since: dt.datetime | None, overlap: dt.timedelta, extra: str = ""
    ) -> Iterator[dict[str, Any]]:
        where = [extra] if extra else []
        if since is not None:
            if since.tzinfo is None:
                raise ValueError("since must carry a time zone")
            start = (since - overlap).astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
            where.append(f"lastmodifieddate >= '{start}'")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return self.suiteql(f"SELECT * FROM {record_type}{clause} ORDER BY id")

    def iter_invoices(
        self,
        *,
        modified_since: dt.datetime | None = None,
        overlap: dt.timedelta = dt.timedelta(minutes=15),
        record_type: str = "invoice",
    ) -> Iterator[ErpInvoice]:
        """Invoices (or ``record_type="creditmemo"``) modified since ``modified_since - overlap``
        (``lastModifiedDate`` is stamped at write, not commit: re-read an overlap; duplicates are
        harmless, the external id is the key)."""
        if record_type not in ("invoice", "creditmemo"):
            raise ValueError("record_type is invoice or creditmemo")
        for row in self._modified(record_type, modified_since, overlap):
            yield ErpInvoice.model_validate(row)

    def get_invoice(self, internal_id: str) -> ErpInvoice | None:
        """An invoice (with its lines) read by internal id, the id ERP webhooks announce; None when
        the ERP has none."""
        if not str(internal_id).isdigit():
            raise ValueError("internal ids are digits")
        path = f"/services/rest/record/v1/invoice/{internal_id}"
        response = self._send("GET", path, write=False, pass_through=(404,))
        if response.status_code == 404:
            return None
        return ErpInvoice.model_validate_json(response.content)

    def payments_applied(self, invoice_ids: Sequence[str]) -> dict[str, Decimal]:
        """Per invoice internal id, the sum that customer payments apply to it (credit memos not
        included): SuiteQL ``transactionline`` rows whose ``appliedto`` is the invoice."""
        ids = [str(i) for i in invoice_ids]
        if not all(i.isdigit() for i in ids):
            raise ValueError("internal ids are digits")
        out = {i: Decimal(0) for i in ids}
        for start in range(0, len(ids), 500):
            chunk = ", ".join(f"'{i}'" for i in ids[start : start + 500])
            query = f"SELECT * FROM transactionline WHERE appliedto IN ({chunk}) ORDER BY id"
            for row in self.suiteql(query):
                line = TransactionLine.model_validate(row)
                if line.transaction_type == "customerpayment" and line.applied_to in out:
                    out[line.applied_to] += line.amount or Decimal(0)
        return out

    def iter_customer_payments(
        self, *, modified_since: dt.datetime | None = None, overlap: dt.timedelta = dt.timedelta(minutes=15)
    ) -> Iterator[ErpCustomerPayment]:
        for row in self._modified("customerpayment", modified_since, overlap):
            yield ErpCustomerPayment.model_validate(row)

    def iter_transaction_lines(self, transaction_ids: Sequence[str]) -> Iterator[TransactionLine]:
        """The lines (SuiteQL ``transactionline``) of transactions by internal id."""
        ids = [str(i) for i in transaction_ids]
        if not all(i.isdigit() for i in ids):
            raise ValueError("internal ids are digits")
        for start in range(0, len(ids), 500):
            chunk = ", ".join(f"'{i}'" for i in ids[start : start + 500])
            query = f"SELECT * FROM transactionline WHERE transaction IN ({chunk}) ORDER BY id"
            for row in self.suiteql(query):
                yield TransactionLine.model_validate(row)

    def currency_rate(self, currency: str, base: str, on: dt.date) -> CurrencyRate | None:
        """The rate in force on ``on`` (latest ``effectiveDate`` not after it): 1 ``currency`` =
        ``exchange_rate`` ``base``; None when the ERP has none."""
        for code in (currency, base):
            if not _CURRENCY.match(code):
                raise ValueError(f"invalid currency code {code!r}")
        query = (
            "SELECT * FROM currencyrate WHERE basecurrency = "
            f"'{base}' AND transactioncurrency = '{currency}' AND effectivedate <= '{on.isoformat()}' "
            "ORDER BY effectivedate DESC"
        )
        for row in self.suiteql(query, page_size=1):
            return CurrencyRate.model_validate(row)
        return None


_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _check_type(record_type: str) -> None:
    if not _RECORD_TYPE.match(record_type):
        raise ValueError(f"invalid record type {record_type!r}")


def _record_path(record_type: str, external_id: str) -> str:
    _check_type(record_type)
    if not _EXTERNAL_ID.match(external_id):
        raise ValueError("external ids use letters, digits, _ and - (at most 255)")
    return f"/services/rest/record/v1/{record_type}/eid:{quote(external_id, safe='')}"
