"""The posting's payload lives apart from its state (migration 0042): written once when planned,
never copied by the state updates, read back identically by every reader."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest

from psa_erp_sync.ods import migrate
from psa_erp_sync.posting import ledger

PAYLOAD = {"externalId": "psa-te-1", "tranDate": "2026-11-02", "hours": "1.50", "memo": 'a "quoted" \\ memo'}


def _posting(n: int) -> ledger.Posting:
    key = ledger.idempotency_key("timebill", "psa", str(n), "v1", "post", 0)
    return ledger.Posting(
        key, "timebill", "psa", str(n), "v1", f"psa-te-{n}", "post", "pending", {**PAYLOAD, "n": n}
    )


def test_state_updates_leave_the_payload_row_alone(clean_ods: str) -> None:
    """pending -> sent -> confirmed changes the posting row only; the payload row is written once
    (its tuple is never replaced) and reads back as planned, also through ledger.posting_full."""
    postings = [_posting(n) for n in range(3)]
    with psycopg.connect(clean_ods) as conn:
        assert ledger.insert_planned(conn, postings) == {p.idempotency_key for p in postings}
        # The same keys again (a re-plan): nothing new, in either table.
        assert ledger.insert_planned(conn, postings) == set()
        conn.commit()
        before = dict(
            conn.execute("SELECT idempotency_key, ctid::text FROM ledger.posting_payload").fetchall()
        )
        ids = ledger.mark_sent(conn, postings, batch_key="b", dag_run_id="run", task_try=1)
        ledger.finish_many(
            conn, [(p.idempotency_key, "confirmed", "confirmed", "9", 202) for p in postings], attempt_ids=ids
        )
        conn.commit()
        after = dict(
            conn.execute("SELECT idempotency_key, ctid::text FROM ledger.posting_payload").fetchall()
        )
        assert after == before  # the same tuples: no state update wrote a new version of a payload
        columns = {
            c
            for (c,) in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = 'ledger' AND table_name = 'posting'"
            )
        }
        assert "payload" not in columns
        read = {p.idempotency_key: p for p in ledger.in_state(conn, "timebill", ["confirmed"])}
        assert {k: p.payload for k, p in read.items()} == {p.idempotency_key: p.payload for p in postings}
        held = ledger.held_of(conn, postings[:1])[postings[0].idempotency_key]
        assert held.base_payload == postings[0].payload and str(held.hours) == "1.50"
        for sql in (
            "UPDATE ledger.posting_payload SET payload = '{}'",
            "DELETE FROM ledger.posting_payload",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
            conn.rollback()


@pytest.fixture
def before_0042(pg_dsn: str) -> Iterator[str]:
    """A database with every migration before 0042 applied, as an existing ODS is."""
    server = psycopg.conninfo.make_conninfo(pg_dsn, dbname="postgres")
    name = f"pes_test_0042_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(pg_dsn, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for migration in migrate.discover():
            if migration.version < 42:
                conn.execute(migration.sql.encode())
    try:
        yield dsn
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_0042_moves_the_payloads_of_an_existing_ledger(before_0042: str) -> None:
    (m0042,) = [m for m in migrate.discover() if m.version == 42]
    with psycopg.connect(before_0042, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ledger.posting (idempotency_key, record_type, source_system, source_id, source_version,"
            " external_id, action, state, payload) VALUES ('k1', 'timebill', 'psa', '1', 'v1', 'psa-te-1', 'post',"
            " 'confirmed', %s)",
            (psycopg.types.json.Jsonb(PAYLOAD),),
        )
        conn.execute(m0042.sql.encode())
        row = conn.execute(
            "SELECT state, payload FROM ledger.posting_full WHERE idempotency_key = 'k1'"
        ).fetchone()
    assert row == ("confirmed", PAYLOAD)
