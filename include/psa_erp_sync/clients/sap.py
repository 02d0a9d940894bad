"""SAP S/4HANA OData V2 client: timesheets (``API_MANAGE_WORKFORCE_TIMESHEET``), journal entries, periods.

Pure Python on httpx (no Airflow). What SAP makes us do, and how:

- **CSRF.** Every write needs the token of a session: a GET with ``X-CSRF-Token: Fetch`` answers it
  with the session cookies (kept by the httpx client). A 403 carrying ``X-CSRF-Token: Required``
  means the token expired or the session ended; SAP did nothing, so the client fetches a new token
  and sends the write again (at most twice per call).
- **No external document number on timesheets.** Every record we write carries a tag
  ``[psa:<idempotency key>]`` at the start of ``TimeSheetNoteText``; an ambiguous outcome (timeout,
  dropped connection, 5xx after SAP may have committed) is resolved by reading the person's records
  of that day back and looking for the tag, never by a blind resend. Journal entries carry a
  16-character reference derived from the key in ``DocumentReferenceID`` and resolve the same way.
- **Reads trust nothing but ``eq``.** SAP ignores ``$orderby``, sends no ``__count`` and gets
  ``gt``/``lt`` on dates wrong at the boundary: reads filter by key fields with ``eq`` only, follow
  ``__next`` to the end, de-duplicate by key and filter dates on our side.
- **``$batch``.** :meth:`S4HanaClient.batch` sends changesets as ``multipart/mixed``; each changeset
  is atomic on the SAP side and its outcome comes back on its own (one failing change rolls back its
  changeset only).

Retries follow :class:`~psa_erp_sync.clients.http.RetryPolicy`: reads retry 429, 5xx and transport
errors; writes retry only what SAP certainly refused (429, CSRF 403, a connection never opened).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from psa_erp_sync.clients.http import RetryPolicy, parse_retry_after
from psa_erp_sync.clients.sap_models import (
    ErrorBody,
    JournalEntry,
    JournalEntryInput,
    MasterRecord,
    Page,
    PostingPeriod,
    Single,
    TimeSheetEntry,
    TimeSheetInput,
)

log = logging.getLogger(__name__)
_M = TypeVar("_M", bound=BaseModel)

TIMESHEET_SERVICE = "/sap/opu/odata/sap/API_MANAGE_WORKFORCE_TIMESHEET"
JOURNAL_SERVICE = "/sap/opu/odata/sap/ZPSA_JOURNALENTRY_SRV"
MASTER_SERVICE = "/sap/opu/odata/sap/ZPSA_MASTERDATA_SRV"
TIMESHEETS = "TimeSheetEntryCollection"
NOTE_MAX = 255
_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_CSRF_REFRESHES = 2

# Raised by httpx before any byte of the request reached the server: always safe to retry.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Raised after the request (or part of it) was sent: the outcome of a write is unknown.
_MAYBE_SENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


# --------------------------------------------------------------------------- errors


class SapError(Exception):
    """Base of every SAP client error."""


class SapRejected(SapError):
    """SAP refused the request (4xx with an OData error): nothing was written."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"SAP rejected the request ({status} {code}): {message}")

    @property
    def period_closed(self) -> bool:
        """``F5/201 Posting period ... is not open``."""
        return self.code == "F5/201"


class SapAuthFailed(SapError):
    """401, or a 403 that is not about the CSRF token: our credentials or roles."""


class SapThrottled(SapError):
    def __init__(self, retry_after: float | None) -> None:
        self.retry_after = retry_after
        super().__init__(f"SAP throttled the client (retry after {retry_after}s)")


class SapUnavailable(SapError):
    """A read (or a write never sent) failed on 5xx or transport errors after every retry."""


class SapAmbiguous(SapError):
    """A write was sent and its outcome is unknown: read it back by its tag before anything else."""

    def __init__(self, message: str, *, method: str, path: str, status: int | None = None) -> None:
        self.method = method
        self.path = path
        self.status = status
        super().__init__(message)


def _rejection(response: httpx.Response) -> SapRejected:
    try:
        error = ErrorBody.model_validate_json(response.content).error
        return SapRejected(response.status_code, error.code, error.message.value)
    except ValidationError:
        return SapRejected(response.status_code, "", response.text[:200])


# --------------------------------------------------------------------------- tags


