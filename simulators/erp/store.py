"""Record store of the ERP simulator: reads, validated upserts (single and batch), deletes, jobs.

A batch of 100 costs a handful of statements: the idempotency key, a ``SELECT ... FOR UPDATE`` of
the items' existing records, one or two set-based reference look-ups, one
``INSERT ... ON CONFLICT`` over ``unnest`` arrays and the job's result. All in one transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

from simulators.common.webhooks import enqueue_bodies
from simulators.erp.records import AMOUNT_FIELD, EXTERNAL_ID, FIELDS, SUBLIST, ref_key
from simulators.erp.validation import (
    READ_ONLY,
    SYSTEM_MANAGED,
    ErrorDetail,
    existing_period_errors,
    line_total,
    load_lookup,
    parse_decimal,
    sublist_items,
    validate,
)


class NetSuiteError(Exception):
    """An error answered in NetSuite's shape: ``{"type","title","status","o:errorDetails"}``."""

    def __init__(
        self,
        status: int,
        details: list[ErrorDetail],
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(details[0].detail if details else title or str(status))
        self.status = status
        self.details = details
        self.title = title or _TITLES.get(status, "Error")
        self.headers = headers or {}
        self.extra = extra or {}

    def as_json(self) -> dict[str, Any]:
        return {
            "type": f"https://www.rfc-editor.org/rfc/rfc9110.html#section-15.{5 if self.status < 500 else 6}",
            "title": self.title,
            "status": self.status,
            "o:errorDetails": [d.as_json() for d in self.details],
            **self.extra,
        }


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Record Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
}


def bad_request(code: str, path: str, detail: str, status: int = 400) -> NetSuiteError:
    return NetSuiteError(status, [ErrorDetail(code, path, detail)])


def not_found(record_type: str, ident: str) -> NetSuiteError:
    return NetSuiteError(
        404,
        [ErrorDetail("NONEXISTENT_ID", "id", f"The record instance does not exist. {record_type} {ident}")],
    )


def iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Stored:
    id: int
    type: str
    external_id: str
    body: dict[str, Any]
    is_inactive: bool
    created_at: dt.datetime
    last_modified: dt.datetime

    def as_json(self, base: str) -> dict[str, Any]:
        return {
            "links": [{"rel": "self", "href": f"{base}/services/rest/record/v1/{self.type}/{self.id}"}],
            **self.body,
            "id": str(self.id),
            "externalId": self.external_id,
            "isInactive": self.is_inactive,
            "dateCreated": iso(self.created_at),
            "lastModifiedDate": iso(self.last_modified),
        }


_COLUMNS = "id, type, external_id, body, is_inactive, created_at, last_modified"


def _stored(values: tuple[Any, ...]) -> Stored:
    return Stored(*values)


def get(conn: psycopg.Connection, record_type: str, ident: str, *, for_update: bool = False) -> Stored | None:
    """A record by internal id (``"123"``) or external id (``"eid:abc"``)."""
    lock = " FOR UPDATE" if for_update else ""
    if ident.startswith("eid:"):
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM record WHERE type = %s AND external_id = %s{lock}",
            (record_type, ident[4:]),
        ).fetchone()
    elif ident.isdigit():
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM record WHERE type = %s AND id = %s{lock}", (record_type, int(ident))
        ).fetchone()
    else:
        raise bad_request(
            "INVALID_KEY_OR_REF", "id", f"Invalid record id {ident!r}; use an integer or eid:<externalId>."
        )
    return _stored(row) if row is not None else None


def normalize(record_type: str, body: dict[str, Any]) -> dict[str, Any]:
    """Drop read-only fields and keep decimal fields as decimal strings (never floats)."""
    out: dict[str, Any] = {}
    managed = SYSTEM_MANAGED.get(record_type, ())
    for name, value in body.items():
        if name in READ_ONLY or name in managed:
            continue
        if FIELDS[record_type].get(name) == "lines" and isinstance(value, dict):
            out[name] = _normalize_lines(value)
        elif FIELDS[record_type].get(name) == "decimal" and not isinstance(value, str):
            number = parse_decimal(value)
            out[name] = str(number) if number is not None else value
        else:
            out[name] = value
    return out


