"""One posting pass for one ERP record type: read periods, plan, work the ledger.

Shared by :class:`~psa_erp_sync.operators.posting.IdempotentPostingOperator` and the command
line (``python -m psa_erp_sync.posting``), so both take exactly the same path.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NoReturn

import psycopg

from psa_erp_sync.config import Config
from psa_erp_sync.ods import collector
from psa_erp_sync.ods import exceptions as exception_queue
from psa_erp_sync.posting import budget, ledger, planner
from psa_erp_sync.posting.adapter import as_adapter
from psa_erp_sync.posting.engine import EngineSettings, PostingEngine
from psa_erp_sync.posting.periods import PendingPeriodBook, PeriodBook

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PostingResult:
    plan: dict[str, Any]
    outcome: dict[str, Any]


class PostingLockBusy(RuntimeError):
    """Another pass holds the posting lock of this record type and ERP account past the wait
    bound. Nothing was done; retrying later (the Airflow task's retry) is the remedy."""


class PostingLockLost(RuntimeError):
    """The lock connection died or its session ended mid-pass: another pass may now run, so this
    one stopped between batches. What it left ``sent`` is read back by the next pass."""


@dataclass(frozen=True)
class LockSettings:
    """How the posting lock is waited for and kept (docs/posting.md, "The posting lock")."""

    wait_s: float = 60.0  # give up ("posting lock busy") after this long
    poll_s: float = 0.5  # between pg_try_advisory_lock attempts while waiting
    heartbeat_s: float = 5.0  # the lock session is verified this often, in a thread of its own
    lease_s: float = 30.0  # idle_session_timeout of the lock session: a frozen holder loses it
    connect_timeout_s: int = 10
    keepalives_idle_s: int = 10  # TCP keepalives on both ends of the lock connection
    keepalives_interval_s: int = 5
    keepalives_count: int = 3
    # A long pass (the batch) hands the lock to a short pass (a stream burst) that waits for it,
    # between batches, and takes it back (docs/posting.md, "The posting lock"). A short pass sets
    # ``short``: it announces itself while it waits and never hands the lock on.
    hand_off: bool = True
    short: bool = False
    hand_off_probe_s: float = 0.05  # a long pass asks whether a short pass waits at most this often
    hand_off_s: float = 1.0  # a long pass leaves the lock to the waiter for at most this long
    hand_off_poll_s: float = 0.02  # then tries to take it back this often

    def __post_init__(self) -> None:
        if self.heartbeat_s * 2 > self.lease_s:
            raise ValueError("heartbeat_s must be at most half of lease_s, or a live holder loses its lease")


class PostingLock:
    """A held posting lock: a session advisory lock on a connection of its own, kept alive by a
    heartbeat thread. :meth:`check` (called by the engine between batches) raises
    :class:`PostingLockLost` once the heartbeat found the lock gone or could not confirm it within
    the lease."""

    def __init__(self, conn: psycopg.Connection, key: str, settings: LockSettings) -> None:
        self.conn = conn
        self.key = key
        self.settings = settings
        self._confirmed_at = time.monotonic()
        self._lost: str | None = None
        self._stop = threading.Event()
        self._io = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name=f"lock-{key}", daemon=True)
        self._probed_at = float("-inf")
        self._waiting = False
        self.hand_offs = 0

    def _held(self) -> bool:
        with self._io:
            row = self.conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()"
            ).fetchone()
        return bool(row and row[0])

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_s):
            try:
                held = self._held()
            except psycopg.Error as exc:
                self._lost = f"the lock connection failed ({type(exc).__name__}: {str(exc).strip()[:200]})"
                return
            if not held:
                self._lost = "the lock session no longer holds the advisory lock"
                return
            self._confirmed_at = time.monotonic()

    def others_waiting(self) -> bool:
        """Whether a short pass waits for this lock (it holds the waiting marker while it polls);
        asked of the server at most every ``hand_off_probe_s``."""
        now = time.monotonic()
        if now - self._probed_at >= self.settings.hand_off_probe_s:
            try:
                with self._io:
                    row = self.conn.execute(_OTHERS_WAIT, (self.key,)).fetchone()
            except psycopg.Error as exc:  # the lock's session is gone: the lock with it
                self._failed(exc)
            self._waiting = bool(row and row[0])
            self._probed_at = now
        return self._waiting

    def _failed(self, exc: psycopg.Error) -> NoReturn:
        """The lock connection failed under this pass (killed, server gone): the lock is lost, as
        the heartbeat would find, so the pass stops between batches with :class:`PostingLockLost`."""
        self._lost = (
            self._lost or f"the lock connection failed ({type(exc).__name__}: {str(exc).strip()[:200]})"
        )
        raise PostingLockLost(
            f"posting lock {self.key} lost: {self._lost}; the pass stopped between batches"
        ) from exc

    def hand_over(self, released: Callable[[datetime], None]) -> None:
        """Release the lock to the short pass waiting for it, then take it back. ``released`` gets
        the server's clock just before the release (every ledger row another pass writes meanwhile
        is created after it). Raises :class:`PostingLockLost` when the lock cannot be taken back
        within ``wait_s``: the pass then stops between batches, as when the lock is lost."""
        try:
            self._hand_over(released)
        except psycopg.Error as exc:
            self._failed(exc)
        self.check()

    def _hand_over(self, released: Callable[[datetime], None]) -> None:
        with self._io:  # the heartbeat waits meanwhile: the lock is briefly not ours
            row = self.conn.execute("SELECT clock_timestamp()").fetchone()
            assert row is not None
            released(row[0])
            self.conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (self.key,))
            self.hand_offs += 1
            # The waiter drops its marker once it holds the lock: until then, leave it the lock.
            deadline = time.monotonic() + self.settings.hand_off_s
            while time.monotonic() < deadline:
                row = self.conn.execute(_OTHERS_WAIT, (self.key,)).fetchone()
                if not (row and row[0]):
                    break
                time.sleep(0.005)
            deadline = time.monotonic() + self.settings.wait_s
            while True:
                row = self.conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self.key,)).fetchone()
                if row and row[0]:
                    break
                if time.monotonic() >= deadline:
                    self._lost = (
                        f"handed to a waiting pass and not free again within {self.settings.wait_s:g} s"
                    )
                    break
                time.sleep(self.settings.hand_off_poll_s)
            self._confirmed_at = time.monotonic()
            self._waiting = False
            self._probed_at = time.monotonic()

    def check(self) -> None:
        """Raise :class:`PostingLockLost` if this pass may no longer hold the lock."""
        if self._lost is None and time.monotonic() - self._confirmed_at > self.settings.lease_s:
            self._lost = f"the lock was not confirmed for {self.settings.lease_s:.0f} s (lease)"
        if self._lost is not None:
            raise PostingLockLost(
                f"posting lock {self.key} lost: {self._lost}; the pass stopped between batches"
            )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# A short pass waiting for a posting lock holds a shared advisory lock on (key, -1) while it polls
