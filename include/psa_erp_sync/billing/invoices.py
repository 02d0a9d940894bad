"""Plan ERP invoices and credit memos from ready billing events, into the posting ledger.

A document is planned from a group of ready events (one grouping key, at most ``max_lines``
events, in event order) and its membership is frozen: the document, its lines, its
``ledger.posting`` row (record type ``invoice`` or ``creditmemo``) and the events' move
``ready -> invoiced`` are one transaction, committed before the ERP is called (the posting
engine sends it). Everything is deterministic: the document's ref (its ERP external id) is a
hash of its member event refs, its date the latest member's date, its ledger key
:func:`psa_erp_sync.posting.ledger.idempotency_key` of the ref and that hash. A source line is
billed at most once: an event is on one document only (``billing.document_line.event_ref`` is
unique), and a change after invoicing arrives as a credit line (a negative event) that becomes a
line of a credit memo against the invoice that billed it, never an edit of that invoice.
docs/billing.md, "Invoices exactly once".
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from psa_erp_sync import money
from psa_erp_sync.config import Config
from psa_erp_sync.ods import exceptions as exception_queue
from psa_erp_sync.posting import ledger
from psa_erp_sync.posting.periods import PeriodBook, PeriodDecision

log = logging.getLogger(__name__)

DocType = Literal["invoice", "creditmemo"]
SOURCE_SYSTEM = "billing"  # ledger.posting.source_system of billing documents (source_id = document_ref)
PREFIX: dict[str, str] = {"invoice": "inv-", "creditmemo": "cm-"}
#: The ERP line ``sourceType`` per billing event kind.
LINE_SOURCE = {
    "time": "timebill",
    "expense": "expensereport",
    "milestone": "milestone",
    "retainer": "retainerperiod",
}
#: Our external id of the billed source per kind (time and expenses as the posting path names them).
SOURCE_ID_KIND = {"time": "timebill", "expense": "expensereport"}
MAX_LINES = 200  # events per document: a bigger group is split, in event order

_GROUP = ("group_key", "customer_ref", "project_ref", "legal_entity", "currency", "cycle")
_READY_INVOICE_LINES = """
    SELECT e.event_ref, e.kind, e.source_system, e.source_id, e.event_date, e.quantity, e.rate_minor,
           e.amount_minor, e.group_key, e.customer_ref, e.project_ref, e.legal_entity, e.currency, e.cycle,
           NULL::text AS credits_document, NULL::text AS credits_event, NULL::int AS credits_line
    FROM billing.event e
    WHERE e.state = 'ready' AND e.credits_ref IS NULL
    ORDER BY e.group_key, e.customer_ref, e.project_ref, e.legal_entity, e.currency, e.cycle, e.event_ref
"""
# A credit line waits until the invoice that billed the credited event is in the ERP.
_READY_CREDIT_LINES = """
    SELECT c.event_ref, c.kind, c.source_system, c.source_id, c.event_date, c.quantity, c.rate_minor,
           c.amount_minor, c.group_key, c.customer_ref, c.project_ref, c.legal_entity, c.currency, c.cycle,
           d.document_ref AS credits_document, o.event_ref AS credits_event, l.line_no AS credits_line
    FROM billing.event c
    JOIN billing.event o ON o.event_ref = c.credits_ref AND o.state = 'invoiced'
    JOIN billing.document d ON d.document_ref = o.document_ref AND d.doc_type = 'invoice' AND d.state = 'posted'
    JOIN billing.document_line l ON l.event_ref = o.event_ref
    WHERE c.state = 'ready' AND c.credits_ref IS NOT NULL
    ORDER BY c.group_key, c.customer_ref, c.project_ref, c.legal_entity, c.currency, c.cycle,
             d.document_ref, c.event_ref
