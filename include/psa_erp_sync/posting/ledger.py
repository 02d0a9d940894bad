"""The posting ledger: one row per intended ERP posting, and every attempt to send it.

States::

    pending -> sent -> confirmed                 the ERP answered with the record's internal id
                    -> rejected                  the ERP refused it (validation): a dead letter
                    -> ambiguous -> resolved     no answer; read back by external id decided it
                                 -> pending      read back found nothing: safe to send again
    pending -> parked                            closed period and the entity's policy is "park"
    pending -> superseded                        a newer approved version replaced it before sending
    rejected | parked -> superseded              replay, after master data or a mapping was fixed

Every transition names the states it may leave (:data:`ALLOWED_FROM`, and ``pending`` only for
:func:`mark_sent`): a transition asked of a posting in any other state changes nothing and is
logged. An outcome also completes only the attempt that is still the posting's latest, so a pass
that lost its lock cannot overwrite what a newer attempt decided.

A correcting record (``corrects`` set, migration 0016) is a row like any other: a journal entry
with the difference of a correction of a record held in a closed period (docs/posting.md "Closed
periods"). What the ERP holds for a PSA entry is its record plus its confirmed corrections
(:data:`HELD_COLUMNS`, :class:`Held`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import msgspec
import psycopg
from psycopg.rows import dict_row

log = logging.getLogger(__name__)

Action = Literal["post", "adjust", "reverse"]
#: The ERP record type of a correcting record (docs/posting.md "Closed periods"): NetSuite keeps a
#: transaction in a closed period unchangeable and a time entry's hours positive, so the
#: difference of a correction is booked as a journal entry in the first open period.
CORRECTION_TYPE = "journalentry"
DONE = ("confirmed", "resolved")
#: What marks a parallel run's shadow posting in the ERP (:attr:`Posting.shadow`): appended to its
#: external id and to the source id its memo names (``psa:<source id>-shadow``).
SHADOW_SUFFIX = "-shadow"
UNFINISHED = ("pending", "sent", "ambiguous")
# The states an outcome (:func:`finish_many`) may move a posting out of, per target state.
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "confirmed": ("sent",),
    "rejected": ("sent",),
    "ambiguous": ("sent",),
    "resolved": ("sent", "ambiguous"),
    "pending": ("sent", "ambiguous"),
}


def idempotency_key(
    record_type: str, source_system: str, source_id: str, version: str, action: str, seq: int
) -> str:
    """Deterministic from the record's identity, its approved version, the action and its sequence
    number for that record. Never from try numbers, logical dates or the wall clock."""
    text = "|".join((record_type, source_system, source_id, version, action, str(seq)))
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def is_shadow(name: str) -> bool:
    """Whether an ERP record's external id or source id (read back from an ERP) names a parallel
    run's shadow posting (:data:`SHADOW_SUFFIX`): reconciled by the parallel-run check only, never
    as the record's own posting nor as an unexpected record of its ERP."""
    return name.endswith(SHADOW_SUFFIX)


