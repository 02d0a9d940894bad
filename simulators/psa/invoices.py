"""Harvest v2 invoices of the PSA simulator: list/read, create (marking entries billed), state
messages, payments.

- ``GET /v2/invoices`` (filters ``client_id``, ``state``, ``updated_since``, ``from``/``to`` on
  ``issue_date``; paged like every list) and ``GET /v2/invoices/{id}``.
- ``POST /v2/invoices``: ``client_id`` (required), ``number`` (default: the id), ``currency``
  (default: the client's), ``issue_date`` (default: today), ``due_date``, ``subject``, ``notes``,
  ``purchase_order``, ``period_start``/``period_end``, free ``line_items``
  (``kind, description, quantity, unit_price, project_id``) and ``line_items_import``:
  ``{"project_ids": [...], "time": {"summary_type", "from", "to"}, "expenses": {...}}`` as Harvest
  (imports the unbilled billable entries of those projects in the range), plus our extension
  ``time_entry_ids`` / ``expense_ids`` (exactly these entries; each must be billable, unbilled and
  of the invoice's client, else 422). Imported entries become ``is_billed``, ``is_locked`` with
  ``invoice: {id, number}``, ``updated_at`` moves and ``time_entry.updated`` is queued. The invoice
  starts as ``draft``.
- ``POST /v2/invoices/{id}/messages`` ``{"event_type": "send" | "close" | "re-open" | "draft"}``
  moves the state (draft->open, open->closed, closed->open, open->draft) as Harvest's "mark as";
  answers 201 with the invoice message (Harvest's ``InvoiceMessage``, no recipients).
- ``POST /v2/invoices/{id}/payments`` ``{"amount", "paid_at"?, "paid_date"?, "notes"?}`` on an open
  invoice lowers ``due_amount``; at zero the state is ``paid`` with ``paid_at``/``paid_date``.
  Over-payment answers 422. ``GET /v2/invoices/{id}/payments`` lists them.
- ``DELETE /v2/invoices/{id}``: a draft without payments; its entries become unbilled again.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from simulators.common.app import db_of
from simulators.psa import render
from simulators.psa.api import Filters, _date, _datetime, _int, _json_body, _list, _money, error, render_one
from simulators.psa.paging import BadRequest
from simulators.psa.state import psa_of
from simulators.psa.webhooks import enqueue

router = APIRouter(prefix="/v2", tags=["harvest v2"])

STATES = ("draft", "open", "paid", "closed")
CENT = Decimal("0.01")
INVOICED_REASON = "Item Invoiced and Locked"
_MESSAGES = {
    "send": ("draft", "open"),
    "close": ("open", "closed"),
    "re-open": ("closed", "open"),
    "draft": ("open", "draft"),
}


@router.get("/invoices")
def list_invoices(request: Request) -> Response:
    """Invoices ordered by id. Filters: ``client_id``, ``state``, ``updated_since``, ``from``/``to``
    (issue_date). Paging: ``per_page``, ``cursor``/``page``."""
    f = Filters(request, "inv").eq_int("client_id").updated_since().date_range("issue_date")
    if (state := request.query_params.get("state")) is not None:
        if state not in STATES:
            raise BadRequest(422, f"state must be one of {', '.join(STATES)}")
        f.add("inv.state = %s", state)
    return _list(request, render.INVOICE, f)


@router.get("/invoices/{invoice_id}")
def get_invoice(request: Request, invoice_id: int) -> Response:
    with db_of(request).tx() as conn:
        body = render_one(conn, render.INVOICE, invoice_id)
    return error(404, "Not found") if body is None else Response(content=body, media_type="application/json")


def _ids(name: str, value: Any) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(422, f"{name} must be a list of ids")
    return [_int(name, str(v)) for v in value]


def _range(section: Any, name: str) -> tuple[dt.date | None, dt.date | None, str]:
    if section is None:
        return None, None, "project"
    if not isinstance(section, dict):
        raise BadRequest(422, f"line_items_import.{name} must be an object")
    low = _date("from", str(section["from"])) if section.get("from") else None
    high = _date("to", str(section["to"])) if section.get("to") else None
    return low, high, str(section.get("summary_type") or "project")


_CREATE_FIELDS = {
    "client_id",
    "number",
    "currency",
    "issue_date",
    "due_date",
    "subject",
    "notes",
    "purchase_order",
    "period_start",
    "period_end",
    "line_items",
    "line_items_import",
}


@router.post("/invoices", status_code=201)
async def create_invoice(request: Request) -> Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        return error(422, "body must be a JSON object")
    unknown = set(body) - _CREATE_FIELDS
    if unknown:
        return error(422, f"unknown or read-only fields: {sorted(unknown)}")
    if body.get("client_id") is None:
        return error(422, "missing required fields: ['client_id']")
    return await run_in_threadpool(_create_invoice, request, body)


def _import_rows(
    conn: psycopg.Connection, client_id: int, spec: Any
) -> tuple[list[Any], list[Any], str, str]:
    """Time entries and expenses to bill: (id, project_id, quantity, amount) rows of each."""
    if spec is None:
        return [], [], "project", "project"
    if not isinstance(spec, dict):
        raise BadRequest(422, "line_items_import must be an object")
    unknown = set(spec) - {"project_ids", "time", "expenses", "time_entry_ids", "expense_ids"}
    if unknown:
        raise BadRequest(422, f"line_items_import: unknown fields {sorted(unknown)}")
    projects = _ids("project_ids", spec.get("project_ids"))
    t_from, t_to, t_summary = _range(spec.get("time"), "time")
    e_from, e_to, e_summary = _range(spec.get("expenses"), "expenses")
    picked_time = _ids("time_entry_ids", spec.get("time_entry_ids"))
    picked_exp = _ids("expense_ids", spec.get("expense_ids"))
    time_rows: list[Any] = []
    exp_rows: list[Any] = []
    if picked_time or (projects and "time" in spec):
        time_rows = conn.execute(
            """SELECT te.id, te.project_id, te.hours, round(te.hours * coalesce(te.billable_rate, 0), 2),
                      te.billable AND NOT te.is_billed AND p.client_id = %s
                 FROM time_entries te JOIN projects p ON p.id = te.project_id
                WHERE (te.id = ANY(%s) OR (cardinality(%s::bigint[]) = 0 AND te.project_id = ANY(%s)
                       AND te.billable AND NOT te.is_billed
                       AND (%s::date IS NULL OR te.spent_date >= %s) AND (%s::date IS NULL OR te.spent_date <= %s)))
                ORDER BY te.id FOR UPDATE OF te""",
            (client_id, picked_time, picked_time, projects, t_from, t_from, t_to, t_to),
        ).fetchall()
        _check_picked("time entry", picked_time, time_rows)
    if picked_exp or (projects and "expenses" in spec):
        exp_rows = conn.execute(
            """SELECT ex.id, ex.project_id, coalesce(ex.units, 1), round(ex.total_cost, 2),
                      ex.billable AND NOT ex.is_billed AND p.client_id = %s
                 FROM expenses ex JOIN projects p ON p.id = ex.project_id
                WHERE (ex.id = ANY(%s) OR (cardinality(%s::bigint[]) = 0 AND ex.project_id = ANY(%s)
                       AND ex.billable AND NOT ex.is_billed
                       AND (%s::date IS NULL OR ex.spent_date >= %s) AND (%s::date IS NULL OR ex.spent_date <= %s)))
                ORDER BY ex.id FOR UPDATE OF ex""",
            (client_id, picked_exp, picked_exp, projects, e_from, e_from, e_to, e_to),
        ).fetchall()
        _check_picked("expense", picked_exp, exp_rows)
    return time_rows, exp_rows, t_summary, e_summary


def _check_picked(what: str, picked: list[int], rows: list[Any]) -> None:
    found = {int(r[0]) for r in rows}
    missing = sorted(set(picked) - found)
    if missing:
        raise BadRequest(422, f"{what} ids not found: {missing}")
    refused = sorted(int(r[0]) for r in rows if not r[4])
    if refused:
        raise BadRequest(422, f"{what} ids not billable, already billed or of another client: {refused}")


def _summarize(kind: str, label: str, rows: list[Any], summary: str) -> list[tuple[Any, ...]]:
    """Line items (project_id, kind, description, quantity, unit_price, amount) from entries."""
    lines: list[tuple[Any, ...]] = []
    if summary == "detailed":
        for rid, project, quantity, amount, _ in rows:
            unit = (amount / quantity).quantize(CENT) if quantity else amount
            lines.append((project, kind, f"{label} #{rid}", quantity, unit, amount))
        return lines
    grouped: dict[int, tuple[Decimal, Decimal]] = {}
    for _, project, quantity, amount, _ in rows:
        q, a = grouped.get(project, (Decimal(0), Decimal(0)))
        grouped[project] = (q + quantity, a + amount)
    for project, (quantity, amount) in sorted(grouped.items()):
        unit = (amount / quantity).quantize(CENT) if quantity else amount
        lines.append((project, kind, label, quantity, unit, amount))
    return lines


def _free_lines(value: Any) -> list[tuple[Any, ...]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(422, "line_items must be a list")
    lines = []
    for item in value:
        if not isinstance(item, dict) or not item.get("kind"):
            raise BadRequest(422, "each line item needs a kind")
        quantity = _money("quantity", item.get("quantity", 1)) or Decimal(1)
        unit = _money("unit_price", item.get("unit_price", 0)) or Decimal(0)
        project = _int("project_id", str(item["project_id"])) if item.get("project_id") is not None else None
        lines.append(
            (
                project,
                str(item["kind"]),
                item.get("description"),
                quantity,
                unit,
                (quantity * unit).quantize(CENT),
            )
        )
    return lines


def _create_invoice(request: Request, body: dict[str, Any]) -> Response:
    client_id = _int("client_id", str(body["client_id"]))
    with db_of(request).tx() as conn:
        client = conn.execute("SELECT currency FROM clients WHERE id = %s", (client_id,)).fetchone()
        if client is None:
            return error(422, f"client {client_id} does not exist")
        time_rows, exp_rows, t_summary, e_summary = _import_rows(
            conn, client_id, body.get("line_items_import")
        )
        lines = (
            _free_lines(body.get("line_items"))
            + _summarize("Service", "Time", time_rows, t_summary)
            + _summarize("Product", "Expenses", exp_rows, e_summary)
        )
        if not lines:
            return error(422, "an invoice needs line_items or entries to import")
        amount = sum((line[5] for line in lines), Decimal(0))
        issue = _date("issue_date", str(body["issue_date"])) if body.get("issue_date") else dt.date.today()
        due = _date("due_date", str(body["due_date"])) if body.get("due_date") else issue
        row = conn.execute("SELECT nextval(pg_get_serial_sequence('invoices', 'id'))").fetchone()
        assert row is not None
        invoice_id = int(row[0])
        number = str(body.get("number") or invoice_id)
        if conn.execute("SELECT 1 FROM invoices WHERE number = %s", (number,)).fetchone():
            return error(422, f"invoice number {number} is already used")
        conn.execute(
            """INSERT INTO invoices (id, client_id, number, purchase_order, subject, notes, currency, amount,
                                     due_amount, issue_date, due_date, period_start, period_end)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                invoice_id,
                client_id,
                number,
                body.get("purchase_order"),
                body.get("subject"),
                body.get("notes"),
                str(body.get("currency") or client[0]),
                amount,
                amount,
                issue,
                due,
                _date("period_start", str(body["period_start"])) if body.get("period_start") else None,
                _date("period_end", str(body["period_end"])) if body.get("period_end") else None,
            ),
        )
        conn.execute(
            """INSERT INTO invoice_line_items (invoice_id, project_id, kind, description, quantity, unit_price, amount)
               SELECT %s, * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::numeric[], %s::numeric[], %s::numeric[])""",
            (invoice_id, *[list(column) for column in zip(*lines, strict=True)]),
        )
        entry_ids = [int(r[0]) for r in time_rows]
        for table, ids in (("time_entries", entry_ids), ("expenses", [int(r[0]) for r in exp_rows])):
            if ids:
                conn.execute(
                    f"""UPDATE {table} SET is_billed = TRUE, invoice_id = %s, invoice_number = %s,
                               is_locked = TRUE, locked_reason = %s, updated_at = clock_timestamp()
                         WHERE id = ANY(%s)""",
                    (invoice_id, number, INVOICED_REASON, ids),
                )
        enqueue(conn, render.TIME_ENTRY, "time_entry.updated", entry_ids)
        rendered = render_one(conn, render.INVOICE, invoice_id)
    psa_of(request).dispatcher.wake()
    return Response(content=rendered, media_type="application/json", status_code=201)