"""


@dataclass(frozen=True)
class Document:
    """One planned invoice or credit memo: its frozen members and its ledger posting."""

    doc_type: DocType
    document_ref: str
    members: tuple[dict[str, Any], ...]
    members_hash: str
    head: dict[str, Any]  # the group's customer, project, legal entity, currency, cycle, group key
    doc_date: date
    total_minor: int  # positive, for a credit memo too
    posting: ledger.Posting
    decision: PeriodDecision
    credits_document: str | None = None


@dataclass
class InvoicePlan:
    """What one planning step did, per document type."""

    documents: dict[str, int] = field(default_factory=lambda: {"invoice": 0, "creditmemo": 0})
    lines: dict[str, int] = field(default_factory=lambda: {"invoice": 0, "creditmemo": 0})
    moved_period: int = 0
    parked: int = 0
    skipped_changed: int = 0  # a member left `ready` meanwhile: planned again next time

    def as_dict(self) -> dict[str, Any]:
        return {
            "documents": dict(self.documents),
            "lines": dict(self.lines),
            "moved_to_open_period": self.moved_period,
            "parked": self.parked,
            "skipped_changed": self.skipped_changed,
        }


def members_hash(event_refs: Sequence[str]) -> str:
    """Deterministic from the exact set of member events."""
    return hashlib.sha256("\n".join(sorted(event_refs)).encode()).hexdigest()[:32]


def document_ref(doc_type: DocType, event_refs: Sequence[str]) -> str:
    """The document's ERP external id: the same events always make the same document."""
    return PREFIX[doc_type] + members_hash(event_refs)[:24]


def _groups(
    rows: Iterator[dict[str, Any]], *, credit: bool, max_lines: int
) -> Iterator[list[dict[str, Any]]]:
    """Consecutive rows of one group (a credit memo's group also names the invoice it credits),
    split into runs of at most ``max_lines``."""
    current: list[dict[str, Any]] = []
    key: tuple[Any, ...] | None = None
    for row in rows:
        row_key = tuple(row[k] for k in _GROUP) + ((row["credits_document"],) if credit else ())
        if current and (row_key != key or len(current) >= max_lines):
            yield current
            current = []
        key = row_key
        current.append(row)
    if current:
        yield current


def _source_id(config: Config, member: dict[str, Any]) -> str:
    kind = SOURCE_ID_KIND.get(member["kind"])
    if kind is not None:
        return config.mappings.external_id(kind, member["source_id"])
    return f"psa-{member['kind']}-{member['source_id']}"


def _line(config: Config, member: dict[str, Any], *, credit: bool) -> dict[str, Any]:
    """An ERP sublist line naming what it bills (and, on a credit memo, the invoice line it credits)."""
    currency = member["currency"]
    line: dict[str, Any] = {
        "amount": money.format_minor(abs(int(member["amount_minor"])), currency),
        "sourceType": LINE_SOURCE[member["kind"]],
        "sourceId": _source_id(config, member),
        "custcol_psa_event": member["event_ref"],
    }
    if member["quantity"] is not None and member["rate_minor"] is not None:
        line["quantity"] = f"{member['quantity']:.2f}"
        line["rate"] = money.format_minor(int(member["rate_minor"]), currency)
    if credit:
        line["description"] = f"credit of {member['credits_document']} line {member['credits_line']}"
        line["custcol_psa_credits_event"] = member["credits_event"]
        line["custcol_psa_credits_doc"] = member["credits_document"]
        line["custcol_psa_credits_line"] = str(member["credits_line"])
    return line


def erp_payload(
    config: Config,
    doc_type: DocType,
    ref: str,
    members: Sequence[dict[str, Any]],
    *,
    key: str,
    doc_date: date,
    decision: PeriodDecision,
    credits_document: str | None,
) -> dict[str, Any]:
    """The ERP invoice or credit memo. The memo carries our key (a read-back proves the ERP holds
    exactly this document); no names or notes."""
    head = members[0]
    currency = head["currency"]
    credit = doc_type == "creditmemo"
    total = sum(abs(int(m["amount_minor"])) for m in members)
    memo = f"billing:{ref} lines:{len(members)} key:{key[:16]}"
    if decision.period and decision.original_period and decision.period != decision.original_period:
        memo += f" orig-date:{doc_date} orig-period:{decision.original_period}"
    body: dict[str, Any] = {
        "externalId": ref,
        "tranDate": str(doc_date),
        "entity": {"externalId": config.mappings.external_id("customer", head["customer_ref"])},
        "job": {"externalId": config.mappings.external_id("job", head["project_ref"])},
        "subsidiary": {"externalId": head["legal_entity"]},
        "currency": {"refName": currency},
        "total": money.format_minor(total, currency),
        "memo": memo,
        "item": {"items": [_line(config, m, credit=credit) for m in members]},
        "custbody_psa_cycle": head["cycle"],
    }
    if decision.period:
        body["postingPeriod"] = {"externalId": decision.period}
    if credits_document is not None:
        body["createdFrom"] = {"externalId": credits_document}
    return body