def _normalize_lines(value: dict[str, Any]) -> dict[str, Any]:
    """A sublist with JSON numbers turned into decimal strings (kept exact, never floats)."""
    items = value.get("items")
    if not isinstance(items, list):
        return value
    lines = []
    for line in items:
        if isinstance(line, dict):
            line = {
                k: (
                    str(v) if isinstance(v, (int, Decimal)) and not isinstance(v, bool) and k != "line" else v
                )
                for k, v in line.items()
            }
        lines.append(line)
    return {**value, "items": lines}


def derive(record_type: str, given: dict[str, Any], merged: dict[str, Any]) -> dict[str, Any]:
    """Fill a transaction's total (``payment`` for a payment) from its lines when the caller sent
    lines without it, as NetSuite computes the total of an invoice from its items."""
    total_field = {"invoice": "total", "creditmemo": "total", "customerpayment": "payment"}.get(record_type)
    sublist = SUBLIST.get(record_type)
    if (
        total_field is None
        or sublist is None
        or sublist not in given
        or given.get(total_field) not in (None, "")
    ):
        return merged
    total = line_total(record_type, merged)
    if total is not None:
        merged = {**merged, total_field: str(total)}
    return merged


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, default=_json_default, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _money(record_type: str, body: dict[str, Any], name: str | None) -> str | None:
    if name is None or body.get(name) in (None, ""):
        return None
    number = parse_decimal(body[name])
    return str(number) if number is not None else None


def upsert_rows(
    conn: psycopg.Connection, record_type: str, rows: list[tuple[str, dict[str, Any]]]
) -> dict[str, tuple[int, bool]]:
    """Upsert validated ``(external_id, full_body)`` rows in one statement: ext -> (id, inserted)."""
    if not rows:
        return {}
    exts, bodies, inactive, hours, rates, amounts = [], [], [], [], [], []
    for ext, body in rows:
        stored = {k: v for k, v in body.items() if k not in ("externalId", "isInactive")}
        exts.append(ext)
        bodies.append(_dumps(stored))
        inactive.append(bool(body.get("isInactive", False)))
        hours.append(_money(record_type, body, "hours" if record_type == "timebill" else None))
        rates.append(_money(record_type, body, "rate" if record_type == "timebill" else None))
        amounts.append(_money(record_type, body, AMOUNT_FIELD.get(record_type)))
    result = conn.execute(
        """
        INSERT INTO record (type, external_id, body, is_inactive, hours, rate, amount)
        SELECT %s, u.external_id, u.body::jsonb, u.is_inactive, u.hours::numeric, u.rate::numeric, u.amount::numeric
          FROM unnest(%b::text[], %b::text[], %b::boolean[], %b::text[], %b::text[], %b::text[])
               AS u(external_id, body, is_inactive, hours, rate, amount)
        ON CONFLICT (type, external_id) DO UPDATE
           SET body = EXCLUDED.body,
               is_inactive = EXCLUDED.is_inactive,
               hours = EXCLUDED.hours,
               rate = EXCLUDED.rate,
               amount = EXCLUDED.amount,
               last_modified = clock_timestamp()
        RETURNING id, external_id, (xmax = 0) AS inserted
        """,
        (record_type, exts, bodies, inactive, hours, rates, amounts),
    ).fetchall()
    return {ext: (rid, inserted) for rid, ext, inserted in result}


def _merged(existing: Stored | None, body: dict[str, Any]) -> dict[str, Any]:
    if existing is None:
        return dict(body)
    base = dict(existing.body)
    base["isInactive"] = existing.is_inactive
    base.update(body)
    return base


