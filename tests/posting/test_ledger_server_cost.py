"""The ledger's server-side cost (docs/performance.md, perf-post8): the posting connections say
which role they serve (pg_stat_activity, the server's CPU per role), and ANALYZE leaves the
ledger's jsonb documents alone (migration 0071)."""

from __future__ import annotations

import psycopg

from psa_erp_sync.config import load_config
from psa_erp_sync.posting import ledger
from psa_erp_sync.posting.engine import EngineSettings, PostingEngine


def _posting(n: int) -> ledger.Posting:
    key = ledger.idempotency_key("timebill", "psa", str(n), "v1", "post", 0)
    payload = {"externalId": f"psa-te-{n}", "hours": "1.50", "tranDate": "2026-11-03"}
    return ledger.Posting(key, "timebill", "psa", str(n), "v1", f"psa-te-{n}", "post", "pending", payload)


def test_the_engine_pool_names_its_role(clean_ods: str) -> None:
    engine = PostingEngine(
        dsn=clean_ods,
        client=None,  # type: ignore[arg-type]  # no ERP call: only the pool's connections
        record_type="timebill",
        config=load_config(),
        settings=EngineSettings(batch_size=2, max_concurrency=1, workers_per_slot=1),
        dag_run_id="names",
    )
    with engine._pooled(), engine._conn() as conn:
        name = conn.execute(
            "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert name == ("psa_erp_sync posting engine timebill",)


def test_analyze_skips_the_ledger_documents(clean_ods: str) -> None:
    postings = [_posting(n) for n in range(200)]
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        ledger.insert_planned(conn, postings)
        ids = ledger.mark_sent(conn, postings, batch_key="b", dag_run_id="run", task_try=1)
        ledger.finish_many(
            conn,
            [(p.idempotency_key, "rejected", "rejected", None, 400) for p in postings],
            details=[{"erp_errors": [{"code": "X", "path": None}]}] * len(postings),
            attempt_ids=ids,
        )
        conn.execute(
            "DELETE FROM pg_statistic WHERE starelid IN ('ledger.posting_payload'::regclass,"
            " 'ledger.posting'::regclass, 'ledger.attempt'::regclass)"
        )
        conn.execute("ANALYZE ledger.posting_payload, ledger.posting, ledger.attempt")
        analyzed = {
            (t, c)
            for t, c in conn.execute(
                "SELECT tablename, attname FROM pg_stats WHERE schemaname = 'ledger'"
                " AND tablename IN ('posting_payload', 'posting', 'attempt')"
            )
        }
    assert ("posting_payload", "idempotency_key") in analyzed  # the join key keeps its statistics
    assert ("posting", "state") in analyzed and ("attempt", "idempotency_key") in analyzed
    assert not {("posting_payload", "payload"), ("posting", "last_error"), ("attempt", "detail")} & analyzed
