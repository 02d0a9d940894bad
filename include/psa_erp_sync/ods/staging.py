"""Staging repository: raw payloads, deduplicated by (source id, content hash), and watermarks.

``staging.raw_record.payload`` is ``text`` (migration 0040): the payload is stored as it arrived,
never parsed into ``jsonb`` on the write path (that parse alone doubled the cost of a durable
keyed write). Readers parse it when they read it (``msgspec`` in Python, ``staging.try_jsonb`` in
SQL).

Items arrive either as the raw JSON bytes of each item as the source sent them
(:class:`msgspec.Raw` or ``bytes``, the PSA extract's path: stored and hashed (sha256 in Python)
byte for byte, only ``id`` and ``updated_at`` are read; new versions by a binary ``COPY`` straight
into the table, re-read ones by ``INSERT ... ON CONFLICT``) or decoded (dicts: master data, the
stream's re-reads, tests). A decoded item is stored as PostgreSQL's canonical text of its
``jsonb`` value (sorted keys, normalised whitespace) and hashed over that text, as before 0040, so
the hashes of those paths did not change. The two paths hash differently where the source writes
a number a Python float would print otherwise (``1.50`` against ``1.5``): a version is then new in
staging, and validation keeps canonical's version when the content is the same (content
versioning, ``validation.time_expense``), so nothing changes downstream.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import msgspec
import psycopg

from psa_erp_sync.ods import jsonb

log = logging.getLogger(__name__)


# One set-based statement over the COPYed rows. ``{rows}`` is ``src`` (the fast path: no sort) or,
# when the extract holds the same version twice (ON CONFLICT DO UPDATE cannot touch one row twice in
# a statement), ``DISTINCT ON`` over it, which sorts every payload (~1.2 s per 100k rows).
_UPSERT = """
WITH src AS (
    SELECT source_id, payload::text AS payload, encode(sha256(convert_to(payload::text, 'UTF8')), 'hex') AS payload_hash
    FROM tmp_stage
), upsert AS (
    INSERT INTO staging.raw_record AS r
        (source_system, endpoint, source_id, payload_hash, payload, fetched_at, first_run_key, last_run_key)
    SELECT %(system)s, %(endpoint)s, source_id, payload_hash, payload, now(), %(run_key)s, %(run_key)s
    FROM {rows}
    ON CONFLICT (source_system, endpoint, source_id, payload_hash)
    DO UPDATE SET last_run_key = EXCLUDED.last_run_key, fetched_at = EXCLUDED.fetched_at
    RETURNING (xmax = 0) AS is_new
)
SELECT (SELECT count(*) FROM tmp_stage),
       (SELECT count(*) FROM upsert WHERE is_new),
       (SELECT count(*) FROM upsert WHERE NOT is_new)
