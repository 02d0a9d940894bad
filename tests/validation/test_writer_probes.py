"""The writer's probes of canonical cost PostgreSQL less on a new month, with the same answers
(issue 16, deliverable 2; migration 0061).

- The fingerprint indexes are hash indexes: the duplicate lookup (equality only) probes them, and
  an insert no longer compares 64-character strings through the collation at a random btree leaf.
- The key probe of a chunk (:func:`validation._present`) first probes the chunk's key range: a
  range canonical holds no row of (every chunk of a new month) answers for the chunk, and the
  per-key probes never run. Its answers must be those of one probe per key, whatever the keys.
"""

from __future__ import annotations

import random

import psycopg
import pytest

from psa_erp_sync.validation import time_expense as validation

pytestmark = pytest.mark.integration

#: main's statement: one probe of the primary key per id, the reference the gated one must match
PER_KEY = (
    "SELECT k.source_id FROM unnest(%(ids)s::text[]) AS k(source_id)"
    " WHERE EXISTS (SELECT 1 FROM month c WHERE c.source_system = %(system)s AND c.source_id = k.source_id)"
)
HOSTILE = ["", " lead", "a,b", '"q"', "{c}", "back\\slash", "NULL", "x y", "é", "Ωmega", "zz", "~", "0"]


@pytest.fixture
def month(pg_dsn: str) -> psycopg.Connection:
    """canonical.time_entry's shape and indexes, holding ids 1000-1999 in steps of 10 (live, every
    seventh deleted) of source system ``psa``, the same ids plus 5 of ``other``, and hostile ids."""
    conn = psycopg.connect(pg_dsn)
    conn.execute("CREATE TEMP TABLE month (LIKE canonical.time_entry INCLUDING ALL)")
    conn.execute(
        """
        INSERT INTO month (source_system, source_id, version_hash, spent_date, user_ref, project_ref,
                           legal_entity, hours, billable, bill_rate_minor, amount_minor, currency,
                           approved, is_deleted, fingerprint, source_updated_at)
        SELECT s.system, s.id, 'v', DATE '2026-11-02', '1', '2', 'LE-US1', 1, true, 100, 100, 'USD',
               true, s.n %% 7 = 0, md5(s.system || s.id), now()
        FROM (SELECT 'psa' AS system, i::text AS id, i AS n FROM generate_series(1000, 1999, 10) i
              UNION ALL SELECT 'other', (i + 5)::text, i FROM generate_series(1000, 1999, 10) i
              UNION ALL SELECT 'psa', h, 1 FROM unnest(%s::text[]) h) s
        """,
        (HOSTILE[::2],),
    )
    yield conn
    conn.rollback()
    conn.close()


def _keys(ids: list[str]) -> list[dict[str, str]]:
    return [{"source_id": i, "source_system": "psa"} for i in ids]


def test_the_gated_probe_answers_as_one_probe_per_key(
    month: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks inside the held range and in its gaps, across it, beside it, of ids of other lengths
    (text order interleaves them), the other system's ids, deleted rows and hostile ids."""
    monkeypatch.setitem(validation.TABLES, "time_entry", "month")
    universe = [str(i) for i in range(900, 2100)] + [str(i) for i in range(10, 300)] + HOSTILE
    universe += [str(i) + "0" for i in range(100, 200)]  # 1000-1990 again as other-length neighbours
    chunks = [
        ["1001", "1002", "1003"],  # a gap between held ids
        ["1005", "1015", "1995"],  # the other system's ids only
        ["2000", "2050", "2099"],  # above the range
        ["950", "999"],  # below
        ["1000", "1070"],  # live and deleted
        ["1999", "19990", "2"],  # text order: "1999" < "19990" < "2"
        HOSTILE,
        ["é", "Ωmega"],
        [""],
    ]
    rng = random.Random(16)
    chunks += [rng.sample(universe, rng.randint(1, 40)) for _ in range(200)]
    for chunk in chunks:
        expected = {r[0] for r in month.execute(PER_KEY, {"ids": chunk, "system": "psa"})}
        assert validation._present(month, "time_entry", _keys(chunk)) == expected, chunk


def _analyzed(conn: psycopg.Connection, ids: list[str]) -> str:
    sql = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + validation._present_sql("month")
    return "\n".join(r[0] for r in conn.execute(sql, {"ids": ids, "system": "psa"}))


def test_a_chunk_whose_range_canonical_does_not_hold_probes_no_key(month: psycopg.Connection) -> None:
    """A new month's chunk (no row of its system between its smallest and largest key) is one probe;
    a chunk whose range holds a row is probed key by key."""
    absent = [str(i) for i in range(1001, 1010)]  # between 1000 and 1010: a gap
    month.execute("ANALYZE month")  # statistics or none, the range is one probe of the key's index
    plan = _analyzed(month, absent)
    assert "One-Time Filter" in plan, plan
    assert "using month_pkey on month r" in plan and "Seq Scan on month r" not in plan, plan
    probe = plan.split("month c", 1)[1]
    assert "never executed" in probe.split("\n", 1)[0], plan
    assert month.execute(validation._present_sql("month"), {"ids": absent, "system": "psa"}).fetchall() == []
    plan = _analyzed(month, [*absent, "1010"])
    assert "never executed" not in plan.split("month c", 1)[1].split("\n", 1)[0], plan


def test_canonicals_fingerprints_are_hash_indexed(pg_dsn: str) -> None:
    """Migration 0061: both kinds' fingerprint indexes are hash indexes (that the duplicate lookup
    probes them on a month without statistics: tests/validation/test_linear.py)."""
    with psycopg.connect(pg_dsn) as conn:
        methods = dict(
            conn.execute(
                "SELECT c.relname, a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam"
                " WHERE c.relnamespace = 'canonical'::regnamespace AND c.relname LIKE '%fingerprint_idx'"
            ).fetchall()
        )
    assert methods == {"time_entry_fingerprint_idx": "hash", "expense_entry_fingerprint_idx": "hash"}


def test_the_duplicate_lookup_through_the_hash_index_finds_the_earliest_live_record(
    month: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the hash index (sequential scans off): each fingerprint's earliest live record of
    canonical, whichever source system, never a deleted one; an absent fingerprint finds nothing."""
    month.execute("SET LOCAL enable_seqscan = off")
    month.execute("UPDATE month SET fingerprint = 'same' WHERE source_id IN ('1470', '1500', '1505', '1510')")
    # 1470 is deleted (1470 % 7 = 0: the fixture's n is the id); 1500 is the earliest live
    assert month.execute(
        "SELECT is_deleted FROM month WHERE source_id = '1470' AND source_system = 'psa'"
    ).fetchone() == (True,)
    monkeypatch.setitem(validation.TABLES, "time_entry", "month")
    plan = "\n".join(
        r[0] for r in month.execute("EXPLAIN " + validation._first_with_fingerprints("month"), (["same"],))
    )
    assert "month_fingerprint_idx" in plan, plan
    rows = [
        {"source_id": "3000", "fingerprint": "same"},
        {"source_id": "1000", "fingerprint": "same"},  # earlier than the first: not a duplicate
        {"source_id": "3001", "fingerprint": "absent"},
        {"source_id": "3002", "fingerprint": "é"},
    ]
    assert validation._duplicates_of_existing(month, "time_entry", rows) == {"3000": "1500"}