def shadow_key(key: str, erp: str) -> str:
    """The key of a parallel run's shadow posting to ``erp`` (:attr:`Posting.shadow`) whose own
    lane's key would be ``key``: the same action of the same version has a key per target ERP."""
    return hashlib.sha256(f"{key}|shadow:{erp}".encode()).hexdigest()[:40]


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
    #: For a correcting record (a journal entry in an open period, see :data:`CORRECTION_TYPE`):
    #: the external id of the ERP record it corrects. None for the record itself.
    corrects: str | None = None
    #: Both amounts (migration 0023): the transaction amount above, and the amount in the legal
    #: entity's functional currency at ``fx_rate`` (the ERP's rate the payload carries as
    #: ``exchangeRate``). None for reversals and correcting journals.
    functional_amount_minor: int | None = None
    functional_currency: str | None = None
    fx_rate: Decimal | None = None
    #: Where it goes (migration 0026, :mod:`psa_erp_sync.routing`): the ERP, its account (None: the
    #: ERP connection's own) and the version of ``config/erp_routing.yaml`` that routed it.
    target_erp: str = "netsuite"
    erp_account: str | None = None
    route_version: int | None = None
    #: A parallel run's shadow posting (migration 0032): the record's copy to the secondary ERP of
    #: the window. Its own lane: planned, sequenced and read back apart from the record's own rows.
    shadow: bool = False

    @property
    def lane_source(self) -> str:
        """The source id as the ERP record names it: a shadow's carries :data:`SHADOW_SUFFIX`, so
        a record's shadow and its own posting never find each other in one ERP."""
        return self.source_id + SHADOW_SUFFIX if self.shadow else self.source_id

    @property
    def erp_type(self) -> str:
        """The ERP record type this posting writes: the record's own, or the correcting journal."""
        return CORRECTION_TYPE if self.corrects else self.record_type

    @property
    def deletes(self) -> bool:
        """A reversal of the record itself (a DELETE); a correcting reversal is a journal upsert."""
        return self.action == "reverse" and not self.corrects


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
        # A row without a payload row (never written by insert_planned) reads as the empty payload.
        payload=row["payload"] if row["payload"] is not None else {},
        legal_entity=row["legal_entity"],
        period=row["period"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        attempts=row["attempts"],
        corrects=row["corrects"],
        functional_amount_minor=row["functional_amount_minor"],
        functional_currency=row["functional_currency"],
        fx_rate=row["fx_rate"],
        target_erp=row["target_erp"],
        erp_account=row["erp_account"],
        route_version=row["route_version"],
        shadow=row["shadow"],
    )


_COLUMNS = (
    "idempotency_key, record_type, source_system, source_id, source_version, external_id, action, state,"
    " payload, legal_entity, period, amount_minor, currency, attempts, corrects,"
    " functional_amount_minor, functional_currency, fx_rate, target_erp, erp_account, route_version, shadow"
)


@dataclass(frozen=True)
class Target:
    """One ERP account a posting pass works for: the rows routed to ``erp`` and ``account``, and
    the rows of ``erp`` routed to no particular account (``erp_account`` NULL: the connection's own)."""

    erp: str
    account: str
    # A pass scoped to some records (a stream burst's): only their rows. None: every record's.
    source_ids: frozenset[str] | None = None

    def sql(self) -> tuple[str, tuple[Any, ...]]:
        """A WHERE fragment selecting this target's ledger rows, and its parameters."""
        where = " AND target_erp = %s AND (erp_account IS NULL OR erp_account = %s)"
        if self.source_ids is None:
            return where, (self.erp, self.account)
        return where + " AND source_id = ANY(%s)", (self.erp, self.account, sorted(self.source_ids))

    def holds(self, posting: Posting) -> bool:
        return (
            posting.target_erp == self.erp
            and posting.erp_account in (None, self.account)
            and (self.source_ids is None or posting.source_id in self.source_ids)
        )


def _where(target: Target | None) -> tuple[str, tuple[Any, ...]]:
    return target.sql() if target is not None else ("", ())


def insert_planned(conn: psycopg.Connection, postings: Sequence[Posting]) -> set[str]:
    """Insert pending (or parked) rows; an existing key is left alone. Returns the keys inserted.

    One statement over arrays for the postings (in list order, so ``seq`` follows the order of
    ``postings``), then one for the payloads of those it inserted (a key given twice: its first
    posting's), in one transaction (a savepoint inside the caller's). Two statements, not one: a
    single statement carried every payload through a materialised CTE and two sorts, which spilled
    to disk at the planner's chunk sizes (a third of the insert's time).
    """
    if not postings:
        return set()
    with conn.transaction():
        rows = conn.execute(_INSERT_POSTINGS, _posting_columns(postings)).fetchall()
        inserted = {key for (key,) in rows}
        keys: list[str] = []
        payloads: list[str] = []
        written: set[str] = set()
        for p in postings:
            if p.idempotency_key in inserted and p.idempotency_key not in written:
                written.add(p.idempotency_key)
                keys.append(p.idempotency_key)
                payloads.append(_json_text(p.payload))
        # Written once, with its posting (migration 0042): state updates never copy it.
        conn.execute(
            "INSERT INTO ledger.posting_payload (idempotency_key, payload)"
            " SELECT k, pl::jsonb FROM unnest(%b::text[], %b::text[]) AS u(k, pl)",
            (keys, payloads),
        )
    return inserted


