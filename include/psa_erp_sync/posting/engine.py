"""Send pending ledger postings to the ERP: batches of <= 100, bounded concurrency, no blind re-POST.

One round: (1) resolve postings left ``sent`` or ``ambiguous`` by an earlier, interrupted attempt
by reading the ERP by external id; (2) send pending upserts in batches through the async batch
endpoint with a deterministic idempotency key, at most ``max_concurrency`` at a time (the ERP
account's limit is shared by every integration, so it is configurable); (3) send reversals.
A 429 waits ``Retry-After`` plus jitter and resends the same batch under the same key. A timeout,
reset or 5xx after sending marks the batch ambiguous and reads it back before anything is resent.
Rounds repeat until nothing is pending or ``max_rounds`` is reached.

Answers are classified as in ``docs/posting.md``: only a per-record business rejection is a dead
letter. 401/403 and refusals of the request itself put the postings back to ``pending`` (nothing
was written) and fail the pass; anything after the ERP accepted a batch is ambiguous and read back;
a ``PERIOD_CLOSED`` answer re-reads the periods and applies the entity's policy again.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool

from psa_erp_sync.config import Config
from psa_erp_sync.ods import connections
from psa_erp_sync.ods import exceptions as exception_queue
from psa_erp_sync.posting import ledger
from psa_erp_sync.posting.adapter import ErpAdapter, Held, RecordOutcome, as_adapter
from psa_erp_sync.posting.periods import PeriodBook
from psa_erp_sync.posting.planner import KINDS, replan_closed

log = logging.getLogger(__name__)


class ErpPort(Protocol):
    """A bare NetSuite client (``NetSuiteClient``), wrapped in a
    :class:`~psa_erp_sync.posting.adapter.NetSuiteAdapter` when given instead of an adapter."""

    def submit_batch(
        self, record_type: str, items: Sequence[dict[str, Any]], idempotency_key: str
    ) -> Any: ...
    def suiteql(self, query: str, *, page_size: int = 1000) -> Iterator[dict[str, Any]]: ...
    def delete(self, record_type: str, external_id: str) -> bool: ...


@dataclass(frozen=True)
class EngineSettings:
    batch_size: int = 100
    max_concurrency: int = 15  # ERP requests in flight at once (the account's limit is shared)
    workers_per_slot: int = 2  # threads per ERP slot: ledger writes overlap other batches' ERP calls
    max_rounds: int = 8
    throttle_retries: int = 20
    progress_every_s: float = 10.0
    plan_chunk: int = 5000  # records planned per committed chunk, handed to the engine as it commits

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 100:
            raise ValueError(
                f"batch_size must be between 1 and 100 (the ERP's batch limit), not {self.batch_size}"
            )

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        batch_size: int | None = None,
        max_concurrency: int | None = None,
        **other: Any,
    ) -> EngineSettings:
        """``posting.batch_size`` of ``config/mappings.yaml`` and the ERP account's limit in the
        current environment (:func:`psa_erp_sync.posting.budget.account_limit`), unless given here
        (every posting path builds its settings this way: operator, stream, replay, CLI)."""
        from psa_erp_sync.posting.budget import account_limit

        posting = config.mappings.posting
        return cls(
            batch_size=batch_size or posting.batch_size,
            max_concurrency=max_concurrency or account_limit(),
            **other,
        )


@dataclass
class Outcome:
    """Counts of what happened, by outcome (the posting-outcome lineage facet reads these)."""

    record_type: str
    total: int = 0
    posted: int = 0
    already_posted: int = 0
    ambiguous_resolved: int = 0
    reversed: int = 0
    rejected: int = 0
    parked: int = 0
    still_pending: int = 0
    erp_requests: int = 0
    seconds: float = 0.0
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    period_closed_replanned: int = 0  # answered PERIOD_CLOSED during the pass, policy applied again
    parked_after_period_closed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


class _Progress:
    def __init__(self, total: int, every: float, label: str) -> None:
        self.total = total
        self.done = 0
        self.every = every
        self.label = label
        self.started = time.monotonic()
        self.last = self.started
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n
            now = time.monotonic()
            if now - self.last >= self.every or self.done >= self.total:
                self.last = now
                elapsed = now - self.started
                rate = self.done / elapsed if elapsed > 0 else 0.0
                eta = (self.total - self.done) / rate if rate > 0 else float("inf")
                log.info(
                    "%s: %d/%d done (%.0f%%), %.0f records/s, ETA %.0f s",
                    self.label,
                    self.done,
                    self.total,
                    100.0 * self.done / max(self.total, 1),
                    rate,
                    eta,
                )


def batch_key(postings: Sequence[ledger.Posting]) -> str:
    """Deterministic from the exact set of postings in the batch."""
    text = "\n".join(sorted(p.idempotency_key for p in postings))
    return "b-" + hashlib.sha256(text.encode()).hexdigest()[:38]


def _decode_json_fast(conn: psycopg.Connection) -> None:
    # Payloads of a page of postings: msgspec decodes them several times faster than json.loads.
    set_json_loads(msgspec.json.decode, conn)


_Send = Callable[[Sequence[ledger.Posting], "_Progress"], None]

PERIOD_CLOSED = "PERIOD_CLOSED"
#: The exception domain of a dead letter, per ERP record type (time and expenses otherwise).
DOMAINS = {"invoice": "billing", "creditmemo": "billing"}


@dataclass
class _Replanned:
    """What re-applying the period policy produced: the refused rows' outcomes, the records' next
    ledger rows and the exception items of those now parked."""

    finished: list[tuple[str, str, str, str | None, int | None]] = field(default_factory=list)
    details: list[dict[str, Any] | None] = field(default_factory=list)
    postings: list[ledger.Posting] = field(default_factory=list)
    items: list[exception_queue.Item] = field(default_factory=list)

    def write(self, conn: psycopg.Connection, *, run_id: str) -> None:
        """In the caller's transaction, after the refused rows were finished."""
        ledger.insert_planned(conn, self.postings)
        exception_queue.quarantine_many(conn, self.items, run_id=run_id)


