"""The ledger's open postings (migration 0048): ``ledger.posting_open`` lists exactly the postings
in state pending, sent, ambiguous or parked, whatever writes the ledger and however its
transaction ends, and the engine's reads by state use it instead of scanning the ledger."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from psa_erp_sync.ods import migrate
from psa_erp_sync.posting import ledger
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def _posting(
    n: int, *, state: str = "pending", action: ledger.Action = "post", erp: str = "netsuite"
) -> ledger.Posting:
    key = ledger.idempotency_key("timebill", "psa", str(n), "v1", action, 0)
    payload = {"externalId": f"psa-te-{n}", "tranDate": "2026-10-05", "hours": "1.00"}
    return ledger.Posting(
        key, "timebill", "psa", str(n), "v1", f"psa-te-{n}", action, state, payload, target_erp=erp
    )


def open_mismatch(conn: psycopg.Connection) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(open in the ledger but not listed, listed but not open in the ledger): both empty when the
    table agrees with the ledger."""
    in_ledger = set(
        conn.execute(
            "SELECT record_type, idempotency_key FROM ledger.posting WHERE state = ANY(%s)",
            (list(ledger.OPEN),),
        ).fetchall()
    )
    listed = set(conn.execute("SELECT record_type, idempotency_key FROM ledger.posting_open").fetchall())
    return in_ledger - listed, listed - in_ledger


def assert_open_agrees(conn: psycopg.Connection) -> None:
    missing, extra = open_mismatch(conn)
    assert not missing and not extra, f"open postings not listed: {missing}; listed but settled: {extra}"
    counts = ledger.counts(conn, "timebill")
    assert ledger.open_counts(conn, "timebill") == {s: n for s, n in counts.items() if s in ledger.OPEN}


def test_every_transition_keeps_the_open_postings_exact(clean_ods: str) -> None:
    """Planned, sent, every outcome, a read-back, supersede, replay, a parked row released, and a
    hand-written update of a settled row: after each, the table lists exactly the open postings."""
    batch = [_posting(n) for n in range(8)]
    keys = [p.idempotency_key for p in batch]
    with psycopg.connect(clean_ods) as conn:
        ledger.insert_planned(conn, [*batch, _posting(50, state="parked")])
        ledger.insert_planned(conn, batch[:2])  # an existing key is left alone
        assert_open_agrees(conn)
        assert ledger.open_counts(conn, "timebill") == {"pending": 8, "parked": 1}
        ids = ledger.mark_sent(conn, batch[:6], batch_key="b-1", dag_run_id="run", task_try=1)
        assert_open_agrees(conn)
        ledger.finish_many(
            conn,
            [
                (keys[0], "confirmed", "confirmed", "901", 202),
                (keys[1], "rejected", "rejected", None, 400),
                (keys[2], "ambiguous", "ambiguous", None, None),
                (keys[3], "pending", "refused", None, 401),
                (keys[4], "ambiguous", "ambiguous", None, None),
            ],
            attempt_ids=ids,
        )
        assert_open_agrees(conn)
        assert ledger.open_counts(conn, "timebill") == {"pending": 3, "sent": 1, "ambiguous": 2, "parked": 1}
        # Read back: one landed, one not (sent again later); a stale outcome changes nothing.
        ledger.finish_many(
            conn,
            [
                (keys[2], "resolved", "resolved-by-lookup", "902", None),
                (keys[4], "pending", "not-found", None, None),
            ],
        )
        ledger.finish_many(conn, [(keys[0], "pending", "not-found", None, None)])  # confirmed: left alone
        assert_open_agrees(conn)
        # Superseded before sending; replay releases the dead letter and the parked row.
        ledger.set_state(conn, [keys[6]], "superseded", only_from=["pending"])
        ledger.set_state(
            conn,
            [keys[1], _posting(50).idempotency_key],
            "superseded",
            only_from=["rejected", "parked"],
        )
        assert_open_agrees(conn)
        # A hand-written fix moving settled rows back to open states, and a key rewritten in place.
        conn.execute("UPDATE ledger.posting SET state = 'sent' WHERE idempotency_key = %s", (keys[0],))
        conn.execute("UPDATE ledger.posting SET state = 'pending' WHERE state = 'superseded'")
        assert_open_agrees(conn)
        conn.commit()
        # A key or record type is never rewritten (the open list is keyed by them).
        for column, value in (("idempotency_key", "rewritten"), ("record_type", "expensereport")):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="never change"):
                conn.execute(
                    f"UPDATE ledger.posting SET {column} = %s WHERE idempotency_key = %s", (value, keys[7])
                )
            conn.rollback()
        conn.execute("UPDATE ledger.posting SET idempotency_key = idempotency_key, state = 'confirmed'")
        assert_open_agrees(conn)
        conn.commit()
        assert_open_agrees(conn)


