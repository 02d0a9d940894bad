"""Staging repository: raw payloads via COPY, deduplicated by (source id, content hash), and watermarks.

The content hash is computed by PostgreSQL over ``payload::text`` of the ``jsonb`` value, which
is canonical (sorted keys, normalised whitespace), so the same content always hashes the same.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime

import msgspec
import psycopg

log = logging.getLogger(__name__)

# A JSON \u0000 escape that is not itself escaped (preceded by an even number of backslashes).
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


@dataclass(frozen=True)
class StageResult:
    run_key: str
    extracted: int  # rows received from the source
    staged: int  # rows written to staging by COPY (must equal extracted)
    new_versions: int  # (source id, hash) never seen before
    known_versions: int  # already staged by an earlier run
    duplicates_in_extract: int  # the same (source id, hash) twice within this extract
    max_updated_at: datetime | None
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.staged / self.seconds if self.seconds > 0 else 0.0


def _copy_line(source_id: str, item: object) -> bytes:
    # jsonb cannot hold U+0000; keep such a record (as the literal text "\u0000") rather than fail the
    # whole extract. Then escape for COPY text format, whose escape character is the backslash
    # (JSON never holds raw tabs or newlines).
    payload = msgspec.json.encode(item)
    if b"\\u0000" in payload:
        payload = _NUL_ESCAPE.sub(rb"\1\\\\u0000", payload)
    payload = payload.replace(b"\\", b"\\\\")
    return source_id.encode().replace(b"\\", b"\\\\").replace(b"\t", b"\\t") + b"\t" + payload + b"\n"


def stage_pages(
    conn: psycopg.Connection,
    pages: Iterable[list[dict[str, object]]],
    *,
    run_key: str,
    source_system: str,
    endpoint: str,
    progress: Callable[[int, float], None] | None = None,
) -> StageResult:
    """COPY every item of ``pages`` into staging in one transaction and return the counts.

    Items must carry an ``id``. Memory is bounded by one page: pages stream into an open COPY.
    The caller commits (so the watermark can advance in the same transaction).
    """
    started = time.monotonic()
    extracted = 0
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS tmp_stage (source_id text NOT NULL, payload jsonb NOT NULL) ON COMMIT DELETE ROWS"
    )
    conn.execute("TRUNCATE tmp_stage")
    with conn.cursor() as cur, cur.copy("COPY tmp_stage (source_id, payload) FROM STDIN") as copy:
        for page in pages:
            buffer = bytearray()
            for item in page:
                source_id = item.get("id")
                if source_id is None:
                    raise ValueError(f"{source_system}{endpoint}: an item without an id cannot be staged")
                buffer += _copy_line(str(source_id), item)
            copy.write(bytes(buffer))
            extracted += len(page)
            if progress is not None:
                progress(extracted, time.monotonic() - started)
    row = conn.execute(
        """
        WITH src AS (
            SELECT source_id, payload, encode(sha256(convert_to(payload::text, 'UTF8')), 'hex') AS payload_hash
            FROM tmp_stage
        ), distinct_src AS (
            SELECT DISTINCT ON (source_id, payload_hash) source_id, payload_hash, payload FROM src
        ), upsert AS (
            INSERT INTO staging.raw_record AS r
                (source_system, endpoint, source_id, payload_hash, payload, fetched_at, first_run_key, last_run_key)
            SELECT %(system)s, %(endpoint)s, source_id, payload_hash, payload, now(), %(run_key)s, %(run_key)s
            FROM distinct_src
            ON CONFLICT (source_system, endpoint, source_id, payload_hash)
            DO UPDATE SET last_run_key = EXCLUDED.last_run_key, fetched_at = EXCLUDED.fetched_at
            RETURNING (xmax = 0) AS is_new
        )
        SELECT (SELECT count(*) FROM tmp_stage),
               (SELECT count(*) FROM upsert WHERE is_new),
               (SELECT count(*) FROM upsert WHERE NOT is_new),
               (SELECT max((payload->>'updated_at')::timestamptz) FROM tmp_stage)
        """,
        {"system": source_system, "endpoint": endpoint, "run_key": run_key},
    ).fetchone()
    assert row is not None
    staged, new_versions, known_versions, max_updated_at = row
    result = StageResult(
        run_key=run_key,
        extracted=extracted,
        staged=staged,
        new_versions=new_versions,
        known_versions=known_versions,
        duplicates_in_extract=staged - new_versions - known_versions,
        max_updated_at=max_updated_at,
        seconds=time.monotonic() - started,
    )
    if result.staged != result.extracted:
        raise RuntimeError(
            f"staging lost rows: extracted {result.extracted}, staged {result.staged} ({run_key})"
        )
    return result


def get_watermark(conn: psycopg.Connection, source_system: str, endpoint: str) -> datetime | None:
    row = conn.execute(
        "SELECT high_watermark FROM staging.watermark WHERE source_system = %s AND endpoint = %s",
        (source_system, endpoint),
    ).fetchone()
    return row[0] if row else None


def advance_watermark(
    conn: psycopg.Connection, source_system: str, endpoint: str, seen: datetime | None, *, swept: bool = False
) -> None:
    """Move the high watermark forward to the newest ``updated_at`` seen; never backwards."""
    if seen is None and not swept:
        return
    conn.execute(
        """
        INSERT INTO staging.watermark AS w (source_system, endpoint, high_watermark, last_sweep_at)
        VALUES (%(system)s, %(endpoint)s, coalesce(%(seen)s, '-infinity'::timestamptz),
                CASE WHEN %(swept)s THEN now() END)
        ON CONFLICT (source_system, endpoint) DO UPDATE SET
            high_watermark = greatest(w.high_watermark, EXCLUDED.high_watermark),
            last_sweep_at = coalesce(EXCLUDED.last_sweep_at, w.last_sweep_at),
            updated_at = now()
        """,
        {"system": source_system, "endpoint": endpoint, "seen": seen, "swept": swept},
    )


def record_extract_run(
    conn: psycopg.Connection,
    result: StageResult,
    *,
    source_system: str,
    endpoint: str,
    mode: str,
    window_from: datetime | None,
    window_to: datetime,
    sweep_from: date | None = None,
) -> None:
    conn.execute(
        """
        INSERT INTO staging.extract_run (run_key, source_system, endpoint, window_from, sweep_from, window_to, mode,
                                         extracted, staged_new, staged_unchanged, finished_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
        ON CONFLICT (run_key) DO UPDATE SET extracted = EXCLUDED.extracted, staged_new = EXCLUDED.staged_new,
            staged_unchanged = EXCLUDED.staged_unchanged, window_from = EXCLUDED.window_from,
            sweep_from = EXCLUDED.sweep_from, window_to = EXCLUDED.window_to, mode = EXCLUDED.mode, finished_at = now()
        """,
        (
            result.run_key,
            source_system,
            endpoint,
            window_from,
            sweep_from,
            window_to,
            mode,
            result.extracted,
            result.new_versions,
            result.known_versions,
        ),
    )


def sweep_of(conn: psycopg.Connection, run_key: str) -> date | None:
    """The first spent date a sweep extract re-read, or None when the run was not a sweep."""
    row = conn.execute(
        "SELECT sweep_from FROM staging.extract_run WHERE run_key = %s AND mode IN ('sweep', 'full')",
        (run_key,),
    ).fetchone()
    return row[0] if row else None