# %b: binary arrays. As text, psycopg escapes every quote of every value by a regular expression.
_INSERT_POSTINGS = """
    INSERT INTO ledger.posting (idempotency_key, record_type, source_system, source_id, source_version,
                                external_id, action, state, legal_entity, period, amount_minor, currency,
                                corrects, functional_amount_minor, functional_currency, fx_rate,
                                target_erp, erp_account, route_version, shadow)
    SELECT k, rt, ss, sid, sv, ext, act, st, le, per, amt, cur, cor, famt, fcur, fx::numeric, te, ea, rv, sh
    FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],
                %b::text[], %b::text[], %b::bigint[], %b::text[], %b::text[], %b::bigint[], %b::text[], %b::text[],
                %b::text[], %b::text[], %b::int[], %b::bool[])
         WITH ORDINALITY AS u(k, rt, ss, sid, sv, ext, act, st, le, per, amt, cur, cor, famt, fcur, fx,
                              te, ea, rv, sh, ord)
    ORDER BY ord
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING idempotency_key
"""


def _posting_columns(postings: Sequence[Posting]) -> tuple[list[Any], ...]:
    """The columns of :data:`_INSERT_POSTINGS`, in its order."""
    return (
        [p.idempotency_key for p in postings],
        [p.record_type for p in postings],
        [p.source_system for p in postings],
        [p.source_id for p in postings],
        [p.source_version for p in postings],
        [p.external_id for p in postings],
        [p.action for p in postings],
        [p.state for p in postings],
        [p.legal_entity for p in postings],
        [p.period for p in postings],
        [p.amount_minor for p in postings],
        [p.currency for p in postings],
        [p.corrects for p in postings],
        [p.functional_amount_minor for p in postings],
        [p.functional_currency for p in postings],
        [None if p.fx_rate is None else str(p.fx_rate) for p in postings],
        [p.target_erp for p in postings],
        [p.erp_account for p in postings],
        [p.route_version for p in postings],
        [p.shadow for p in postings],
    )


#: What Jsonb() would send, several times faster; str() for the odd Decimal or date. One encoder
#: for the process (``msgspec.json.encode`` sets one up per call).
_JSON = msgspec.json.Encoder(enc_hook=str)


def _json_text(value: Any) -> str:
    return _JSON.encode(value).decode()


#: The states whose postings ledger.posting_open lists (migration 0048): the unfinished ones and
#: ``parked``. The readers by state below read that table when every state asked is one of these.
OPEN = (*UNFINISHED, "parked")

# The open postings of a record type, each joined to its ledger row by primary key. LATERAL with
# OFFSET 0 keeps the join a probe per open posting whatever the statistics say (a hash join would
# read the whole ledger of every month again, as a scan by state did before 0048).
_OPEN_ROWS = """
    ledger.posting_open o CROSS JOIN LATERAL (
        SELECT {columns} FROM ledger.posting p WHERE p.idempotency_key = o.idempotency_key OFFSET 0
    ) p
"""


def _opens(states: Sequence[str]) -> bool:
    return bool(states) and set(states) <= set(OPEN)


def in_state(
    conn: psycopg.Connection, record_type: str, states: Sequence[str], *, target: Target | None = None
) -> list[Posting]:
    """Every posting of ``record_type`` in ``states``, in key order. Open states (:data:`OPEN`) are
    read through ledger.posting_open: the cost follows what is open, not the ledger's size."""
    if not _opens(states):
        return _scan_in_state(conn, record_type, states, target=target)
    where, params = _where(target)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM (SELECT p.* FROM {_OPEN_ROWS.format(columns='*')}"
            f"    WHERE o.record_type = %s AND state = ANY(%s){where}) p"
            " LEFT JOIN ledger.posting_payload pp USING (idempotency_key) ORDER BY idempotency_key",
            (record_type, list(states), *params),
        )
        return [_posting(r) for r in cur.fetchall()]


def _scan_in_state(
    conn: psycopg.Connection, record_type: str, states: Sequence[str], *, target: Target | None = None
) -> list[Posting]:
    where, params = _where(target)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM ledger.posting_full WHERE record_type = %s AND state = ANY(%s){where}"
            " ORDER BY idempotency_key",
            (record_type, list(states), *params),
        )
        return [_posting(r) for r in cur.fetchall()]