def _existing_body(existing: Stored) -> dict[str, Any]:
    return {**existing.body, "isInactive": existing.is_inactive}


def upsert_one(
    conn: psycopg.Connection, record_type: str, external_id: str, body: dict[str, Any]
) -> tuple[int, bool]:
    """Validate and upsert one record by external id (fields given overwrite, others are kept)."""
    if not EXTERNAL_ID.match(external_id):
        raise bad_request("INVALID_KEY_OR_REF", "externalId", "External ids use letters, digits, _ and -.")
    if "externalId" in body and body["externalId"] != external_id:
        raise bad_request("INVALID_FLD_VALUE", "externalId", "externalId in the body differs from the URL.")
    body = normalize(record_type, body)
    existing = get(conn, record_type, "eid:" + external_id, for_update=True)
    merged = derive(record_type, body, _merged(existing, body))
    old = _existing_body(existing) if existing is not None else None
    lookup = load_lookup(conn, record_type, [merged, *([old] if old else [])])
    errors = validate(record_type, merged, lookup, old)
    if errors:
        raise NetSuiteError(400, errors)
    written = upsert_rows(conn, record_type, [(external_id, merged)])
    after_write(conn, record_type, written, {external_id: merged})
    return written[external_id]


def patch_one(conn: psycopg.Connection, record_type: str, ident: str, body: dict[str, Any]) -> Stored:
    existing = get(conn, record_type, ident, for_update=True)
    if existing is None:
        raise not_found(record_type, ident)
    if "externalId" in body and body["externalId"] != existing.external_id:
        raise bad_request(
            "INVALID_FLD_VALUE", "externalId", "The external id of a record cannot change here."
        )
    upsert_one(conn, record_type, existing.external_id, body)
    updated = get(conn, record_type, str(existing.id))
    assert updated is not None
    return updated


def delete_one(conn: psycopg.Connection, record_type: str, ident: str) -> None:
    existing = get(conn, record_type, ident, for_update=True)
    if existing is None:
        raise not_found(record_type, ident)
    old = _existing_body(existing)
    errors = existing_period_errors(record_type, old, load_lookup(conn, record_type, [old]))
    if record_type == "invoice" and _applied_ids(conn, [existing.id]):
        errors.append(
            ErrorDetail(
                "DEPENDENT_RECORDS",
                "id",
                "This invoice has payments or credits applied; delete or change those first.",
            )
        )
    if errors:
        raise NetSuiteError(400, errors)
    conn.execute("DELETE FROM record WHERE id = %s", (existing.id,))
    if record_type in _BILLING:
        conn.execute("DELETE FROM record_line WHERE transaction_id = %s", (existing.id,))
        released = conn.execute(
            "DELETE FROM application WHERE source_id = %s RETURNING invoice_id", (existing.id,)
        ).fetchall()
        refresh_invoices(conn, [int(r[0]) for r in released])


# --------------------------------------------------------------------------- lines, applications, invoice state

INVOICE_OPEN, INVOICE_PAID, INVOICE_VOIDED = "Open", "Paid In Full", "Voided"
_BILLING = frozenset({"invoice", "creditmemo", "customerpayment", "journalentry"})


def _applied_ids(conn: psycopg.Connection, invoice_ids: list[int]) -> list[int]:
    rows = conn.execute(
        "SELECT DISTINCT invoice_id FROM application WHERE invoice_id = ANY(%s)", (invoice_ids,)
    ).fetchall()
    return [int(r[0]) for r in rows]


