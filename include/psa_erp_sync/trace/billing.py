"""The billing part of one record's trace: its billing events (versions, credit lines), the
invoices and credit memos that carry them (ERP ids, lines, state, as read back), the PSA invoice
mirror, and the revenue journal lines of its project and period. Everything from the ODS
(``billing.*``, ``revenue.journal*``, ``ledger.posting``)."""

from __future__ import annotations

from typing import Any

from psa_erp_sync.trace.common import Cursor, lineage, plain, table_exists

EVENT_KIND = {"time_entry": "time", "expense_entry": "expense"}


def fetch_events(conn: Cursor, kind: str, source_system: str, source_id: str) -> list[Any]:
    """Every billing event of the record (each version, and the credit lines), oldest first."""
    if not table_exists(conn, "billing.event"):
        return []
    return conn.execute(
        """
        SELECT event_ref, source_version, project_ref, legal_entity, currency, cycle, event_date, quantity,
               rate_minor, amount_minor, credits_ref, state, document_ref, run_id, created_at
        FROM billing.event WHERE kind = %s AND source_system = %s AND source_id = %s
        ORDER BY created_at, event_ref
        """,
        (EVENT_KIND[kind], source_system, source_id),
    ).fetchall()


def _documents(conn: Cursor, events: list[Any], external_id: str) -> list[dict[str, Any]]:
    """The documents carrying the events, each with this record's lines and the ERP's read-back."""
    refs = sorted({e["document_ref"] for e in events if e["document_ref"]})
    if not refs:
        return []
    docs = conn.execute(
        """
        SELECT document_ref, doc_type, credits_document, doc_date, period, currency, total_minor, line_count,
               state, erp_internal_id, run_id
        FROM billing.document WHERE document_ref = ANY(%s) ORDER BY created_at, document_ref
        """,
        (refs,),
    ).fetchall()
    lines = conn.execute(
        "SELECT document_ref, line_no, event_ref, amount_minor FROM billing.document_line"
        " WHERE event_ref = ANY(%s) ORDER BY document_ref, line_no",
        ([e["event_ref"] for e in events],),
    ).fetchall()
    erp = {
        row["external_id"]: row
        for row in conn.execute(
            """
            SELECT record_type, internal_id, external_id, tran_id, tran_date, total_minor, amount_remaining_minor,
                   status, voided, created_from_ref, read_at
            FROM billing.erp_invoice WHERE external_id = ANY(%s)
            """,
            (refs,),
        ).fetchall()
    }
    erp_lines = conn.execute(
        "SELECT l.record_type, i.external_id, l.line_no, l.amount_minor, l.currency FROM billing.erp_invoice_line l"
        " JOIN billing.erp_invoice i USING (record_type, internal_id)"
        " WHERE i.external_id = ANY(%s) AND l.source_id = %s ORDER BY l.line_no",
        (refs, external_id),
    ).fetchall()
    out = []
    for doc in docs:
        ref = doc["document_ref"]
        entry = plain(dict(doc))
        entry["lines"] = [plain(dict(line)) for line in lines if line["document_ref"] == ref]
        read = erp.get(ref)
        entry["erp"] = plain(dict(read)) if read is not None else None
        entry["erp_lines"] = [plain(dict(line)) for line in erp_lines if line["external_id"] == ref]
        entry["lineage"] = lineage(conn, run_id=doc["run_id"], step="invoice", dag_id="billing")
        out.append(entry)
    return out


