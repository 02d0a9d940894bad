"""The ERP account's concurrency budget, shared by every process that posts to the account.

One budget per ERP account, keyed by ERP name and account id (NetSuite account ``A1`` and SAP
account ``A1`` are two budgets): passes for different accounts never wait for each other's slots,
while each account's limit holds across all the processes posting to it.

A NetSuite account's request limit holds for all its integrations together. Airflow's pool per
account (:func:`psa_erp_sync.hooks.erp.account_pool`) bounds how many posting tasks run at once;
this budget bounds the requests they send, whatever the number of tasks, threads and workers: the
batch passes, the stream, a replay and the command line all take a slot before each request.

Slots are PostgreSQL **session-level advisory locks** in the ODS, one lock per slot: key
(``hashtext('psa_erp_sync.erp_account.' || erp || '.' || account)``, slot number). A lock lives exactly as long
as the session holding it, so a holder that is SIGKILLed, OOM-killed or loses its worker releases
its slots the moment the server notices the connection is gone; no lease to expire, no clock to
trust, no sweeper. (Leases in a table would need a duration longer than the slowest request and
would keep a dead holder's slots for that long.) See docs/posting.md.

A slot given back is kept by the process for the next request of its threads while it is young
(``hold``, 0.25 s since it was locked) and released to PostgreSQL once it has been idle for
``linger`` (0.1 s: a loaded machine delays a thread's next request by tens of milliseconds). A slot older than ``hold`` is given back when another session waits for one
(a waiter announces itself with a shared advisory lock while it polls) and not taken again by this
process for 50 ms, so the waiter gets it; otherwise it is kept. Whether another session waits is
asked once per ``probe_every`` (20 ms) by the budget's keeper thread while the process holds a slot,
outside the budget's lock; a request's take and give only read the last answer. (The probe used to
run on a request's own take or give, under the lock every other request thread queues on: at a load
average of 10-20 a descheduled round trip there held up every request of the process.) The limit
holds as before: a slot is in use only while this session holds its lock.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg

from psa_erp_sync.ods import connections

log = logging.getLogger(__name__)

_KEY_PREFIX = "psa_erp_sync.erp_account."
# The first free slot not held by this process; OFFSET 0 keeps the filter on held slots below the
# lock call, so a slot this session already holds is never locked twice (advisory locks nest).
_TAKE = """
SELECT s FROM (SELECT s FROM generate_series(0, %(n)s - 1) AS s WHERE s <> ALL(%(held)s) OFFSET 0) free
WHERE pg_try_advisory_lock(hashtext(%(key)s), s) LIMIT 1
"""
_GIVE = "SELECT pg_advisory_unlock(hashtext(%(key)s), %(slot)s)"
# A session waiting for a slot holds a shared lock on (key, -1) while it polls, so a process that
# keeps its slots between requests can tell when another one is waiting for them.
_WAITING = "SELECT pg_advisory_lock_shared(hashtext(%(key)s), -1)"
_DONE_WAITING = "SELECT pg_advisory_unlock_shared(hashtext(%(key)s), -1)"
# Fails exactly when another session holds the waiting lock (a session's own locks never conflict
# with each other); an O(1) probe, where reading pg_locks takes every lock-manager partition.
_OTHERS_WAIT = "SELECT NOT pg_try_advisory_xact_lock(hashtext(%(key)s), -1)"


class BudgetExhausted(RuntimeError):
    """No slot of the account's budget came free within the wait (nothing was sent)."""


def account_limit(connection_extra: Mapping[str, Any] | None = None) -> int:
    """The ERP account's limit of requests in flight: the one place it is decided.

    The limit of the connection's ``account_id`` in the current environment (``erp.concurrency`` of
    ``config/environments/<env>.yaml``: the account's own entry, else the environment's default).
    Every process posting to an account must use the same number, so no connection or task overrides
    it.
    """
    from psa_erp_sync.config import erp_concurrency_limit

    account = str((connection_extra or {}).get("account_id") or "default")
    limit = erp_concurrency_limit(account)
    if limit < 1:
        raise ValueError(f"an ERP account's concurrency limit must be at least 1, not {limit}")
    return limit


def budget_key(erp: str, account: str) -> str:
    """The advisory-lock name of one ERP account's slots."""
    return f"{_KEY_PREFIX}{erp}.{account}"


