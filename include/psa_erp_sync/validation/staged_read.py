"""A validation run's staged versions read in source order: the keys sorted on the server, the
payloads fetched a batch at a time by ``ctid`` while the previous batch is judged.

Its own module, light to import (psycopg and msgspec): a judge process
(:mod:`~psa_erp_sync.validation.judge_apart`) starts the read before it imports the rules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

import msgspec
import psycopg


def staged(
    conn: psycopg.Connection, source_system: str, endpoint: str, run_key: str
) -> Iterator[tuple[str, str, str, datetime]]:
    """The run's staged versions in source order (:func:`reading`), streamed."""
    with reading(conn, source_system, endpoint, run_key) as versions:
        yield from versions


@contextlib.contextmanager
def reading(
    conn: psycopg.Connection, source_system: str, endpoint: str, run_key: str
) -> Iterator[Iterator[tuple[str, str, str, datetime]]]:
    """The run's staged versions in source order (id, then update time), streamed:
    (payload as JSON text, payload hash, staged source id, fetched at). ``fetched_at`` is the
    start of the latest read that saw the version: the ordering tiebreak, and the reference for
    ``UPDATED_AT_IN_FUTURE``. The payload comes as text, decoded once, by the model
    (:func:`~psa_erp_sync.validation.time_expense.judge_staged`).

    The order never casts what a hostile payload may hold: numeric ids in numeric order, anything
    else after them; the versions of one source id stay together either way.

    Only the keys are sorted (each version's ``ctid`` in that order); the payloads are read a
    batch at a time by ``ctid`` (:func:`batch_by_ctid`), so the first batch does not wait for
    every payload's text to be built and sorted, and the rest is read while a batch is judged. The
    reader's transaction is ``REPEATABLE READ``: one snapshot for the sort and every batch, in
    which a ``ctid`` names the same version throughout. ``conn`` must not be in a transaction.

    The sort and the first batch start on entry, in the reader's thread: the caller's own setup
    (:func:`~psa_erp_sync.validation.time_expense.validate_run`'s statistics and reference items, ~0.4-0.9 s when the month was just
    staged) runs meanwhile. Neither depends on the other: the reader's snapshot cannot see the
    caller's uncommitted writes, and statistics only choose plans.
    """
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    with (
        conn.cursor(name="staged_versions") as cur,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="validation-reader") as fetcher,
    ):
        # Only the fetcher thread uses ``conn`` from here on.
        first = fetcher.submit(_sorted_then_first_batch, conn, cur, source_system, endpoint, run_key)
        yield _in_source_order(conn, cur, fetcher, first)


def _sorted_then_first_batch(
    conn: psycopg.Connection, cur: psycopg.Cursor[Any], source_system: str, endpoint: str, run_key: str
) -> list[tuple[str, str, str, datetime]]:
    """Sort the run's keys (the ``ctid`` of each version, in source order) on the server, then
    read the first batch of payloads."""
    # The payload is text (migration 0040), never parsed here: numeric ids are told by the
    # staged source id (the id as the source wrote it); versions of one id by update time below.
    cur.execute(
        "SELECT ctid::text FROM staging.raw_record"
        " WHERE source_system = %s AND endpoint = %s AND last_run_key = %s"
        f" ORDER BY CASE WHEN {NUMERIC_ID} THEN source_id::numeric END NULLS LAST, source_id",
        (source_system, endpoint, run_key),
    )
    return batch_by_ctid(conn, cur)


def _in_source_order(
    conn: psycopg.Connection,
    cur: psycopg.Cursor[Any],
    fetcher: ThreadPoolExecutor,
    fetching: Future[list[tuple[str, str, str, datetime]]],
) -> Iterator[tuple[str, str, str, datetime]]:
    """The versions of the batches, each record's in update order. Read ahead: the next batch is
    fetched (the server's work and the transfer, outside the GIL) while this one is judged."""
    group: list[tuple[str, str, str, datetime]] = []
    while batch := fetching.result():
        fetching = fetcher.submit(batch_by_ctid, conn, cur)
        for row in batch:
            if group and row[2] != group[0][2]:
                if len(group) == 1:  # the usual case: one version of the record
                    yield group[0]
                else:
                    yield from in_update_order(group)
                group = []
            group.append(row)
    yield from in_update_order(group)


#: SQL: the staged ``source_id`` is a number (at most 100 digits before and after the point), so it
#: sorts as one. An id of at most 100 characters is tested without the bounds: PostgreSQL expands
#: ``{1,100}`` into a hundred states, ~30 us a row, the largest cost of the read's sort (it is the
#: same test: no part of such an id has more than 100 digits).
NUMERIC_ID = (
    "CASE WHEN length(source_id) <= 100 THEN source_id ~ '^-?[0-9]+(\\.[0-9]+)?$'"
    " ELSE source_id ~ '^-?[0-9]{1,100}(\\.[0-9]{1,100})?$' END"
)


class _UpdatedAt(msgspec.Struct):
    updated_at: Any = None


_updated_at_of = msgspec.json.Decoder(_UpdatedAt).decode


def in_update_order(group: list[tuple[str, str, str, datetime]]) -> list[tuple[str, str, str, datetime]]:
    """The staged versions of one source id ordered by ``updated_at`` as SQL's ``payload->>'updated_at'``
    sorts (the text as sent; missing or null last). One version (the usual case) is not decoded."""
    if len(group) < 2:
        return group

    def key(row: tuple[str, str, str, datetime]) -> tuple[bool, str]:
        try:
            value = _updated_at_of(row[0]).updated_at
        except msgspec.MsgspecError:  # not an object, or what msgspec refuses: as if it had none
            value = None
        if value is None:
            return True, ""
        return False, value if isinstance(value, str) else msgspec.json.encode(value).decode()

    return sorted(group, key=key)


def batch_by_ctid(
    conn: psycopg.Connection, keys: psycopg.Cursor[Any]
) -> list[tuple[str, str, str, datetime]]:
    """The next :data:`READ_BATCH` versions of the sorted ``keys`` (ctids), in their order (one
    TID probe each, in the snapshot the keys were sorted in)."""
    ctids = [r[0] for r in keys.fetchmany(READ_BATCH)]
    if not ctids:
        return []
    rows: list[tuple[str, str, str, datetime]] = conn.execute(
        "SELECT r.payload, r.payload_hash, r.source_id, r.fetched_at"
        " FROM unnest(%b::text[]::tid[]) WITH ORDINALITY AS k(row_id, n) JOIN staging.raw_record r ON r.ctid = k.row_id"
        " ORDER BY k.n",
        (ctids,),
    ).fetchall()
    if len(rows) != len(ctids):  # cannot happen in one snapshot; never judge a run short
        raise RuntimeError(f"{len(ctids) - len(rows)} staged versions vanished from the reader's snapshot")
    return rows


#: Staged versions per fetch of :func:`staged`.
READ_BATCH = 5000