# (as posting/budget.py's slot waiters do); the holder's probe fails exactly while one does.
_WAITING = "SELECT pg_advisory_lock_shared(hashtext(%s), -1)"
_DONE_WAITING = "SELECT pg_advisory_unlock_shared(hashtext(%s), -1)"
_OTHERS_WAIT = "SELECT NOT pg_try_advisory_xact_lock(hashtext(%s), -1)"


def _lock_connection(dsn: str, settings: LockSettings) -> psycopg.Connection:
    conn = psycopg.connect(
        dsn,
        autocommit=True,
        connect_timeout=settings.connect_timeout_s,
        application_name="psa_erp_sync posting lock",
        # Client side: a dead server or network is noticed within idle + interval x count seconds.
        keepalives=1,
        keepalives_idle=settings.keepalives_idle_s,
        keepalives_interval=settings.keepalives_interval_s,
        keepalives_count=settings.keepalives_count,
        tcp_user_timeout=int(
            1000 * (settings.keepalives_idle_s + settings.keepalives_interval_s * settings.keepalives_count)
        ),
    )
    # Server side: a vanished client's session ends (and its lock with it) as quickly; a frozen
    # client, whose kernel still answers keepalives, loses the session after the lease, because
    # only its heartbeat keeps the session from being idle.
    conn.execute(
        "SELECT set_config('tcp_keepalives_idle', %s, false), set_config('tcp_keepalives_interval', %s, false),"
        " set_config('tcp_keepalives_count', %s, false), set_config('idle_session_timeout', %s, false),"
        " set_config('statement_timeout', %s, false)",
        (
            str(settings.keepalives_idle_s),
            str(settings.keepalives_interval_s),
            str(settings.keepalives_count),
            f"{int(settings.lease_s * 1000)}ms",
            f"{int(settings.lease_s * 1000)}ms",
        ),
    )
    return conn