class AccountBudget:
    """``limit`` request slots of account ``account`` of ERP ``erp``, shared through the ODS at ``dsn``.

    Thread-safe: one connection per process holds this process's slots; each thread takes a slot
    around one HTTP request (:meth:`slot`) and gives it back right after.
    """

    def __init__(
        self,
        dsn: str,
        account: str,
        limit: int,
        *,
        erp: str = "netsuite",
        max_wait: float = 600.0,
        poll: float = 0.005,
        hold: float = 0.25,
        linger: float = 0.1,
        probe_every: float = 0.02,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.dsn = dsn
        self.account = account
        self.erp = erp
        self.limit = limit
        self.max_wait = max_wait
        self.poll = poll
        self.hold = hold
        self.linger = linger
        self.probe_every = probe_every
        # The last probe for a session waiting for a slot (``_OTHERS_WAIT``): when, and its answer.
        self._probed_at = float("-inf")
        self._others_wait = False
        self._key = budget_key(erp, account)
        self._conn: psycopg.Connection[Any] | None = None
        self._held: set[int] = set()  # locked by this session: in use or idle
        self._locked_at: dict[int, float] = {}
        # Locked but not in use, with when each was given back (reused by the next request).
        self._idle: dict[int, float] = {}
        # Slots given back because another session waits: not locked again by this process for
        # a moment, so the waiter (polling every <= 25 ms) gets them.
        self._cooldown: dict[int, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._keeper: threading.Thread | None = None
        self._closed = False
        self._rng = random.Random()  # noqa: S311 - jitter, not security

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connections.connect(
                self.dsn,
                autocommit=True,
                application_name=f"psa-erp-sync erp budget {self.erp}.{self.account}",
            )
            self._held.clear()  # locks of a lost session are gone with it
            self._idle.clear()
            self._locked_at.clear()
        return self._conn

    def _try_take(self) -> int | None:
        with self._lock:
            now = time.monotonic()
            for slot in list(self._idle):
                del self._idle[slot]
                if self._keep(slot, now):
                    return slot  # still ours: no round trip
            if len(self._held) >= self.limit:
                return None
            conn = self._connection()
            skip = self._held | {s for s, until in self._cooldown.items() if until > now}
            try:
                row = conn.execute(_TAKE, {"n": self.limit, "held": list(skip), "key": self._key}).fetchone()
            except psycopg.OperationalError:
                conn.close()  # its locks die with it; the next attempt opens a new session
                raise
            if row is None:
                return None
            slot = int(row[0])
            first = not self._held
            self._held.add(slot)
            self._locked_at[slot] = time.monotonic()
            self._start_keeper()
            if first:  # the keeper starts probing for waiting sessions
                self._wake.notify()
            return slot

    def _give(self, slot: int) -> None:
        with self._lock:
            if slot not in self._held:
                return  # the session that held it is gone, and the lock with it
            if self._closed:
                self._unlock(slot)
                return
            now = time.monotonic()
            if not self._keep(slot, now):
                return
            first_idle = not self._idle
            self._idle[slot] = now
            self._start_keeper()
            if first_idle:  # else the keeper is already waiting for the oldest idle slot's linger
                self._wake.notify()

    def _start_keeper(self) -> None:
        """The keeper thread, started with the first slot (the caller holds ``_lock``)."""
        if self._keeper is None:
            self._keeper = threading.Thread(
                target=self._keep_slots, name=f"erp-budget-{self.account}", daemon=True
            )
            self._keeper.start()

    def _keep(self, slot: int, now: float) -> bool:
        """Whether this process may keep a slot it holds for its next request (the caller holds
        ``_lock``): yes while it is younger than ``hold``; then, if another session waits for a
        slot of the account (the keeper's last probe, at most ``probe_every`` old), it is given
        back (and not taken again for 50 ms), else renewed. No round trip unless it is given back."""
        if slot not in self._held:  # the session was lost meanwhile
            return False
        if now - self._locked_at.get(slot, now) < self.hold:
            return True
        if self._others_wait:
            self._unlock(slot)
            self._cooldown[slot] = now + 0.05
            return False
        self._locked_at[slot] = now
        return True

    def _unlock(self, slot: int) -> None:
        """Give a slot back to PostgreSQL (the caller holds ``_lock``)."""
        self._held.discard(slot)
        self._idle.pop(slot, None)
        self._locked_at.pop(slot, None)
        try:
            self._connection().execute(_GIVE, {"key": self._key, "slot": slot})
        except psycopg.OperationalError:
            if self._conn is not None:
                self._conn.close()
            log.warning("ERP budget of %s: connection lost while giving back a slot", self.account)

    def _keep_slots(self) -> None:
        """The keeper: gives back slots idle for ``linger`` (an idle process keeps none of the
        account's slots) and, while the process holds a slot, asks once per ``probe_every`` whether
        another session waits for one. The probe runs outside ``_lock``: requests taking and giving
        slots meanwhile are not held up by its round trip."""
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                for slot, since in list(self._idle.items()):
                    if now - since >= self.linger:
                        self._unlock(slot)
                wake = [since + self.linger - now for since in self._idle.values()]
                if self._held:
                    due = self._probed_at + self.probe_every - now
                    if due <= 0:
                        self._probe()
                        continue
                    wake.append(due)
                else:
                    self._others_wait = False  # nothing held: nothing to give back
                self._wake.wait(min(wake) if wake else None)

    def _probe(self) -> None:
        """Ask PostgreSQL whether another session waits for a slot of the account (the caller holds
        ``_lock``, released during the round trip). Idle slots older than ``hold`` go back at once
        when one does."""
        conn = self._conn
        if conn is None or conn.closed:
            self._probed_at = time.monotonic()
            return
        row: tuple[Any, ...] | None = None
        failed = False
        self._lock.release()
        try:
            row = conn.execute(_OTHERS_WAIT, {"key": self._key}).fetchone()
        except psycopg.Error:
            failed = True
        finally:
            self._lock.acquire()
        now = time.monotonic()
        self._probed_at = now
        if failed:
            if not self._closed and conn is self._conn:
                conn.close()  # its locks die with it; the next take opens a new session
            return
        self._others_wait = bool(row is not None and row[0])
        if self._others_wait:
            for slot, since in list(self._idle.items()):
                if now - self._locked_at.get(slot, since) >= self.hold:
                    self._unlock(slot)
                    self._cooldown[slot] = now + 0.05

    def acquire(self) -> int:
        """Wait for a free slot and hold it; raises :class:`BudgetExhausted` after ``max_wait``."""
        slot = self._try_take()
        if slot is not None:
            return slot
        self._waiting(True)
        try:
            return self._wait_for_slot()
        finally:
            self._waiting(False)

    def _waiting(self, waiting: bool) -> None:
        with self._lock:
            try:
                self._connection().execute(_WAITING if waiting else _DONE_WAITING, {"key": self._key})
            except psycopg.OperationalError:
                if self._conn is not None:
                    self._conn.close()  # the marker dies with the session

    def _wait_for_slot(self) -> int:
        started = time.monotonic()
        delay = self.poll
        while True:
            slot = self._try_take()
            if slot is not None:
                return slot
            waited = time.monotonic() - started
            if waited >= self.max_wait:
                raise BudgetExhausted(
                    f"no request slot of {self.erp} account {self.account} (limit {self.limit})"
                    f" came free in {waited:.0f}s"
                )
            time.sleep(delay * (0.5 + self._rng.random()))
            delay = min(delay * 1.5, 0.025)  # a freed slot idles at most ~25 ms

    @contextmanager
    def slot(self) -> Iterator[int]:
        """Hold one of the account's slots for the duration of the block (one HTTP request)."""
        slot = self.acquire()
        try:
            yield slot
        finally:
            self._give(slot)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        if self._keeper is not None:  # before the connection closes: it may be probing on it
            self._keeper.join()
            self._keeper = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()  # releases every slot still held
                self._conn = None
            self._held.clear()
            self._idle.clear()
            self._locked_at.clear()


@contextmanager
def shared_by_processes(client: Any, dsn: str) -> Iterator[AccountBudget | None]:
    """Make every request ``client`` sends in this block take a slot of its account's budget.

    ``client`` is a :class:`~psa_erp_sync.clients.erp.NetSuiteClient` (its ``account_id`` and
    ``concurrency_limit``; an ``erp_name`` when it is not NetSuite); a client already governed (an outer block) keeps its budget. Other
    clients (test doubles without ``request_slot``) are left as they are.
    """
    if not hasattr(client, "request_slot") or client.request_slot is not None:
        yield None
        return
    limit = client.concurrency_limit or account_limit({"account_id": client.account_id})
    erp = str(getattr(client, "erp_name", None) or "netsuite")
    budget = AccountBudget(dsn, str(client.account_id), limit, erp=erp)
    client.request_slot = budget.slot
    try:
        yield budget
    finally:
        client.request_slot = None
        budget.close()
