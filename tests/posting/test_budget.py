"""The ERP account's request budget: slots shared by sessions (processes), freed by a killed holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest

from psa_erp_sync.posting.budget import AccountBudget, BudgetExhausted, account_limit, shared_by_processes
from tests.conftest import ROOT


def _account() -> str:
    return f"budget-test-{os.getpid()}-{time.monotonic_ns()}"


@pytest.mark.integration
def test_slots_are_shared_by_every_session_of_the_account(pg_dsn: str) -> None:
    account = _account()
    first, second = AccountBudget(pg_dsn, account, 2), AccountBudget(pg_dsn, account, 2, max_wait=0.3)
    other_account = AccountBudget(pg_dsn, _account(), 2, max_wait=0.3)
    try:
        taken = {first.acquire(), first.acquire()}
        assert taken == {0, 1}
        with pytest.raises(BudgetExhausted, match="limit 2"):
            second.acquire()  # another process of the same account waits
        with other_account.slot():  # another account has its own budget
            pass
        first._give(1)
        assert second.acquire() == 1
    finally:
        for budget in (first, second, other_account):
            budget.close()


@pytest.mark.integration
def test_threads_of_one_process_never_share_a_slot(pg_dsn: str) -> None:
    budget = AccountBudget(pg_dsn, _account(), 3)
    inside, peak, lock = [0], [0], threading.Lock()

    def work() -> None:
        for _ in range(10):
            with budget.slot():
                with lock:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                time.sleep(0.002)
                with lock:
                    inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert peak[0] == 3
        # Every slot given back once idle for the linger (0.1 s): nothing left locked.
        deadline = time.monotonic() + 5
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            while True:
                held = conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ).fetchone()
                if held == (0,) or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        assert held == (0,)
    finally:
        budget.close()


_HOLDER = """
import sys, time
from psa_erp_sync.posting.budget import AccountBudget
budget = AccountBudget(sys.argv[1], sys.argv[2], 2)
budget.acquire(); budget.acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.mark.integration
def test_a_killed_holder_gives_its_slots_back(pg_dsn: str) -> None:
    account = _account()
    env = os.environ | {"PYTHONPATH": str(ROOT / "include")}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, pg_dsn, account], stdout=subprocess.PIPE, text=True, env=env
    )
    waiting = AccountBudget(pg_dsn, account, 2, max_wait=0.3)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(BudgetExhausted):
            waiting.acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        waiting.max_wait = 10.0
        assert {waiting.acquire(), waiting.acquire()} == {0, 1}
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        waiting.close()


def test_account_limit_comes_from_the_environment_only() -> None:
    from psa_erp_sync.config import erp_concurrency_limit

    # A connection cannot override the account's limit: every process must use the same number.
    assert account_limit({"account_id": "A1", "max_concurrency": 999}) == erp_concurrency_limit("A1")
    assert account_limit(None) == erp_concurrency_limit("default")


def test_the_client_takes_a_slot_around_each_request_only_while_governed() -> None:
    from psa_erp_sync.clients.erp import NetSuiteClient

    events: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        events.append("request")
        return httpx.Response(200, json={"count": 0, "items": [], "hasMore": False})

    class Recorder:
        def __init__(self, dsn: str, account: str, limit: int, *, erp: str) -> None:
            assert (erp, account, limit) == ("netsuite", "A9", 3)

        @contextmanager
        def slot(self) -> Any:
            events.append("take")
            yield 0
            events.append("give")

        def close(self) -> None:
            events.append("close")

    client = NetSuiteClient(
        base_url="http://erp.test",
        account_id="A9",
        token="t",
        concurrency_limit=3,
        transport=httpx.MockTransport(handler),
    )
    import psa_erp_sync.posting.budget as budget_module

    original = budget_module.AccountBudget
    budget_module.AccountBudget = Recorder  # type: ignore[misc, assignment]
    try:
        with shared_by_processes(client, "dbname=unused"):
            list(client.suiteql("SELECT id FROM accountingperiod"))
        list(client.suiteql("SELECT id FROM accountingperiod"))
    finally:
        budget_module.AccountBudget = original  # type: ignore[misc]
        client.close()
    assert events == ["take", "request", "give", "close", "request"]


@pytest.mark.integration
def test_a_busy_process_reuses_its_slots_and_still_shares_them(pg_dsn: str) -> None:
    """A slot given back is reused by the next request of the process while it is young (no
    advisory-lock round trip), yet a slot held past ``hold`` goes back to PostgreSQL, so another
    process of the account gets it while this one stays busy."""
    account = _account()
    busy = AccountBudget(pg_dsn, account, 1, hold=0.2)
    other = AccountBudget(pg_dsn, account, 1, max_wait=5)
    stop = threading.Event()
    reused = [0]

    def keep_busy() -> None:
        while not stop.is_set():
            with busy.slot():
                time.sleep(0.005)
            reused[0] += 1

    thread = threading.Thread(target=keep_busy)
    try:
        thread.start()
        time.sleep(0.05)
        started = time.monotonic()
        with other.slot():
            waited = time.monotonic() - started
        assert waited < 2.0  # the busy process gave its one slot back within its hold
    finally:
        stop.set()
        thread.join()
        busy.close()
        other.close()
    assert reused[0] > 5


@pytest.mark.integration
def test_requests_never_wait_for_the_probe_for_waiting_sessions(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests longer than ``hold`` (a remote ERP): whether another session waits used to be asked
    on a request's own take or give, under the lock every request thread of the process queues on.
    Now the budget's keeper thread asks, once per ``probe_every``; takes and gives read its answer."""
    budget = AccountBudget(pg_dsn, _account(), 2, hold=0.0, probe_every=10.0)
    probes: list[str] = []
    real = budget._connection()

    class Counting:  # the budget's connection, counting who sends the probe; nothing else changed
        @property
        def closed(self) -> bool:
            return real.closed

        def execute(self, sql: str, params: Any = None) -> Any:
            if "pg_try_advisory_xact_lock" in sql:
                probes.append(threading.current_thread().name)
            return real.execute(sql, params)

        def close(self) -> None:
            real.close()

    monkeypatch.setattr(budget, "_conn", Counting())
    try:
        for _ in range(50):
            with budget.slot():
                pass
        deadline = time.monotonic() + 5
        while not probes and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        budget.close()
    assert probes, "the keeper never asked whether another session waits"
    assert all(name.startswith("erp-budget-") for name in probes), probes  # never a request's thread
    assert len(probes) == 1  # one probe per `probe_every` (10 s here) for 100 takes and gives
