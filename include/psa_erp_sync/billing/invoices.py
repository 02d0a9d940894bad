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
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from psa_erp_sync import money
from psa_erp_sync.config import Config
from psa_erp_sync.ods import exceptions as exception_queue
from psa_erp_sync.posting import ledger
from psa_erp_sync.posting.periods import PeriodBook, PeriodDecision
from psa_erp_sync.routing.route import RouteNotFound, Router
from psa_erp_sync.validation.fx import RateBook

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
           NULL::text AS credits_document, NULL::text AS credits_event, NULL::int AS credits_line,
           NULL::text AS credits_internal_id, NULL::text AS credits_erp, NULL::text AS credits_account,
           NULL::int AS credits_route_version
    FROM billing.event e
    WHERE e.state = 'ready' AND e.credits_ref IS NULL
    ORDER BY e.group_key, e.customer_ref, e.project_ref, e.legal_entity, e.currency, e.cycle, e.event_ref
"""
# A credit line waits until the invoice that billed the credited event is in the ERP.
_READY_CREDIT_LINES = """
    SELECT c.event_ref, c.kind, c.source_system, c.source_id, c.event_date, c.quantity, c.rate_minor,
           c.amount_minor, c.group_key, c.customer_ref, c.project_ref, c.legal_entity, c.currency, c.cycle,
           d.document_ref AS credits_document, o.event_ref AS credits_event, l.line_no AS credits_line,
           d.erp_internal_id AS credits_internal_id, r.target_erp AS credits_erp,
           r.erp_account AS credits_account, r.route_version AS credits_route_version
    FROM billing.event c
    JOIN billing.event o ON o.event_ref = c.credits_ref AND o.state = 'invoiced'
    JOIN billing.document d ON d.document_ref = o.document_ref AND d.doc_type = 'invoice' AND d.state = 'posted'
    JOIN billing.document_line l ON l.event_ref = o.event_ref
    LEFT JOIN ledger.posting r ON r.idempotency_key = d.idempotency_key
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
    fx: Fx | None = None
    applied: bool = True  # a credit memo applied to its invoice (createdFrom), else stand-alone


@dataclass(frozen=True)
class Fx:
    """A document's functional side: the legal entity's currency, the ERP's rate for the document
    date (1 for same-currency documents; None when the ERP has none: the document is parked
    ``FX_RATE_MISSING``) and the total at that rate, half-even once."""

    functional_currency: str
    rate: Decimal | None
    rate_date: date | None
    functional_total_minor: int | None

    @property
    def foreign(self) -> bool:
        return self.rate is not None and self.rate_date is not None


def document_fx(
    config: Config, rates: RateBook | None, entity: str, currency: str, day: date, total: int
) -> Fx:
    """The functional currency of ``entity`` and the ERP's rate in force on ``day`` (as
    validation does for time and expenses, :class:`~psa_erp_sync.validation.fx.RateBook`)."""
    entities = config.legal_entities.legal_entities
    functional = entities[entity].currency if entity in entities else currency
    if functional == currency:
        return Fx(functional, Decimal(1), None, total)
    found = rates.rate_on(currency, functional, day) if rates is not None else None
    if found is None:
        return Fx(functional, None, None, None)
    return Fx(
        functional,
        found.rate,
        found.effective_date,
        money.convert_minor(total, currency, found.rate, functional),
    )


def _rate_text(rate: Decimal) -> str:
    value = rate.normalize()
    return format(value.quantize(Decimal(1)) if value == value.to_integral() else value, "f")


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
    fx: Fx | None = None,
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
        # billing.event.customer_ref is the ERP customer's external id (a merged customer's survivor)
        "entity": {"externalId": head["customer_ref"]},
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
    if fx is not None and fx.foreign and fx.rate is not None:  # the ERP's rate for the date, as planned
        body["exchangeRate"] = _rate_text(fx.rate)
    return body


@dataclass(frozen=True)
class DocRoute:
    """Where a document goes: the ERP, its account (None: the connection's own) and the routing
    version that decided it (None: no routing file consulted)."""

    erp: str
    account: str | None = None
    version: int | None = None