def plan_document(
    config: Config, periods: PeriodBook, doc_type: DocType, members: Sequence[dict[str, Any]]
) -> Document:
    """The document a group of ready events makes, with its ledger posting (``pending`` in the
    period the legal entity's closed-period policy chooses, or ``parked``)."""
    refs = [m["event_ref"] for m in members]
    mhash = members_hash(refs)
    ref = document_ref(doc_type, refs)
    head = {k: members[0][k] for k in _GROUP}
    entity = str(head["legal_entity"])
    entities = config.legal_entities.legal_entities
    policy = entities[entity].closed_period_policy if entity in entities else "park"
    doc_date = max(m["event_date"] for m in members)
    decision = periods.decide(entity, doc_date, doc_type, policy)
    key = ledger.idempotency_key(doc_type, SOURCE_SYSTEM, ref, mhash, "post", 0)
    credits_document = members[0]["credits_document"] if doc_type == "creditmemo" else None
    payload = erp_payload(
        config,
        doc_type,
        ref,
        members,
        key=key,
        doc_date=doc_date,
        decision=decision,
        credits_document=credits_document,
    )
    total = sum(abs(int(m["amount_minor"])) for m in members)
    posting = ledger.Posting(
        key,
        doc_type,
        SOURCE_SYSTEM,
        ref,
        mhash,
        ref,
        "post",
        "parked" if decision.outcome == "park" else "pending",
        payload,
        entity,
        decision.period or decision.original_period,
        total,
        str(head["currency"]),
    )
    return Document(
        doc_type, ref, tuple(members), mhash, head, doc_date, total, posting, decision, credits_document
    )


def _parked_item(config: Config, doc: Document) -> exception_queue.Item:
    entity = str(doc.head["legal_entity"])
    return exception_queue.Item(
        kind="parked",
        domain="billing",
        source_system=SOURCE_SYSTEM,
        record_type=doc.doc_type,
        source_id=doc.document_ref,
        source_version=doc.members_hash,
        reason_code=doc.decision.reason or "PERIOD_CLOSED",
        detail={
            "period": doc.decision.original_period,
            "doc_date": str(doc.doc_date),
            "lines": len(doc.members),
        },
        legal_entity=entity,
        owner=config.ownership.owner_for("billing", entity),
    )


def write_document(conn: psycopg.Connection, config: Config, doc: Document, *, run_id: str) -> bool:
    """Ledger row, document, lines and the members' ``ready -> invoiced``: one transaction (a
    savepoint inside the caller's). False, and nothing written, when a member is no longer
    ``ready`` (withdrawn or invoiced meanwhile) or the document exists already."""
    refs = [m["event_ref"] for m in doc.members]
    head = doc.head
    try:
        with conn.transaction():
            if not ledger.insert_planned(conn, [doc.posting]):
                raise _Changed
            conn.execute(
                """
                INSERT INTO billing.document (document_ref, doc_type, group_key, customer_ref, project_ref,
                    legal_entity, currency, cycle, credits_document, doc_date, period, total_minor, line_count,
                    members_hash, idempotency_key, state, run_id)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                """,
                (
                    doc.document_ref,
                    doc.doc_type,
                    head["group_key"],
                    head["customer_ref"],
                    head["project_ref"],
                    head["legal_entity"],
                    head["currency"],
                    head["cycle"],
                    doc.credits_document,
                    doc.doc_date,
                    doc.posting.period,
                    doc.total_minor,
                    len(refs),
                    doc.members_hash,
                    doc.posting.idempotency_key,
                    "parked" if doc.posting.state == "parked" else "planned",
                    run_id,
                ),
            )
            conn.execute(
                "INSERT INTO billing.document_line (document_ref, line_no, event_ref, amount_minor)"
                " SELECT %s, n, ref, amt FROM unnest(%s::text[], %s::bigint[]) WITH ORDINALITY AS u(ref, amt, n)",
                (doc.document_ref, refs, [int(m["amount_minor"]) for m in doc.members]),
            )
            moved = conn.execute(
                "UPDATE billing.event SET state = 'invoiced', document_ref = %s, run_id = %s, updated_at = now()"
                " WHERE event_ref = ANY(%s) AND state = 'ready'",
                (doc.document_ref, run_id, refs),
            ).rowcount
            if moved != len(refs):
                raise _Changed
            if doc.posting.state == "parked":
                exception_queue.quarantine_many(conn, [_parked_item(config, doc)], run_id=run_id)
    except _Changed:
        log.warning("billing document %s not planned: a member changed meanwhile", doc.document_ref)
        return False
    return True