def _invoice_ids(conn: psycopg.Connection, refs: list[Any]) -> list[int | None]:
    """Internal ids of the invoices named by reference objects (None where none exists)."""

    def by_id(ref: Any) -> bool:
        return isinstance(ref, dict) and str(ref.get("id") or "").isdigit()

    exts = sorted({key for r in refs if not by_id(r) and (key := ref_key(r)) is not None})
    ids = sorted({int(r["id"]) for r in refs if by_id(r)})
    by_ext: dict[str, int] = {}
    known: set[int] = set()
    for rid, ext in conn.execute(
        "SELECT id, external_id FROM record WHERE type = 'invoice' AND (external_id = ANY(%s) OR id = ANY(%s))",
        (exts, ids),
    ).fetchall():
        by_ext[ext] = int(rid)
        known.add(int(rid))
    out: list[int | None] = []
    for ref in refs:
        if by_id(ref):
            out.append(int(ref["id"]) if int(ref["id"]) in known else None)
        else:
            key = ref_key(ref)
            out.append(by_ext.get(key) if key is not None else None)
    return out


def after_write(
    conn: psycopg.Connection,
    record_type: str,
    written: dict[str, tuple[int, bool]],
    bodies: dict[str, dict[str, Any]],
) -> None:
    """After an upsert: rewrite the records' lines and applications, recompute the state of the
    invoices they touch, and queue ``invoice.created`` / ``invoice.paid`` (same transaction)."""
    if not written or record_type not in _BILLING:
        return  # timebills, expenses and master data: one upsert statement, nothing more
    ids = [rid for rid, _ in written.values()]
    sublist = SUBLIST.get(record_type)
    lines: list[tuple[int, str, dict[str, Any]]] = []
    docs: list[Any] = []
    if sublist is not None:
        conn.execute("DELETE FROM record_line WHERE transaction_id = ANY(%s)", (ids,))
        for ext, (rid, _) in written.items():
            body = bodies[ext]
            for number, line in enumerate(sublist_items(record_type, body), start=1):
                row = {
                    **line,
                    "transaction": str(rid),
                    "transactionType": record_type,
                    "transactionExternalId": ext,
                    "lineSequenceNumber": number,
                }
                row.setdefault("currency", body.get("currency"))
                lines.append((rid, f"{ext}:{number}", row))
                docs.append(line.get("doc"))
    affected: set[int] = set()
    if record_type in ("customerpayment", "creditmemo"):
        released = conn.execute(
            "DELETE FROM application WHERE source_id = ANY(%s) RETURNING invoice_id", (ids,)
        ).fetchall()
        affected.update(int(r[0]) for r in released)
        applied: dict[tuple[int, int], Decimal] = {}
        if record_type == "customerpayment":
            for (rid, _, row), invoice in zip(lines, _invoice_ids(conn, docs), strict=True):
                amount = parse_decimal(row.get("amount"))
                if invoice is not None and amount is not None and row.get("apply", True) is not False:
                    row["appliedTo"] = str(invoice)
                    applied[(rid, invoice)] = applied.get((rid, invoice), Decimal(0)) + amount
        else:
            sources = [
                (rid, bodies[ext]) for ext, (rid, _) in written.items() if bodies[ext].get("createdFrom")
            ]
            targets = _invoice_ids(conn, [b.get("createdFrom") for _, b in sources])
            for (rid, body), invoice in zip(sources, targets, strict=True):
                amount = parse_decimal(body.get("total"))
                if invoice is not None and amount is not None:
                    applied[(rid, invoice)] = amount
        if applied:
            conn.execute(
                """INSERT INTO application (source_id, invoice_id, amount)
                   SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::numeric[])""",
                ([k[0] for k in applied], [k[1] for k in applied], [str(v) for v in applied.values()]),
            )
            affected.update(k[1] for k in applied)
    if lines:
        conn.execute(
            """INSERT INTO record_line (transaction_id, external_id, body)
               SELECT * FROM unnest(%s::bigint[], %s::text[], %s::jsonb[])""",
            ([r[0] for r in lines], [r[1] for r in lines], [_dumps(r[2]) for r in lines]),
        )
    if record_type == "invoice":
        affected.update(ids)
    paid = refresh_invoices(conn, sorted(affected))
    if record_type == "invoice":
        created = sorted(rid for rid, inserted in written.values() if inserted)
        enqueue_bodies(conn, "invoice.created", invoice_events(conn, created))
    enqueue_bodies(conn, "invoice.paid", invoice_events(conn, paid))