class HandOff(Protocol):
    """Hands the pass's posting lock to a short pass waiting for it, between batches
    (:mod:`psa_erp_sync.posting.service`)."""

    def wanted(self) -> bool:
        """Whether a short pass waits for the lock (cheap: asked before every batch)."""
        ...

    def __call__(self) -> None:
        """Hand the lock over and take it back; called with no batch in flight."""
        ...


class PostingEngine:
    """Works the ledger of one ERP record type until nothing is pending."""

    def __init__(
        self,
        *,
        dsn: str,
        client: ErpPort | ErpAdapter,
        record_type: str,
        config: Config,
        settings: EngineSettings,
        dag_run_id: str,
        task_try: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        lock_check: Callable[[], None] | None = None,
        target: ledger.Target | None = None,
        hand_off: HandOff | None = None,
    ) -> None:
        self.dsn = dsn
        # The ERP account this pass works for (None: every ledger row of the record type).
        self.target = target
        self.client = client
        # The engine talks to the ERP only through its adapter (a bare NetSuite client is wrapped).
        self.adapter: ErpAdapter = as_adapter(client)
        self.record_type = record_type
        self.config = config
        self.settings = settings
        self.dag_run_id = dag_run_id
        self.task_try = task_try
        self.sleep = sleep
        # Raises when the pass's posting lock is gone; called before every batch and round.
        self.lock_check = lock_check or (lambda: None)
        self.hand_off = hand_off
        self.outcome = Outcome(record_type)
        self._lock = threading.Lock()
        self._rng = random.Random()  # noqa: S311 - jitter, not security
        self._pool: ConnectionPool[psycopg.Connection] | None = None
        # At most max_concurrency ERP requests at once, whatever the number of worker threads.
        self._erp_slots = threading.BoundedSemaphore(settings.max_concurrency)
        # Set by the first failure that makes further sends pointless (credentials refused, a
        # request the ERP cannot take): the remaining batches stay pending and the pass fails.
        self._halted: BaseException | None = None
        self._periods_lock = threading.Lock()

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        """One transaction, committed when the block ends without an exception (else rolled back).

        During :meth:`run` the connection comes from a pool (one per worker thread plus spare):
        opening a connection per ledger step cost more than the step itself. The pool's
        connections are in autocommit, so the transaction is an explicit one here.
        """
        if self._pool is None:
            with connections.connect(self.dsn, autocommit=False) as conn:
                yield conn
            return
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def _statement(self) -> Iterator[psycopg.Connection]:
        """For ONE ledger statement, which is its own transaction (autocommit): committed when it
        returns, nothing of it kept when it fails, like :meth:`_conn` for a one-statement block,
        without the ``BEGIN`` and ``COMMIT`` round trips (two of a batch's three ledger round
        trips per step, four a batch). A block of more than one statement uses :meth:`_conn`."""
        if self._pool is None:
            with connections.connect(self.dsn, autocommit=True) as conn:
                yield conn
            return
        with self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _pooled(self) -> Iterator[None]:
        pool: ConnectionPool[psycopg.Connection] = connections.pool(
            self.dsn,
            min_size=1,
            max_size=self._workers + 2,
            # Autocommit: a one-statement ledger step (mark_sent, a batch's finish_many) is its own
            # transaction; a block of several runs in an explicit one (_conn). Named by role
            # (pg_stat_activity, the server's CPU per role: docs/performance.md, perf-post8).
            kwargs={
                "autocommit": True,
                "application_name": f"psa_erp_sync posting engine {self.record_type}",
            },
            configure=_decode_json_fast,
            name=f"posting-{self.record_type}",
            open=False,
        )
        pool.open(wait=True, timeout=30.0)
        self._pool = pool
        try:
            yield
        finally:
            self._pool = None
            pool.close()

    @property
    def _workers(self) -> int:
        return self.settings.max_concurrency * max(1, self.settings.workers_per_slot)

    def _count(self, **delta: int) -> None:
        with self._lock:
            for name, value in delta.items():
                setattr(self.outcome, name, getattr(self.outcome, name) + value)

    # -- read-back ----------------------------------------------------------
    def lookup(self, postings: Sequence[ledger.Posting]) -> dict[str, Held]:
        """What the ERP holds for these postings' external ids, by idempotency key: the adapter's
        read-back (:meth:`~psa_erp_sync.posting.adapter.ErpAdapter.read_back`), 100 postings of
        one ERP record type per call (NetSuite: one SuiteQL query per call)."""
        found: dict[str, Held] = {}
        for erp_type in sorted({p.erp_type for p in postings}):
            same = [p for p in postings if p.erp_type == erp_type]
            for start in range(0, len(same), 100):
                self._count(erp_requests=1)
                with self._erp_slots:
                    found.update(self.adapter.read_back(same[start : start + 100]))
        return found

    def resolve(self, postings: Sequence[ledger.Posting]) -> list[ledger.Posting]:
        """Decide sent/ambiguous postings by read-back; return those that must be sent again."""
        if not postings:
            return []
        held = self.lookup(postings)
        again = []
        decided: list[tuple[str, str, str, str | None, int | None]] = []
        for p in postings:
            record = held.get(p.idempotency_key)
            # A reversal landed when nothing is held; anything else when the record proves it holds
            # exactly this version (NetSuite: the key in the memo; SAP: the tag or the reference).
            landed = record is None if p.deletes else record is not None and record.carries(p.idempotency_key)
            if landed:
                internal_id = record.erp_id if record else None
                decided.append((p.idempotency_key, "resolved", "resolved-by-lookup", internal_id, None))
            else:
                decided.append((p.idempotency_key, "pending", "not-found-on-lookup", None, None))
                again.append(p)
        with self._statement() as conn:
            ledger.finish_many(conn, decided)
        self._count(ambiguous_resolved=len(postings) - len(again))
        return again

    # -- sending ------------------------------------------------------------
    def _halt(self, exc: BaseException) -> None:
        with self._lock:
            if self._halted is None:
                self._halted = exc

    def _back_to_pending(self, postings: Sequence[ledger.Posting], detail: dict[str, Any]) -> None:
        """The ERP certainly wrote nothing (the request was refused before any processing)."""
        keys = [p.idempotency_key for p in postings]
        with self._statement() as conn:  # sent -> pending, the attempt's outcome `refused`
            ledger.finish_many(
                conn,
                [(k, "pending", "refused", None, detail.get("status")) for k in keys],
                details=[detail] * len(keys),
            )

    def _mark_sent(self, batch: Sequence[ledger.Posting]) -> tuple[Sequence[ledger.Posting], str, Any]:
        """Mark the batch ``sent`` with its attempts; the postings still to send (some may have
        left ``pending`` meanwhile), their batch key and attempt ids.

        ``mark_sent`` is one statement, committed before the ERP is called (the write-ahead
        ``sent``). When some postings had left ``pending`` meanwhile, the attempts of the rest are
        renamed to the batch actually sent by a second statement: a crash between the two leaves
        them naming a batch that was never sent, and the postings ``sent``, read back by external
        id on the next run as after any crash before the ERP call."""
        key = batch_key(batch)
        with self._statement() as conn:
            attempt_ids = ledger.mark_sent(
                conn, batch, batch_key=key, dag_run_id=self.dag_run_id, task_try=self.task_try
            )
            if len(attempt_ids) < len(batch):  # some left `pending` meanwhile: send only the rest
                batch = [p for p in batch if p.idempotency_key in attempt_ids]
                key = batch_key(batch) if batch else key
                ledger.rekey_attempts(conn, list(attempt_ids.values()), key)
        return batch, key, attempt_ids

    def _send_batch(self, batch: Sequence[ledger.Posting], progress: _Progress) -> None:
        if self._halted is not None:
            return  # left pending: the pass fails with the first failure
        self.lock_check()
        batch, key, attempt_ids = self._mark_sent(batch)
        if not batch:
            progress.add(0)
            return
        batch = self._preflight(batch, attempt_ids, progress)
        if not batch:
            return
        from psa_erp_sync.clients import erp

        result = None
        for attempt in range(1, self.settings.throttle_retries + 1):
            try:
                self._count(erp_requests=1)
                with self._erp_slots:
                    # One ERP record type per batch: the pass's own, or correcting journals.
                    result = self.adapter.post_batch(batch[0].erp_type, batch, key)
                break
            except erp.ErpThrottled as exc:
                delay = (exc.retry_after or 1.0) + self._rng.uniform(0, min(2.0**attempt, 5.0))
                log.info("ERP throttled a batch; waiting %.1f s (attempt %d)", delay, attempt)
                self.sleep(delay)
            except (erp.ErpAmbiguous, erp.ErpUnavailable) as exc:
                log.warning(
                    "batch %s outcome unknown (%s); reading back by external id", key, type(exc).__name__
                )
                self._mark_ambiguous(batch, exc, attempt_ids)
                self.resolve(batch)
                progress.add(0)
                return
            except erp.ErpAuthFailed as exc:
                # Our credentials: the task fails and is retried. Refused on the POST, nothing was
                # written; refused while reading an accepted job, the items may have landed.
                self._halt(exc)
                if exc.job_id is not None:
                    self._mark_ambiguous(batch, exc, attempt_ids)
                else:
                    self._back_to_pending(batch, {"error": "ErpAuthFailed", "status": exc.status})
                raise
            except erp.ErpRejected as exc:
                # The whole submission refused (no per-record answer exists): nothing was written,
                # and it is no record's fault. Fail the pass with the batch pending, never a dead letter.
                self._halt(exc)
                codes = [d.code for d in exc.details]
                self._back_to_pending(
                    batch, {"error": "ErpRejected", "status": exc.status, "erp_errors": codes}
                )
                raise
        if result is None:  # throttled every time: leave them pending for the next round
            with self._statement() as conn:
                ledger.set_state(conn, [p.idempotency_key for p in batch], "pending", only_from=["sent"])
            return
        by_external = {item.external_id: item for item in result.items}
        done, rejected, closed = _classify(batch, by_external, "replayed" if result.replayed else "confirmed")
        # The whole outcome of the batch (confirmed, rejected, dead letters) in one transaction.
        finished, details, letters = self._rejections(
            [p for p in batch if p.external_id in rejected], rejected, 400
        )
        replanned = self._replan_closed([p for p in batch if p.external_id in closed], closed)
        # One statement when the ERP confirmed the whole batch (no dead letter, nothing replanned).
        with self._conn() if letters or replanned.postings or replanned.items else self._statement() as conn:
            ledger.finish_many(
                conn,
                done + finished + replanned.finished,
                details=[None] * len(done) + details + replanned.details,
                attempt_ids=attempt_ids,
            )
            exception_queue.quarantine_many(conn, letters, run_id=self.dag_run_id)
            replanned.write(conn, run_id=self.dag_run_id)
        self._count(**({"already_posted": len(done)} if result.replayed else {"posted": len(done)}))
        leftover = [p for p in batch if _unanswered(by_external.get(p.external_id))]
        if leftover:
            self.resolve(leftover)
        progress.add(len(batch))

    def _preflight(
        self, batch: Sequence[ledger.Posting], attempt_ids: dict[str, int], progress: _Progress
    ) -> Sequence[ledger.Posting]:
        """The adapter's pre-flight (:meth:`~psa_erp_sync.posting.adapter.ErpAdapter.validate`):
        what it refuses is rejected with dead letters, without a call; the rest is returned."""
        refused = self.adapter.validate(batch)
        if not refused:
            return batch
        self._reject([p for p in batch if p.external_id in refused], refused, 400, attempt_ids)
        progress.add(len(refused))
        return [p for p in batch if p.external_id not in refused]

    def _rejections(
        self, postings: Sequence[ledger.Posting], errors: dict[str, list[tuple[str, str | None]]], status: int
    ) -> tuple[
        list[tuple[str, str, str, str | None, int | None]],
        list[dict[str, Any] | None],
        list[exception_queue.Item],
    ]:
        """Ledger outcomes, their details and the dead letters for postings the ERP refused."""
        items = []
        finished: list[tuple[str, str, str, str | None, int | None]] = []
        details: list[dict[str, Any] | None] = []
        for p in postings:
            codes = errors.get(p.external_id, [("UNKNOWN", None)])
            detail = {
                "erp_errors": [{"code": c, "path": path} for c, path in codes],
                "external_id": p.external_id,
            }
            finished.append((p.idempotency_key, "rejected", "rejected", None, status))
            details.append(detail)
            code = codes[0][0] if codes else "UNKNOWN"
            with self._lock:
                self.outcome.rejected += 1
                self.outcome.rejected_by_code[code] = self.outcome.rejected_by_code.get(code, 0) + 1
            items.append(
                exception_queue.Item(
                    kind="dead_letter",
                    domain=DOMAINS.get(self.record_type, "time_expense"),
                    source_system=p.source_system,
                    record_type=KINDS.get(self.record_type, self.record_type),
                    source_id=p.source_id,
                    source_version=p.source_version,
                    reason_code=code,
                    detail=detail,
                    legal_entity=p.legal_entity,
                    owner=self.config.ownership.owner_for(
                        DOMAINS.get(self.record_type, "time_expense"), p.legal_entity
                    ),
                )
            )
        return finished, details, items

    def _reject(
        self,
        postings: Sequence[ledger.Posting],
        errors: dict[str, list[tuple[str, str | None]]],
        status: int,
        attempt_ids: dict[str, int] | None = None,
    ) -> None:
        finished, details, items = self._rejections(postings, errors, status)
        with self._conn() as conn:
            ledger.finish_many(conn, finished, details=details, attempt_ids=attempt_ids)
            exception_queue.quarantine_many(conn, items, run_id=self.dag_run_id)

    def _reverse(self, posting: ledger.Posting, progress: _Progress) -> None:
        from psa_erp_sync.clients.erp import (
            ErpAmbiguous,
            ErpAuthFailed,
            ErpRejected,
            ErpThrottled,
            ErpUnavailable,
        )

        if self._halted is not None:
            return
        self.lock_check()
        with self._statement() as conn:
            attempt_ids = ledger.mark_sent(
                conn, [posting], batch_key=None, dag_run_id=self.dag_run_id, task_try=self.task_try
            )
        if not attempt_ids:  # no longer pending (see ledger.mark_sent): nothing to send
            progress.add(1)
            return
        try:
            self._count(erp_requests=1)
            with self._erp_slots:
                self.adapter.reverse(posting)
        except (ErpAmbiguous, ErpUnavailable) as exc:
            self._mark_ambiguous([posting], exc, None)
            self.resolve([posting])
        except ErpThrottled as exc:  # refused by the governor: nothing done, the next round sends it
            self._back_to_pending(
                [posting], {"error": "ErpThrottled", "status": 429, "retry_after": exc.retry_after}
            )
        except ErpAuthFailed as exc:
            self._halt(exc)
            self._back_to_pending([posting], {"error": "ErpAuthFailed", "status": exc.status})
            raise
        except ErpRejected as exc:
            codes = [(d.code, d.path) for d in exc.details]
            if not exc.per_record:
                self._halt(exc)
                self._back_to_pending(
                    [posting],
                    {"error": "ErpRejected", "status": exc.status, "erp_errors": [c for c, _ in codes]},
                )
                raise
            if any(code == PERIOD_CLOSED for code, _ in codes):
                replanned = self._replan_closed([posting], {posting.external_id: codes})
                with self._conn() as conn:
                    ledger.finish_many(conn, replanned.finished, details=replanned.details)
                    replanned.write(conn, run_id=self.dag_run_id)
            else:
                self._reject([posting], {posting.external_id: codes}, exc.status, attempt_ids)
        else:
            with self._statement() as conn:
                ledger.finish_many(
                    conn,
                    [(posting.idempotency_key, "confirmed", "reversed", None, 204)],
                    attempt_ids=attempt_ids,
                )
            self._count(reversed=1)
        progress.add(1)

    def _mark_ambiguous(
        self, postings: Sequence[ledger.Posting], exc: BaseException, attempt_ids: dict[str, int] | None
    ) -> None:
        detail = {
            "error": type(exc).__name__,
            "status": getattr(exc, "status", None),
            "job_id": getattr(exc, "job_id", None),
        }
        with self._statement() as conn:
            ledger.finish_many(
                conn,
                [(p.idempotency_key, "ambiguous", "ambiguous", None, None) for p in postings],
                details=[detail] * len(postings),
                attempt_ids=attempt_ids,
            )

    # -- periods that close during the pass -----------------------------------
    def read_periods(self) -> PeriodBook:
        """The ERP's accounting periods as they are now (one SuiteQL read)."""
        with self._periods_lock:
            self._count(erp_requests=1)
            with self._erp_slots:
                rows = self.adapter.read_periods()
        return PeriodBook.from_rows(rows)

    def _replan_closed(
        self, postings: Sequence[ledger.Posting], errors: dict[str, list[tuple[str, str | None]]]
    ) -> _Replanned:
        """Postings the ERP answered ``PERIOD_CLOSED`` (a period closed after the plan read it):
        read the periods again and apply each entity's policy again. The refused row ends
        ``rejected`` (outcome ``period-closed``, no dead letter); the record's next row, planned
        here, is ``pending`` in the period the policy chooses or ``parked`` for finance."""
        out = _Replanned()
        if not postings:
            return out
        book = self.read_periods()
        found = self.lookup([p for p in postings if not p.corrects])
        held = {
            p.external_id: found[p.idempotency_key].period for p in postings if p.idempotency_key in found
        }
        with self._conn() as conn:
            seqs = ledger.next_seqs(conn, postings)
            entries = ledger.held_of(conn, postings)
        for p in postings:
            codes = errors.get(p.external_id, [])
            detail = {
                "erp_errors": [{"code": c, "path": path} for c, path in codes],
                "external_id": p.external_id,
                "replanned": "period closed during the pass: periods re-read, policy applied again",
            }
            out.finished.append((p.idempotency_key, "rejected", "period-closed", None, 400))
            out.details.append(detail)
            held_period = held.get(p.external_id)
            fresh, item, decision = replan_closed(
                p,
                periods=book,
                config=self.config,
                seq=seqs[p.idempotency_key],
                held=str(held_period) if held_period else None,
                entry=entries[p.idempotency_key],
            )
            out.postings.append(fresh)
            if item is not None:
                out.items.append(item)
            log.info(
                "ERP answered PERIOD_CLOSED for %s: %s (period %s)",
                p.external_id,
                decision.outcome,
                decision.period,
            )
        with self._lock:
            self.outcome.period_closed_replanned += len(postings)
            self.outcome.parked_after_period_closed += len(out.items)
        return out

    def _reverse_batch(self, batch: Sequence[ledger.Posting], progress: _Progress) -> None:
        for posting in batch:
            self._reverse(posting, progress)

    # -- the loop -----------------------------------------------------------
    def _pending_batches(self, *, reversals: bool) -> Iterator[list[ledger.Posting]]:
        """Pending postings in key order, a page at a time (never the whole month in memory):
        batches of ``batch_size`` upserts, or single reversals. Each posting is yielded at most
        once per round: the page cursor only moves forward, so one sent back to ``pending``
        during the round waits for the next round."""
        size = 1 if reversals else self.settings.batch_size
        page_size = size * max(4 * self._workers, 10)
        # The first page is one batch, then four times the last: the first request goes out
        # while the rest of the round is read and decoded (invoices: ~14 KB of payload each).
        limit = size
        after: str | None = None
        while True:
            with self._conn() as conn:
                page = ledger.page_in_state(
                    conn,
                    self.record_type,
                    ["pending"],
                    reversals=reversals,
                    after=after,
                    limit=limit,
                    target=self.target,
                )
            if not page:
                return
            after = page[-1].idempotency_key
            for erp_type in sorted({p.erp_type for p in page}):  # a batch holds one ERP record type
                same = [p for p in page if p.erp_type == erp_type]
                for i in range(0, len(same), size):
                    yield same[i : i + size]
            if len(page) < limit:
                return
            limit = min(page_size, 4 * limit)

    def _fed_batches(
        self, feed: Iterable[Sequence[ledger.Posting]], progress: _Progress
    ) -> Iterator[tuple[_Send, list[ledger.Posting]]]:
        """Work from postings as the planner commits them: upserts in batches of ``batch_size``
        (a chunk's remainder waits for the next chunk), reversals one at a time."""
        size = self.settings.batch_size
        upserts: dict[str, list[ledger.Posting]] = {}  # per ERP record type (correcting journals apart)
        for planned in feed:
            if not planned:  # the planner has committed nothing new yet: the sender may hand over
                yield self._send_batch, []
                continue
            # Rows routed to another ERP account wait for that account's pass.
            chunk = [p for p in planned if self.target is None or self.target.holds(p)]
            with progress.lock:
                progress.total += len(chunk)
            self.outcome.total += len(chunk)
            for posting in chunk:
                if posting.deletes:
                    yield self._reverse_batch, [posting]
                else:
                    same = upserts.setdefault(posting.erp_type, [])
                    same.append(posting)
                    if len(same) == size:
                        yield self._send_batch, list(same)
                        same.clear()
        for same in upserts.values():
            if same:
                yield self._send_batch, same

    def _work(
        self,
        pool: ThreadPoolExecutor,
        batches: Iterable[tuple[_Send, list[ledger.Posting]]],
        progress: _Progress,
    ) -> None:
        """Send ``batches`` with at most ``2 x workers`` queued. As when every batch was
        submitted up front, a failing batch does not stop the others; the first failure is raised
        once all have been worked (what it left ``sent`` or ``ambiguous`` is read back next run).
        A failure of the iterator itself (the planner feeding it) is raised the same way."""
        in_flight: set[Future[None]] = set()
        limit = 2 * self._workers
        failed: BaseException | None = None
        queued: dict[Future[None], tuple[_Send, list[ledger.Posting]]] = {}  # for a hand-off

        from psa_erp_sync.clients.erp import ErpAuthFailed

        def collect(done: set[Future[None]]) -> None:
            nonlocal failed
            for future in done:
                error = future.exception()
                if isinstance(error, ErpAuthFailed):
                    self._halt(error)  # e.g. a read-back refused: no point sending the rest
                if failed is None and error is not None:
                    failed = error

        def hand_over() -> None:
            nonlocal in_flight, queued
            # Nothing in flight while another pass works: batches not started yet wait (still
            # pending in the ledger), the running ones finish.
            later = [queued[f] for f in in_flight if f.cancel()]
            collect(wait({f for f in in_flight if not f.cancelled()})[0])
            in_flight, queued = set(), {}
            assert self.hand_off is not None
            self.hand_off()
            for item in later:
                future = pool.submit(item[0], item[1], progress)
                in_flight.add(future)
                queued[future] = item

        try:
            for send, batch in batches:
                self.lock_check()
                if self.hand_off is not None and self.hand_off.wanted():
                    hand_over()
                if not batch:  # the feed waits for the planner (an idle tick): nothing to send
                    done = {f for f in in_flight if f.done()}
                    in_flight -= done
                    collect(done)
                    for future in done:
                        queued.pop(future, None)
                    continue
                if len(in_flight) >= limit:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    collect(done)
                    for future in done:
                        queued.pop(future, None)
                future = pool.submit(send, batch, progress)
                in_flight.add(future)
                queued[future] = (send, batch)
            # The last batches: a waiting pass need not wait for all of them either.
            while self.hand_off is not None and in_flight:
                if self.hand_off.wanted():
                    hand_over()
                    continue
                done, in_flight = wait(in_flight, timeout=0.05, return_when=FIRST_COMPLETED)
                collect(done)
        except BaseException as exc:  # the feed failed: finish what is in flight, then raise
            failed = exc
        done, _ = wait(in_flight)
        collect(done)
        if failed is not None:
            raise failed

    def run(
        self, feed: Iterable[Sequence[ledger.Posting]] | None = None, *, already_pending: int = 0
    ) -> Outcome:
        """Work the ledger until nothing is pending.

        With ``feed`` (the planner's committed chunks, see :func:`~psa_erp_sync.posting.planner.plan`),
        the first round sends those postings as they arrive, while the rest is still being planned;
        later rounds page through the ledger for whatever is still pending (throttled batches,
        postings left pending by an earlier run: ``already_pending`` of them, for the totals).
        """
        started = time.monotonic()
        if feed is None:
            # Nothing pending, sent or ambiguous (a pass with nothing to do, e.g. credit memos
            # after invoices): one count, no pool of connections, no further scans.
            with self._conn() as conn:
                counts = ledger.open_counts(conn, self.record_type, target=self.target)
            if not any(counts.get(s, 0) for s in ledger.UNFINISHED):
                return self._finished(counts, started)
        with self._pooled():
            return self._run(feed, already_pending, started)

    def _finished(self, counts: dict[str, int], started: float) -> Outcome:
        self.outcome.still_pending = sum(counts.get(s, 0) for s in ledger.UNFINISHED)
        self.outcome.parked = counts.get("parked", 0)
        self.outcome.seconds = time.monotonic() - started
        return self.outcome

    def _run(
        self, feed: Iterable[Sequence[ledger.Posting]] | None, already_pending: int, started: float
    ) -> Outcome:
        with self._conn() as conn:
            unfinished = ledger.in_state(conn, self.record_type, ["sent", "ambiguous"], target=self.target)
        if unfinished:
            log.info(
                "resuming: %d postings were in flight when an earlier attempt stopped; reading them back",
                len(unfinished),
            )
            self.resolve(unfinished)
        first_round = 1
        if feed is not None:
            self.outcome.total = already_pending
            progress = _Progress(
                0, self.settings.progress_every_s, f"posting {self.record_type} as planned (round 1)"
            )
            with ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="erp-post") as pool:
                self._work(pool, self._fed_batches(feed, progress), progress)
            first_round = 2
        counts: dict[str, int] | None = None
        for round_no in range(first_round, self.settings.max_rounds + 1):
            self.lock_check()
            # The open postings' counts by state (ledger.posting_open, migration 0048: no scan of
            # the ledger): whether anything is pending and, when not, the outcome's final figures.
            with self._conn() as conn:
                counts = ledger.open_counts(conn, self.record_type, target=self.target)
            pending = counts.get("pending", 0)
            if not pending:
                break
            counts = None  # this round changes them
            if round_no == 1:
                self.outcome.total = pending
            progress = _Progress(
                pending, self.settings.progress_every_s, f"posting {self.record_type} round {round_no}"
            )
            with ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="erp-post") as pool:
                self._work(
                    pool, ((self._send_batch, b) for b in self._pending_batches(reversals=False)), progress
                )
                self._work(
                    pool, ((self._reverse_batch, b) for b in self._pending_batches(reversals=True)), progress
                )
        if counts is None:
            with self._conn() as conn:
                counts = ledger.open_counts(conn, self.record_type, target=self.target)
        return self._finished(counts, started)


