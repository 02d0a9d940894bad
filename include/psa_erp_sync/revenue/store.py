"""Repository of the ``revenue`` schema (migration ``0017_revenue_recognition.sql``): recognition
snapshots per project x legal entity x period (with the inputs' hash), and planned journals with
their lines, keyed by a deterministic idempotency key for the posting ledger.

Writes are idempotent: a recognition is unique by (project, legal entity, period, currency,
inputs hash) and a journal by its idempotency key, so a retried run writes nothing new.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from psa_erp_sync.posting.ledger import idempotency_key
from psa_erp_sync.revenue.journals import RECORD_TYPE, Journal, JournalLine, Placement
from psa_erp_sync.revenue.recognition import Recognition, month_index, month_start

if TYPE_CHECKING:
    import psycopg

SOURCE_SYSTEM = "revenue"
Identity = tuple[str, str, int, str]  # project_ref, legal_entity, period (month index), currency


def identity_of(journal: Journal) -> Identity:
    return (journal.project_ref, journal.legal_entity, journal.period, journal.currency)


def journal_key(identity: Identity, seq: int, inputs_hash: str) -> str:
    """Deterministic from the journal's identity, its sequence number for that identity and the
    version of the inputs it was computed from (the ledger's own key function)."""
    project, entity, period, currency = identity
    source_id = f"{project}|{entity}|{month_start(period):%Y-%m}|{currency}"
    return idempotency_key(RECORD_TYPE, SOURCE_SYSTEM, source_id, inputs_hash[:16], "post", seq)


def external_id(identity: Identity, seq: int) -> str:
    """The ERP journalentry's external id: letters, digits, ``_`` and ``-`` only."""
    project, entity, period, currency = identity
    safe = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in f"{project}-{entity}")
    return f"rev-{safe}-{month_start(period):%Y%m}-{currency}-{seq}"


def insert_recognitions(
    conn: psycopg.Connection, rows: Sequence[tuple[Recognition, str]], run_id: str
) -> int:
    """Store ``(recognition, inputs_hash)`` rows; returns how many were new."""
    written = 0
    with conn.cursor() as cur:
        for r, digest in rows:
            cur.execute(
                """
                INSERT INTO revenue.recognition (project_ref, legal_entity, period_month, currency, inputs_hash,
                    billing_type, transaction_price_minor, cost_to_date_minor, estimated_total_cost_minor,
                    cum_revenue_minor, period_revenue_minor, cum_billed_minor, contract_asset_minor,
                    contract_liability_minor, expected_loss_minor, loss_provision_minor, run_id)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (project_ref, legal_entity, period_month, currency, inputs_hash) DO NOTHING
                """,
                (
                    r.project_ref,
                    r.legal_entity,
                    month_start(r.period),
                    r.currency,
                    digest,
                    r.billing_type,
                    r.transaction_price_minor,
                    r.cost_to_date_minor,
                    r.estimated_total_cost_minor,
                    r.cum_revenue_minor,
                    r.period_revenue_minor,
                    r.cum_billed_minor,
                    r.contract_asset_minor,
                    r.contract_liability_minor,
                    r.expected_loss_minor,
                    r.loss_provision_minor,
                    run_id,
                ),
            )
            written += cur.rowcount
    return written


@dataclass(frozen=True)
class PlannedSoFar:
    """What the ledger side already holds for one identity: its lines and its last sequence."""

    lines: tuple[JournalLine, ...]
    last_seq: int


def planned_for_period(conn: psycopg.Connection, period: int) -> dict[Identity, PlannedSoFar]:
    """Every journal line already planned (or parked) for recognition period ``period``."""
    lines: dict[Identity, list[JournalLine]] = {}
    seqs: dict[Identity, int] = {}
    for project, entity, currency, seq, account, role, debit, credit in conn.execute(
        """
        SELECT j.project_ref, j.legal_entity, j.currency, j.seq, l.account, l.role, l.debit_minor, l.credit_minor
        FROM revenue.journal j JOIN revenue.journal_line l ON l.idempotency_key = j.idempotency_key
        WHERE j.period_month = %s ORDER BY j.project_ref, j.legal_entity, j.currency, j.seq, l.line_no
        """,
        (month_start(period),),
    ):
        identity = (str(project), str(entity), period, str(currency))
        lines.setdefault(identity, []).append(JournalLine(str(account), str(role), int(debit), int(credit)))
        seqs[identity] = max(seqs.get(identity, 0), int(seq))
    return {k: PlannedSoFar(tuple(v), seqs[k]) for k, v in lines.items()}


def insert_journal(
    conn: psycopg.Connection,
    journal: Journal,
    placement: Placement,
    *,
    seq: int,
    inputs_hash: str,
    run_id: str,
) -> str | None:
    """Store one delta journal and its lines; returns its key, or None when that key exists."""
    identity = identity_of(journal)
    key = journal_key(identity, seq, inputs_hash)
    parked = placement.outcome == "park"
    row = conn.execute(
        """
        INSERT INTO revenue.journal (idempotency_key, external_id, project_ref, legal_entity, period_month,
            currency, seq, inputs_hash, state, posting_period, posting_month, recognition_period, reason,
            debit_minor, credit_minor, run_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key
        """,
        (
            key,
            external_id(identity, seq),
            journal.project_ref,
            journal.legal_entity,
            month_start(journal.period),
            journal.currency,
            seq,
            inputs_hash,
            "parked" if parked else "planned",
            None if parked else placement.posting_period,
            None if parked or placement.posting_month is None else month_start(placement.posting_month),
            placement.recognition_period,
            placement.reason,
            journal.debits,
            journal.credits,
            run_id,
        ),
    ).fetchone()
    if row is None:
        return None
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO revenue.journal_line (idempotency_key, line_no, account, role, debit_minor, credit_minor)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (key, i, x.account, x.role, x.debit_minor, x.credit_minor)
                for i, x in enumerate(journal.lines, 1)
            ],
        )
    return key


def lock_period(conn: psycopg.Connection, period: int) -> None:
    """Serialize computations of one period (held until the transaction ends)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('revenue.period'), %s)", (period,))


def latest_period_revenue(conn: psycopg.Connection, periods: Iterable[int]) -> dict[tuple[str, int], int]:
    """(project_ref, period) -> period revenue of the latest recognition, for ``periods``."""
    starts = [month_start(p) for p in periods]
    return {
        (str(ref), month_index(period)): int(amount)
        for ref, period, amount in conn.execute(
            "SELECT project_ref, period_month, period_revenue_minor FROM revenue.recognition_latest"
            " WHERE period_month = ANY(%s)",
            (starts,),
        )
    }


def journal_revenue_by_posting_period(conn: psycopg.Connection) -> dict[tuple[str, str], int]:
    """(project_ref, ERP posting period) -> revenue credited by the planned journals (credit - debit)."""
    return {
        (str(ref), str(period)): int(amount)
        for ref, period, amount in conn.execute(
            """
            SELECT j.project_ref, j.posting_period, sum(l.credit_minor - l.debit_minor)
            FROM revenue.journal j JOIN revenue.journal_line l ON l.idempotency_key = j.idempotency_key
            WHERE l.role = 'revenue' AND j.state = 'planned' GROUP BY 1, 2
            """
        )
    }