class _Changed(Exception):
    pass


def plan_documents(
    conn: psycopg.Connection,
    *,
    doc_type: DocType,
    config: Config,
    periods: PeriodBook,
    run_id: str,
    max_lines: int = MAX_LINES,
) -> InvoicePlan:
    """Plan a document for every group of ready events (``invoice``: billable lines;
    ``creditmemo``: credit lines whose credited invoice is in the ERP). ``conn`` in autocommit:
    each document commits on its own, so an interrupted plan leaves whole documents only."""
    result = InvoicePlan()
    query = _READY_INVOICE_LINES if doc_type == "invoice" else _READY_CREDIT_LINES
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query).fetchall()
    for members in _groups(iter(rows), credit=doc_type == "creditmemo", max_lines=max_lines):
        doc = plan_document(config, periods, doc_type, members)
        if not write_document(conn, config, doc, run_id=run_id):
            result.skipped_changed += 1
            continue
        result.documents[doc_type] += 1
        result.lines[doc_type] += len(members)
        result.moved_period += doc.decision.outcome == "moved"
        result.parked += doc.posting.state == "parked"
    return result


def sync_documents(conn: psycopg.Connection) -> dict[str, int]:
    """Mirror the ledger onto the documents: the latest posting of each document decides its
    state (``posted`` with the ERP internal id, ``parked``, ``rejected``, else ``planned``) and
    its period. Returns the documents per state."""
    conn.execute(
        """
        UPDATE billing.document d
        SET state = CASE WHEN l.state IN ('confirmed', 'resolved') THEN 'posted'
                         WHEN l.state IN ('parked', 'rejected') THEN l.state ELSE 'planned' END,
            erp_internal_id = coalesce(l.erp_internal_id, d.erp_internal_id), period = l.period, updated_at = now()
        FROM (SELECT DISTINCT ON (record_type, source_id) record_type, source_id, state, erp_internal_id, period
              FROM ledger.posting WHERE source_system = %s AND record_type IN ('invoice', 'creditmemo')
              ORDER BY record_type, source_id, seq DESC) l
        WHERE l.record_type = d.doc_type AND l.source_id = d.document_ref
          AND (d.state, d.erp_internal_id, d.period) IS DISTINCT FROM
              (CASE WHEN l.state IN ('confirmed', 'resolved') THEN 'posted'
                    WHEN l.state IN ('parked', 'rejected') THEN l.state ELSE 'planned' END,
               coalesce(l.erp_internal_id, d.erp_internal_id), l.period)
        """,
        (SOURCE_SYSTEM,),
    )
    return {s: int(n) for s, n in conn.execute("SELECT state, count(*) FROM billing.document GROUP BY 1")}


def run_totals(conn: psycopg.Connection, run_id: str) -> dict[str, Any]:
    """The documents a run planned (every try of it), for the ``invoiceTotals`` lineage facet:
    documents and lines per type, totals per currency in minor units (credit memos positive, as
    sent), and all documents per state after the run. Counts, codes and amounts only."""
    out: dict[str, Any] = {
        "documents": {"invoice": 0, "creditmemo": 0},
        "lines": {"invoice": 0, "creditmemo": 0},
        "totals": {},
    }
    rows = conn.execute(
        "SELECT doc_type, currency, count(*), coalesce(sum(line_count), 0), coalesce(sum(total_minor), 0)"
        " FROM billing.document WHERE run_id = %s GROUP BY 1, 2 ORDER BY 1, 2",
        (run_id,),
    ).fetchall()
    for doc_type, currency, documents, lines, total in rows:
        out["documents"][doc_type] += int(documents)
        out["lines"][doc_type] += int(lines)
        per = out["totals"].setdefault(str(currency).strip(), {"invoiced": 0, "credited": 0})
        per["invoiced" if doc_type == "invoice" else "credited"] += int(total)
    out["by_state"] = {
        str(s): int(n) for s, n in conn.execute("SELECT state, count(*) FROM billing.document GROUP BY 1")
    }
    return out
