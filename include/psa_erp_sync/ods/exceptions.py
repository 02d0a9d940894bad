"""Exception queue repository: quarantined records, dead letters and other items needing an owner.

One row per (kind, record, reason); a repeat sighting bumps ``occurrences`` and ``last_seen``
instead of adding a row, so the queue never grows by re-running a task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from psa_erp_sync.ods import arrays


@dataclass(frozen=True)
class Item:
    kind: str
    domain: str
    source_system: str
    record_type: str
    source_id: str
    reason_code: str
    owner: str
    source_version: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    legal_entity: str | None = None


_INSERT_ITEM = """
INSERT INTO exceptions.item AS e (kind, domain, source_system, record_type, source_id, source_version,
                                  reason_code, detail, legal_entity, owner, last_run_id)
"""
_UPSERT_ITEM = """
ON CONFLICT (kind, source_system, record_type, source_id, reason_code) DO UPDATE SET
    source_version = EXCLUDED.source_version, detail = EXCLUDED.detail,
    legal_entity = EXCLUDED.legal_entity, owner = EXCLUDED.owner,
    status = CASE WHEN e.status = 'ignored' THEN e.status ELSE 'open' END,
    last_seen = now(),
    occurrences = e.occurrences + CASE WHEN e.last_run_id IS DISTINCT FROM EXCLUDED.last_run_id THEN 1 ELSE 0 END,
    last_run_id = EXCLUDED.last_run_id
"""
#: :func:`quarantine_bulk`'s rows: the items' fields as arrays, in the items' order (``n``).
_ITEM_ARRAYS = """
SELECT v.kind, v.domain, v.source_system, v.record_type, v.source_id, v.source_version, v.reason_code,
       v.detail, v.legal_entity, v.owner, %(run_id)s
FROM unnest(%(kind)b::text[], %(domain)b::text[], %(system)b::text[], %(type)b::text[], %(id)b::text[],
            %(version)b::text[], %(reason)b::text[], %(detail)b::jsonb[], %(entity)b::text[], %(owner)b::text[])
     WITH ORDINALITY AS v(kind, domain, source_system, record_type, source_id, source_version, reason_code,
                          detail, legal_entity, owner, n)