def refresh_invoices(conn: psycopg.Connection, invoice_ids: list[int]) -> list[int]:
    """Recompute ``amountRemaining`` and ``status`` of invoices; the ids that became paid in full."""
    if not invoice_ids:
        return []
    rows = conn.execute(
        """SELECT r.id, r.amount, r.body ->> 'status', r.body ->> 'amountRemaining',
                  coalesce((r.body ->> 'voided')::boolean, false),
                  coalesce((SELECT sum(a.amount) FROM application a WHERE a.invoice_id = r.id), 0)
             FROM record r WHERE r.type = 'invoice' AND r.id = ANY(%s) ORDER BY r.id FOR UPDATE""",
        (invoice_ids,),
    ).fetchall()
    became_paid: list[int] = []
    for rid, total, status, remaining, voided, applied in rows:
        if voided:
            new_remaining, new_status = Decimal("0.00"), INVOICE_VOIDED
        else:
            new_remaining = max((total or Decimal(0)) - applied, Decimal(0)).quantize(Decimal("0.01"))
            new_status = INVOICE_PAID if new_remaining == 0 else INVOICE_OPEN
        if status == new_status and remaining == str(new_remaining):
            continue
        conn.execute(
            """UPDATE record SET body = body || jsonb_build_object('status', %s::text, 'amountRemaining', %s::text),
                      last_modified = clock_timestamp()
                WHERE id = %s""",
            (new_status, str(new_remaining), rid),
        )
        if new_status == INVOICE_PAID and status != INVOICE_PAID:
            became_paid.append(int(rid))
    return became_paid


def invoice_events(conn: psycopg.Connection, invoice_ids: list[int]) -> list[dict[str, Any]]:
    """The ``data`` of an invoice webhook: identity plus the state a receiver shows."""
    if not invoice_ids:
        return []
    rows = conn.execute(
        "SELECT id, external_id, body FROM record WHERE type = 'invoice' AND id = ANY(%s) ORDER BY id",
        (invoice_ids,),
    ).fetchall()
    return [
        {
            "id": str(rid),
            "externalId": ext,
            "recordType": "invoice",
            "tranId": body.get("tranId"),
            "entity": ref_key(body.get("entity")),
            "currency": ref_key(body.get("currency")),
            "total": body.get("total"),
            "amountRemaining": body.get("amountRemaining"),
            "status": body.get("status"),
        }
        for rid, ext, body in rows
    ]


# --------------------------------------------------------------------------- async batch jobs

MAX_BATCH = 100


@dataclass(frozen=True)
class Job:
    id: int
    idempotency_key: str
    type: str
    status: str
    item_count: int
    succeeded_count: int
    failed_count: int
    results: list[dict[str, Any]]
    created_at: dt.datetime
    completed_at: dt.datetime | None


_JOB_COLUMNS = "id, idempotency_key, type, status, item_count, succeeded_count, failed_count, results, created_at, completed_at"


def get_job(conn: psycopg.Connection, job_id: int) -> Job | None:
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM batch_job WHERE id = %s", (job_id,)).fetchone()
    return Job(*row) if row is not None else None


class IdempotencyConflict(Exception):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"idempotency key already used by job {job_id}")
        self.job_id = job_id