@dataclass
class Routes:
    """How documents are routed (docs/billing.md, "Billing on SAP"): an invoice by its legal entity
    and its date (``config/erp_routing.yaml``, never the processing time), a credit memo to the
    ERP of the invoice it credits (it is applied to that invoice, which only that ERP holds); each
    decided against that ERP's own periods (``books``; ``periods`` when not read for it). Without a
    router everything goes to NetSuite, as before routing."""

    router: Router | None = None
    books: dict[str, PeriodBook] = field(default_factory=dict)

    def of(self, doc_type: DocType, entity: str, day: date, head: dict[str, Any]) -> DocRoute | None:
        """The document's route, or None when no range of the routing file covers it."""
        if doc_type == "creditmemo" and head.get("credits_erp"):
            return DocRoute(
                str(head["credits_erp"]), head.get("credits_account"), head.get("credits_route_version")
            )
        if self.router is None:
            return DocRoute("netsuite")
        try:
            found = self.router.route(entity, day)
        except RouteNotFound:
            return None
        return DocRoute(found.erp, found.account, found.version)

    def book(self, route: DocRoute | None, periods: PeriodBook) -> PeriodBook:
        return self.books.get(route.erp, periods) if route is not None else periods


def _document_payload(
    config: Config,
    doc_type: DocType,
    ref: str,
    members: Sequence[dict[str, Any]],
    *,
    key: str,
    doc_date: date,
    decision: PeriodDecision,
    fx: Fx,
    applied: bool,
    route: DocRoute | None,
) -> dict[str, Any]:
    """:func:`erp_payload`, with what an unapplied memo and an applied SAP memo add."""
    credits_document = members[0]["credits_document"] if doc_type == "creditmemo" else None
    payload = erp_payload(
        config,
        doc_type,
        ref,
        members,
        key=key,
        doc_date=doc_date,
        decision=decision,
        credits_document=credits_document if applied else None,
        fx=fx,
    )
    if not applied:  # the ERP applies no more than is due: a stand-alone memo naming the invoice
        payload["memo"] += f" credits:{credits_document} unapplied"
    elif credits_document is not None and route is not None and route.erp == "sap":
        # SAP references the credited invoice by its document (REBZG), not by our external id.
        payload["createdFrom"]["internalId"] = members[0].get("credits_internal_id")
    return payload


def _decide(
    config: Config,
    periods: PeriodBook,
    routes: Routes,
    doc_type: DocType,
    head: dict[str, Any],
    doc_date: date,
    fx: Fx,
) -> tuple[DocRoute | None, PeriodDecision]:
    """The document's route and the closed-period decision of that ERP's periods and the legal
    entity's policy; parked ``NO_ERP_ROUTE`` without a route, ``FX_RATE_MISSING`` without a rate."""
    entity = str(head["legal_entity"])
    entities = config.legal_entities.legal_entities
    policy = entities[entity].closed_period_policy if entity in entities else "park"
    route = routes.of(doc_type, entity, doc_date, head)
    decision = routes.book(route, periods).decide(entity, doc_date, doc_type, policy)
    if route is None:
        decision = replace(decision, outcome="park", reason="NO_ERP_ROUTE")
    elif fx.rate is None and decision.outcome != "park":
        decision = replace(decision, outcome="park", reason="FX_RATE_MISSING")
    return route, decision