ORDER BY v.n
"""


def quarantine_many(conn: psycopg.Connection, items: Sequence[Item], *, run_id: str) -> int:
    """Upsert items as open exceptions; returns how many were written."""
    if not items:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            f"{_INSERT_ITEM} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) {_UPSERT_ITEM}",
            [
                (
                    i.kind,
                    i.domain,
                    i.source_system,
                    i.record_type,
                    i.source_id,
                    i.source_version,
                    i.reason_code,
                    Jsonb(i.detail),
                    i.legal_entity,
                    i.owner,
                    run_id,
                )
                for i in items
            ],
        )
    return len(items)


def quarantine_bulk(conn: psycopg.Connection, items: Sequence[Item], *, run_id: str) -> int:
    """:func:`quarantine_many` in one statement: the same rows, the same ids in the same order.

    ``executemany`` runs one ``INSERT ... ON CONFLICT`` per item (validation's writer sends a few
    hundred a chunk on its critical path); here the items arrive as arrays and are inserted in
    their order, so each takes its id from the sequence as it did. Items that repeat a key
    (kind, source system, record type, source id, reason) go through :func:`quarantine_many`: one
    statement cannot update a row it inserted, and the second sighting's id drawn from the sequence
    would be missing. Works in a pipeline (it reads no result)."""
    if not items:
        return 0
    if len({(i.kind, i.source_system, i.record_type, i.source_id, i.reason_code) for i in items}) < len(
        items
    ):
        return quarantine_many(conn, items, run_id=run_id)
    conn.execute(
        f"{_INSERT_ITEM} {_ITEM_ARRAYS} {_UPSERT_ITEM}",
        {
            "kind": [i.kind for i in items],
            "domain": [i.domain for i in items],
            "system": [i.source_system for i in items],
            "type": [i.record_type for i in items],
            "id": [i.source_id for i in items],
            "version": [i.source_version for i in items],
            "reason": [i.reason_code for i in items],
            "detail": [Jsonb(i.detail) for i in items],
            "entity": [i.legal_entity for i in items],
            "owner": [i.owner for i in items],
            "run_id": run_id,
        },
    )
    return len(items)


def resolve_for(
    conn: psycopg.Connection,
    *,
    source_system: str,
    record_type: str,
    source_ids: Sequence[str],
    kind: str,
    reason_code: str | None = None,
) -> int:
    """Close open items of these records (they passed now), of one reason only when ``reason_code``
    is given (other checks own the others); returns how many were closed.

    One probe of the item's unique key per source id, whatever the statistics say: a filter
    ``source_id = ANY(ids)`` over the open items compared every item with every id (validation
    calls this per chunk of 5,000 while its own items accumulate: quadratic in the month)."""
    cur = resolving_for(
        conn,
        source_system=source_system,
        record_type=record_type,
        source_ids=source_ids,
        kind=kind,
        reason_code=reason_code,
    )
    return cur.rowcount if cur is not None else 0


def resolving_for(
    conn: psycopg.Connection,
    *,
    source_system: str,
    record_type: str,
    source_ids: Sequence[str],
    kind: str,
    reason_code: str | None = None,
) -> psycopg.Cursor[Any] | None:
    """:func:`resolve_for`'s statement sent; its cursor (None: no ids), whose ``rowcount`` is the
    items closed once the result arrived: in a pipeline, after the pipeline's sync."""
    if not source_ids:
        return None
    return conn.execute(
        resolve_for_sql(by_reason=reason_code is not None),
        {
            "ids": arrays.text_array(source_ids),
            "kind": kind,
            "system": source_system,
            "type": record_type,
            "reason": reason_code,
        },
    )


def resolve_for_sql(*, by_reason: bool) -> str:
    """The statement of :func:`resolve_for` (parameters ``ids``, ``kind``, ``system``, ``type``
    and, ``by_reason``, ``reason``): each id probes the unique key (``OFFSET 0`` keeps the subquery
    per id), and the items found are updated by primary key, checked as open there.

    The probe has no ``status`` condition: with it, the partial index of open items
    (``item_open_idx``) matched the probe too, and while ``exceptions.item`` looked empty to the
    planner (a new or truncated queue filling up in the same run) it scanned that whole index per
    id (0.2-2 s a chunk of 5,000 as the run's items accumulated: quadratic again). The ids go as a
    binary array (``%(ids)b``): a text one is quoted element by element in Python.

    Every id lies between the smallest and the largest of the array (in the column's collation):
    when the queue holds no item of the kind, system and record type in that range (validation's
    chunks of a new month: its own items lie below each chunk's ids, and it sends this before
    the chunk's own items), none of the ids has one. That range's one probe of the unique key (the
    first source id at or above the smallest, at most the largest) is uncorrelated, a one-time
    filter evaluated before any id: it answers for the 5,000 probes of a chunk (~2 us of
    PostgreSQL's CPU each), which run only when the range holds an item (as ``_present_sql`` of
    :mod:`psa_erp_sync.validation.time_expense`)."""
    reason = " AND i.reason_code = %(reason)s" if by_reason else ""
    return (
        "UPDATE exceptions.item e SET status = 'resolved', last_seen = now()"
        " WHERE e.status = 'open' AND e.id = ANY(ARRAY("
        "  SELECT o.id FROM unnest(%(ids)b::text[]) AS k(source_id) CROSS JOIN LATERAL ("
        "   SELECT i.id FROM exceptions.item i WHERE i.kind = %(kind)s AND i.source_system = %(system)s"
        f"   AND i.record_type = %(type)s AND i.source_id = k.source_id{reason} OFFSET 0) o"
        "  WHERE (SELECT r.source_id FROM exceptions.item r WHERE r.kind = %(kind)s"
        "   AND r.source_system = %(system)s AND r.record_type = %(type)s"
        "   AND r.source_id >= (SELECT min(x) FROM unnest(%(ids)b::text[]) x) ORDER BY r.source_id LIMIT 1)"
        "   <= (SELECT max(x) FROM unnest(%(ids)b::text[]) x)))"
    )