def page_in_state(
    conn: psycopg.Connection,
    record_type: str,
    states: Sequence[str],
    *,
    reversals: bool,
    after: str | None,
    limit: int,
    target: Target | None = None,
) -> list[Posting]:
    """Up to ``limit`` postings in ``states`` with a key after ``after``, in key order: reversals
    (DELETEs of the record itself) or the other postings (upserts, correcting journals). Paging
    through these keeps memory bounded by one page. Open states walk ledger.posting_open in key
    order (its primary key), so a page costs what it returns plus the open postings it skips."""
    deletes = "(action = 'reverse' AND corrects IS NULL)"
    which = deletes if reversals else f"NOT {deletes}"
    where, params = _where(target)
    if _opens(states):
        sql = (
            f"SELECT {_COLUMNS} FROM (SELECT p.* FROM {_OPEN_ROWS.format(columns='*')}"
            f"    WHERE o.record_type = %s AND state = ANY(%s) AND {which}{where} AND o.idempotency_key > %s"
            "     ORDER BY o.idempotency_key LIMIT %s) p"
            " LEFT JOIN ledger.posting_payload pp USING (idempotency_key) ORDER BY idempotency_key"
        )
    else:
        sql = (
            f"SELECT {_COLUMNS} FROM ledger.posting_full WHERE record_type = %s AND state = ANY(%s)"
            f" AND {which}{where} AND idempotency_key > %s ORDER BY idempotency_key LIMIT %s"
        )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, (record_type, list(states), *params, after or "", limit))
        return [_posting(r) for r in cur.fetchall()]


def count_in_state(
    conn: psycopg.Connection, record_type: str, states: Sequence[str], *, target: Target | None = None
) -> int:
    if _opens(states):
        return sum(n for s, n in open_counts(conn, record_type, target=target).items() if s in states)
    where, params = _where(target)
    row = conn.execute(
        f"SELECT count(*) FROM ledger.posting WHERE record_type = %s AND state = ANY(%s){where}",
        (record_type, list(states), *params),
    ).fetchone()
    return int(row[0]) if row else 0


def open_counts(
    conn: psycopg.Connection, record_type: str, *, target: Target | None = None
) -> dict[str, int]:
    """The postings of ``record_type`` per open state (:data:`OPEN`; a state with none is absent),
    read through ledger.posting_open (migration 0048): what :func:`counts` says of those states,
    at a cost that follows the open postings, not the ledger."""
    where, params = _where(target)
    rows = conn.execute(
        f"SELECT state, count(*) FROM {_OPEN_ROWS.format(columns='state, target_erp, erp_account, source_id')}"
        f" WHERE o.record_type = %s{where} GROUP BY 1",
        (record_type, *params),
    ).fetchall()
    return {str(s): int(n) for s, n in rows}


def mark_sent(
    conn: psycopg.Connection,
    postings: Sequence[Posting],
    *,
    batch_key: str | None,
    dag_run_id: str | None,
    task_try: int | None,
) -> dict[str, int]:
    """Before the ERP is called: ``pending`` -> ``sent`` and an attempt row per posting, committed first.

    One statement. Returns the new attempt's id per idempotency key, so :func:`finish_many` can
    record the outcome by primary key. A posting no longer ``pending`` (superseded, confirmed, sent
    by another pass) is left alone and has no id in the result: the caller must not send it.
    """
    if not postings:
        return {}
    rows = conn.execute(
        """
        WITH sent AS (
            UPDATE ledger.posting SET state = 'sent', attempts = attempts + 1, updated_at = now()
            WHERE idempotency_key = ANY(%s) AND state = 'pending' RETURNING idempotency_key, attempts
        )
        INSERT INTO ledger.attempt (idempotency_key, attempt_no, batch_key, dag_run_id, task_try)
        SELECT idempotency_key, attempts, %s, %s, %s FROM sent
        RETURNING idempotency_key, id
        """,
        ([p.idempotency_key for p in postings], batch_key, dag_run_id, task_try),
    ).fetchall()
    if len(rows) < len(postings):
        log.warning(
            "mark_sent: %d of %d postings were no longer pending and were left alone (not sent)",
            len(postings) - len(rows),
            len(postings),
        )
    return {key: int(attempt_id) for key, attempt_id in rows}