def run_batch(conn: psycopg.Connection, record_type: str, key: str, items: list[Any]) -> Job:
    """Record the key and the job, validate every item on its own and upsert the valid ones."""
    claimed = conn.execute(
        """
        INSERT INTO batch_job (idempotency_key, type, status, item_count, succeeded_count, failed_count, results)
        VALUES (%s, %s, 'PENDING', %s, 0, 0, '[]'::jsonb)
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING id
        """,
        (key, record_type, len(items)),
    ).fetchone()
    if claimed is None:  # a concurrent holder of the key has committed by now (the insert waited)
        earlier = conn.execute("SELECT id FROM batch_job WHERE idempotency_key = %s", (key,)).fetchone()
        assert earlier is not None
        raise IdempotencyConflict(earlier[0])
    job_id: int = claimed[0]

    results: list[dict[str, Any]] = [{} for _ in items]
    candidates: list[tuple[int, str, dict[str, Any]]] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        ext = item.get("externalId") if isinstance(item, dict) else None
        if not isinstance(item, dict):
            results[index] = _failed(
                None, [ErrorDetail("INVALID_FLD_VALUE", "", "Each item must be an object.")]
            )
        elif not isinstance(ext, str) or not ext:
            results[index] = _failed(
                None,
                [
                    ErrorDetail(
                        "MISSING_REQUIRED_FIELD", "externalId", "Please enter value(s) for: externalId."
                    )
                ],
            )
        elif not EXTERNAL_ID.match(ext):
            results[index] = _failed(
                ext,
                [
                    ErrorDetail(
                        "INVALID_FLD_VALUE", "externalId", "External ids use letters, digits, _ and -."
                    )
                ],
            )
        elif ext in seen:
            results[index] = _failed(
                ext, [ErrorDetail("DUP_RCRD", "externalId", "The external id appears twice in this batch.")]
            )
        else:
            seen.add(ext)
            candidates.append((index, ext, normalize(record_type, item)))

    existing: dict[str, Stored] = {}
    if candidates:
        for values in conn.execute(
            f"SELECT {_COLUMNS} FROM record WHERE type = %s AND external_id = ANY(%s) ORDER BY id FOR UPDATE",
            (record_type, [ext for _, ext, _ in candidates]),
        ).fetchall():
            stored = _stored(values)
            existing[stored.external_id] = stored
    merged = [
        (index, ext, derive(record_type, body, _merged(existing.get(ext), body)))
        for index, ext, body in candidates
    ]
    olds = {ext: _existing_body(s) for ext, s in existing.items()}
    lookup = load_lookup(conn, record_type, [m for _, _, m in merged] + list(olds.values()))
    valid: list[tuple[int, str, dict[str, Any]]] = []
    for index, ext, body in merged:
        errors = validate(record_type, body, lookup, olds.get(ext))
        if errors:
            results[index] = _failed(ext, errors)
        else:
            valid.append((index, ext, body))
    written = upsert_rows(conn, record_type, [(ext, body) for _, ext, body in valid])
    after_write(conn, record_type, written, {ext: body for _, ext, body in valid})
    for index, ext, _ in valid:
        rid, inserted = written[ext]
        results[index] = {
            "externalId": ext,
            "status": "succeeded",
            "id": str(rid),
            "operation": "insert" if inserted else "update",
            "error": None,
            "errors": [],
        }
    succeeded = len(valid)
    failed = len(items) - succeeded
    status = "SUCCEEDED" if failed == 0 else "FAILED" if succeeded == 0 else "PARTIAL_SUCCESS"
    row = conn.execute(
        f"""
        UPDATE batch_job
           SET status = %s, succeeded_count = %s, failed_count = %s, results = %s::jsonb,
               completed_at = clock_timestamp()
         WHERE id = %s
        RETURNING {_JOB_COLUMNS}
        """,
        (status, succeeded, failed, json.dumps(results), job_id),
    ).fetchone()
    assert row is not None
    return Job(*row)


def _failed(ext: str | None, errors: list[ErrorDetail]) -> dict[str, Any]:
    return {
        "externalId": ext,
        "status": "failed",
        "id": None,
        "operation": None,
        "error": errors[0].as_json(),
        "errors": [e.as_json() for e in errors],
    }
