"""Ledger writes of the engine: one statement to mark a batch sent, one to record its outcome."""

from __future__ import annotations

import psycopg
import pytest

from psa_erp_sync.posting import ledger


def _posting(n: int) -> ledger.Posting:
    key = ledger.idempotency_key("timebill", "psa", str(n), "v1", "post", 0)
    payload = {"externalId": f"psa-te-{n}", "memo": 'quote " and back\\slash', "hours": "1.50"}
    return ledger.Posting(key, "timebill", "psa", str(n), "v1", f"psa-te-{n}", "post", "pending", payload)


def _attempts(conn: psycopg.Connection, key: str) -> list[tuple[int, str | None, int | None]]:
    return conn.execute(
        "SELECT attempt_no, outcome, http_status FROM ledger.attempt WHERE idempotency_key = %s ORDER BY attempt_no",
        (key,),
    ).fetchall()


def test_sent_then_outcome_per_attempt(clean_ods: str) -> None:
    batch = [_posting(n) for n in range(3)]
    keys = [p.idempotency_key for p in batch]
    with psycopg.connect(clean_ods) as conn:
        assert len(ledger.insert_planned(conn, batch)) == 3
        first = ledger.mark_sent(conn, batch, batch_key="b-1", dag_run_id="run", task_try=1)
        assert sorted(first) == sorted(keys)
        # A second attempt after a read-back found nothing (sent -> pending): new attempt rows, new ids.
        ledger.finish_many(conn, [(keys[0], "pending", "not-found-on-lookup", None, None)])
        second = ledger.mark_sent(conn, batch[:1], batch_key="b-2", dag_run_id="run", task_try=2)
        assert second[keys[0]] != first[keys[0]]
        ledger.finish_many(
            conn,
            [(keys[0], "confirmed", "confirmed", "901", 202), (keys[1], "rejected", "rejected", None, 400)],
            details=[None, {"erp_errors": [{"code": "INVALID_KEY_OR_REF", "path": "employee"}]}],
            attempt_ids=second | {keys[1]: first[keys[1]]},
        )
        # Without a known attempt id the latest attempt of the key is completed.
        ledger.finish_many(conn, [(keys[2], "ambiguous", "ambiguous", None, None)], details=[{"error": "x"}])
        states = dict(conn.execute("SELECT idempotency_key, state FROM ledger.posting").fetchall())
        assert states == {keys[0]: "confirmed", keys[1]: "rejected", keys[2]: "ambiguous"}
        assert _attempts(conn, keys[0]) == [(1, "not-found-on-lookup", None), (2, "confirmed", 202)]
        assert _attempts(conn, keys[1]) == [(1, "rejected", 400)]
        assert _attempts(conn, keys[2]) == [(1, "ambiguous", None)]
        internal, error = conn.execute(
            "SELECT erp_internal_id, last_error FROM ledger.posting WHERE idempotency_key = %s", (keys[1],)
        ).fetchone() or (None, None)
        assert internal is None
        assert error == {"erp_errors": [{"code": "INVALID_KEY_OR_REF", "path": "employee"}]}
        # Payloads with quotes and backslashes survive the binary arrays byte for byte.
        stored = conn.execute(
            "SELECT payload FROM ledger.posting_payload WHERE idempotency_key = %s", (keys[0],)
        ).fetchone()
        assert stored is not None and stored[0] == batch[0].payload
        assert conn.execute(
            "SELECT erp_internal_id FROM ledger.posting WHERE idempotency_key = %s", (keys[0],)
        ).fetchone() == ("901",)


def test_the_ledger_is_append_only(clean_ods: str) -> None:
    """Postings and attempts are never deleted (what the attempt -> posting key used to guard)."""
    with psycopg.connect(clean_ods) as conn:
        ledger.insert_planned(conn, [_posting(7)])
        ledger.mark_sent(conn, [_posting(7)], batch_key="b-7", dag_run_id="run", task_try=1)
        conn.commit()
        for table in ("ledger.attempt", "ledger.posting"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(f"DELETE FROM {table}")
            conn.rollback()
        assert conn.execute("SELECT count(*) FROM ledger.attempt").fetchone() == (1,)


def test_an_outcome_without_an_attempt_id_completes_the_latest_attempt(clean_ods: str) -> None:
    """A key sent three times and answered without the attempt's id: the third attempt is completed."""
    posting = _posting(11)
    key = posting.idempotency_key
    with psycopg.connect(clean_ods) as conn:
        ledger.insert_planned(conn, [posting])
        for n in range(3):
            ledger.mark_sent(conn, [posting], batch_key=f"b-{n}", dag_run_id="run", task_try=n + 1)
            if n < 2:
                ledger.finish_many(conn, [(key, "pending", "not-found-on-lookup", None, None)])
        ledger.finish_many(conn, [(key, "confirmed", "confirmed", "77", 202)])
        assert _attempts(conn, key) == [
            (1, "not-found-on-lookup", None),
            (2, "not-found-on-lookup", None),
            (3, "confirmed", 202),
        ]


def test_the_latest_attempt_is_one_probe_of_the_key_index(clean_ods: str) -> None:
    """Looking up a key's latest attempt probes the (idempotency_key, attempt_no) index, also on a
    month of attempts not analysed yet; it never walks the attempt table's primary key backwards
    filtered by key (what ``max(id)`` was planned as: 493 ms a key once a month had 589k attempts)."""
    with psycopg.connect(clean_ods) as conn:
        ledger.insert_planned(conn, [_posting(n) for n in range(5_000)])
        conn.execute(
            "INSERT INTO ledger.attempt (idempotency_key, attempt_no)"
            " SELECT idempotency_key, g FROM ledger.posting, generate_series(1, 3) AS g"
        )
        sql = (
            "EXPLAIN SELECT ("
            + ledger.LATEST_ATTEMPT.format(key="u.key")
            + ") FROM unnest(%s::text[]) AS u(key)"
        )
        plan = "\n".join(r[0] for r in conn.execute(sql, (["a", "b"],)))
        conn.rollback()
        assert "attempt_idempotency_key_attempt_no_key" in plan, plan
        assert "attempt_pkey" not in plan, plan