def rekey_attempts(conn: psycopg.Connection, attempt_ids: Sequence[int], batch_key: str) -> None:
    """Name the batch actually sent on its attempt rows (after :func:`mark_sent` left some out)."""
    conn.execute(
        "UPDATE ledger.attempt SET batch_key = %s WHERE id = ANY(%s)", (batch_key, list(attempt_ids))
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
) -> bool:
    """Record the outcome of the latest attempt and move the posting to ``state`` (guarded as in
    :func:`finish_many`). Returns whether the posting moved."""
    moved = finish_many(conn, [(key, state, outcome, erp_internal_id, http_status)], details=[detail])
    return key in moved


# The id of a key's latest attempt (``mark_sent`` numbers attempts under the posting's row lock,
# so the highest attempt_no is the newest), by the (idempotency_key, attempt_no) index.
LATEST_ATTEMPT = (
    "SELECT m.id FROM ledger.attempt m WHERE m.idempotency_key = {key} ORDER BY m.attempt_no DESC LIMIT 1"
)


def finish_many(
    conn: psycopg.Connection,
    outcomes: Sequence[tuple[str, str, str, str | None, int | None]],
    *,
    details: Sequence[dict[str, Any] | None] | None = None,
    attempt_ids: Mapping[str, int] | None = None,
) -> set[str]:
    """Outcomes for many postings at once: (key, state, outcome, ERP internal id, HTTP status),
    with an optional ``detail`` per posting (same order), kept as ``last_error`` for ``rejected``
    and ``ambiguous``. Returns the keys whose posting moved.

    One statement. ``attempt_ids`` (from :func:`mark_sent`) name the attempt rows to complete;
    a key without one completes its latest attempt. Guards: the posting must be in a state
    :data:`ALLOWED_FROM` lists for the target, and a named attempt must still be its latest;
    otherwise neither the posting nor the attempt changes, and the skip is logged.
    """
    if not outcomes:
        return set()
    if details is not None and len(details) != len(outcomes):
        raise ValueError("one detail per outcome")
    unknown = {o[1] for o in outcomes} - set(ALLOWED_FROM)
    if unknown:
        raise ValueError(f"no ledger transition leads to {sorted(unknown)}")
    ids = attempt_ids or {}
    detail_values = [_json_text(d) if d else None for d in details] if details is not None else None
    # The latest attempt of a key without a known id is looked up key by key through the
    # (idempotency_key, attempt_no) index (MATERIALIZED): joining on a correlated max() made
    # PostgreSQL hash every attempt ever made, once per batch; and max(m.id) was planned as a
    # backward scan of the attempt primary key filtered by key (493 ms a key at 589k attempts).
    rows = conn.execute(
        """
        WITH o AS MATERIALIZED (
            SELECT u.key, u.state, u.internal_id, u.outcome, u.status, u.detail::jsonb AS detail,
                   string_to_array(u.allowed, ',') AS allowed, u.attempt_id IS NOT NULL AS named,
                   coalesce(u.attempt_id,
                            ("""
        + LATEST_ATTEMPT.format(key="u.key")
        + """)) AS attempt_id
            FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::int[], %b::text[], %b::bigint[], %b::text[])
                 AS u(key, state, internal_id, outcome, status, detail, attempt_id, allowed)
        ), moved AS (
            UPDATE ledger.posting p SET state = o.state, erp_internal_id = coalesce(o.internal_id, p.erp_internal_id),
                   last_error = CASE WHEN o.state IN ('rejected', 'ambiguous') THEN o.detail ELSE p.last_error END,
                   updated_at = now()
            FROM o WHERE p.idempotency_key = o.key AND p.state = ANY(o.allowed)
              AND (NOT o.named OR EXISTS (SELECT 1 FROM ledger.attempt l WHERE l.id = o.attempt_id
                                          AND l.idempotency_key = o.key AND l.attempt_no = p.attempts))
            RETURNING p.idempotency_key
        ), finished AS (
            UPDATE ledger.attempt a SET finished_at = now(), outcome = o.outcome, http_status = o.status, detail = o.detail
            FROM o JOIN moved ON moved.idempotency_key = o.key WHERE a.id = o.attempt_id
            RETURNING a.id
        )
        SELECT idempotency_key FROM moved
        """,
        (
            [o[0] for o in outcomes],
            [o[1] for o in outcomes],
            [o[3] for o in outcomes],
            [o[2] for o in outcomes],
            [o[4] for o in outcomes],
            detail_values if detail_values is not None else [None] * len(outcomes),
            [ids.get(o[0]) for o in outcomes],
            [",".join(ALLOWED_FROM[o[1]]) for o in outcomes],
        ),
    ).fetchall()
    moved = {key for (key,) in rows}
    if len(moved) < len(outcomes):
        skipped = [o for o in outcomes if o[0] not in moved]
        log.warning(
            "ledger: %d of %d outcomes not applied (posting no longer in a state they may leave, or a newer"
            " attempt exists), e.g. %s -> %s",
            len(skipped),
            len(outcomes),
            skipped[0][0],
            skipped[0][1],
        )
    return moved