def resolve_settled(conn: psycopg.Connection, *, kind: str, record_type: str) -> int:
    """Open dead letters and parked items of records whose latest posting of ``record_type`` is now
    confirmed (or resolved): nothing is left for the owner. ``kind`` is the items' record type (the
    canonical kind, e.g. ``time_entry``). During a parallel run (``shadow`` postings to a second ERP)
    the record's own lane must be settled and its shadow lane not refused or parked."""
    cur = conn.execute(
        """
        UPDATE exceptions.item e SET status = 'resolved', last_seen = now()
        WHERE e.status = 'open' AND e.kind IN ('dead_letter', 'parked') AND e.record_type = %(kind)s
          AND EXISTS (
              SELECT 1 FROM ledger.posting p WHERE p.record_type = %(rt)s AND p.source_system = e.source_system
                AND p.source_id = e.source_id AND p.state IN ('confirmed', 'resolved') AND NOT p.shadow
                AND p.seq = (SELECT max(seq) FROM ledger.posting m WHERE m.record_type = %(rt)s
                             AND m.source_system = e.source_system AND m.source_id = e.source_id
                             AND NOT m.shadow))
          AND NOT EXISTS (
              SELECT 1 FROM ledger.posting s WHERE s.record_type = %(rt)s AND s.source_system = e.source_system
                AND s.source_id = e.source_id AND s.shadow AND s.state IN ('rejected', 'parked')
                AND s.seq = (SELECT max(seq) FROM ledger.posting m WHERE m.record_type = %(rt)s
                             AND m.source_system = e.source_system AND m.source_id = e.source_id AND m.shadow))
        """,
        {"kind": kind, "rt": record_type},
    )
    return cur.rowcount


def resolve_not_listed(
    conn: psycopg.Connection, *, kind: str, reason_code: str, domain: str, current: Sequence[tuple[str, str]]
) -> int:
    """Close the open items of one kind, reason and domain whose (record type, source id) is not in
    ``current`` (what this run found again stays open)."""
    cur = conn.execute(
        """
        UPDATE exceptions.item SET status = 'resolved', last_seen = now()
        WHERE kind = %s AND reason_code = %s AND domain = %s AND status = 'open'
          AND (record_type, source_id) NOT IN (SELECT * FROM unnest(%s::text[], %s::text[]))
        """,
        (kind, reason_code, domain, [c[0] for c in current], [c[1] for c in current]),
    )
    return cur.rowcount


def close_reasons_not_in(
    conn: psycopg.Connection,
    *,
    kind: str,
    source_system: str,
    record_type: str,
    verdicts: Sequence[tuple[str, Sequence[str]]],
) -> int:
    """A record's newest verdict (source id, its reason codes) replaces older ones: close its open
    items whose reason is none of the verdict's."""
    cur = conn.execute(
        """
        UPDATE exceptions.item e SET status = 'resolved', last_seen = now()
        FROM unnest(%s::text[], %s::text[]) AS v(source_id, reasons)
        WHERE e.kind = %s AND e.source_system = %s AND e.record_type = %s AND e.status = 'open'
          AND e.source_id = v.source_id
          AND NOT (e.reason_code = ANY(string_to_array(v.reasons, ',')))
        """,
        ([v[0] for v in verdicts], [",".join(v[1]) for v in verdicts], kind, source_system, record_type),
    )
    return cur.rowcount