"""
_DISTINCT = "(SELECT DISTINCT ON (source_id, payload_hash) source_id, payload_hash, payload FROM src) AS d"


def _upsert(conn: psycopg.Connection, params: dict[str, str]) -> tuple[int, int, int]:
    """Staged, new and known versions. Tries the statement without the sort first; a duplicate
    within the extract makes PostgreSQL refuse it (nothing written), and then it runs with it."""
    try:
        with conn.transaction():
            row = conn.execute(_UPSERT.format(rows="src"), params).fetchone()
    except psycopg.errors.CardinalityViolation:
        row = conn.execute(_UPSERT.format(rows=_DISTINCT), params).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


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


_encode = msgspec.json.Encoder().encode


def _copy_key(source_id: object) -> bytes:
    """The source id as a COPY text field: an integer id (the usual case) needs no escaping."""
    if type(source_id) is int:
        return str(source_id).encode()
    key = str(source_id).encode().replace(b"\\", b"\\\\").replace(b"\t", b"\\t")
    # An id may hold anything the source sent; text cannot hold U+0000 (kept as visible text).
    return key.replace(b"\n", b"\\n").replace(b"\r", b"\\r").replace(b"\x00", b"\\\\u0000")


def _copy_line(key: bytes, item: object) -> bytes:
    # jsonb cannot hold U+0000; keep such a record (as the literal text "\u0000") rather than fail the
    # whole extract. Then escape for COPY text format, whose escape character is the backslash
    # (JSON never holds raw tabs or newlines).
    payload = _encode(item)
    if b"\\" in payload:
        payload = jsonb.escape_nul(payload)
        payload = payload.replace(b"\\", b"\\\\")
    return key + b"\t" + payload + b"\n"


class _Stamp(msgspec.Struct):
    """What staging reads of a raw item: its id and update time (any JSON value; the rest skipped)."""

    id: Any = None
    updated_at: Any = None


_stamp_of = msgspec.json.Decoder(_Stamp).decode
_decode_item = msgspec.json.Decoder().decode


def decode_payload(payload: str | bytes) -> Any:
    """A staged payload (text since migration 0040) as Python values, as psycopg's ``jsonb`` loader
    gave them before: ``msgspec``, or ``json`` for what it refuses (a number beyond a double)."""
    try:
        return _decode_item(payload)
    except msgspec.MsgspecError:
        return json.loads(payload)


_decode_raw = decode_payload


def _raw_row(item: object) -> tuple[str, str, str, object]:
    """(source id, content hash, payload text, ``updated_at`` as sent) of one item of a raw page.

    The key is the one the decoded item gets; an item that is not an object (or has no id) is keyed
    by its content, as :func:`missing_id_key` keys decoded items. The hash is sha256 of the bytes as
    sent: the same bytes are the same version (a source that re-serialises a record differently
    makes a new staged version with the same content, which validation keeps as the same canonical
    version). A ``\\u0000`` escape is kept as the visible text ``\\u0000``, as on the decoded path
    (readers parse the payload into ``jsonb`` or Python text, neither of which may hold U+0000).
    """
    # A Raw item is read in place (its buffer): no copy of its bytes.
    raw = item if isinstance(item, msgspec.Raw | bytes) else _encode(item)
    try:
        stamp = _stamp_of(raw)
        source_id, seen = stamp.id, stamp.updated_at
    except msgspec.MsgspecError:  # not an object: keyed by its content
        source_id, seen = None, None
    if source_id is None:
        key = missing_id_key(_decode_raw(bytes(raw)))
    elif type(source_id) is int:
        key = str(source_id)
    else:
        key = str(source_id).replace("\x00", "\\u0000")  # text cannot hold U+0000 (as the COPY path)
    digest = hashlib.sha256(raw).hexdigest()
    text = str(raw, "utf-8")
    if "\\u0000" in text:
        text = jsonb.escape_nul(text.encode()).decode()
    return key, digest, text, seen


# One statement per raw page: no temporary table, no hashing in SQL, no JSON parse (the payload is
# stored as text, as sent); a version is a probe of the primary key. A version already touched by
# this transaction (the same version earlier in this extract: ``fetched_at`` is the transaction's
# start) is left alone and not counted: a duplicate. Answers (new, known) versions of the page.
_UPSERT_RAW = """
WITH up AS (
    INSERT INTO staging.raw_record AS r
        (source_system, endpoint, source_id, payload_hash, payload, fetched_at, first_run_key, last_run_key)
    SELECT %(system)s, %(endpoint)s, k.source_id, k.payload_hash, k.payload, now(), %(run_key)s, %(run_key)s
    FROM unnest(%(ids)b::text[], %(hashes)b::text[], %(payloads)b::text[]) AS k(source_id, payload_hash, payload)
    ON CONFLICT (source_system, endpoint, source_id, payload_hash)
    DO UPDATE SET last_run_key = EXCLUDED.last_run_key, fetched_at = EXCLUDED.fetched_at
    WHERE r.last_run_key <> EXCLUDED.last_run_key OR r.fetched_at <> EXCLUDED.fetched_at
    RETURNING (xmax = 0) AS is_new
)
SELECT count(*) FILTER (WHERE is_new), count(*) FILTER (WHERE NOT is_new) FROM up
"""


# New versions go by a binary COPY straight into staging.raw_record while no version of the extract
# was staged before: PostgreSQL's multi-row insert (one WAL record per heap page) costs about two
# thirds of what ON CONFLICT's speculative insertion of the same rows does (two WAL records and an
# extra index descent per row). A COPY cannot skip a key that exists, so it runs in batches of about
# this many versions, each in a savepoint: a batch that meets a staged version (a re-read, or
# another transaction staging the same version meanwhile) is rolled back to it and upserted. The
# first batch is one page, so a re-read (a sweep: mostly known versions) finds out after one page.
# Few savepoints per extract (51 at 600,000 new versions), within PostgreSQL's 64 cached
# subtransactions; the rows of a batch are held until it is written (~18 MB).
_COPY_FIRST_BATCH = 2_000
_COPY_BATCH = 12_000
_COPY_RAW = (
    "COPY staging.raw_record (source_system, endpoint, source_id, payload_hash, payload, fetched_at,"
    " first_run_key, last_run_key) FROM STDIN (FORMAT binary)"
)
_COPY_TYPES = ("text", "text", "text", "text", "text", "timestamptz", "text", "text")


def _page_rows(
    page: Sequence[object], newest: datetime | None
) -> tuple[dict[tuple[str, str], str], datetime | None]:
    """The page's versions, (source id, hash) -> payload text (a version twice in one page: once),
    and the newest ``updated_at`` seen so far."""
    rows: dict[tuple[str, str], str] = {}
    for item in page:
        key, digest, payload, stamp = _raw_row(item)
        rows[key, digest] = payload
        seen = source_timestamp(stamp)
        if seen is not None and (newest is None or seen > newest):
            newest = seen
    return rows, newest


class _RawStaging:
    """One extract's raw pages into staging: its counts, and the two ways of writing versions."""

    def __init__(
        self,
        conn: psycopg.Connection,
        *,
        run_key: str,
        source_system: str,
        endpoint: str,
        progress: Callable[[int, float], None] | None,
        started: float,
    ) -> None:
        self.conn, self.run_key, self.progress, self.started = conn, run_key, progress, started
        self.source_system, self.endpoint = source_system, endpoint
        self.extracted = self.new_versions = self.known_versions = 0
        self.newest: datetime | None = None

    def read(self, page: Sequence[object]) -> dict[tuple[str, str], str]:
        rows, self.newest = _page_rows(page, self.newest)
        self.extracted += len(page)
        return rows

    def report(self) -> None:
        if self.progress is not None:
            self.progress(self.extracted, time.monotonic() - self.started)

    def upsert(self, rows: dict[tuple[str, str], str]) -> psycopg.Cursor[Any]:
        cur = self.conn.cursor()
        cur.execute(
            _UPSERT_RAW,
            {
                "system": self.source_system,
                "endpoint": self.endpoint,
                "run_key": self.run_key,
                "ids": [k for k, _ in rows],
                "hashes": [h for _, h in rows],
                "payloads": list(rows.values()),
            },
        )
        return cur

    def count(self, cur: psycopg.Cursor[Any]) -> int:
        """Adds the statement's counts; answers how many versions were known."""
        row = cur.fetchone()
        assert row is not None
        self.new_versions += row[0]
        self.known_versions += row[1]
        cur.close()
        return int(row[1])

    def copy_while_new(self, pages: Iterator[Sequence[object]]) -> None:
        """Batches of new versions by COPY, until ``pages`` end or a batch holds a known version."""
        row = self.conn.execute("SELECT now()").fetchone()  # the transaction's start: fetched_at
        assert row is not None
        fetched_at, system, endpoint, run_key = row[0], self.source_system, self.endpoint, self.run_key
        limit = _COPY_FIRST_BATCH
        while True:
            batch: dict[tuple[str, str], str] = {}
            exhausted = True
            try:
                with self.conn.transaction(), self.conn.cursor() as cur, cur.copy(_COPY_RAW) as copy:
                    copy.set_types(_COPY_TYPES)
                    for page in pages:
                        # Into the batch before the COPY: a batch rolled back is upserted whole.
                        fresh = [(key, text) for key, text in self.read(page).items() if key not in batch]
                        batch.update(fresh)
                        for (source_id, digest), text in fresh:
                            copy.write_row(
                                (system, endpoint, source_id, digest, text, fetched_at, run_key, run_key)
                            )
                        self.report()
                        if len(batch) >= limit:
                            exhausted = False
                            break
                self.new_versions += len(batch)
                limit = _COPY_BATCH
            except psycopg.errors.UniqueViolation:  # a version staged before: the batch upserted
                if self.count(self.upsert(batch)):  # known versions (none: one twice in the extract)
                    return
            if exhausted:
                return

    def upsert_pages(self, pages: Iterator[Sequence[object]]) -> None:
        """One upsert per page, pipelined: page N+1 is read, keyed and hashed while PostgreSQL
        writes page N; its counts are read after that."""
        sent: psycopg.Cursor[Any] | None = None
        with self.conn.pipeline():
            for page in pages:
                rows = self.read(page)
                if sent is not None:
                    self.count(sent)
                    sent = None
                if rows:
                    sent = self.upsert(rows)
                self.report()
            if sent is not None:
                self.count(sent)