@router.post("/invoices/{invoice_id}/messages", status_code=201)
async def invoice_message(request: Request, invoice_id: int) -> Response:
    body = await _json_body(request)
    event = body.get("event_type") if isinstance(body, dict) else None
    if event not in _MESSAGES:
        return error(422, f"event_type must be one of {', '.join(_MESSAGES)}")
    source, target = _MESSAGES[event]
    with db_of(request).tx() as conn:
        row = conn.execute("SELECT state FROM invoices WHERE id = %s FOR UPDATE", (invoice_id,)).fetchone()
        if row is None:
            return error(404, "Not found")
        if row[0] != source:
            return error(422, f"cannot {event} an invoice that is {row[0]}")
        conn.execute(
            """UPDATE invoices SET state = %s, updated_at = clock_timestamp(),
                      sent_at = CASE WHEN %s = 'send' THEN coalesce(sent_at, clock_timestamp()) ELSE sent_at END,
                      closed_at = CASE WHEN %s = 'close' THEN clock_timestamp()
                                       WHEN %s = 're-open' THEN NULL ELSE closed_at END
                WHERE id = %s""",
            (target, event, event, event, invoice_id),
        )
        message = conn.execute(
            "INSERT INTO invoice_messages (invoice_id, event_type) VALUES (%s, %s) RETURNING id",
            (invoice_id, event),
        ).fetchone()
        assert message is not None
        rendered = render_one(conn, render.INVOICE_MESSAGE, int(message[0]))
    return Response(content=rendered, media_type="application/json", status_code=201)