def _unanswered(item: RecordOutcome | None) -> bool:
    """No answer for the record, or an ambiguous one: the record is read back."""
    return item is None or item.status == "ambiguous"


def _classify(
    batch: Sequence[ledger.Posting], by_external: dict[str, RecordOutcome], outcome: str
) -> tuple[
    list[tuple[str, str, str, str | None, int | None]],
    dict[str, list[tuple[str, str | None]]],
    dict[str, list[tuple[str, str | None]]],
]:
    """The ERP's per-record answers to a batch: the confirmed postings, and the error codes of the
    rejected ones and of those refused for a closed period."""
    rejected: dict[str, list[tuple[str, str | None]]] = {}
    closed: dict[str, list[tuple[str, str | None]]] = {}
    done: list[tuple[str, str, str, str | None, int | None]] = []
    for p in batch:
        item = by_external.get(p.external_id)
        if item is None or item.status == "ambiguous":  # read back by the caller
            continue
        if item.status == "confirmed":
            done.append((p.idempotency_key, "confirmed", outcome, item.erp_id, 202))
        else:
            codes = item.errors or [("UNKNOWN", None)]
            if any(code == PERIOD_CLOSED for code, _ in codes):
                closed[p.external_id] = codes
            else:
                rejected[p.external_id] = codes
    return done, rejected, closed