def _stage_raw(
    conn: psycopg.Connection,
    pages: Iterable[Sequence[object]],
    *,
    run_key: str,
    source_system: str,
    endpoint: str,
    progress: Callable[[int, float], None] | None,
    started: float,
) -> StageResult:
    """:func:`stage_pages` for pages of raw items.

    While every version is new (a month's first extract), batches of versions are written by a
    binary ``COPY`` (:data:`_COPY_BATCH`): the server inserts page N while page N+1 is read, keyed
    and hashed. From the first batch that held a version staged before (a re-read, a sweep) on, one
    ``INSERT ... ON CONFLICT`` per page, pipelined. All in the caller's transaction: nothing is
    durable, or watermarked, before the caller commits.
    """
    stager = _RawStaging(
        conn,
        run_key=run_key,
        source_system=source_system,
        endpoint=endpoint,
        progress=progress,
        started=started,
    )
    remaining = iter(pages)
    stager.copy_while_new(remaining)
    stager.upsert_pages(remaining)  # nothing left when every batch was new
    return StageResult(
        run_key=run_key,
        extracted=stager.extracted,
        staged=stager.extracted,
        new_versions=stager.new_versions,
        known_versions=stager.known_versions,
        duplicates_in_extract=stager.extracted - stager.new_versions - stager.known_versions,
        max_updated_at=stager.newest,
        seconds=time.monotonic() - started,
    )