def set_state(conn: psycopg.Connection, keys: Sequence[str], state: str, *, only_from: Sequence[str]) -> int:
    """Move postings in one of ``only_from`` to ``state``; the others are left alone (logged)."""
    cur = conn.execute(
        "UPDATE ledger.posting SET state = %s, updated_at = now() WHERE idempotency_key = ANY(%s) AND state = ANY(%s)",
        (state, list(keys), list(only_from)),
    )
    if cur.rowcount < len(keys):
        log.warning(
            "ledger: %d of %d postings not moved to %s (not in %s)",
            len(keys) - cur.rowcount,
            len(keys),
            state,
            "/".join(only_from),
        )
    return cur.rowcount


def next_seqs(conn: psycopg.Connection, postings: Sequence[Posting]) -> dict[str, int]:
    """Per posting (by idempotency key), the sequence number of its record's next action: the
    number of ledger rows the record has in the posting's lane (its own, or its parallel-run
    shadow), as the planner counts it for a new key."""
    if not postings:
        return {}
    rows = conn.execute(
        """
        SELECT u.key, (SELECT count(*) FROM ledger.posting p WHERE p.record_type = u.rt
                         AND p.source_system = u.ss AND p.source_id = u.sid AND p.shadow = u.sh)
        FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::bool[]) AS u(key, rt, ss, sid, sh)
        """,
        (
            [p.idempotency_key for p in postings],
            [p.record_type for p in postings],
            [p.source_system for p in postings],
            [p.source_id for p in postings],
            [p.shadow for p in postings],
        ),
    ).fetchall()
    return {key: int(n) for key, n in rows}