#: The ERP account of a pass that names none: NetSuite's default connection.
DEFAULT_TARGET = ledger.Target("netsuite", "default")


def target_of(client: Any) -> ledger.Target:
    """The ERP account ``client`` posts to. ``client`` is an adapter (its ``name``, and the
    ``account_id`` of the client it wraps) or a bare client (its ``erp_name``, NetSuite when it has
    none, and ``account_id``)."""
    inner = getattr(client, "client", None)
    erp = getattr(client, "erp_name", None) or (getattr(client, "name", None) if inner is not None else None)
    account = getattr(client, "account_id", None) or getattr(inner, "account_id", None)
    return ledger.Target(str(erp or DEFAULT_TARGET.erp), str(account or DEFAULT_TARGET.account))


def lock_key(record_type: str, target: ledger.Target) -> str:
    """The advisory lock of one record type's passes for one ERP account."""
    return f"psa_erp_sync.posting.{target.erp}.{target.account}.{record_type}"


@contextmanager
def posting_lock(
    dsn: str, record_type: str, settings: LockSettings | None = None, *, target: ledger.Target | None = None
) -> Iterator[PostingLock]:
    """One posting pass per ERP record type and ERP account at a time, whoever runs it: the batch
    DAG, a replay, the stream, the command line (a session advisory lock, released if the process or
    its session dies). Passes for different accounts (``target``, default :data:`DEFAULT_TARGET`)
    run at the same time; each works only its account's ledger rows.

    Waits at most ``settings.wait_s`` (then :class:`PostingLockBusy`); the yielded
    :class:`PostingLock` is checked between batches."""
    settings = settings or LockSettings()
    target = target or DEFAULT_TARGET
    key = lock_key(record_type, target)
    conn = _lock_connection(dsn, settings)
    try:
        deadline = time.monotonic() + settings.wait_s
        announced = False
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()
            if row and row[0]:
                break
            if settings.short and not announced:
                # A long pass holding the lock hands it over between its batches (hand_over).
                conn.execute(_WAITING, (key,))
                announced = True
            if time.monotonic() >= deadline:
                holder = conn.execute(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                    " AND objid = (hashtext(%s)::bigint & 4294967295)::oid LIMIT 1",
                    (key,),
                ).fetchone()
                raise PostingLockBusy(
                    f"posting lock busy: another {record_type} pass for {target.erp} account {target.account}"
                    f" (backend pid {holder[0] if holder else '?'})"
                    f" held {key} for the whole wait of {settings.wait_s:g} s; nothing was posted, retry later"
                )
            time.sleep(settings.poll_s)
        if announced:
            conn.execute(_DONE_WAITING, (key,))
        lock = PostingLock(conn, key, settings)
        lock.start()
        try:
            yield lock
        finally:
            lock.stop()
            try:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
            except psycopg.Error as exc:  # the session is gone, and its lock with it
                log.warning(
                    "posting lock %s: unlock failed (%s); the session already ended", key, type(exc).__name__
                )
    finally:
        try:
            conn.close()
        except psycopg.Error:
            log.warning("posting lock %s: closing the lock connection failed", key)