def _psa_invoices(conn: Cursor, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The PSA invoices mirroring the record's ERP invoices (``billing.psa_invoice``)."""
    refs = [d["document_ref"] for d in documents if d["doc_type"] == "invoice"]
    if not refs or not table_exists(conn, "billing.psa_invoice"):
        return []
    rows = conn.execute(
        """
        SELECT erp_external_id, erp_internal_id, psa_invoice_id, psa_number, erp_status, psa_state, paid_minor,
               currency, last_run_id, updated_at
        FROM billing.psa_invoice WHERE erp_external_id = ANY(%s) ORDER BY erp_external_id
        """,
        (refs,),
    ).fetchall()
    return [plain(dict(row)) for row in rows]


def _journals(conn: Cursor, project_ref: str, day: Any) -> list[dict[str, Any]]:
    """The revenue journals of the project for the month of ``day`` (its recognition period), each
    with its lines and its posting to the ERP (ledger state, ERP internal id, period)."""
    if not table_exists(conn, "revenue.journal"):
        return []
    journals = conn.execute(
        """
        SELECT j.idempotency_key, j.external_id, j.legal_entity, j.period_month, j.currency, j.seq, j.state,
               j.posting_period, j.reason, j.debit_minor, j.run_id,
               p.state AS ledger_state, p.erp_internal_id, p.period AS erp_period
        FROM revenue.journal j
        LEFT JOIN LATERAL (
            SELECT state, erp_internal_id, period FROM ledger.posting
            WHERE record_type = 'journalentry' AND external_id = j.external_id ORDER BY seq DESC LIMIT 1
        ) p ON true
        WHERE j.project_ref = %s AND j.period_month = date_trunc('month', %s::date)::date
        ORDER BY j.legal_entity, j.currency, j.seq
        """,
        (project_ref, day),
    ).fetchall()
    keys = [j["idempotency_key"] for j in journals]
    lines = conn.execute(
        "SELECT idempotency_key, line_no, account, role, debit_minor, credit_minor FROM revenue.journal_line"
        " WHERE idempotency_key = ANY(%s) ORDER BY idempotency_key, line_no",
        (keys,),
    ).fetchall()
    out = []
    for journal in journals:
        entry = plain(dict(journal))
        entry["lines"] = [
            plain({k: v for k, v in line.items() if k != "idempotency_key"})
            for line in lines
            if line["idempotency_key"] == journal["idempotency_key"]
        ]
        out.append(entry)
    return out


def billing_part(conn: Cursor, events: list[Any], canonical: Any, external_id: str) -> dict[str, Any]:
    """Events, documents (with ERP read-back), PSA invoices and revenue journals of one record.

    The project and period of the journals are the latest event's (what was billed), else the
    canonical record's."""
    documents = _documents(conn, events, external_id)
    anchor = events[-1] if events else canonical
    if anchor is None:
        project, day = None, None
    else:
        project = anchor["project_ref"]
        day = anchor["event_date"] if events else anchor["spent_date"]
    return {
        "events": [plain(dict(e)) for e in events],
        "documents": documents,
        "psa_invoices": _psa_invoices(conn, documents),
        "revenue_journals": _journals(conn, project, day) if project is not None else [],
        "project_ref": project,
        "period_month": plain(day.replace(day=1)) if day is not None else None,
    }


def format_billing(part: dict[str, Any]) -> list[str]:
    """Text lines of :func:`billing_part` for :func:`psa_erp_sync.trace.format_text`."""
    lines = ["  6. billing"]
    for e in part["events"]:
        what = (
            f"credit line for {e['credits_ref']}"
            if e["credits_ref"]
            else f"version {e['source_version'][:12]}"
        )
        lines.append(
            f"     event {e['event_ref']} ({what}): {e['event_date']} {e['amount_minor']} {e['currency']}"
            f" minor units [{e['state']}]{' on ' + e['document_ref'] if e['document_ref'] else ''}"
        )
    if not part["events"]:
        lines.append("     (no billing event)")
    for d in part["documents"]:
        credits = f" crediting {d['credits_document']}" if d["credits_document"] else ""
        lines.append(
            f"     {d['doc_type']} {d['document_ref']}{credits}: state {d['state']}, ERP id {d['erp_internal_id']},"
            f" period {d['period']}, total {d['total_minor']} {d['currency']} ({d['line_count']} lines)"
        )
        for line in d["lines"]:
            lines.append(f"       line {line['line_no']}: {line['event_ref']} {line['amount_minor']}")
        if d["erp"] is not None:
            r = d["erp"]
            number = f" {r['tran_id']}" if r["tran_id"] else ""
            lines.append(
                f"       ERP read-back{number}: {r['record_type']} {r['internal_id']} status {r['status']}"
                f"{' (voided)' if r['voided'] else ''}, total {r['total_minor']},"
                f" remaining {r['amount_remaining_minor']}; this entry's ERP lines: "
                + (", ".join(f"#{x['line_no']} {x['amount_minor']}" for x in d["erp_lines"]) or "-")
            )
    for p in part["psa_invoices"]:
        lines.append(
            f"     PSA invoice {p['psa_number']} (id {p['psa_invoice_id']}) for {p['erp_external_id']}:"
            f" {p['psa_state']}, paid {p['paid_minor']} {p['currency']}"
        )
    lines.append(f"  7. revenue journals of project {part['project_ref']}, period {part['period_month']}")
    for j in part["revenue_journals"]:
        lines.append(
            f"     {j['external_id']} ({j['legal_entity']} {j['currency']}, {j['state']}): ledger {j['ledger_state']},"
            f" ERP id {j['erp_internal_id']}, period {j['erp_period'] or j['posting_period']}"
        )
        for line in j["lines"]:
            lines.append(
                f"       {line['account']} {line['role']}: debit {line['debit_minor']} credit {line['credit_minor']}"
            )
    if not part["revenue_journals"]:
        lines.append("     (no revenue journal)")
    return lines