_DONE_BASE = "state IN ('confirmed', 'resolved') AND corrects IS NULL"
_DONE_CORR = "state IN ('confirmed', 'resolved') AND corrects IS NOT NULL"
#: Aggregates over one PSA entry's ledger rows (``FROM ledger.posting ... GROUP BY source_system,
#: source_id``, the table not aliased): what the ERP holds for it per the ledger. The record itself
#: (its last confirmed row that is not a correction: ``base_key``, its payload read by
#: :data:`BASE_PAYLOAD` in the query around) and the sum of its confirmed correcting journals
#: (signed amount and hours; the hours from those rows' payloads only: FILTER is evaluated first).
#: ``corrections`` / ``corrected_*`` sum every ERP's correcting journals: right for a reader that
#: selects one ERP's rows (the reconciliation, ``target_erp = ...``). Across a cutover a record has
#: journals in the ERP it left (the one reversing it there) while the ERP it moved to holds it:
#: ``correction_erps`` / ``_amounts`` / ``_hours`` list them per journal, and :class:`Held` counts
#: only those of the ERP that holds the record itself (``base_target_erp``).
HELD_COLUMNS = f"""
    (array_agg(action ORDER BY seq DESC) FILTER (WHERE {_DONE_BASE}))[1] AS base_action,
    (array_agg(idempotency_key ORDER BY seq DESC) FILTER (WHERE {_DONE_BASE}))[1] AS base_key,
    (array_agg(external_id ORDER BY seq DESC) FILTER (WHERE {_DONE_BASE}))[1] AS base_external_id,
    (array_agg(amount_minor ORDER BY seq DESC) FILTER (WHERE {_DONE_BASE}))[1] AS base_amount,
    count(*) FILTER (WHERE {_DONE_CORR}) AS corrections,
    coalesce(sum(amount_minor) FILTER (WHERE {_DONE_CORR}), 0) AS corrected_amount,
    coalesce(sum((SELECT (pp.payload->>'custbody_psa_hours')::numeric FROM ledger.posting_payload pp
                  WHERE pp.idempotency_key = posting.idempotency_key)) FILTER (WHERE {_DONE_CORR}), 0) AS corrected_hours,
    (array_agg(target_erp ORDER BY seq DESC) FILTER (WHERE {_DONE_BASE}))[1] AS base_target_erp,
    (array_agg(erp_account ORDER BY seq DESC) FILTER (WHERE {_DONE_BASE}))[1] AS base_erp_account,
    (array_agg(route_version ORDER BY seq DESC) FILTER (WHERE {_DONE_BASE}))[1] AS base_route_version,
    array_agg(target_erp ORDER BY seq) FILTER (WHERE {_DONE_CORR}) AS correction_erps,
    array_agg(amount_minor ORDER BY seq) FILTER (WHERE {_DONE_CORR}) AS correction_amounts,
    array_agg(coalesce((SELECT (pp.payload->>'custbody_psa_hours')::numeric FROM ledger.posting_payload pp
                        WHERE pp.idempotency_key = posting.idempotency_key), 0) ORDER BY seq)
        FILTER (WHERE {_DONE_CORR}) AS correction_hours
"""
#: The payload of a :data:`HELD_COLUMNS` row's base record, in the query around it (by key: the
#: aggregate reads no payload, migration 0042).
BASE_PAYLOAD = "(SELECT pp.payload FROM ledger.posting_payload pp WHERE pp.idempotency_key = base_key)"


@dataclass(frozen=True)
class Held:
    """What the ERP holds for one PSA entry, per the ledger: the record itself (``base_*``, its
    last confirmed posting) plus its confirmed correcting journals, summed (``hours``,
    ``amount_minor``: the net the ERP holds for the entry)."""

    base_external_id: str | None
    base_payload: dict[str, Any] | None
    base_present: bool  # the record itself is in the ERP (last confirmed: post or adjust)
    corrections: int
    hours: Decimal
    amount_minor: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Held:
        """From :data:`HELD_COLUMNS`: the record's last confirmed posting plus the confirmed
        correcting journals **of the ERP holding it** (the held amount is kept per target ERP: a
        record moved to another ERP by ``reverse_and_repost`` leaves its old ERP's journals, the
        reversing one included, behind). Rows without the per-journal arrays sum every journal."""
        if "base_key" in row and "base_payload" not in row:
            # HELD_COLUMNS name the base record's key (migration 0042); without its payload the
            # base hours would silently read as 0.
            raise KeyError("base_payload: select ledger.BASE_PAYLOAD around ledger.HELD_COLUMNS")
        present = row.get("base_action") in ("post", "adjust")
        payload = row.get("base_payload")
        base_hours = Decimal(str(payload.get("hours") or 0)) if present and payload else Decimal(0)
        base_amount = int(row.get("base_amount") or 0) if present else 0
        count = int(row.get("corrections") or 0)
        hours = Decimal(str(row.get("corrected_hours") or 0))
        amount = int(row.get("corrected_amount") or 0)
        erps = row.get("correction_erps")
        if erps is not None and row.get("base_target_erp") is not None:
            mine = [
                i for i, erp in enumerate(erps) if erp == row["base_target_erp"]
            ]  # the holding ERP's journals only
            amounts, journal_hours = row.get("correction_amounts") or [], row.get("correction_hours") or []
            count = len(mine)
            hours = sum((Decimal(str(journal_hours[i] or 0)) for i in mine), Decimal(0))
            amount = sum(int(amounts[i] or 0) for i in mine)
        return cls(
            base_external_id=row.get("base_external_id"),
            base_payload=payload,
            base_present=present,
            corrections=count,
            hours=base_hours + hours,
            amount_minor=base_amount + amount,
        )


