"""Validation's lookups in canonical stay per row while a month is loaded (issue 16): on a table
with no statistics at all (a month bulk-loaded into it within the run's transaction) each lookup
of a chunk probes an index; none scans the table, whose size grows with the month."""

from __future__ import annotations

import psycopg
import pytest

from psa_erp_sync.validation import time_expense as validation

ROWS, CHUNK = 20_000, 2_000


@pytest.fixture
def unanalyzed(pg_dsn: str) -> psycopg.Connection:
    """A copy of canonical.time_entry's shape and indexes, never analysed, holding ROWS rows, and
    a chunk of CHUNK rows in ``t`` (the run's temporary table of a chunk)."""
    conn = psycopg.connect(pg_dsn)
    conn.execute("CREATE TEMP TABLE month (LIKE canonical.time_entry INCLUDING ALL)")
    conn.execute(
        """
        INSERT INTO month (source_system, source_id, version_hash, spent_date, user_ref, project_ref,
                           task_ref, legal_entity, hours, billable, bill_rate_minor, amount_minor,
                           currency, approved, fingerprint, source_updated_at, record)
        SELECT 'psa', i::text, md5(i::text), DATE '2026-11-02', '1', '2', '3', 'LE-US1', 1, true, 100,
               100, 'USD', true, encode(sha256(i::text::bytea), 'hex'), now(), '{}'
        FROM generate_series(1, %s) AS i
        """,
        (ROWS,),
    )
    conn.execute("CREATE TEMP TABLE t (LIKE month INCLUDING DEFAULTS)")
    conn.execute("INSERT INTO t SELECT * FROM month WHERE source_id::int %% %s = 0", (ROWS // CHUNK,))
    yield conn
    conn.rollback()
    conn.close()


def _plan(conn: psycopg.Connection, sql: str, params: tuple[object, ...] | None = None) -> str:
    return "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params))


def test_the_duplicate_lookup_probes_the_fingerprint_index(unanalyzed: psycopg.Connection) -> None:
    fingerprints = [r[0] for r in unanalyzed.execute("SELECT fingerprint FROM t")]
    plan = _plan(unanalyzed, validation._first_with_fingerprints("month"), (fingerprints,))
    assert "Seq Scan on month" not in plan, plan
    assert "month_fingerprint_idx" in plan, plan


def test_the_current_row_of_each_chunk_row_is_one_primary_key_probe(unanalyzed: psycopg.Connection) -> None:
    plan = _plan(
        unanalyzed, f"SELECT t.source_id FROM t CROSS JOIN LATERAL ({validation._current_of('month')}) c"
    )
    assert "Seq Scan on month" not in plan, plan
    assert "month_pkey" in plan, plan


@pytest.mark.parametrize("items", [ROWS, 200])
def test_closing_a_chunks_items_probes_the_item_key_per_id(pg_dsn: str, items: int) -> None:
    """``resolve_for`` (validation calls it per chunk while the run's own items accumulate) finds
    each id's items by the unique key, not by comparing every open item with every id of the chunk:
    neither with the array in a filter, nor by scanning the partial index of open items per id
    (the plan of a queue the planner thinks empty, with a few hundred items: 0.2-2 s a chunk)."""
    from psa_erp_sync.ods import exceptions as queue

    with psycopg.connect(pg_dsn) as conn:
        conn.execute("TRUNCATE exceptions.item")  # as the bench empties it (rolled back below)
        conn.execute(
            """
            INSERT INTO exceptions.item (kind, domain, source_system, record_type, source_id, reason_code, owner)
            SELECT 'quarantine', 'time_expense', 'psa', 'time_entry', i::text, 'HOURS_INVALID', 'o'
            FROM generate_series(1, %s) AS i
            """,
            (items,),
        )
        params = {
            "ids": [str(i) for i in range(1, ROWS, ROWS // CHUNK)],
            "kind": "quarantine",
            "system": "psa",
            "type": "time_entry",
            "reason": "HOURS_INVALID",
        }
        for by_reason in (False, True):
            sql = "EXPLAIN " + queue.resolve_for_sql(by_reason=by_reason)
            plan = "\n".join(r[0] for r in conn.execute(sql, params))
            assert "Seq Scan on item i" not in plan, plan
            assert "item_open_idx on item i" not in plan, plan
            assert (
                "Index Scan using item_kind_source_system_record_type_source_id_reason_code_key on item i"
                in plan
            ), plan
        conn.rollback()


def test_the_sweep_of_vanished_items_probes_each_items_staged_version(clean_ods: str) -> None:
    """The sweep's open items find their staged version by the staging key, one probe each, even
    on statistics taken before the month was staged (the join was planned as a walk of the
    endpoint's every version per item, parsing each payload: minutes at 27k records)."""
    with psycopg.connect(clean_ods) as conn:
        conn.execute(
            "INSERT INTO staging.raw_record (source_system, endpoint, source_id, payload_hash, payload,"
            " fetched_at, first_run_key, last_run_key)"
            " SELECT 'psa', '/v2/projects', i::text, md5(i::text), '{}', now(), 'ref', 'ref'"
            " FROM generate_series(1, 600) i"
        )
        conn.commit()
        conn.execute("ANALYZE staging.raw_record")  # what the server knew before the month
        conn.execute(
            "INSERT INTO staging.raw_record (source_system, endpoint, source_id, payload_hash, payload,"
            " fetched_at, first_run_key, last_run_key)"
            " SELECT 'psa', '/v2/time_entries', i::text, md5(i::text),"
            " jsonb_build_object('spent_date', '2026-11-02'), now(), 'm', 'm'"
            " FROM generate_series(1, %s) i",
            (ROWS,),
        )
        conn.execute(
            "INSERT INTO exceptions.item (kind, domain, source_system, record_type, source_id,"
            " source_version, reason_code, owner)"
            " SELECT 'quarantine', 'time_expense', 'psa', 'time_entry', i::text, md5(i::text), 'R', 'o'"
            " FROM generate_series(1, %s, 10) i",
            (ROWS,),
        )
        params = {
            "system": "psa",
            "kind": "time_entry",
            "endpoint": "/v2/time_entries",
            "from": "2026-11-01",
            "run_key": "m",
        }
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + validation.VANISHED_SQL, params))
        probe = plan.split("raw_record r", 1)[1].split("->", 1)[0]
        assert "source_id = e.source_id" in probe and "payload_hash = e.source_version" in probe, plan
        conn.rollback()


def test_lookups_read_ids_and_fingerprints_an_array_literal_would_quote(
    unanalyzed: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunk's keys and fingerprints go as binary arrays: each arrives as it is."""
    hostile = ["a,b", '"q"', "{c}", "back\\slash", " lead", "NULL", "x y", ""]
    unanalyzed.execute(
        "UPDATE month SET fingerprint = (%s::text[])[source_id::int] WHERE source_id::int <= %s",
        (hostile, len(hostile)),
    )
    unanalyzed.execute(
        "UPDATE month SET source_id = (%s::text[])[source_id::int - 100] WHERE source_id::int BETWEEN 101 AND %s",
        (hostile, 100 + len(hostile)),
    )
    monkeypatch.setitem(validation.TABLES, "time_entry", "month")
    keys = [{"source_id": i, "source_system": "psa"} for i in [*hostile, "absent", "2", "101"]]
    assert validation._present(unanalyzed, "time_entry", keys) == {*hostile, "2"}
    rows = [{"source_id": str(ROWS + n), "fingerprint": fp} for n, fp in enumerate([*hostile, "none"])]
    assert validation._duplicates_of_existing(unanalyzed, "time_entry", rows) == {
        str(ROWS + n): str(n + 1) for n in range(len(hostile))
    }