def missing_id_key(item: object) -> str:
    """The source id an item without one is staged under: derived from its content, so it is kept
    (validation quarantines it, ``SCHEMA_INVALID``) rather than stopping the run, and the same
    content keeps the same key."""
    return "missing-id:" + hashlib.sha256(msgspec.json.encode(item)).hexdigest()[:32]


def stage_pages(
    conn: psycopg.Connection,
    pages: Iterable[Sequence[object]],
    *,
    run_key: str,
    source_system: str,
    endpoint: str,
    progress: Callable[[int, float], None] | None = None,
) -> StageResult:
    """COPY every item of ``pages`` into staging in one transaction and return the counts.

    An item is a decoded JSON value (a dict) or the raw JSON bytes of one item
    (:class:`msgspec.Raw`, ``bytes``), staged as sent. An item without an ``id`` (or not an
    object) is staged under :func:`missing_id_key`. Memory is bounded by one page (decoded items
    stream into an open COPY) or one batch of :data:`_COPY_BATCH` raw versions.
    The caller commits (so the watermark can advance in the same transaction).
    """
    started = time.monotonic()
    pages = iter(pages)
    first = next(pages, None)
    while first is not None and not first:  # an empty page (a sweep's first query may find nothing)
        first = next(pages, None)
    if first and isinstance(first[0], msgspec.Raw | bytes):
        return _stage_raw(
            conn,
            itertools.chain([first], pages),
            run_key=run_key,
            source_system=source_system,
            endpoint=endpoint,
            progress=progress,
            started=started,
        )
    pages = itertools.chain([first] if first is not None else [], pages)
    extracted = 0
    newest: datetime | None = None  # computed here: a SQL cast of a hostile value would abort the COPY
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS tmp_stage (source_id text NOT NULL, payload jsonb NOT NULL) ON COMMIT DELETE ROWS"
    )
    conn.execute("TRUNCATE tmp_stage")
    with conn.cursor() as cur, cur.copy("COPY tmp_stage (source_id, payload) FROM STDIN") as copy:
        for page in pages:
            buffer = bytearray()
            for item in page:
                if isinstance(item, msgspec.Raw | bytes):  # a raw item among decoded pages
                    item = _decode_raw(bytes(item))
                source_id = item.get("id") if isinstance(item, dict) else None
                key = _copy_key(source_id) if source_id is not None else missing_id_key(item).encode()
                buffer += _copy_line(key, item)
                if isinstance(item, dict):
                    seen = source_timestamp(item.get("updated_at"))
                    if seen is not None and (newest is None or seen > newest):
                        newest = seen
            copy.write(bytes(buffer))
            extracted += len(page)
            if progress is not None:
                progress(extracted, time.monotonic() - started)
    staged, new_versions, known_versions = _upsert(
        conn, {"system": source_system, "endpoint": endpoint, "run_key": run_key}
    )
    result = StageResult(
        run_key=run_key,
        extracted=extracted,
        staged=staged,
        new_versions=new_versions,
        known_versions=known_versions,
        duplicates_in_extract=staged - new_versions - known_versions,
        max_updated_at=newest,
        seconds=time.monotonic() - started,
    )
    if result.staged != result.extracted:
        raise RuntimeError(
            f"staging lost rows: extracted {result.extracted}, staged {result.staged} ({run_key})"
        )
    return result