def plan_document(
    config: Config,
    periods: PeriodBook,
    doc_type: DocType,
    members: Sequence[dict[str, Any]],
    *,
    rates: RateBook | None = None,
    seq: int = 0,
    remaining: dict[str, int] | None = None,
    routes: Routes | None = None,
) -> Document:
    """The document a group of ready events makes, with its ledger posting (``pending`` in the
    period the legal entity's closed-period policy chooses, or ``parked``; ``parked``
    ``FX_RATE_MISSING`` too when the document is in a foreign currency the ERP has no rate for on
    its date; ``parked`` ``NO_ERP_ROUTE`` when the routing file covers no ERP for its date).
    ``seq`` is the ledger sequence (0 when first planned, more for a replay); ``remaining`` the
    amount still due on credited invoices (a credit memo larger than that is sent stand-alone, not
    applied); ``routes`` where it goes (:class:`Routes`; its ledger row is stamped with it)."""
    refs = [m["event_ref"] for m in members]
    mhash = members_hash(refs)
    ref = document_ref(doc_type, refs)
    head = {k: members[0][k] for k in _GROUP}
    entity, currency = str(head["legal_entity"]), str(head["currency"])
    doc_date = max(m["event_date"] for m in members)
    total = sum(abs(int(m["amount_minor"])) for m in members)
    fx = document_fx(config, rates, entity, currency, doc_date, total)
    route, decision = _decide(config, periods, routes or Routes(), doc_type, members[0], doc_date, fx)
    key = ledger.idempotency_key(doc_type, SOURCE_SYSTEM, ref, mhash, "post", seq)
    credits_document = members[0]["credits_document"] if doc_type == "creditmemo" else None
    applied = credits_document is None or remaining is None or total <= remaining.get(credits_document, total)
    payload = _document_payload(
        config,
        doc_type,
        ref,
        members,
        key=key,
        doc_date=doc_date,
        decision=decision,
        fx=fx,
        applied=applied,
        route=route,
    )
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
        currency,
        functional_amount_minor=fx.functional_total_minor,
        functional_currency=fx.functional_currency if fx.rate is not None else None,
        fx_rate=fx.rate,
        target_erp=route.erp if route is not None else "netsuite",
        erp_account=route.account if route is not None else None,
        route_version=route.version if route is not None else None,
    )
    return Document(
        doc_type,
        ref,
        tuple(members),
        mhash,
        head,
        doc_date,
        total,
        posting,
        decision,
        credits_document,
        fx,
        applied,
    )


def _parked_item(config: Config, doc: Document) -> exception_queue.Item:
    entity = str(doc.head["legal_entity"])
    detail: dict[str, Any] = {
        "period": doc.decision.original_period,
        "doc_date": str(doc.doc_date),
        "lines": len(doc.members),
    }
    if doc.decision.reason == "FX_RATE_MISSING" and doc.fx is not None:
        detail |= {"currency": doc.head["currency"], "functional_currency": doc.fx.functional_currency}
    return exception_queue.Item(
        kind="parked",
        domain="billing",
        source_system=SOURCE_SYSTEM,
        record_type=doc.doc_type,
        source_id=doc.document_ref,
        source_version=doc.members_hash,
        reason_code=doc.decision.reason or "PERIOD_CLOSED",
        detail=detail,
        legal_entity=entity,
        owner=config.ownership.owner_for("billing", entity),
    )


def _fx_columns(doc: Document) -> tuple[Any, ...]:
    fx = doc.fx
    if fx is None:
        return (None, None, None, None)
    return (fx.functional_currency, fx.functional_total_minor, fx.rate, fx.rate_date)