def post_record_type(
    *,
    dsn: str,
    client: Any,
    record_type: str,
    config: Config,
    settings: EngineSettings,
    run_id: str,
    task_try: int | None = None,
    lock_settings: LockSettings | None = None,
    periods_by_erp: dict[str, PeriodBook] | None = None,
    source_ids: Collection[str] | None = None,
) -> PostingResult:
    """``client`` is the target ERP's adapter (:func:`psa_erp_sync.posting.adapter.adapter_for`),
    or a bare NetSuite client (wrapped in a ``NetSuiteAdapter``). ``periods_by_erp``: the other
    ERPs' periods, so that what this pass plans for them gets their closed-period decisions (this
    ERP's periods are read here). ``source_ids``: a pass scoped to these records (a stream
    burst's): it plans, sends, reads back and counts only their ledger rows, and waits for the
    lock as a short pass (a long pass holding it hands it over between batches).

    Raises :class:`PostingLockBusy` when another pass holds the lock past the wait bound
    (``posting.lock_wait_seconds`` unless ``lock_settings`` say otherwise), and
    :class:`PostingLockLost` when the lock goes mid-pass; both are retryable."""
    lock_settings = lock_settings or LockSettings(wait_s=config.mappings.posting.lock_wait_seconds)
    adapter = as_adapter(client)
    erp_client = getattr(adapter, "client", client)
    target = target_of(adapter)
    if source_ids is not None:
        target = replace(target, source_ids=frozenset(source_ids))
        lock_settings = replace(lock_settings, short=True, hand_off=False)
    # The lock first: a pass waiting for it holds none of the account's request slots.
    with (
        posting_lock(dsn, record_type, lock_settings, target=target) as lock,
        budget.shared_by_processes(erp_client, dsn),
        collector_for_pass(),
    ):
        return _post_locked(
            dsn=dsn,
            client=adapter,
            record_type=record_type,
            config=config,
            settings=settings,
            run_id=run_id,
            task_try=task_try,
            lock=lock,
            target=target,
            periods_by_erp=periods_by_erp or {},
        )


def _post_locked(
    *,
    dsn: str,
    client: Any,
    record_type: str,
    config: Config,
    settings: EngineSettings,
    run_id: str,
    task_try: int | None,
    lock: PostingLock,
    target: ledger.Target,
    periods_by_erp: dict[str, PeriodBook],
) -> PostingResult:
    # The ERP's periods are read in a thread while the pass starts: the planner's queue, superseded
    # rows and first candidates need no period (with a remote ERP the read is a whole request's
    # service time, 0.3-0.5 s of every pass with no slot busy).
    periods = PendingPeriodBook(client.read_periods).start()
    if target.source_ids is None:  # a batch pass (a stream burst's is short: nothing to give back)
        release_freed_memory()
    books = {**periods_by_erp, target.erp: periods}
    with psycopg.connect(dsn) as conn:
        already_pending = ledger.count_in_state(conn, record_type, ["pending"], target=target)
    gate = _PlanGate(record_type)
    hand_off = _HandOff(lock, gate) if lock.settings.hand_off and not lock.settings.short else None
    engine = PostingEngine(
        dsn=dsn,
        client=client,
        record_type=record_type,
        config=config,
        settings=settings,
        dag_run_id=run_id,
        task_try=task_try,
        lock_check=lock.check,
        target=target,
        hand_off=hand_off,
    )
    planning = _PlanningThread(
        dsn,
        record_type=record_type,
        config=config,
        periods=periods,
        run_id=run_id,
        chunk=settings.plan_chunk,
        gate=gate,
        source_ids=target.source_ids,
    )
    planning.books = books
    planning.start()
    try:
        # Nothing is sent before the periods are in: a failed read fails the pass here, as before.
        periods.wait()
        if hand_off is not None and hand_off.wanted():  # a burst that came while they were read
            hand_off()
        # While the engine waits for the planner's next chunk it still hands the lock over.
        tick_s = lock.settings.hand_off_probe_s if hand_off is not None else None
        outcome = engine.run(planning.chunks(tick_s), already_pending=already_pending).as_dict()
    finally:
        planning.stop()
    outcome["hand_offs"] = lock.hand_offs
    plan = planning.plan
    if plan is None:  # the engine consumed the feed to its end, so the planner finished or raised
        raise RuntimeError(f"planning {record_type} ended without a plan")
    log.info("planned %s", plan.as_dict())
    with psycopg.connect(dsn) as conn:
        closed = close_settled_exceptions(conn, record_type)
    if closed:
        log.info("closed %d dead-letter / parked items whose records are now posted", closed)
    return PostingResult(plan.as_dict(), outcome)


