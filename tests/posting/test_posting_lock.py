"""The posting lock can neither hang nor vanish, and every ledger transition is guarded.

Real PostgreSQL (advisory locks, pg_terminate_backend, idle_session_timeout) and the real ERP
simulator; a frozen holder is stood in for by a connection that holds the lock and does nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg
import pytest

from psa_erp_sync.posting import ledger
from psa_erp_sync.posting.service import LockSettings, PostingLockBusy, PostingLockLost, posting_lock
from tests.conftest import RunningSimulator

pytestmark = [pytest.mark.integration]

FAST = LockSettings(wait_s=1.0, poll_s=0.1, heartbeat_s=0.2, lease_s=3.0)
LOCK_KEY = "psa_erp_sync.posting.netsuite.A.timebill"  # the client's account "A"
A = ledger.Target("netsuite", "A")


def _posting(n: int) -> ledger.Posting:
    key = ledger.idempotency_key("timebill", "psa", str(n), "v1", "post", 0)
    payload = {"externalId": f"psa-te-{n}", "memo": f"{n} key:{key[:16]}", "hours": "1.00"}
    return ledger.Posting(key, "timebill", "psa", str(n), "v1", f"psa-te-{n}", "post", "pending", payload)


def _rows(conn: psycopg.Connection) -> dict[str, tuple[str, int]]:
    return {
        k: (s, n) for k, s, n in conn.execute("SELECT idempotency_key, state, attempts FROM ledger.posting")
    }


def _attempt_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM ledger.attempt").fetchone()
    return int(row[0]) if row else 0


# -- ledger state guards ---------------------------------------------------------------------------


def test_mark_sent_on_a_superseded_or_confirmed_key_changes_nothing(
    clean_ods: str, caplog: pytest.LogCaptureFixture
) -> None:
    superseded, confirmed, pending = _posting(1), _posting(2), _posting(3)
    with psycopg.connect(clean_ods) as conn:
        ledger.insert_planned(conn, [superseded, confirmed, pending])
        ledger.set_state(conn, [superseded.idempotency_key], "superseded", only_from=["pending"])
        ids = ledger.mark_sent(conn, [confirmed], batch_key="b-1", dag_run_id="r", task_try=1)
        ledger.finish_many(
            conn, [(confirmed.idempotency_key, "confirmed", "confirmed", "901", 202)], attempt_ids=ids
        )
        attempts_before = _attempt_count(conn)
        with caplog.at_level(logging.WARNING, logger="psa_erp_sync.posting.ledger"):
            sent = ledger.mark_sent(
                conn, [superseded, confirmed, pending], batch_key="b-2", dag_run_id="r", task_try=2
            )
        rows = _rows(conn)
        assert set(sent) == {pending.idempotency_key}
        assert rows[superseded.idempotency_key] == ("superseded", 0)
        assert rows[confirmed.idempotency_key] == ("confirmed", 1)
        assert rows[pending.idempotency_key] == ("sent", 1)
        assert _attempt_count(conn) == attempts_before + 1  # no attempt row for the two left alone
        assert "2 of 3 postings were no longer pending" in caplog.text


def test_an_outcome_from_the_wrong_state_or_for_a_stale_attempt_changes_nothing(
    clean_ods: str, caplog: pytest.LogCaptureFixture
) -> None:
    p = _posting(4)
    key = p.idempotency_key
    with (
        psycopg.connect(clean_ods) as conn,
        caplog.at_level(logging.WARNING, logger="psa_erp_sync.posting.ledger"),
    ):
        ledger.insert_planned(conn, [p])
        # pending -> confirmed skips `sent`: refused.
        assert ledger.finish_many(conn, [(key, "confirmed", "confirmed", "900", 202)]) == set()
        assert _rows(conn)[key] == ("pending", 0)
        assert "1 of 1 outcomes not applied" in caplog.text
        first = ledger.mark_sent(conn, [p], batch_key="b-1", dag_run_id="r", task_try=1)
        assert ledger.finish_many(conn, [(key, "pending", "not-found-on-lookup", None, None)]) == {key}
        second = ledger.mark_sent(conn, [p], batch_key="b-2", dag_run_id="r", task_try=2)
        # The first attempt's late answer (a pass that lost its lock) must not decide the second.
        assert (
            ledger.finish_many(conn, [(key, "confirmed", "confirmed", "901", 202)], attempt_ids=first)
            == set()
        )
        assert _rows(conn)[key] == ("sent", 2)
        assert ledger.finish_many(
            conn, [(key, "confirmed", "confirmed", "902", 202)], attempt_ids=second
        ) == {key}
        # Once confirmed, no outcome moves it again, and the single-posting form says so.
        assert ledger.finish_many(conn, [(key, "rejected", "rejected", None, 400)]) == set()
        assert ledger.finish(conn, key, state="ambiguous", outcome="ambiguous") is False
        assert ledger.set_state(conn, [key], "pending", only_from=["sent"]) == 0
        state, internal = conn.execute(
            "SELECT state, erp_internal_id FROM ledger.posting WHERE idempotency_key = %s", (key,)
        ).fetchone() or (None, None)
        assert (state, internal) == ("confirmed", "902")
        outcomes = conn.execute(
            "SELECT attempt_no, outcome FROM ledger.attempt WHERE idempotency_key = %s ORDER BY attempt_no",
            (key,),
        ).fetchall()
        assert outcomes == [(1, "not-found-on-lookup"), (2, "confirmed")]
        with pytest.raises(ValueError, match="no ledger transition"):
            ledger.finish_many(conn, [(key, "superseded", "x", None, None)])


# -- the lock: bounded wait, keepalives, lease, liveness --------------------------------------------


def test_a_held_lock_makes_a_second_pass_give_up_within_the_bound(
    clean_ods: str, erp_sim: RunningSimulator
) -> None:
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting.engine import EngineSettings
    from psa_erp_sync.posting.service import post_record_type

    with psycopg.connect(clean_ods, autocommit=True) as holder:  # a frozen holder: holds, says nothing
        holder.execute("SELECT pg_advisory_lock(hashtext(%s))", (LOCK_KEY,))
        holder_pid = holder.info.backend_pid
        started = time.monotonic()
        with (
            NetSuiteClient(base_url=erp_sim.base_url, account_id="A", token="t") as client,
            pytest.raises(PostingLockBusy, match="posting lock busy") as busy,
        ):
            post_record_type(
                dsn=clean_ods,
                client=client,
                record_type="timebill",
                config=load_config(),
                settings=EngineSettings(),
                run_id="second",
                lock_settings=FAST,
            )
        elapsed = time.monotonic() - started
        assert FAST.wait_s <= elapsed < FAST.wait_s + 2.0, elapsed
        assert str(holder_pid) in str(busy.value)
        # Another record type has a lock of its own, and so has another ERP account.
        with posting_lock(clean_ods, "expensereport", FAST, target=A):
            pass
        with posting_lock(clean_ods, "timebill", FAST, target=ledger.Target("netsuite", "B")):
            pass
    with posting_lock(clean_ods, "timebill", FAST, target=A):  # released with the holder's session
        pass


def test_the_lock_connection_has_keepalives_and_a_lease(clean_ods: str) -> None:
    with posting_lock(clean_ods, "timebill", FAST) as lock:
        settings = dict(
            lock.conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN"
                " ('tcp_keepalives_idle', 'tcp_keepalives_interval', 'tcp_keepalives_count', 'idle_session_timeout')"
            ).fetchall()
        )
        params = lock.conn.info.get_parameters()
    assert settings == {
        "tcp_keepalives_idle": "10",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "3",
        "idle_session_timeout": "3000",
    }
    assert (params["keepalives"], params["keepalives_idle"], params["keepalives_count"]) == ("1", "10", "3")


def test_a_frozen_holder_loses_the_lock_after_its_lease(clean_ods: str) -> None:
    """A holder whose process stops (its heartbeat with it) cannot hang the others: the server ends
    its idle session after the lease, the next pass takes the lock, and the frozen one, when it
    wakes, stops at its next check."""
    with posting_lock(clean_ods, "timebill", FAST) as frozen:
        frozen.stop()  # stands for SIGSTOP: no heartbeat any more
        started = time.monotonic()
        with posting_lock(
            clean_ods, "timebill", LockSettings(wait_s=10.0, poll_s=0.1, heartbeat_s=0.2, lease_s=3.0)
        ):
            waited = time.monotonic() - started
            with pytest.raises(PostingLockLost, match="lost"):
                frozen.check()
    assert FAST.lease_s - 0.5 <= waited < FAST.lease_s + 3.0, waited


def test_terminating_the_lock_backend_mid_pass_stops_the_pass(
    clean_ods: str, erp_sim: RunningSimulator
) -> None:
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting.engine import EngineSettings, PostingEngine

    postings = [_posting(n) for n in range(100, 400)]
    with psycopg.connect(clean_ods) as conn:
        ledger.insert_planned(conn, postings)
    erp_sim.admin(
        "PUT",
        "/faults",
        json=[{"id": "slow", "action": "latency", "path_regex": "/batch$", "latency_ms": 100}],
    )
    outcome: dict[str, Any] = {}
    try:
        with (
            NetSuiteClient(base_url=erp_sim.base_url, account_id="A", token="t") as client,
            posting_lock(clean_ods, "timebill", FAST) as lock,
        ):
            engine = PostingEngine(
                dsn=clean_ods,
                client=client,
                record_type="timebill",
                config=load_config(),
                settings=EngineSettings(batch_size=5, max_concurrency=2, progress_every_s=3600),
                dag_run_id="lock-kill",
                lock_check=lock.check,
            )
            lock_pid = lock.conn.info.backend_pid

            def kill_after_progress() -> None:
                with psycopg.connect(clean_ods, autocommit=True) as watcher:
                    while _attempt_count(watcher) < 20:
                        time.sleep(0.02)
                    watcher.execute("SELECT pg_terminate_backend(%s)", (lock_pid,))
                    outcome["killed_at"] = time.monotonic()

            killer = threading.Thread(target=kill_after_progress)
            killer.start()
            with pytest.raises(PostingLockLost, match="lost"):
                engine.run()
            stopped_at = time.monotonic()
            killer.join()
    finally:
        erp_sim.admin("DELETE", "/faults")
    assert stopped_at - outcome["killed_at"] < 2.0  # heartbeat 0.2 s, then the next batch checks
    with psycopg.connect(clean_ods) as conn:
        states = dict(conn.execute("SELECT state, count(*) FROM ledger.posting GROUP BY 1").fetchall())
        attempts = _attempt_count(conn)
    assert states.get("pending", 0) >= 150, states  # the pass stopped: most of the month never sent
    assert attempts < 150, attempts
    assert "sent" not in states, states  # what was in flight finished (in-flight batches complete)


def test_a_killed_lock_connection_is_a_lost_lock_to_the_hand_off_probe(clean_ods: str) -> None:
    """The long pass asks on its lock connection whether a short pass waits (between batches, far
    more often than the heartbeat). Once that session is gone the answer is the lost lock (the pass
    stops with exit 75 and the next pass completes), never "the ODS dropped the connection"."""
    with posting_lock(clean_ods, "timebill", LockSettings(heartbeat_s=30.0, lease_s=60.0)) as lock:
        with psycopg.connect(clean_ods, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (lock.conn.info.backend_pid,))
        with pytest.raises(PostingLockLost, match="lock connection failed"):
            lock.others_waiting()
        with pytest.raises(PostingLockLost, match="lock connection failed"):
            lock.check()