def mark_replayed(conn: psycopg.Connection, ids: Sequence[int], *, run_id: str) -> int:
    """Items whose postings a dead-letter replay released: ``replayed`` by this run."""
    cur = conn.execute(
        "UPDATE exceptions.item SET status = 'replayed', last_seen = now(), last_run_id = %s WHERE id = ANY(%s)",
        (run_id, list(ids)),
    )
    return cur.rowcount


def open_summary(conn: psycopg.Connection) -> list[tuple[str, str, str, int]]:
    """Open items grouped by cause: (kind, reason code, owner, count), largest first."""
    return [
        (kind, reason, owner, int(n))
        for kind, reason, owner, n in conn.execute(
            "SELECT kind, reason_code, owner, count(*) FROM exceptions.item WHERE status = 'open'"
            " GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3"
        )
    ]


def close_other_reasons(
    conn: psycopg.Connection,
    *,
    kind: str,
    source_system: str,
    record_type: str,
    verdicts: Sequence[tuple[str, str]],
) -> int:
    """A record's newest verdict replaces older ones: close its open items of other reasons."""
    if not verdicts:
        return 0
    cur = conn.execute(
        """
        UPDATE exceptions.item e SET status = 'resolved', last_seen = now()
        FROM unnest(%s::text[], %s::text[]) AS v(source_id, reason_code)
        WHERE e.kind = %s AND e.source_system = %s AND e.record_type = %s AND e.status = 'open'
          AND e.source_id = v.source_id AND e.reason_code <> v.reason_code
        """,
        ([v[0] for v in verdicts], [v[1] for v in verdicts], kind, source_system, record_type),
    )
    return cur.rowcount


@dataclass(frozen=True)
class Unnotified:
    """An open exception item not yet announced to its owner, with the amount at stake when the
    record is known (canonical time or expense entry, or ``detail.amount_minor``)."""

    id: int
    owner: str
    kind: str
    reason_code: str
    record_type: str
    legal_entity: str | None
    amount_minor: int | None
    currency: str | None


def lock_unnotified(conn: psycopg.Connection) -> list[Unnotified]:
    """Open items never announced, locked until the caller's transaction ends (a concurrent
    digest skips them, so no item is announced twice), ordered by owner."""
    rows = conn.execute(
        """
        SELECT i.id, i.owner, i.kind, i.reason_code, i.record_type, i.legal_entity,
               COALESCE(t.amount_minor, x.amount_minor,
                        CASE WHEN i.detail->>'amount_minor' ~ '^-?[0-9]{1,18}$'
                             THEN (i.detail->>'amount_minor')::bigint END),
               COALESCE(t.currency, x.currency,
                        CASE WHEN i.detail->>'currency' ~ '^[A-Z]{3}$' THEN i.detail->>'currency' END)
        FROM exceptions.item i
        LEFT JOIN canonical.time_entry t
               ON i.record_type = 'time_entry' AND t.source_system = i.source_system AND t.source_id = i.source_id
        LEFT JOIN canonical.expense_entry x
               ON i.record_type = 'expense_entry' AND x.source_system = i.source_system AND x.source_id = i.source_id
        WHERE i.status = 'open' AND i.notified_at IS NULL
        ORDER BY i.owner, i.id
        FOR UPDATE OF i SKIP LOCKED
        """
    ).fetchall()
    return [Unnotified(*row) for row in rows]


def mark_notified(
    conn: psycopg.Connection,
    *,
    owner: str,
    item_ids: Sequence[int],
    dag_id: str,
    run_id: str,
    channels: Sequence[str],
    summary: dict[str, Any],
) -> None:
    """Record a sent digest and mark its items announced (same transaction as the lock)."""
    conn.execute(
        "UPDATE exceptions.item SET notified_at = now() WHERE id = ANY(%s) AND notified_at IS NULL",
        (list(item_ids),),
    )
    conn.execute(
        "INSERT INTO exceptions.notification (owner, dag_id, run_id, channels, items, summary)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (owner, dag_id, run_id, list(channels), len(item_ids), Jsonb(summary)),
    )