def source_timestamp(value: object) -> datetime | None:
    """An ISO 8601 timestamp with a zone as the source sent it, or None when it is anything else.

    Parsed as the PSA models parse it (``datetime.fromisoformat``), so a value validation calls
    ``TIMESTAMP_INVALID`` never moves a watermark, and a hostile one never aborts the staging
    transaction (a SQL cast of it would).
    """
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            return None
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def get_watermark(conn: psycopg.Connection, source_system: str, endpoint: str) -> datetime | None:
    """The high watermark, or None when there is none: "read everything".

    A non-finite value (the ``-infinity`` that empty first runs stored before migration 0009)
    reads as None rather than failing every later run with ``timestamp too small``.
    """
    row = conn.execute(
        "SELECT CASE WHEN isfinite(high_watermark) THEN high_watermark END"
        " FROM staging.watermark WHERE source_system = %s AND endpoint = %s",
        (source_system, endpoint),
    ).fetchone()
    return row[0] if row else None


def advance_watermark(
    conn: psycopg.Connection, source_system: str, endpoint: str, seen: datetime | None, *, swept: bool = False
) -> None:
    """Move the high watermark forward to the newest ``updated_at`` seen; never backwards, never
    past the start of the writing transaction (the extract's start: extracts stage and advance in
    one transaction), and never to a value that was not seen.

    The cap keeps one record stamped in the future (a PSA clock error, a year 2099 typo) from
    pinning the watermark there, which would make every later incremental read come back empty;
    a record re-read because of the cap is harmless (staging dedupes by content). Nothing seen
    (an empty first run) stores no watermark, so the next run reads everything again; a sweep
    still records when it ran.
    """
    if seen is None:
        if swept:
            conn.execute(
                "UPDATE staging.watermark SET last_sweep_at = now(), updated_at = now()"
                " WHERE source_system = %s AND endpoint = %s",
                (source_system, endpoint),
            )
        return
    conn.execute(
        """
        INSERT INTO staging.watermark AS w (source_system, endpoint, high_watermark, last_sweep_at)
        VALUES (%(system)s, %(endpoint)s, least(%(seen)s::timestamptz, now()),
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


# --- versions staged one by one (the stream's re-reads), not by the extract's COPY ---------------


def _lines_params(source_system: str, lines: Sequence[tuple[str, str]], **extra: object) -> dict[str, object]:
    """``ids`` and ``payloads`` of (source id, JSON text) lines, unnested together, and ``extra``."""
    return {"ids": [i for i, _ in lines], "payloads": [p for _, p in lines], "system": source_system, **extra}


def insert_new_versions(
    conn: psycopg.Connection,
    source_system: str,
    endpoint: str,
    lines: Sequence[tuple[str, str]],
    *,
    run_key: str,
    read_at: datetime | None,
) -> int:
    """Stage the versions of (source id, JSON text) lines staging has never seen, under ``run_key``
    (fetched at ``read_at``, or now); versions already staged keep theirs. How many were new. The
    content hash is the one the extract's COPY computes (sha256 of the jsonb text)."""
    row = conn.execute(
        """
        WITH src AS (
            SELECT s.source_id, s.payload::jsonb AS payload
            FROM unnest(%(ids)s::text[], %(payloads)s::text[]) AS s(source_id, payload)
        ), ins AS (
            INSERT INTO staging.raw_record
                (source_system, endpoint, source_id, payload_hash, payload, fetched_at, first_run_key, last_run_key)
            SELECT %(system)s, %(endpoint)s, source_id,
                   encode(sha256(convert_to(payload::text, 'UTF8')), 'hex'), payload::text,
                   coalesce(%(read_at)s, now()), %(run_key)s, %(run_key)s
            FROM src
            ON CONFLICT (source_system, endpoint, source_id, payload_hash) DO NOTHING
            RETURNING 1
        )
        SELECT count(*) FROM ins
        """,
        _lines_params(source_system, lines, endpoint=endpoint, run_key=run_key, read_at=read_at),
    ).fetchone()
    return int(row[0]) if row else 0


def touch_fetched(
    conn: psycopg.Connection,
    source_system: str,
    endpoint: str,
    lines: Sequence[tuple[str, str]],
    *,
    read_at: datetime,
) -> None:
    """Move ``fetched_at`` of these already staged versions forward to ``read_at``. Rows another
    transaction holds locked (a batch extract re-reading them anyway) are skipped, never waited for."""
    conn.execute(
        """
        WITH src AS (
            SELECT s.source_id, encode(sha256(convert_to(s.payload::jsonb::text, 'UTF8')), 'hex') AS payload_hash
            FROM unnest(%(ids)s::text[], %(payloads)s::text[]) AS s(source_id, payload)
        ), free AS (
            SELECT r.source_id, r.payload_hash FROM staging.raw_record r JOIN src USING (source_id, payload_hash)
            WHERE r.source_system = %(system)s AND r.endpoint = %(endpoint)s AND r.fetched_at < %(read_at)s
            FOR UPDATE OF r SKIP LOCKED
        )
        UPDATE staging.raw_record r SET fetched_at = %(read_at)s FROM free
        WHERE r.source_system = %(system)s AND r.endpoint = %(endpoint)s
          AND r.source_id = free.source_id AND r.payload_hash = free.payload_hash
        """,
        _lines_params(source_system, lines, endpoint=endpoint, read_at=read_at),
    )