@router.post("/invoices/{invoice_id}/payments", status_code=201)
async def create_payment(request: Request, invoice_id: int) -> Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        return error(422, "body must be a JSON object")
    unknown = set(body) - {"amount", "paid_at", "paid_date", "notes"}
    if unknown:
        return error(422, f"unknown fields: {sorted(unknown)}")
    amount = _money("amount", body.get("amount"))
    if amount is None or amount <= 0 or amount != amount.quantize(CENT):
        return error(422, "amount must be a positive amount with at most 2 decimals")
    paid_at = _datetime("paid_at", str(body["paid_at"])) if body.get("paid_at") else None
    paid_date = _date("paid_date", str(body["paid_date"])) if body.get("paid_date") else None
    return await run_in_threadpool(
        _create_payment, request, invoice_id, amount, paid_at, paid_date, body.get("notes")
    )


def _create_payment(
    request: Request,
    invoice_id: int,
    amount: Decimal,
    paid_at: dt.datetime | None,
    paid_date: dt.date | None,
    notes: Any,
) -> Response:
    with db_of(request).tx() as conn:
        row = conn.execute(
            "SELECT state, due_amount FROM invoices WHERE id = %s FOR UPDATE", (invoice_id,)
        ).fetchone()
        if row is None:
            return error(404, "Not found")
        state, due = row
        if state != "open":
            return error(422, f"payments are recorded on open invoices; this one is {state}")
        if amount > due:
            return error(422, f"amount {amount} exceeds the amount due {due}")
        at = paid_at or dt.datetime.now(dt.UTC)
        day = paid_date or at.date()
        pay = conn.execute(
            "INSERT INTO invoice_payments (invoice_id, amount, paid_at, paid_date, notes) VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (invoice_id, amount, at, day, None if notes is None else str(notes)),
        ).fetchone()
        assert pay is not None
        conn.execute(
            """UPDATE invoices SET due_amount = due_amount - %s, updated_at = clock_timestamp(),
                      state = CASE WHEN due_amount - %s = 0 THEN 'paid' ELSE state END,
                      paid_at = CASE WHEN due_amount - %s = 0 THEN %s ELSE paid_at END,
                      paid_date = CASE WHEN due_amount - %s = 0 THEN %s ELSE paid_date END
                WHERE id = %s""",
            (amount, amount, amount, at, amount, day, invoice_id),
        )
        rendered = render_one(conn, render.INVOICE_PAYMENT, int(pay[0]))
    return Response(content=rendered, media_type="application/json", status_code=201)