def timesheet_tag(idempotency_key: str) -> str:
    """The tag a timesheet record we wrote carries at the start of its note."""
    if not _KEY.match(idempotency_key):
        raise ValueError("an idempotency key is 1-64 letters, digits, '_', '.', ':' or '-'")
    return f"[psa:{idempotency_key}]"


def journal_reference(idempotency_key: str) -> str:
    """``DocumentReferenceID`` (16 characters) of a journal entry: derived from the key, stable."""
    if not idempotency_key:
        raise ValueError("an idempotency key is required")
    return "P" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:15].upper()


def _tagged_note(idempotency_key: str, note: str) -> str:
    tag = timesheet_tag(idempotency_key)
    return (f"{tag} {note}" if note else tag)[:NOTE_MAX]


# --------------------------------------------------------------------------- $batch


@dataclass(frozen=True)
class BatchRequest:
    """One operation of a changeset: a method, a path below the service root, a JSON body."""

    method: Literal["POST", "PUT", "PATCH", "MERGE", "DELETE"]
    path: str
    body: Mapping[str, Any] | None = None


@dataclass
class BatchAnswer:
    status: int
    body: dict[str, Any] | None


@dataclass
class ChangesetResult:
    """The outcome of one changeset: every operation's answer, or the one error that rolled it back."""

    answers: list[BatchAnswer] = field(default_factory=list)
    error: SapRejected | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def build_batch(changesets: Sequence[Sequence[BatchRequest]], boundary: str) -> bytes:
    """A ``$batch`` body: one ``multipart/mixed`` changeset per element of ``changesets``."""
    out: list[str] = []
    for changeset in changesets:
        if not changeset:
            raise ValueError("an empty changeset")
        inner = f"changeset_{uuid.uuid4().hex}"
        out.append(f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={inner}\r\n\r\n")
        for op in changeset:
            payload = "" if op.body is None else json.dumps(op.body, separators=(",", ":"))
            out.append(
                f"--{inner}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                f"{op.method} {op.path} HTTP/1.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload.encode())}\r\n\r\n{payload}\r\n"
            )
        out.append(f"--{inner}--\r\n\r\n")
    out.append(f"--{boundary}--\r\n")
    return "".join(out).encode()


def _boundary(content_type: str) -> str:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise ValueError(f"no boundary in {content_type!r}")
    return match.group(1)


def _head(blob: bytes) -> tuple[dict[str, str], bytes]:
    sep = b"\r\n\r\n" if b"\r\n\r\n" in blob else b"\n\n"
    head, _, body = blob.partition(sep)
    headers = {}
    for line in head.decode("latin-1").splitlines():
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers, body


def _parts(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)[1:]
    parts = []
    for chunk in chunks:
        if chunk.startswith(b"--"):
            break
        parts.append(_head(chunk.strip(b"\r\n")))
    return parts


def _http_answer(blob: bytes) -> BatchAnswer:
    status_line, _, rest = blob.partition(b"\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", status_line)
    if match is None:
        raise ValueError(f"not an HTTP answer in $batch: {status_line[:60]!r}")
    _, body = _head(rest)
    body = body.strip()
    return BatchAnswer(int(match.group(1)), json.loads(body) if body else None)


def parse_batch(content_type: str, body: bytes) -> list[ChangesetResult | BatchAnswer]:
    """The parts of a ``$batch`` answer, in request order: a changeset's result, or a retrieval's answer."""
    results: list[ChangesetResult | BatchAnswer] = []
    for headers, payload in _parts(body, _boundary(content_type)):
        kind = headers.get("content-type", "").lower()
        if kind.startswith("multipart/mixed"):
            answers = [_http_answer(p) for _, p in _parts(payload, _boundary(kind))]
            results.append(ChangesetResult(answers=answers))
            continue
        answer = _http_answer(payload)
        if answer.status >= 400:  # a failed changeset answers one error for all its operations
            error = ErrorBody.model_validate(answer.body or {"error": {}}).error
            results.append(ChangesetResult(error=SapRejected(answer.status, error.code, error.message.value)))
        else:
            results.append(answer)
    return results


# --------------------------------------------------------------------------- client


def account_name(base_url: str, sap_client: str = "") -> str:
    """The SAP account a connection posts as, when its extra names no ``account_id``:
    ``sap:<host[:port]>`` of the API URL, with ``/<client>`` when the SAP client (mandant) is given.
    One name per SAP system and client: the key of its request budget (docs/multi-erp.md)."""
    host = urlsplit(base_url).netloc or base_url.rstrip("/")
    return f"sap:{host}/{sap_client}" if sap_client else f"sap:{host}"