def held_of(conn: psycopg.Connection, postings: Sequence[Posting]) -> dict[str, Held]:
    """Per posting (by idempotency key), what the ERP holds for its PSA entry (:class:`Held`), in
    the posting's lane (the record's own rows, or its parallel-run shadow rows)."""
    if not postings:
        return {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"""
            SELECT held.*, {BASE_PAYLOAD} AS base_payload FROM (
                SELECT source_system, source_id, shadow, {HELD_COLUMNS}
                FROM ledger.posting
                WHERE record_type = %s AND (source_system, source_id) IN (
                    SELECT * FROM unnest(%s::text[], %s::text[]))
                GROUP BY 1, 2, 3
            ) held
            """,
            (
                postings[0].record_type,
                [p.source_system for p in postings],
                [p.source_id for p in postings],
            ),
        )
        by_entry = {
            (r["source_system"], r["source_id"], r["shadow"]): Held.from_row(r) for r in cur.fetchall()
        }
    empty = Held(None, None, False, 0, Decimal(0), 0)
    return {
        p.idempotency_key: by_entry.get((p.source_system, p.source_id, p.shadow), empty) for p in postings
    }


#: The date a posting is of: its own, or (a reversal) the reversed record's.
POSTING_DATE = "coalesce(payload->>'tranDate', payload->'reverses'->>'tranDate')::date"


def window_postings(
    conn: psycopg.Connection, record_type: str, *, legal_entity: str, first_day: Any, last_day: Any
) -> list[Posting]:
    """What the ledger says each ERP holds of ``legal_entity``'s records dated ``first_day`` ..
    ``last_day``: per record, target ERP and lane (its own or a parallel run's shadow) the latest
    confirmed posting of the record itself (a reversal: nothing held), and every confirmed
    correcting journal."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"""
            WITH rows AS (
                SELECT * FROM ledger.posting_full
                WHERE record_type = %(rt)s AND legal_entity = %(le)s AND state IN ('confirmed', 'resolved')
                  AND {POSTING_DATE} BETWEEN %(first)s AND %(last)s
            ), base AS (
                SELECT DISTINCT ON (source_system, source_id, target_erp, shadow) * FROM rows
                WHERE corrects IS NULL ORDER BY source_system, source_id, target_erp, shadow, seq DESC
            )
            SELECT {_COLUMNS} FROM (SELECT * FROM base UNION ALL SELECT * FROM rows WHERE corrects IS NOT NULL) r
            ORDER BY source_system, source_id, seq
            """,
            {"rt": record_type, "le": legal_entity, "first": first_day, "last": last_day},
        )
        return [_posting(r) for r in cur.fetchall()]


def counts(
    conn: psycopg.Connection, record_type: str | None = None, *, target: Target | None = None
) -> dict[str, int]:
    extra, extra_params = _where(target)
    where = ("WHERE record_type = %s" if record_type else "WHERE true") + extra
    params = ((record_type,) if record_type else ()) + extra_params
    return {
        s: int(n)
        for s, n in conn.execute(f"SELECT state, count(*) FROM ledger.posting {where} GROUP BY 1", params)
    }


def routes_of_run(conn: psycopg.Connection, record_type: str, dag_run_id: str) -> list[dict[str, Any]]:
    """Where the postings a DAG run sent went: per target ERP and legal entity, the first and last
    posting date (a reversal's: the reversed record's) and how many the ERP confirmed."""
    rows = conn.execute(
        """
        SELECT p.target_erp, p.legal_entity,
               min(coalesce(p.payload->>'tranDate', p.payload->'reverses'->>'tranDate')),
               max(coalesce(p.payload->>'tranDate', p.payload->'reverses'->>'tranDate')),
               count(DISTINCT p.idempotency_key)
        FROM ledger.posting_full p
        WHERE p.record_type = %s AND p.state IN ('confirmed', 'resolved') AND p.legal_entity IS NOT NULL
          AND EXISTS (SELECT 1 FROM ledger.attempt a WHERE a.idempotency_key = p.idempotency_key
                      AND a.dag_run_id = %s)
        GROUP BY 1, 2 ORDER BY 1, 2
        """,
        (record_type, dag_run_id),
    ).fetchall()
    return [
        {
            "erp": str(erp),
            "legalEntity": str(entity),
            "firstDate": str(first),
            "lastDate": str(last),
            "postings": int(n),
        }
        for erp, entity, first, last, n in rows
    ]
