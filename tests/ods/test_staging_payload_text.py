"""Migration 0040: staged payloads as text. Rows staged before it keep their content and hash, and
staging them again after it finds every version known (no new version, so nothing downstream)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.types.json import Jsonb

from psa_erp_sync.ods import migrate, staging

ENDPOINT = "/v2/time_entries"

DECODED: list[dict[str, object]] = [
    {"id": 1, "notes": "back\\slash \\N \\t", "hours": 1.5, "updated_at": "2026-11-03T10:00:00Z"},
    {"updated_at": "2026-11-03T10:00:00Z", "id": 2, "notes": "tab\tnew\nline", "user": {"name": "\u202e"}},
    {"id": 3, "notes": "nul \\u0000 text", "hours": 12, "updated_at": "2026-11-04T10:00:00Z"},
]
# As the PSA sends them (numbers as written, its own key order and whitespace): the extract's path.
RAW = [
    b'{"id": 10, "hours": 1.50, "notes": "raw", "updated_at": "2026-11-05T10:00:00Z"}',
    b'{"notes":"\\u00e9t\\u00e9","id":11,"hours":2.00,"updated_at":"2026-11-05T11:00:00Z"}',
]


@pytest.fixture
def before_0040(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database with every migration before 0040 applied (its own, dropped afterwards)."""
    name = f"pes_test_0040_{os.getpid()}"
    server = psycopg.conninfo.make_conninfo(pg_dsn, dbname="postgres")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(pg_dsn, dbname=name)
    every = migrate.discover()
    with monkeypatch.context() as patch:
        patch.setattr(migrate, "discover", lambda: [m for m in every if m.version < 40])
        migrate.apply(dsn)
    yield dsn
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _stage_as_before_0040(conn: psycopg.Connection) -> None:
    """What staging wrote before 0040: decoded items as jsonb hashed over the jsonb text, raw items
    as jsonb hashed over the bytes as sent."""
    for item in DECODED:
        conn.execute(
            "INSERT INTO staging.raw_record (source_system, endpoint, source_id, payload_hash, payload, fetched_at,"
            " first_run_key, last_run_key) SELECT 'psa', %s, %s, encode(sha256(convert_to(p::text, 'UTF8')), 'hex'),"
            " p, now(), 'r1', 'r1' FROM (SELECT %s::jsonb AS p) s",
            (ENDPOINT, str(item["id"]), Jsonb(item)),
        )
    for raw in RAW:
        conn.execute(
            "INSERT INTO staging.raw_record (source_system, endpoint, source_id, payload_hash, payload, fetched_at,"
            " first_run_key, last_run_key) VALUES ('psa', %s, %s, %s, %s::jsonb, now(), 'r1', 'r1')",
            (ENDPOINT, str(json.loads(raw)["id"]), hashlib.sha256(raw).hexdigest(), raw.decode()),
        )


def test_rows_staged_before_0040_keep_content_and_hash_and_are_known_versions_after(before_0040: str) -> None:
    with psycopg.connect(before_0040) as conn:
        _stage_as_before_0040(conn)
        conn.commit()
        before = {
            r[0]: (r[1], r[2])
            for r in conn.execute("SELECT source_id, payload_hash, payload::text FROM staging.raw_record")
        }
    migrate.apply(before_0040)
    with psycopg.connect(before_0040) as conn:
        kind = conn.execute(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_schema = 'staging' AND table_name = 'raw_record' AND column_name = 'payload'"
        ).fetchone()
        after = {
            r[0]: (r[1], r[2])
            for r in conn.execute("SELECT source_id, payload_hash, payload FROM staging.raw_record")
        }
        hash_is_of_text = dict(
            conn.execute(
                "SELECT source_id, payload_hash = encode(sha256(convert_to(payload, 'UTF8')), 'hex')"
                " FROM staging.raw_record"
            ).fetchall()
        )
        indexes = {
            r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'raw_record'")
        }
        # staged again after the migration, by today's code: every version known, none new
        decoded = staging.stage_pages(conn, [DECODED], run_key="r2", source_system="psa", endpoint=ENDPOINT)
        raw = staging.stage_pages(conn, [RAW], run_key="r2", source_system="psa", endpoint=ENDPOINT)
        conn.commit()
        count = conn.execute("SELECT count(*) FROM staging.raw_record").fetchone()
        parsed = conn.execute(
            "SELECT staging.try_jsonb(payload)->>'notes', staging.try_jsonb('{\"n\": 1e1000000}')"
            " FROM staging.raw_record WHERE source_id = '3'"
        ).fetchone()
    assert kind == ("text",)
    assert after == before  # content (the jsonb's text) and hash of every row
    assert all(hash_is_of_text[str(i["id"])] for i in DECODED)  # the hash is of the stored text
    assert indexes == {"raw_record_pkey", "raw_record_run_idx", "raw_record_fetched_idx"}
    assert (decoded.new_versions, decoded.known_versions) == (0, len(DECODED))
    assert (raw.new_versions, raw.known_versions) == (0, len(RAW))
    assert count == (len(DECODED) + len(RAW),)
    assert parsed == ("nul \\u0000 text", None)  # read through try_jsonb; what jsonb refuses is NULL


def test_retention_of_people_still_finds_old_versions_by_index_and_time_entries_are_not_indexed(
    pg_conn: psycopg.Connection,
) -> None:
    """The fetched-at index serves retention's statement (``ods.retention``) for the endpoints it
    may list, and holds no time entries or expenses (the extract's hot path)."""
    definition = pg_conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'staging' AND indexname = 'raw_record_fetched_idx'"
    ).fetchone()
    with pg_conn.transaction(force_rollback=True):
        pg_conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in pg_conn.execute(
                "EXPLAIN DELETE FROM staging.raw_record WHERE source_system = %s AND endpoint = %s AND fetched_at < %s",
                ("psa", "/v2/users", "2026-11-01T00:00:00Z"),
            )
        )
    assert definition is not None
    assert "WHERE (endpoint <> ALL (ARRAY['/v2/time_entries'::text, '/v2/expenses'::text]))" in definition[0]
    assert "raw_record_fetched_idx" in plan


def test_try_jsonb_over_a_table_a_parallel_plan_would_scan(clean_ods: str) -> None:
    """``staging.try_jsonb`` catches errors (a subtransaction): a query over many staged rows, planned
    in parallel where allowed, must not fail (the demo's and reconciliation's reads)."""
    with psycopg.connect(clean_ods) as conn, conn.transaction(force_rollback=True):
        for setting in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size"):
            conn.execute(f"SET LOCAL {setting} = 0")
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 2")
        conn.execute(
            "INSERT INTO staging.raw_record (source_system, endpoint, source_id, payload_hash, payload, fetched_at,"
            " first_run_key, last_run_key) SELECT 'psa', %s, i::text, 'h', json_build_object('id', i)::text, now(),"
            " 'r', 'r' FROM generate_series(1, 20000) i",
            (ENDPOINT,),
        )
        conn.execute("ANALYZE staging.raw_record")
        row = conn.execute(
            "SELECT count(*) FROM staging.raw_record WHERE (staging.try_jsonb(payload)->>'id')::int % 2 = 0"
        ).fetchone()
    assert row == (10000,)