def _insert_document(conn: psycopg.Connection, doc: Document, *, run_id: str) -> None:
    head = doc.head
    conn.execute(
        """
        INSERT INTO billing.document (document_ref, doc_type, group_key, customer_ref, project_ref,
            legal_entity, currency, cycle, credits_document, doc_date, period, total_minor, line_count,
            members_hash, idempotency_key, state, run_id, functional_currency, functional_total_minor,
            fx_rate, fx_rate_date, applied)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
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
            len(doc.members),
            doc.members_hash,
            doc.posting.idempotency_key,
            "parked" if doc.posting.state == "parked" else "planned",
            run_id,
            *_fx_columns(doc),
            doc.applied,
        ),
    )


def write_document(conn: psycopg.Connection, config: Config, doc: Document, *, run_id: str) -> bool:
    """Ledger row, document, lines and the members' ``ready -> invoiced``: one transaction (a
    savepoint inside the caller's). False, and nothing written, when a member is no longer
    ``ready`` (withdrawn or invoiced meanwhile) or the document exists already."""
    refs = [m["event_ref"] for m in doc.members]
    try:
        with conn.transaction():
            if not ledger.insert_planned(conn, [doc.posting]):
                raise _Changed
            _insert_document(conn, doc, run_id=run_id)
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


# Documents released by a dead-letter replay (posting/replay.py): the latest ledger row of a
# rejected or parked document is now ``superseded``. Their frozen members, as planning reads them.
_RELEASED_MEMBERS = """
    SELECT d.document_ref, e.event_ref, e.kind, e.source_system, e.source_id, e.event_date, e.quantity,
           e.rate_minor, e.amount_minor, e.group_key, e.customer_ref, e.project_ref, e.legal_entity,
           e.currency, e.cycle, ol.document_ref AS credits_document, e.credits_ref AS credits_event,
           ol.line_no AS credits_line, od.erp_internal_id AS credits_internal_id, r.target_erp AS credits_erp,
           r.erp_account AS credits_account, r.route_version AS credits_route_version, n.rows AS seq
    FROM billing.document d
    JOIN LATERAL (SELECT count(*) AS rows, (array_agg(state ORDER BY seq DESC))[1] AS last_state
                  FROM ledger.posting p WHERE p.record_type = d.doc_type AND p.source_system = %s
                    AND p.source_id = d.document_ref) n ON n.last_state = 'superseded'
    JOIN billing.document_line l ON l.document_ref = d.document_ref
    JOIN billing.event e ON e.event_ref = l.event_ref
    LEFT JOIN billing.document_line ol ON ol.event_ref = e.credits_ref
    LEFT JOIN billing.document od ON od.document_ref = ol.document_ref
    LEFT JOIN ledger.posting r ON r.idempotency_key = od.idempotency_key
    WHERE d.doc_type = %s
    ORDER BY d.document_ref, l.line_no
"""


def replan_released(
    conn: psycopg.Connection,
    *,
    doc_type: DocType,
    config: Config,
    periods: PeriodBook,
    rates: RateBook | None,
    run_id: str,
    remaining: dict[str, int] | None = None,
    routes: Routes | None = None,
) -> int:
    """Plan the next ledger row of every document a dead-letter replay released: the same document
    (external id, members) rebuilt with today's mappings, periods and rates, under the next
    sequence number (a new idempotency key). The engine then sends it once, like any posting."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_RELEASED_MEMBERS, (SOURCE_SYSTEM, doc_type)).fetchall()
    by_doc: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_doc.setdefault(row["document_ref"], []).append(row)
    for members in by_doc.values():
        doc = plan_document(
            config,
            periods,
            doc_type,
            members,
            rates=rates,
            seq=int(members[0]["seq"]),
            remaining=remaining,
            routes=routes,
        )
        with conn.transaction():
            if not ledger.insert_planned(conn, [doc.posting]):
                continue
            conn.execute(
                "UPDATE billing.document SET idempotency_key = %s, state = %s, period = %s, run_id = %s,"
                " functional_currency = %s, functional_total_minor = %s, fx_rate = %s, fx_rate_date = %s,"
                " applied = %s, updated_at = now() WHERE document_ref = %s",
                (
                    doc.posting.idempotency_key,
                    "parked" if doc.posting.state == "parked" else "planned",
                    doc.posting.period,
                    run_id,
                    *_fx_columns(doc),
                    doc.applied,
                    doc.document_ref,
                ),
            )
            if doc.posting.state == "parked":
                exception_queue.quarantine_many(conn, [_parked_item(config, doc)], run_id=run_id)
    return len(by_doc)


class _Changed(Exception):
    pass


# Credit lines whose credited invoice never reached the ERP (parked or rejected): they cannot be
# credited (nothing to apply to) and must not wait silently (docs/billing.md, "Credit memos").
_STUCK_CREDIT_LINES = """
    SELECT c.event_ref, c.legal_entity, d.document_ref, d.state
    FROM billing.event c
    JOIN billing.event o ON o.event_ref = c.credits_ref AND o.state = 'invoiced'
    JOIN billing.document d ON d.document_ref = o.document_ref AND d.state IN ('parked', 'rejected')
    WHERE c.state = 'ready' AND c.credits_ref IS NOT NULL
    ORDER BY c.event_ref
"""
# The credited invoices of ready credit lines and of released credit memos, with their ERP ids.
_CREDITED_INVOICES = """
    SELECT * FROM (
        SELECT DISTINCT d.document_ref, d.erp_internal_id, d.currency, d.idempotency_key
        FROM billing.event c
        JOIN billing.event o ON o.event_ref = c.credits_ref AND o.state = 'invoiced'
        JOIN billing.document d ON d.document_ref = o.document_ref AND d.state = 'posted'
        WHERE c.state = 'ready' AND d.erp_internal_id IS NOT NULL
        UNION
        SELECT d.document_ref, d.erp_internal_id, d.currency, d.idempotency_key FROM billing.document m
        JOIN billing.document d ON d.document_ref = m.credits_document
        WHERE m.doc_type = 'creditmemo' AND m.state <> 'posted' AND d.erp_internal_id IS NOT NULL
    ) i
    WHERE coalesce((SELECT p.target_erp FROM ledger.posting p WHERE p.idempotency_key = i.idempotency_key),
                   'netsuite') = %s
"""


def refs_of(doc: Document) -> list[str]:
    return [str(m["event_ref"]) for m in doc.members]


def remaining_on_credited(conn: psycopg.Connection, client: Any, *, erp: str = "netsuite") -> dict[str, int]:
    """Per credited invoice (document ref) held in ``erp``, the amount the ERP still has due on it,
    in minor units: one read by internal id (``client.get_invoice``) per invoice that ready credit
    lines (or released memos) credit."""
    out: dict[str, int] = {}
    for ref, internal_id, currency, _ in conn.execute(_CREDITED_INVOICES, (erp,)).fetchall():
        invoice = client.get_invoice(str(internal_id))
        if invoice is None:
            continue
        due = invoice.amount_remaining if invoice.amount_remaining is not None else invoice.total
        out[str(ref)] = money.to_minor(due, str(currency).strip())
    return out


def flag_stuck_credits(conn: psycopg.Connection, config: Config, *, run_id: str) -> int:
    """An exception item per credit line whose credited invoice is parked or rejected, naming both:
    the credit waits for finance to replay (or withdraw) that invoice."""
    items = [
        exception_queue.Item(
            kind="parked",
            domain="billing",
            source_system=SOURCE_SYSTEM,
            record_type="creditmemo",
            source_id=str(event_ref),
            source_version=str(document),
            reason_code="CREDITED_INVOICE_NOT_SENT",
            detail={"credit_event": event_ref, "invoice": document, "invoice_state": state},
            legal_entity=str(entity),
            owner=config.ownership.owner_for("billing", str(entity)),
        )
        for event_ref, entity, document, state in conn.execute(_STUCK_CREDIT_LINES).fetchall()
    ]
    if items:
        with conn.transaction():
            exception_queue.quarantine_many(conn, items, run_id=run_id)
    return len(items)


def plan_documents(
    conn: psycopg.Connection,
    *,
    doc_type: DocType,
    config: Config,
    periods: PeriodBook,
    run_id: str,
    max_lines: int = MAX_LINES,
    rates: RateBook | None = None,
    remaining: dict[str, int] | None = None,
    routes: Routes | None = None,
) -> InvoicePlan:
    """Plan a document for every group of ready events (``invoice``: billable lines;
    ``creditmemo``: credit lines whose credited invoice is in the ERP). ``conn`` in autocommit:
    each document commits on its own, so an interrupted plan leaves whole documents only.
    ``rates`` default to ``master.currency_rate``; ``remaining`` is what is due per credited
    invoice (a credit memo beyond it is stand-alone)."""
    result = InvoicePlan()
    rates = rates if rates is not None else RateBook.from_ods(conn)
    remaining = dict(remaining) if remaining is not None else None
    query = _READY_INVOICE_LINES if doc_type == "invoice" else _READY_CREDIT_LINES
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query).fetchall()
    for members in _groups(iter(rows), credit=doc_type == "creditmemo", max_lines=max_lines):
        doc = plan_document(
            config, periods, doc_type, members, rates=rates, remaining=remaining, routes=routes
        )
        if not write_document(conn, config, doc, run_id=run_id):
            result.skipped_changed += 1
            continue
        if doc_type == "creditmemo":  # the credit goes ahead: its item, if any, is done
            exception_queue.resolve_for(
                conn,
                source_system=SOURCE_SYSTEM,
                record_type="creditmemo",
                source_ids=refs_of(doc),
                kind="parked",
            )
        if remaining is not None and doc.credits_document and doc.applied:
            remaining[doc.credits_document] = remaining.get(doc.credits_document, 0) - doc.total_minor
        result.documents[doc_type] += 1
        result.lines[doc_type] += len(members)
        result.moved_period += doc.decision.outcome == "moved"
        result.parked += doc.posting.state == "parked"
    if doc_type == "creditmemo":
        flag_stuck_credits(conn, config, run_id=run_id)
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