@router.get("/invoices/{invoice_id}/payments")
def list_payments(request: Request, invoice_id: int) -> Response:
    f = Filters(request, "ip").updated_since()
    f.add("ip.invoice_id = %s", invoice_id)
    return _list(request, render.INVOICE_PAYMENT, f)


@router.delete("/invoices/{invoice_id}")
def delete_invoice(request: Request, invoice_id: int) -> Response:
    """Delete a draft invoice without payments; its time entries and expenses become unbilled."""
    with db_of(request).tx() as conn:
        row = conn.execute("SELECT state FROM invoices WHERE id = %s FOR UPDATE", (invoice_id,)).fetchone()
        if row is None:
            return error(404, "Not found")
        if row[0] != "draft":
            return error(422, f"only a draft invoice can be deleted; this one is {row[0]}")
        released = []
        for table in ("time_entries", "expenses"):
            ids = conn.execute(
                f"""UPDATE {table} SET is_billed = FALSE, invoice_id = NULL, invoice_number = NULL,
                           is_locked = is_closed,
                           locked_reason = CASE WHEN is_closed THEN 'Item Approved and Locked for this Time Period' END,
                           updated_at = clock_timestamp()
                     WHERE invoice_id = %s RETURNING id""",
                (invoice_id,),
            ).fetchall()
            if table == "time_entries":
                released = [int(r[0]) for r in ids]
        conn.execute("DELETE FROM invoice_line_items WHERE invoice_id = %s", (invoice_id,))
        conn.execute("DELETE FROM invoice_messages WHERE invoice_id = %s", (invoice_id,))
        conn.execute("DELETE FROM invoices WHERE id = %s", (invoice_id,))
        enqueue(conn, render.TIME_ENTRY, "time_entry.updated", released)
    psa_of(request).dispatcher.wake()
    return Response(status_code=200)