class S4HanaClient:
    """A client of one SAP S/4HANA system's OData V2 APIs, as a Communication Arrangement grants them.

    :param base_url: the system's API host, e.g. ``https://my123456-api.s4hana.cloud.sap``.
    :param user: communication user (basic authentication), with ``password``.
    :param password: its password (never logged).
    :param token: an OAuth 2.0 bearer token instead of user and password.
    :param timeout: seconds per request.
    :param retry: backoff for retryable failures (exponential, full jitter, ``Retry-After``).
    :param transport: an httpx transport (tests).
    :param sleep: how to wait between attempts (tests pass a recorder).
    :param account_id: the SAP account this client posts as (default :func:`account_name` of
        ``base_url``): the key of the account's request budget shared by processes.
    :param concurrency_limit: the account's limit of requests in flight (None: the configured one,
        :func:`psa_erp_sync.posting.budget.account_limit`).
    """

    #: The ERP of this client's account (the budget and the posting lock key accounts by ERP).
    erp_name = "sap"

    def __init__(
        self,
        *,
        base_url: str,
        user: str = "",
        password: str = "",
        token: str = "",
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        account_id: str | None = None,
        concurrency_limit: int | None = None,
    ) -> None:
        if token:
            auth: httpx.Auth | None = None
            headers = {"Authorization": f"Bearer {token}"}
        elif user and password:
            auth, headers = httpx.BasicAuth(user, password), {}
        else:
            raise ValueError("SAP needs a communication user and password, or a bearer token")
        self.account_id = account_id or account_name(base_url)
        self.concurrency_limit = concurrency_limit
        # Taken around each HTTP request when set: the account's budget shared across processes
        # (psa_erp_sync.posting.budget.shared_by_processes). A plain client has none.
        self.request_slot: Callable[[], AbstractContextManager[Any]] | None = None
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._lock = threading.Lock()
        self._csrf = ""
        self.csrf_fetches = 0
        self.requests_made = 0
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            auth=auth,
            headers={**headers, "Accept": "application/json", "User-Agent": "psa-erp-sync"},
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(keepalive_expiry=2.0),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> S4HanaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending

    def fetch_csrf(self) -> str:
        """A fresh CSRF token of this client's session (the session cookies stay in the client)."""
        response = self._send("GET", f"{TIMESHEET_SERVICE}/", write=False, headers={"X-CSRF-Token": "Fetch"})
        token = response.headers.get("x-csrf-token", "")
        if not token or token.lower() == "required":
            raise SapAuthFailed("SAP answered no CSRF token: the user lacks the service's authorization")
        with self._lock:
            self._csrf = token
            self.csrf_fetches += 1
        return token

    def _send(
        self,
        method: str,
        path: str,
        *,
        write: bool,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        expect: tuple[int, ...] = (200, 201, 202, 204),
    ) -> httpx.Response:
        attempt = 0
        refreshes = 0
        while True:
            send_headers = dict(headers or {})
            if write:
                if not self._csrf:
                    self.fetch_csrf()
                send_headers["X-CSRF-Token"] = self._csrf
            if content is not None:
                send_headers.setdefault("Content-Type", "application/json")
            attempt += 1
            with self._lock:
                self.requests_made += 1
            try:
                with self.request_slot() if self.request_slot is not None else nullcontext():
                    response = self._http.request(
                        method, path, content=content, params=params, headers=send_headers
                    )
            except _NOT_SENT as exc:
                if self.retry.should_retry(attempt, None):
                    self._pause(attempt, None, None, type(exc).__name__, method, path)
                    continue
                raise SapUnavailable(f"SAP unreachable: {type(exc).__name__}") from exc
            except _MAYBE_SENT as exc:
                if write:
                    raise SapAmbiguous(
                        f"outcome of {method} {path} unknown: {type(exc).__name__}", method=method, path=path
                    ) from exc
                if self.retry.should_retry(attempt, None):
                    self._pause(attempt, None, None, type(exc).__name__, method, path)
                    continue
                raise SapUnavailable(f"SAP did not answer: {type(exc).__name__}") from exc
            status = response.status_code
            if status in expect:
                return response
            if status == 403 and response.headers.get("x-csrf-token", "").lower() == "required":
                # SAP checks the token before doing anything: fetching a new one and resending is safe.
                if refreshes >= _CSRF_REFRESHES:
                    raise SapAuthFailed("SAP keeps refusing fresh CSRF tokens (403 X-CSRF-Token: Required)")
                refreshes += 1
                log.info("SAP CSRF token expired; fetching a new one")
                self.fetch_csrf()
                attempt -= 1
                continue
            if status == 429:
                retry_after = parse_retry_after(response.headers)
                if self.retry.should_retry(attempt, status):
                    self._pause(attempt, status, retry_after, "throttled", method, path)
                    continue
                raise SapThrottled(retry_after)
            if status >= 500:
                if write:
                    raise SapAmbiguous(
                        f"outcome of {method} {path} unknown: HTTP {status}",
                        method=method,
                        path=path,
                        status=status,
                    )
                if self.retry.should_retry(attempt, status):
                    self._pause(
                        attempt, status, parse_retry_after(response.headers), f"HTTP {status}", method, path
                    )
                    continue
                raise SapUnavailable(f"SAP answered HTTP {status} to {method} {path}")
            if status in (401, 403):
                raise SapAuthFailed(f"SAP refused our credentials or roles (HTTP {status})")
            raise _rejection(response)

    def _pause(
        self, attempt: int, status: int | None, retry_after: float | None, reason: str, method: str, path: str
    ) -> None:
        delay = self.retry.delay(attempt, status=status, retry_after=retry_after)
        log.warning("SAP %s %s: %s, retry %d in %.2fs", method, path, reason, attempt, delay)
        self._sleep(delay)

    def _post(self, path: str, body: Mapping[str, Any], model: type[_M]) -> _M:
        """POST an entity and read SAP's 201 answer as ``model``.

        An answer we cannot read comes after SAP committed: :class:`SapAmbiguous`, resolved by read-back.
        """
        response = self._send("POST", path, write=True, content=json.dumps(body).encode(), expect=(201,))
        try:
            return model.model_validate(Single.model_validate_json(response.content).d)
        except ValidationError as exc:
            raise SapAmbiguous(
                f"POST {path} answered 201 with an unreadable body: {exc.errors()[0]['msg']}",
                method="POST",
                path=path,
                status=201,
            ) from exc

    def _collection(self, path: str, params: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        """Every entity of a collection: follow ``__next`` to the end (no ``__count`` to trust)."""
        url: str | None = path
        query: Mapping[str, str] | None = params
        pages = 0
        while url is not None:
            page = Page.model_validate_json(self._send("GET", url, write=False, params=query).content)
            yield from page.d.results
            url, query = page.d.next, None
            pages += 1
            if pages > 100_000:
                raise SapUnavailable(f"{path}: more than 100000 pages; SAP's __next does not end")

    # -- timesheets

    def timesheets(
        self, person_work_agreement_external_id: str, company_code: str, *, day: date | None = None
    ) -> list[TimeSheetEntry]:
        """Every record (any status) of a work agreement, or of one day of it.

        Only ``eq`` goes to SAP; the day is checked again here, duplicates across pages (SAP pages
        by offset while records change) are dropped by key.
        """
        terms = [
            f"PersonWorkAgreementExternalID eq {_literal(person_work_agreement_external_id)}",
            f"CompanyCode eq {_literal(company_code)}",
        ]
        if day is not None:
            terms.append(f"TimeSheetDate eq datetime'{day.isoformat()}T00:00:00'")
        found: dict[tuple[str, str, str], TimeSheetEntry] = {}
        for raw in self._collection(f"{TIMESHEET_SERVICE}/{TIMESHEETS}", {"$filter": " and ".join(terms)}):
            entry = TimeSheetEntry.model_validate(raw)
            if day is None or entry.TimeSheetDate == day:
                found[entry.key] = entry
        return sorted(found.values(), key=lambda e: e.TimeSheetRecord)

    def company_timesheets(self, company_code: str) -> list[TimeSheetEntry]:
        """Every record (any status) of a company code, for a reconciliation read-back (``eq``
        only; duplicates across pages dropped by key)."""
        found: dict[tuple[str, str, str], TimeSheetEntry] = {}
        params = {"$filter": f"CompanyCode eq {_literal(company_code)}"}
        for raw in self._collection(f"{TIMESHEET_SERVICE}/{TIMESHEETS}", params):
            entry = TimeSheetEntry.model_validate(raw)
            found[entry.key] = entry
        return [found[k] for k in sorted(found)]

    def find_timesheets_by_tag(
        self, person_work_agreement_external_id: str, company_code: str, day: date, idempotency_key: str
    ) -> list[TimeSheetEntry]:
        """The records of that day whose note starts with the key's tag (live ones and history)."""
        tag = timesheet_tag(idempotency_key)
        return [
            e
            for e in self.timesheets(person_work_agreement_external_id, company_code, day=day)
            if e.TimeSheetDataFields.TimeSheetNoteText.startswith(tag)
        ]

    def _resolve(self, entry: TimeSheetInput, idempotency_key: str) -> TimeSheetEntry | None:
        live = [
            e
            for e in self.find_timesheets_by_tag(
                entry.person_work_agreement_external_id, entry.company_code, entry.day, idempotency_key
            )
            if e.is_live
        ]
        if len(live) > 1:
            raise SapError(
                f"{len(live)} live records carry the tag of {idempotency_key}: duplicates to clean up"
            )
        return live[0] if live else None

    def _tagged_write(
        self, body: Mapping[str, Any], entry: TimeSheetInput, idempotency_key: str, *, test_run: bool
    ) -> TimeSheetEntry:
        """POST a tagged create or change; after an ambiguous outcome, the tagged record is the
        answer, and only when SAP has none is the POST sent again (after a backoff)."""
        path = f"{TIMESHEET_SERVICE}/{TIMESHEETS}"
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                return self._post(path, body, TimeSheetEntry)
            except SapAmbiguous as exc:
                if test_run:
                    raise
                found = self._resolve(entry, idempotency_key)
                if found is not None:
                    log.info(
                        "SAP write was ambiguous (%s); the tagged record %s exists",
                        exc,
                        found.TimeSheetRecord,
                    )
                    return found
                if attempt == self.retry.max_attempts:
                    raise
                self._pause(attempt, exc.status, None, "ambiguous, did not land", "POST", path)
        raise AssertionError("unreachable")

    def create_timesheet(
        self, entry: TimeSheetInput, *, idempotency_key: str, test_run: bool = False
    ) -> TimeSheetEntry:
        """Create a record tagged with ``idempotency_key``; exactly once in effect.

        An ambiguous outcome is resolved by reading the day back: the tagged record is the answer,
        and only when none exists is the create sent again. A dry run (``test_run``) writes nothing.
        """
        body = entry.payload(operation="C", note=_tagged_note(idempotency_key, entry.note), test_run=test_run)
        return self._tagged_write(body, entry, idempotency_key, test_run=test_run)

    def ensure_timesheet(self, entry: TimeSheetInput, *, idempotency_key: str) -> TimeSheetEntry:
        """The live record tagged with ``idempotency_key``, created only when SAP has none.

        For a replay after a lost answer (a ``$batch``, a crashed run): one read, then at most one create.
        """
        found = self._resolve(entry, idempotency_key)
        return found if found is not None else self.create_timesheet(entry, idempotency_key=idempotency_key)

    def change_timesheet(
        self, current: TimeSheetEntry, entry: TimeSheetInput, *, idempotency_key: str, test_run: bool = False
    ) -> TimeSheetEntry:
        """Change a record (``TimeSheetOperation`` U) and tag it with the change's own key.

        SAP changes a record in place unless it is approved: then the original becomes 50 and the
        answer is a successor naming it in ``TimeSheetPredecessorRecord``. Either way the record
        that now carries the change is returned (also after an ambiguous outcome, found by tag).
        """
        body = entry.payload(
            operation="U",
            note=_tagged_note(idempotency_key, entry.note),
            record=current.TimeSheetRecord,
            test_run=test_run,
        )
        return self._tagged_write(body, entry, idempotency_key, test_run=test_run)

    def delete_timesheet(self, current: TimeSheetEntry, *, test_run: bool = False) -> TimeSheetEntry:
        """Cancel a record (``TimeSheetOperation`` D): SAP keeps it with status 60."""
        body = {
            "PersonWorkAgreementExternalID": current.PersonWorkAgreementExternalID,
            "CompanyCode": current.CompanyCode,
            "TimeSheetRecord": current.TimeSheetRecord,
            "TimeSheetIsExecutedInTestRun": test_run,
            "TimeSheetOperation": "D",
        }
        path = f"{TIMESHEET_SERVICE}/{TIMESHEETS}"
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                return self._post(path, body, TimeSheetEntry)
            except SapAmbiguous as exc:
                if test_run:
                    raise
                again = {
                    e.TimeSheetRecord: e
                    for e in self.timesheets(
                        current.PersonWorkAgreementExternalID, current.CompanyCode, day=current.TimeSheetDate
                    )
                }.get(current.TimeSheetRecord)
                if again is not None and again.TimeSheetStatus == "60":
                    return again
                if attempt == self.retry.max_attempts:
                    raise
                self._pause(attempt, exc.status, None, "ambiguous, did not land", "POST", path)
        raise AssertionError("unreachable")

    # -- $batch

    def batch(
        self, changesets: Sequence[Sequence[BatchRequest]], *, service: str = TIMESHEET_SERVICE
    ) -> list[ChangesetResult]:
        """Send changesets in one ``$batch``; each is atomic and answered on its own.

        :raises SapAmbiguous: the ``$batch`` was sent and its answer lost: read back by tag.
        """
        boundary = f"batch_{uuid.uuid4().hex}"
        response = self._send(
            "POST",
            f"{service}/$batch",
            write=True,
            content=build_batch(changesets, boundary),
            headers={"Content-Type": f"multipart/mixed; boundary={boundary}"},
            expect=(202,),
        )
        try:
            parts = parse_batch(response.headers.get("content-type", ""), response.content)
        except (ValueError, ValidationError) as exc:
            raise SapAmbiguous(
                f"$batch accepted (202) with an unreadable answer: {exc}",
                method="POST",
                path=f"{service}/$batch",
                status=202,
            ) from exc
        results = [p for p in parts if isinstance(p, ChangesetResult)]
        if len(results) != len(changesets):
            raise SapAmbiguous(
                f"$batch answered {len(results)} changesets for {len(changesets)}",
                method="POST",
                path=f"{service}/$batch",
                status=202,
            )
        return results

    def create_timesheets(
        self, entries: Sequence[tuple[str, TimeSheetInput]], *, test_run: bool = False
    ) -> list[TimeSheetEntry | SapRejected]:
        """Create many records in one ``$batch``, one changeset each (a rejection stays its own).

        Returns, per ``(idempotency_key, entry)``, the created record or SAP's rejection.
        An ambiguous ``$batch`` is resolved entry by entry through :meth:`ensure_timesheet`.
        """
        changesets = [
            [
                BatchRequest(
                    "POST",
                    TIMESHEETS,
                    e.payload(operation="C", note=_tagged_note(k, e.note), test_run=test_run),
                )
            ]
            for k, e in entries
        ]
        try:
            results = self.batch(changesets)
        except SapAmbiguous:
            if test_run:
                raise
            log.warning("SAP $batch outcome unknown; resolving %d creates by tag", len(entries))
            resolved: list[TimeSheetEntry | SapRejected] = []
            for key, entry in entries:
                try:
                    resolved.append(self.ensure_timesheet(entry, idempotency_key=key))
                except SapRejected as rejected:
                    resolved.append(rejected)
            return resolved
        out: list[TimeSheetEntry | SapRejected] = []
        for result in results:
            if result.error is not None:
                out.append(result.error)
            else:
                out.append(TimeSheetEntry.model_validate(Single.model_validate(result.answers[0].body).d))
        return out

    # -- journal entries and periods

    def find_journal_entries(self, company_code: str, idempotency_key: str) -> list[JournalEntry]:
        params = {
            "$filter": f"CompanyCode eq {_literal(company_code)} and "
            f"DocumentReferenceID eq {_literal(journal_reference(idempotency_key))}",
            "$expand": "to_Item",
        }
        found = {
            (e.CompanyCode, e.FiscalYear, e.AccountingDocument): e
            for e in (
                JournalEntry.model_validate(r)
                for r in self._collection(f"{JOURNAL_SERVICE}/JournalEntryCollection", params)
            )
        }
        return [found[k] for k in sorted(found)]

    def journal_entries(self, company_code: str) -> list[JournalEntry]:
        """Every journal entry of a company code with its items (a reconciliation read-back)."""
        params = {"$filter": f"CompanyCode eq {_literal(company_code)}", "$expand": "to_Item"}
        found = {
            (e.CompanyCode, e.FiscalYear, e.AccountingDocument): e
            for e in (
                JournalEntry.model_validate(r)
                for r in self._collection(f"{JOURNAL_SERVICE}/JournalEntryCollection", params)
            )
        }
        return [found[k] for k in sorted(found)]

    def journal_entry_rows(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """Raw entities of ``JournalEntryCollection`` for these query options, unvalidated (the caller
        validates them with its own models), following ``__next``: with ``$top``/``$skip`` one page."""
        return list(self._collection(f"{JOURNAL_SERVICE}/JournalEntryCollection", params))

    def post_journal_entry(self, entry: JournalEntryInput, *, idempotency_key: str) -> JournalEntry:
        """Post a balanced journal entry (expense or revenue) once in effect.

        SAP does not refuse a second document with the same reference, so after an ambiguous
        outcome the reference is looked up first and the post is sent again only if it is absent.

        :raises SapRejected: e.g. ``F5/201`` (:attr:`SapRejected.period_closed`) or ``F5/702`` (unbalanced).
        """
        body = entry.payload(journal_reference(idempotency_key))
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                return self._post(f"{JOURNAL_SERVICE}/JournalEntryCollection", body, JournalEntry)
            except SapAmbiguous as exc:
                found = self.find_journal_entries(entry.company_code, idempotency_key)
                if found:
                    log.info(
                        "SAP journal post was ambiguous (%s); document %s exists",
                        exc,
                        found[0].AccountingDocument,
                    )
                    return found[0]
                if attempt == self.retry.max_attempts:
                    raise
                self._pause(
                    attempt, exc.status, None, "ambiguous, did not land", "POST", "JournalEntryCollection"
                )
        raise AssertionError("unreachable")

    # -- master data (our stand-in service ZPSA_MASTERDATA_SRV, docs/simulators.md)

    def upsert_master(self, entity_set: str, body: Mapping[str, Any]) -> MasterRecord:
        """Create or replace one work agreement, customer or WBS element (absolute values: a
        repeated call changes nothing, so an ambiguous outcome is resolved by sending it again)."""
        path = f"{MASTER_SERVICE}/{entity_set}"
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                return self._post(path, body, MasterRecord)
            except SapAmbiguous:
                if attempt == self.retry.max_attempts:
                    raise
                self._pause(attempt, None, None, "ambiguous master-data write", "POST", entity_set)
        raise AssertionError("unreachable")

    def master_records(self, entity_set: str, company_code: str) -> list[MasterRecord]:
        """Every entity of ``entity_set`` in a company code."""
        params = {"$filter": f"CompanyCode eq {_literal(company_code)}"}
        return [
            MasterRecord.model_validate(r) for r in self._collection(f"{MASTER_SERVICE}/{entity_set}", params)
        ]

    def master_page(self, entity_set: str, company_code: str, *, top: int, skip: int) -> list[dict[str, Any]]:
        """One client-driven page (``$top``/``$skip``) of a company code's entities, as answered and
        not validated (the caller judges each entity on its own). SAP may answer a page in several
        responses (server paging, at most its page size each): their ``__next`` is followed."""
        params = {
            "$filter": f"CompanyCode eq {_literal(company_code)}",
            "$top": str(top),
            "$skip": str(skip),
        }
        return list(self._collection(f"{MASTER_SERVICE}/{entity_set}", params))

    def posting_periods(self, company_code: str, fiscal_year: int) -> list[PostingPeriod]:
        params = {"$filter": f"CompanyCode eq {_literal(company_code)} and FiscalYear eq '{fiscal_year:04d}'"}
        found = {
            p.FiscalPeriod: p
            for p in (
                PostingPeriod.model_validate(r)
                for r in self._collection(f"{JOURNAL_SERVICE}/PostingPeriodCollection", params)
            )
        }
        return [found[k] for k in sorted(found)]

    def is_period_open(self, company_code: str, day: date) -> bool:
        """Whether postings dated ``day`` are accepted (a period SAP does not define is closed)."""
        return any(
            p.PostingPeriodIsOpen and p.FiscalPeriodStartDate <= day <= p.FiscalPeriodEndDate
            for p in self.posting_periods(company_code, day.year)
        )


def _literal(value: str) -> str:
    """An ``Edm.String`` literal of ``$filter`` (quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"