def test_a_rolled_back_or_killed_transaction_leaves_both_tables_as_they_were(clean_ods: str) -> None:
    batch = [_posting(n) for n in range(4)]
    keys = [p.idempotency_key for p in batch]
    with psycopg.connect(clean_ods) as conn:
        ledger.insert_planned(conn, batch)
        conn.commit()
        # Rolled back mid-batch: sent and confirmed, then the transaction fails.
        ids = ledger.mark_sent(conn, batch, batch_key="b-1", dag_run_id="run", task_try=1)
        ledger.finish_many(conn, [(k, "confirmed", "confirmed", "1", 202) for k in keys], attempt_ids=ids)
        assert ledger.open_counts(conn, "timebill") == {}
        conn.rollback()
        assert ledger.open_counts(conn, "timebill") == {"pending": 4}
        assert_open_agrees(conn)
        # The backend killed with the outcome written and not committed.
        ids = ledger.mark_sent(conn, batch, batch_key="b-2", dag_run_id="run", task_try=2)
        conn.commit()
        ledger.finish_many(conn, [(k, "confirmed", "confirmed", "1", 202) for k in keys[:2]], attempt_ids=ids)
        with psycopg.connect(clean_ods, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
            conn.close()  # its backend is gone: nothing to commit
            assert ledger.open_counts(other, "timebill") == {"sent": 4}
            assert_open_agrees(other)


def test_the_migration_lists_the_open_postings_of_an_existing_ledger(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0048 on a ledger written before it: every open posting listed, no settled one."""
    server = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    name = f"{server['dbname']}_open_fill"
    admin = psycopg.conninfo.make_conninfo(pg_dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(pg_dsn, dbname=name)
    try:
        every = migrate.discover()
        monkeypatch.setattr(migrate, "discover", lambda: [m for m in every if m.version < 48])
        migrate.apply(dsn)
        states = ["pending", "sent", "ambiguous", "parked", "confirmed", "resolved", "rejected", "superseded"]
        with psycopg.connect(dsn) as conn:
            ledger.insert_planned(conn, [_posting(n, state=states[n % len(states)]) for n in range(40)])
            assert conn.execute("SELECT to_regclass('ledger.posting_open')").fetchone() == (None,)
            conn.commit()
        monkeypatch.setattr(migrate, "discover", lambda: every)
        assert [n for n in migrate.apply(dsn) if n.startswith("0048")] == ["0048_open_postings.sql"]
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM ledger.posting_open").fetchone() == (20,)
            assert_open_agrees(conn)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settled_month(clean_ods: str) -> str:
    """3,000 confirmed postings and a few open ones (one routed to another ERP), analysed."""
    with psycopg.connect(clean_ods) as conn:
        ledger.insert_planned(conn, [_posting(n, state="confirmed") for n in range(3_000)])
        ledger.insert_planned(
            conn,
            [
                _posting(5_001),
                _posting(5_002),
                _posting(5_003, action="reverse"),
                _posting(5_004, state="sent"),
                _posting(5_005, state="ambiguous"),
                _posting(5_006, state="parked"),
                _posting(5_007, erp="sap"),
            ],
        )
        conn.commit()
        conn.execute("ANALYZE ledger.posting")
        conn.commit()
    return clean_ods


def test_reads_by_open_state_never_scan_the_ledger(settled_month: str) -> None:
    """What the engine and the service ask on every pass and round (how many are pending, the sent
    and ambiguous ones, a page of pending ones, the counts at the end) answers from the open
    postings: no sequential scan of ledger.posting (a scan by state read every month ever posted:
    926 ms at 609k rows), and the same answers as the scan."""
    target = ledger.Target("netsuite", "default")
    with psycopg.connect(settled_month) as conn:
        pending = ledger.count_in_state(conn, "timebill", ["pending"], target=target)
        unfinished = ledger.in_state(conn, "timebill", ["sent", "ambiguous"], target=target)
        upserts = ledger.page_in_state(
            conn, "timebill", ["pending"], reversals=False, after=None, limit=1, target=target
        )
        rest = ledger.page_in_state(
            conn,
            "timebill",
            ["pending"],
            reversals=False,
            after=upserts[-1].idempotency_key,
            limit=10,
            target=target,
        )
        reversals = ledger.page_in_state(conn, "timebill", ["pending"], reversals=True, after=None, limit=10)
        by_state = ledger.open_counts(conn, "timebill", target=target)
        scans = conn.execute(
            "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE schemaname = 'ledger' AND relname = 'posting'"
        ).fetchone()
        assert scans == (0,)
        assert pending == 3
        assert sorted(p.source_id for p in unfinished) == ["5004", "5005"]
        assert [p.source_id for p in upserts + rest] == sorted(
            ["5001", "5002"], key=lambda s: _posting(int(s)).idempotency_key
        )
        assert upserts[0].payload == _posting(int(upserts[0].source_id)).payload
        assert [p.source_id for p in reversals] == ["5003"]
        assert by_state == {"pending": 3, "sent": 1, "ambiguous": 1, "parked": 1}
        # The same answers as the scans of the ledger (states that are not open still scan).
        assert by_state == {
            s: n for s, n in ledger.counts(conn, "timebill", target=target).items() if s in ledger.OPEN
        }
        assert [p.idempotency_key for p in unfinished] == [
            p.idempotency_key
            for p in ledger.in_state(conn, "timebill", ["sent", "ambiguous", "confirmed"], target=target)
            if p.state != "confirmed"
        ]


def _engine_process(dsn: str, keys: int) -> subprocess.Popen[bytes]:
    """A posting pass over the open postings in a child process whose ERP never answers: it
    marks batches sent and hangs in the call, so a SIGKILL finds batches in flight."""
    code = (
        "import sys, time\n"
        "from psa_erp_sync.config import load_config\n"
        "from psa_erp_sync.posting.engine import EngineSettings, PostingEngine\n"
        "class Hang:\n"
        "    def submit_batch(self, *a, **k):\n"
        "        print('sent', flush=True); time.sleep(600)\n"
        "    def suiteql(self, *a, **k): return iter(())\n"
        "    def delete(self, *a, **k): time.sleep(600)\n"
        "PostingEngine(dsn=sys.argv[1], client=Hang(), record_type='timebill', config=load_config(),\n"
        "    settings=EngineSettings(batch_size=5, max_concurrency=2, workers_per_slot=1),\n"
        "    dag_run_id='kill', sleep=lambda _: None).run()\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, dsn],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_a_pass_killed_mid_batch_leaves_the_open_postings_exact(clean_ods: str) -> None:
    with psycopg.connect(clean_ods) as conn:
        ledger.insert_planned(conn, [_posting(n) for n in range(30)])
    worker = _engine_process(clean_ods, 30)
    try:
        assert worker.stdout is not None
        deadline = time.monotonic() + 120
        while worker.stdout.readline().strip() != b"sent":
            assert worker.poll() is None and time.monotonic() < deadline, "the pass never sent"
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    with psycopg.connect(clean_ods) as conn:
        by_state = ledger.open_counts(conn, "timebill")
        assert by_state.get("sent", 0) >= 5 and sum(by_state.values()) == 30, by_state
        assert_open_agrees(conn)


def test_both_updates_of_a_posting_are_hot_while_a_snapshot_is_held(clean_ods: str) -> None:
    """The planner holds a snapshot through its candidate read, so no old row version can be pruned
    during a pass: both state updates of each posting (sent, then its outcome) must fit in its page
    (fillfactor 30, migration 0048; at 0035's 50, 670 of these 1,200 updates were HOT)."""
    batch = [_posting(n) for n in range(600)]
    with psycopg.connect(clean_ods) as holder, psycopg.connect(clean_ods) as conn:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM ledger.posting")
        ledger.insert_planned(conn, batch)
        conn.commit()
        for start in range(0, len(batch), 100):
            part = batch[start : start + 100]
            ids = ledger.mark_sent(conn, part, batch_key=f"b-{start}", dag_run_id="run", task_try=1)
            ledger.finish_many(
                conn, [(p.idempotency_key, "confirmed", "confirmed", "1", 202) for p in part], attempt_ids=ids
            )
        updates, hot = conn.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables"
            " WHERE schemaname = 'ledger' AND relname = 'posting'"
        ).fetchone() or (0, 0)
        assert (updates, hot) == (1200, 1200)
