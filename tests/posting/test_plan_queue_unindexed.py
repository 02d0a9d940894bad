"""``ledger.plan_queue`` has no index (issue 16, deliverable 2; migration 0062): every row written
into canonical queues its record, and the queue's btree cost each ~2.7 us of PostgreSQL's CPU for
no reader that used it. The planner's reads of the queue take every entry of one record type, and
must still take exactly those, beside another type's entries, by a scan of the queue.
"""

from __future__ import annotations

from collections import Counter

import psycopg
import pytest

from psa_erp_sync.posting import planner

pytestmark = pytest.mark.integration


def test_the_plan_queue_has_no_index(pg_conn: psycopg.Connection) -> None:
    """Migration 0062 dropped ``plan_queue_record_idx``, the queue's only index."""
    indexes = pg_conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'plan_queue'").fetchall()
    assert indexes == []


def test_the_queue_reads_take_one_record_type(pg_conn: psycopg.Connection) -> None:
    """Beside 3,000 entries of ``timebill``: the 40 of ``expensereport`` (each record twice) are
    what :data:`planner.QUEUED` reads (by a scan) and what the dequeue deletes."""
    try:
        pg_conn.execute(
            "INSERT INTO ledger.plan_queue (record_type, source_system, source_id)"
            " SELECT 'timebill', 'psa', n::text FROM generate_series(1, 3000) n"
            " UNION ALL SELECT 'expensereport', 'psa', (n % 20)::text FROM generate_series(1, 40) n"
        )
        pg_conn.commit()  # the dequeue deletes what committed before its snapshot
        pg_conn.execute("ANALYZE ledger.plan_queue")
        queued = pg_conn.execute(planner.QUEUED, {"rt": "expensereport"}).fetchall()
        assert Counter(queued) == Counter({("psa", str(n)): 2 for n in range(20)})
        plan = "\n".join(r[0] for r in pg_conn.execute("EXPLAIN " + planner.QUEUED, {"rt": "expensereport"}))
        assert "Seq Scan on plan_queue" in plan, plan
        in_flight = pg_conn.execute(
            planner._IN_FLIGHT["changed"],
            {"rt": "expensereport", "unfinished": ["pending", "sent", "ambiguous"]},
        ).fetchall()
        assert in_flight == []
        snapshot = pg_conn.execute("SELECT pg_current_snapshot()::text").fetchone()
        assert snapshot is not None
        seen = planner._Seen(str(snapshot[0]), (["psa"], ["3"]))  # record 3 in flight: stays queued
        assert planner._dequeue(pg_conn, "expensereport", seen, trusted=False) == 38
        left = pg_conn.execute("SELECT record_type, count(*) FROM ledger.plan_queue GROUP BY 1 ORDER BY 1")
        assert left.fetchall() == [("expensereport", 2), ("timebill", 3000)]
    finally:
        pg_conn.rollback()
        pg_conn.execute("DELETE FROM ledger.plan_queue")
        pg_conn.commit()