#: The cyclic garbage collector's thresholds during a posting pass (CPython's: 700, 10, 10). A pass
#: allocates a few million short-lived containers (candidate rows, payloads, postings, HTTP and
#: ledger objects), nearly all freed by reference counting; at the default thresholds the collector
#: ran ~1,650 times in a 90k-record pass, 14 of them over the whole heap (every module, model and
#: config object of the process), for a fifth of the pass's client CPU. At these, 12-14 times; the
#: cycles left (~43k unreachable objects at the end of that pass) go at the next collections, and
#: the pass's peak RSS was the same (docs/performance.md, perf-post6).
PASS_GC_THRESHOLDS = (50_000, 20, 100)


def collector_for_pass() -> AbstractContextManager[None]:
    """For the pass: what the process held before it is frozen (``gc.freeze``: the collector no
    longer traverses it) and the thresholds are :data:`PASS_GC_THRESHOLDS`; both as before when
    the last pass (or validation run: one state for the process, :mod:`psa_erp_sync.ods.collector`)
    running in the process ends. Cycles are still collected, less often."""
    return collector.relaxed(PASS_GC_THRESHOLDS)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim  # glibc's
    except (OSError, AttributeError):  # another C library
        return None
    return trim


def release_freed_memory() -> bool:
    """Give the memory the process has freed back to the OS (glibc's ``malloc_trim``); False where
    the C library has none.

    A batch pass allocates in threads of its own (the planner's, the ERP workers'), which glibc
    serves from arenas of their own: what the caller freed before in its own arena (a month's
    extract and validation in the same process: ~115 MB at the month-end peak) is not reused by
    them, and stays resident beside the pass's memory unless it is returned first."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class _PlanningThread:
    """The planner in a thread of its own, handing each committed chunk to the engine.

    The queue is bounded (memory stays a few chunks, whatever the month's size): a planner that
    runs ahead of the ERP waits. Planning is 20-30 % of a posting pass; overlapped with sending,
    the pass takes little more than the sending.
    """

    _DONE = object()

    def __init__(
        self,
        dsn: str,
        *,
        record_type: str,
        config: Config,
        periods: PeriodBook,
        run_id: str,
        chunk: int,
        gate: _PlanGate | None = None,
        source_ids: frozenset[str] | None = None,
    ) -> None:
        self.dsn = dsn
        self.gate = gate or _PlanGate(record_type)
        self.source_ids = source_ids
        self.chunk = chunk
        self.record_type = record_type
        self.config = config
        self.periods = periods
        self.run_id = run_id
        self.books: dict[str, PeriodBook] = {}
        self.plan: planner.Plan | None = None
        self.error: BaseException | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=4)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"plan-{record_type}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _put(self, item: Any) -> None:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _main(self) -> None:
        try:
            # Autocommit: each of the planner's transaction blocks is a transaction of its own,
            # committed when it ends (a statement outside one must not open a transaction that
            # would turn the chunks' commits into savepoints).
            with _PlannerConnection.connect(
                self.dsn, autocommit=True, application_name=f"psa_erp_sync planner {self.record_type}"
            ) as conn:
                conn.gate = self.gate
                self.plan = planner.plan(
                    conn,
                    record_type=self.record_type,
                    config=self.config,
                    periods=self.periods,
                    dag_run_id=self.run_id,
                    chunk=self.chunk,
                    on_chunk=self._put,
                    periods_by_erp=self.books,
                    source_ids=None if self.source_ids is None else sorted(self.source_ids),
                    reading=self.gate.reading,
                )
        except _Stopped:
            return
        except BaseException as exc:  # handed to the engine's thread, which raises it
            self.error = exc
        try:
            self._put(self._DONE)
        except _Stopped:
            return

    def chunks(self, tick_s: float | None = None) -> Iterator[list[ledger.Posting]]:
        """The committed chunks, in commit order. With ``tick_s``, an empty chunk whenever none
        came for that long: the engine then asks whether a short pass waits for the lock, and
        hands it over (nothing it planned is lost: the planner's next commit waits at the gate)."""
        while True:
            try:
                item = self._queue.get(timeout=tick_s)
            except queue.Empty:
                yield []
                continue
            if item is self._DONE:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def stop(self) -> None:
        """Stop a planner the engine no longer listens to (the engine failed), and wait for it."""
        self._stopping.set()
        self._thread.join()


class _Stopped(Exception):
    pass


# Pending postings this transaction inserted for records another pass wrote a ledger row for
# since the lock was first handed over: planned from a snapshot older than that row, so not sent.
_SUPERSEDE_OVERTAKEN = """
UPDATE ledger.posting p SET state = 'superseded', updated_at = now()
WHERE p.record_type = %(rt)s AND p.state = 'pending' AND p.created_at = now()
  AND EXISTS (
      SELECT 1 FROM ledger.posting q
      WHERE q.record_type = p.record_type AND q.source_system = p.source_system AND q.source_id = p.source_id
        AND q.shadow = p.shadow AND q.created_at >= %(since)s AND q.created_at < now())
"""
# ``created_at`` is its transaction's start: this transaction's rows have now(); another pass's
# rows written during a hand-over were written before this transaction could begin (the gate).


class _PlanGate:
    """Keeps a long pass's planner from committing while another pass holds the handed-over lock,
    and keeps what it plans afterwards from a snapshot taken before the hand-over from being sent
    when another pass wrote a newer ledger row for the same record meanwhile."""

    def __init__(self, record_type: str) -> None:
        self.record_type = record_type
        # The first hand-over after the planner's lane took its snapshot (the server's clock).
        self.since: datetime | None = None
        self.overtaken = 0
        self._cond = threading.Condition()
        self._closed = False
        self._inside = 0
        self._depth = threading.local()

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Around each of the planner's transactions (a savepoint inside one passes freely)."""
        depth = getattr(self._depth, "n", 0)
        if depth == 0:
            with self._cond:
                while self._closed:
                    self._cond.wait()
                self._inside += 1
        self._depth.n = depth + 1
        try:
            yield
        finally:
            self._depth.n = depth
            if depth == 0:
                with self._cond:
                    self._inside -= 1
                    self._cond.notify_all()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Around the statement that takes a planner lane's snapshot: never during a hand-over.
        What another pass wrote during an earlier hand-over is in that snapshot, so only a
        hand-over after it arms the guard (armed by an earlier one, the guard would supersede a
        newer version planned from this snapshot: a lost change)."""
        with self.entered():
            self.since = None
            yield

    @contextmanager
    def closed(self) -> Iterator[None]:
        """No planner transaction is open inside this block (one open when it begins commits first)."""
        with self._cond:
            self._closed = True
            while self._inside:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._closed = False
                self._cond.notify_all()

    def before_commit(self, conn: psycopg.Connection) -> None:
        if self.since is None:
            return
        cur = conn.execute(_SUPERSEDE_OVERTAKEN, {"rt": self.record_type, "since": self.since})
        if cur.rowcount:
            self.overtaken += cur.rowcount
            log.info(
                "%d planned postings superseded: another pass posted their records during a hand-over",
                cur.rowcount,
            )


class _PlannerConnection(psycopg.Connection[Any]):
    """The planner's connection in a long pass: every transaction passes the :class:`_PlanGate`."""

    gate: _PlanGate

    @contextmanager
    def transaction(
        self, savepoint_name: str | None = None, force_rollback: bool = False
    ) -> Iterator[psycopg.Transaction]:
        with self.gate.entered(), super().transaction(savepoint_name, force_rollback) as tx:
            yield tx
            self.gate.before_commit(self)


class _HandOff:
    """The engine's hand-off (:class:`~psa_erp_sync.posting.engine.HandOff`): with no batch in
    flight and the planner between transactions, the lock goes to the waiting short pass and comes
    back."""

    def __init__(self, lock: PostingLock, gate: _PlanGate) -> None:
        self.lock = lock
        self.gate = gate

    def wanted(self) -> bool:
        return self.lock.others_waiting()

    def __call__(self) -> None:
        started = time.monotonic()
        with self.gate.closed():
            self.lock.hand_over(self._released)
        log.info("posting lock handed to a waiting pass and taken back in %.2f s", time.monotonic() - started)

    def _released(self, at: datetime) -> None:
        if self.gate.since is None:
            self.gate.since = at


def close_settled_exceptions(conn: psycopg.Connection, record_type: str) -> int:
    """Open dead letters and parked items of records whose latest posting is now confirmed: the
    record reached the ERP (a later version, or after a fix), so nothing is left for the owner."""
    return exception_queue.resolve_settled(conn, kind=planner.KINDS[record_type], record_type=record_type)


def check_accounts(adapters: Mapping[str, Any]) -> None:
    """Refuse a routing file naming an ERP account no pass works: its rows would stay pending for
    ever (one connection per ERP; its account is the pass's)."""
    from psa_erp_sync.routing.route import router

    for erp, adapter in adapters.items():
        account = target_of(adapter).account
        unworked = router().accounts_not_worked(erp, account)
        if unworked:
            raise ValueError(
                f"config/erp_routing.yaml routes to {erp} accounts {unworked}, but the {erp} connection posts"
                f" as account {account!r}: set the connection's account_id, or route with account: null"
            )


def post_routed(
    *,
    dsn: str,
    adapters: Mapping[str, Any],
    record_type: str,
    config: Config,
    settings_for: Callable[[str], EngineSettings],
    run_id: str,
    task_try: int | None = None,
    lock_settings: LockSettings | None = None,
    source_ids: Collection[str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One pass per ERP of ``adapters`` (ERP name -> its adapter, e.g. every ERP the routing file in
    force sends anything to), each planned against every ERP's own periods: the batch task, the
    stream and the command line route alike. Returns the merged plan and outcome
    (:func:`merge_results`, each ERP's outcome under ``by_erp``)."""
    # Every ERP's own periods: a record is planned against the periods of the ERP it goes to.
    books = (
        {erp: PeriodBook.from_rows(adapter.read_periods()) for erp, adapter in adapters.items()}
        if len(adapters) > 1
        else {}
    )
    check_accounts(adapters)
    results = {
        erp: post_record_type(
            dsn=dsn,
            client=adapter,
            record_type=record_type,
            config=config,
            settings=settings_for(erp),
            run_id=run_id,
            task_try=task_try,
            lock_settings=lock_settings,
            periods_by_erp=books,
            source_ids=source_ids,
        )
        for erp, adapter in adapters.items()
    }
    return merge_results(results)


def merge_results(results: Mapping[str, PostingResult]) -> tuple[dict[str, Any], dict[str, Any]]:
    """One plan and outcome of a task's passes (one per ERP): counts summed, each ERP's outcome
    under ``by_erp``. The first pass plans every route; later passes plan what changed since."""
    plan: dict[str, Any] = {}
    outcome: dict[str, Any] = {}
    for result in results.values():
        _add(plan, result.plan)
        _add(outcome, result.outcome)
    outcome["by_erp"] = {erp: result.outcome for erp, result in results.items()}
    return plan, outcome


def _add(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, bool) or not isinstance(value, int | float | dict):
            into.setdefault(key, value)
        elif isinstance(value, dict):
            _add(into.setdefault(key, {}), value)
        else:
            into[key] = into.get(key, 0) + value
