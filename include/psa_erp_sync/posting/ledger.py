"""The posting ledger: one row per intended ERP posting, and every attempt to send it.

States::

    pending -> sent -> confirmed                 the ERP answered with the record's internal id
                    -> rejected                  the ERP refused it (validation): a dead letter
                    -> ambiguous -> resolved     no answer; read back by external id decided it
                                 -> pending      read back found nothing: safe to send again
    pending -> parked                            closed period and the entity's policy is "park"
    pending -> superseded                        a newer approved version replaced it before sending
    rejected | parked -> pending                 replay, after master data or a mapping was fixed
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

Action = Literal["post", "adjust", "reverse"]
DONE = ("confirmed", "resolved")
UNFINISHED = ("pending", "sent", "ambiguous")


def idempotency_key(
    record_type: str, source_system: str, source_id: str, version: str, action: str, seq: int
) -> str:
    """Deterministic from the record's identity, its approved version, the action and its sequence
    number for that record. Never from try numbers, logical dates or the wall clock."""
    text = "|".join((record_type, source_system, source_id, version, action, str(seq)))
    return hashlib.sha256(text.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class Posting:
    idempotency_key: str
    record_type: str
    source_system: str
    source_id: str
    source_version: str
    external_id: str
    action: Action
    state: str
    payload: dict[str, Any]
    legal_entity: str | None = None
    period: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    attempts: int = 0


def _posting(row: dict[str, Any]) -> Posting:
    return Posting(
        idempotency_key=row["idempotency_key"],
        record_type=row["record_type"],
        source_system=row["source_system"],
        source_id=row["source_id"],
        source_version=row["source_version"],
        external_id=row["external_id"],
        action=row["action"],
        state=row["state"],
        payload=row["payload"],
        legal_entity=row["legal_entity"],
        period=row["period"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        attempts=row["attempts"],
    )


_COLUMNS = (
    "idempotency_key, record_type, source_system, source_id, source_version, external_id, action, state,"
    " payload, legal_entity, period, amount_minor, currency, attempts"
)


def insert_planned(conn: psycopg.Connection, postings: Sequence[Posting]) -> int:
    """Insert pending (or parked) rows; an existing key is left alone. Returns rows inserted."""
    if not postings:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO ledger.posting (idempotency_key, record_type, source_system, source_id, source_version,"
            " external_id, action, state, payload, legal_entity, period, amount_minor, currency)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING",
            [
                (
                    p.idempotency_key, p.record_type, p.source_system, p.source_id, p.source_version, p.external_id,
                    p.action, p.state, Jsonb(p.payload), p.legal_entity, p.period, p.amount_minor, p.currency,
                )
                for p in postings
            ],
        )  # fmt: skip
        return cur.rowcount if cur.rowcount >= 0 else len(postings)


def in_state(conn: psycopg.Connection, record_type: str, states: Sequence[str]) -> list[Posting]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM ledger.posting WHERE record_type = %s AND state = ANY(%s) ORDER BY idempotency_key",
            (record_type, list(states)),
        )
        return [_posting(r) for r in cur.fetchall()]


def mark_sent(
    conn: psycopg.Connection,
    postings: Sequence[Posting],
    *,
    batch_key: str | None,
    dag_run_id: str | None,
    task_try: int | None,
) -> None:
    """Before the ERP is called: state -> sent and an attempt row per posting, committed first."""
    keys = [p.idempotency_key for p in postings]
    conn.execute(
        "UPDATE ledger.posting SET state = 'sent', attempts = attempts + 1, updated_at = now() WHERE idempotency_key = ANY(%s)",
        (keys,),
    )
    conn.execute(
        "INSERT INTO ledger.attempt (idempotency_key, attempt_no, batch_key, dag_run_id, task_try)"
        " SELECT idempotency_key, attempts, %s, %s, %s FROM ledger.posting WHERE idempotency_key = ANY(%s)",
        (batch_key, dag_run_id, task_try, keys),
    )


def finish(
    conn: psycopg.Connection,
    key: str,
    *,
    state: str,
    outcome: str,
    erp_internal_id: str | None = None,
    http_status: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record the outcome of the latest attempt and move the posting to ``state``."""
    conn.execute(
        "UPDATE ledger.posting SET state = %s, erp_internal_id = coalesce(%s, erp_internal_id),"
        " last_error = CASE WHEN %s IN ('rejected', 'ambiguous') THEN %s ELSE last_error END, updated_at = now()"
        " WHERE idempotency_key = %s",
        (state, erp_internal_id, state, Jsonb(detail) if detail else None, key),
    )
    conn.execute(
        "UPDATE ledger.attempt SET finished_at = now(), outcome = %s, http_status = %s, detail = %s"
        " WHERE id = (SELECT max(id) FROM ledger.attempt WHERE idempotency_key = %s)",
        (outcome, http_status, Jsonb(detail) if detail else None, key),
    )


def finish_many(
    conn: psycopg.Connection, outcomes: Sequence[tuple[str, str, str, str | None, int | None]]
) -> None:
    """:func:`finish` for many postings at once: (key, state, outcome, ERP internal id, HTTP status)."""
    if not outcomes:
        return
    keys = [o[0] for o in outcomes]
    conn.execute(
        """
        UPDATE ledger.posting p SET state = o.state, erp_internal_id = coalesce(o.internal_id, p.erp_internal_id),
               updated_at = now()
        FROM unnest(%s::text[], %s::text[], %s::text[]) AS o(key, state, internal_id)
        WHERE p.idempotency_key = o.key
        """,
        (keys, [o[1] for o in outcomes], [o[3] for o in outcomes]),
    )
    conn.execute(
        """
        UPDATE ledger.attempt a SET finished_at = now(), outcome = o.outcome, http_status = o.status
        FROM unnest(%s::text[], %s::text[], %s::int[]) AS o(key, outcome, status)
        WHERE a.id = (SELECT max(id) FROM ledger.attempt m WHERE m.idempotency_key = o.key)
        """,
        (keys, [o[2] for o in outcomes], [o[4] for o in outcomes]),
    )


def set_state(conn: psycopg.Connection, keys: Sequence[str], state: str, *, only_from: Sequence[str]) -> int:
    cur = conn.execute(
        "UPDATE ledger.posting SET state = %s, updated_at = now() WHERE idempotency_key = ANY(%s) AND state = ANY(%s)",
        (state, list(keys), list(only_from)),
    )
    return cur.rowcount


def counts(conn: psycopg.Connection, record_type: str | None = None) -> dict[str, int]:
    where = "WHERE record_type = %s" if record_type else ""
    params = (record_type,) if record_type else ()
    return {
        s: int(n)
        for s, n in conn.execute(f"SELECT state, count(*) FROM ledger.posting {where} GROUP BY 1", params)
    }
