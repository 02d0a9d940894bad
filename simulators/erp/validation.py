"""Per-type validation of ERP records, set-based: one look-up for a whole batch, then pure Python.

Error codes (``o:errorCode``) follow NetSuite: ``MISSING_REQUIRED_FIELD``, ``INVALID_KEY_OR_REF``,
``INACTIVE_RECORD``, ``PERIOD_CLOSED``, ``CURRENCY_MISMATCH``, ``TAX_CODE_MISMATCH``,
``INVALID_FLD_VALUE`` and ``INVALID_FIELD`` (a field the record type does not have).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg

from simulators.erp.records import EXTERNAL_ID, FIELDS, LINE_SOURCES, SUBLIST

#: Fields every record may carry besides its catalog fields (read-only ones are dropped on write).
SYSTEM_FIELDS = {"externalId", "id", "links", "isInactive", "lastModifiedDate", "dateCreated", "refName"}
READ_ONLY = {"id", "links", "lastModifiedDate", "dateCreated", "refName"}

REQUIRED: dict[str, tuple[str, ...]] = {
    "subsidiary": ("name", "country", "currency"),
    "currency": (),
    "taxcode": ("country",),
    "employee": ("subsidiary",),
    "customer": ("companyName", "subsidiary"),
    "job": ("companyName", "parent", "subsidiary"),
    "accountingperiod": ("startDate", "endDate", "subsidiary"),
    "timebill": ("tranDate", "employee", "customer", "subsidiary", "hours", "currency"),
    "expensereport": ("tranDate", "employee", "customer", "subsidiary", "amount", "currency", "category"),
    "invoice": ("tranDate", "entity", "subsidiary", "currency", "total"),
    "creditmemo": ("tranDate", "entity", "subsidiary", "currency", "total"),
    "customerpayment": ("tranDate", "customer", "subsidiary", "currency", "payment", "apply"),
    "journalentry": ("tranDate", "subsidiary", "currency", "line"),
    "currencyrate": ("baseCurrency", "transactionCurrency", "exchangeRate", "effectiveDate"),
    "revenueposting": ("tranDate", "job", "subsidiary", "currency", "amount"),
}

#: Reference field -> record types it may name, per record type (first match wins).
REF_TARGETS: dict[str, dict[str, tuple[str, ...]]] = {
    "subsidiary": {"currency": ("currency",)},
    "employee": {"subsidiary": ("subsidiary",)},
    "customer": {"subsidiary": ("subsidiary",), "currency": ("currency",), "taxCode": ("taxcode",)},
    "job": {"parent": ("customer",), "subsidiary": ("subsidiary",), "currency": ("currency",)},
    "accountingperiod": {"subsidiary": ("subsidiary",)},
    "timebill": {
        "employee": ("employee",),
        "customer": ("job", "customer"),
        "subsidiary": ("subsidiary",),
        "currency": ("currency",),
        "postingPeriod": ("accountingperiod",),
    },
    "expensereport": {
        "employee": ("employee",),
        "customer": ("job", "customer"),
        "subsidiary": ("subsidiary",),
        "currency": ("currency",),
        "taxCode": ("taxcode",),
        "postingPeriod": ("accountingperiod",),
    },
    "invoice": {
        "entity": ("customer",),
        "job": ("job",),
        "subsidiary": ("subsidiary",),
        "currency": ("currency",),
        "taxCode": ("taxcode",),
        "postingPeriod": ("accountingperiod",),
    },
    "creditmemo": {
        "entity": ("customer",),
        "job": ("job",),
        "subsidiary": ("subsidiary",),
        "currency": ("currency",),
        "taxCode": ("taxcode",),
        "createdFrom": ("invoice",),
        "postingPeriod": ("accountingperiod",),
    },
    "customerpayment": {
        "customer": ("customer",),
        "subsidiary": ("subsidiary",),
        "currency": ("currency",),
        "postingPeriod": ("accountingperiod",),
    },
    "journalentry": {
        "subsidiary": ("subsidiary",),
        "currency": ("currency",),
        "postingPeriod": ("accountingperiod",),
    },
    "currencyrate": {"baseCurrency": ("currency",), "transactionCurrency": ("currency",)},
    "revenueposting": {
        "job": ("job",),
        "subsidiary": ("subsidiary",),
        "currency": ("currency",),
        "postingPeriod": ("accountingperiod",),
    },
}

#: Transaction types and the period lock flags (besides ``closed`` and ``allLocked``) that block them.
POSTING_LOCKS: dict[str, tuple[str, ...]] = {
    "timebill": (),
    "expensereport": ("apLocked",),
    "invoice": ("arLocked",),
    "creditmemo": ("arLocked",),
    "customerpayment": ("arLocked",),
    "revenueposting": (),
    "journalentry": (),  # a journal is blocked by closed and allLocked, not by the AR or AP locks
}

#: Transactions booked in a currency and at an exchange rate to their subsidiary's base currency
#: (NetSuite's ``currency`` + ``exchangeRate``): a rate the client leaves out is the rate table's
#: for ``tranDate`` (1 in the base currency). NetSuite lets a client override the rate on a
#: transaction, so a given rate is kept as sent (no tolerance against the table).
FX_TRANSACTIONS = ("timebill", "expensereport", "invoice", "creditmemo")

#: Fields checked for "inactive" (and the job's parent customer through them).
INACTIVE_CHECKED = ("employee", "customer", "entity", "job")

#: Maximum decimal places per decimal field (so NUMERIC columns never round silently).
SCALE = {
    "hours": 4,
    "rate": 4,
    "amount": 2,
    "total": 2,
    "amountRemaining": 2,
    "contractValue": 2,
    "payment": 2,
    "debit": 2,
    "credit": 2,
    "exchangeRate": 10,
}

#: Fields the ERP keeps itself: what a client sends for them is ignored (NetSuite: read-only).
SYSTEM_MANAGED: dict[str, tuple[str, ...]] = {
    "invoice": ("status", "amountRemaining", "voided"),
    "creditmemo": ("status",),
}

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class ErrorDetail:
    code: str
    path: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"o:errorCode": self.code, "o:errorPath": self.path, "detail": self.detail}


@dataclass(frozen=True)
class Row:
    id: int
    type: str
    external_id: str
    body: dict[str, Any]
    is_inactive: bool


@dataclass
class Lookup:
    """Records referenced by a set of bodies, fetched in one or two queries."""

    by_key: dict[tuple[str, str], Row] = field(default_factory=dict)
    by_id: dict[int, Row] = field(default_factory=dict)
    periods: dict[str, list[Row]] = field(default_factory=dict)
    #: currency rates, (transaction currency, base currency) -> their records
    rates: dict[tuple[str, str], list[Row]] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.by_key[(row.type, row.external_id)] = row
        self.by_id[row.id] = row
        if row.type == "currencyrate":
            pair = (_ref_ext(row.body.get("transactionCurrency")), _ref_ext(row.body.get("baseCurrency")))
            if pair[0] is not None and pair[1] is not None:
                self.rates.setdefault((pair[0], pair[1]), []).append(row)
        if row.type == "accountingperiod":
            sub = _ref_ext(row.body.get("subsidiary"))
            if sub is not None:
                bucket = self.periods.setdefault(sub, [])
                if all(p.id != row.id for p in bucket):
                    bucket.append(row)

    def resolve(self, value: Any, types: tuple[str, ...]) -> Row | None:
        if isinstance(value, dict):
            internal = value.get("id")
            if internal is not None and str(internal).isdigit():
                row = self.by_id.get(int(internal))
                return row if row is not None and row.type in types else None
        key = _ref_ext(value)
        if key is None:
            return None
        for record_type in types:
            row = self.by_key.get((record_type, key))
            if row is not None:
                return row
        return None


def _ref_ext(value: Any) -> str | None:
    if isinstance(value, dict):
        for key in ("externalId", "refName"):
            found = value.get(key)
            if isinstance(found, str) and found:
                return found
        return None
    if isinstance(value, str) and value:
        return value
    return None


def _row_from_db(values: tuple[Any, ...]) -> Row:
    return Row(id=values[0], type=values[1], external_id=values[2], body=values[3], is_inactive=values[4])


def load_lookup(conn: psycopg.Connection, record_type: str, bodies: Iterable[dict[str, Any]]) -> Lookup:
    """Fetch every record the bodies reference (plus accounting periods of their subsidiaries)."""
    keys: set[tuple[str, str]] = set()
    ids: set[int] = set()
    subsidiaries: set[str] = set()
    targets = REF_TARGETS.get(record_type, {})
    bodies_list = list(bodies)
    for body in bodies_list:
        for name, types in targets.items():
            value = body.get(name)
            if isinstance(value, dict) and str(value.get("id") or "").isdigit():
                ids.add(int(value["id"]))
            ext = _ref_ext(value)
            if ext is not None:
                keys.update((t, ext) for t in types)
        for line in sublist_items(record_type, body):
            doc = line.get("doc")
            if isinstance(doc, dict) and str(doc.get("id") or "").isdigit():
                ids.add(int(doc["id"]))
            elif (ext := _ref_ext(doc)) is not None:
                keys.add(("invoice", ext))
        if record_type in POSTING_LOCKS:
            sub = _ref_ext(body.get("subsidiary"))
            if sub is not None:
                subsidiaries.add(sub)
    lookup = Lookup()
    if not keys and not ids:
        return lookup
    currencies = sorted(
        {c for body in bodies_list if (c := _ref_ext(body.get("currency"))) is not None}
        if record_type in FX_TRANSACTIONS
        else set()
    )
    key_types = [k[0] for k in keys]
    key_ids = [k[1] for k in keys]
    rows = conn.execute(
        """
        SELECT r.id, r.type, r.external_id, r.body, r.is_inactive
          FROM record r
          JOIN unnest(%b::text[], %b::text[]) AS w(type, external_id)
            ON r.type = w.type AND r.external_id = w.external_id
        UNION
        SELECT r.id, r.type, r.external_id, r.body, r.is_inactive
          FROM record r WHERE r.id = ANY(%s::bigint[])
        UNION
        SELECT r.id, r.type, r.external_id, r.body, r.is_inactive
          FROM record r
         WHERE r.type = 'accountingperiod' AND r.body -> 'subsidiary' ->> 'externalId' = ANY(%s::text[])
        UNION
        SELECT r.id, r.type, r.external_id, r.body, r.is_inactive
          FROM record r
         WHERE r.type = 'currencyrate' AND NOT r.is_inactive
           AND COALESCE(r.body -> 'transactionCurrency' ->> 'refName', r.body -> 'transactionCurrency' ->> 'externalId')
               = ANY(%s::text[])
        """,
        (key_types, key_ids, sorted(ids), sorted(subsidiaries), currencies),
    ).fetchall()
    for values in rows:
        lookup.add(_row_from_db(values))
    # A job's parent customer decides whether the job may take postings; fetch missing parents.
    parents = {
        ext
        for row in list(lookup.by_key.values())
        if row.type == "job"
        and (ext := _ref_ext(row.body.get("parent"))) is not None
        and ("customer", ext) not in lookup.by_key
    }
    if parents:
        for values in conn.execute(
            "SELECT id, type, external_id, body, is_inactive FROM record WHERE type = 'customer' AND external_id = ANY(%s)",
            (sorted(parents),),
        ).fetchall():
            lookup.add(_row_from_db(values))
    return lookup


def parse_decimal(value: Any) -> Decimal | None:
    """A decimal from a decimal string or an integer (never from a float); None when invalid."""
    if isinstance(value, (bool, float)):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value.strip()):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            return None
    return None


def _date(value: Any) -> dt.date | None:
    if not isinstance(value, str) or not _DATE.match(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def shape_errors(record_type: str, body: dict[str, Any]) -> list[ErrorDetail]:
    """Field-level checks that need no look-up: unknown fields, required fields, value formats."""
    errors: list[ErrorDetail] = []
    catalog = FIELDS[record_type]
    for name in body:
        if name not in catalog and name not in SYSTEM_FIELDS and not name.startswith("cust"):
            errors.append(
                ErrorDetail("INVALID_FIELD", name, f"Record type {record_type} has no field {name}.")
            )
    for name in REQUIRED[record_type]:
        if body.get(name) in (None, "", {}):
            errors.append(ErrorDetail("MISSING_REQUIRED_FIELD", name, f"Please enter value(s) for: {name}."))
    ext = body.get("externalId")
    if ext is not None and (not isinstance(ext, str) or not EXTERNAL_ID.match(ext)):
        errors.append(
            ErrorDetail("INVALID_FLD_VALUE", "externalId", "externalId must use letters, digits, _ and -.")
        )
    for name, kind in catalog.items():
        value = body.get(name)
        if value is None or value == "":
            continue
        if kind == "decimal":
            number = parse_decimal(value)
            if number is None:
                errors.append(ErrorDetail("INVALID_FLD_VALUE", name, f"{name} must be a decimal string."))
                continue
            exponent = number.as_tuple().exponent
            if isinstance(exponent, int) and -exponent > SCALE.get(name, 4):
                errors.append(
                    ErrorDetail(
                        "INVALID_FLD_VALUE",
                        name,
                        f"{name} has more than {SCALE.get(name, 4)} decimal places.",
                    )
                )
            if name == "hours" and not (Decimal(0) < number <= Decimal(24)):
                errors.append(
                    ErrorDetail("INVALID_FLD_VALUE", name, "hours must be greater than 0 and at most 24.")
                )
            if name in ("rate", "contractValue") and number < 0:
                errors.append(ErrorDetail("INVALID_FLD_VALUE", name, f"{name} must not be negative."))
        elif kind == "date":
            if _date(value) is None:
                errors.append(ErrorDetail("INVALID_FLD_VALUE", name, f"{name} must be a date YYYY-MM-DD."))
        elif kind == "lines":
            errors.extend(line_errors(record_type, name, value, _ref_ext(body.get("currency")) or ""))
        elif kind == "bool":
            if not isinstance(value, bool):
                errors.append(ErrorDetail("INVALID_FLD_VALUE", name, f"{name} must be true or false."))
        elif kind == "ref":
            if _ref_ext(value) is None and not (
                isinstance(value, dict) and str(value.get("id") or "").isdigit()
            ):
                errors.append(
                    ErrorDetail(
                        "INVALID_KEY_OR_REF",
                        name,
                        f"{name} must be an object with externalId, refName or id.",
                    )
                )
        elif not isinstance(value, str):
            errors.append(ErrorDetail("INVALID_FLD_VALUE", name, f"{name} must be a string."))
    if record_type == "timebill" and body.get("isBillable") is True and body.get("rate") in (None, ""):
        errors.append(
            ErrorDetail("MISSING_REQUIRED_FIELD", "rate", "Please enter value(s) for: rate (billable time).")
        )
    if "isInactive" in body and not isinstance(body["isInactive"], bool):
        errors.append(ErrorDetail("INVALID_FLD_VALUE", "isInactive", "isInactive must be true or false."))
    return errors


def sublist_items(record_type: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The lines of a transaction's sublist (``{"items": [...]}``); [] when absent or malformed."""
    name = SUBLIST.get(record_type)
    value = body.get(name) if name else None
    items = value.get("items") if isinstance(value, dict) else None
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict)]


_LINE_FIELDS: dict[str, dict[str, str]] = {
    "item": {
        "line": "int",
        "description": "text",
        "quantity": "decimal",
        "rate": "decimal",
        "amount": "decimal",
        "sourceType": "text",
        "sourceId": "text",
        "memo": "text",
    },
    "apply": {"line": "int", "doc": "ref", "amount": "decimal", "apply": "bool"},
    "line": {
        "line": "int",
        "account": "ref",
        "debit": "decimal",
        "credit": "decimal",
        "currency": "ref",
        "entity": "ref",
        "memo": "text",
    },
}
_LINE_REQUIRED = {
    "item": ("amount", "sourceType", "sourceId"),
    "apply": ("doc", "amount"),
    "line": ("account",),
}


def _money_value(value: Any, path: str, errors: list[ErrorDetail]) -> Decimal | None:
    number = parse_decimal(value)
    if number is None:
        errors.append(ErrorDetail("INVALID_FLD_VALUE", path, f"{path} must be a decimal string."))
        return None
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        errors.append(ErrorDetail("INVALID_FLD_VALUE", path, f"{path} has more than 2 decimal places."))
        return None
    return number


def line_errors(record_type: str, name: str, value: Any, currency: str = "") -> list[ErrorDetail]:
    """Shape of a sublist ``{"items": [...]}``: fields, required fields, money, sources, balance."""
    errors: list[ErrorDetail] = []
    items = value.get("items") if isinstance(value, dict) else None
    if not isinstance(items, list) or not items:
        return [
            ErrorDetail(
                "INVALID_FLD_VALUE", name, f'{name} must be {{"items": [...]}} with at least one line.'
            )
        ]
    fields = _LINE_FIELDS[name]
    debits: dict[str, Decimal] = {}
    credits: dict[str, Decimal] = {}
    for index, line in enumerate(items):
        where = f"{name}.items[{index}]"
        if not isinstance(line, dict):
            errors.append(ErrorDetail("INVALID_FLD_VALUE", where, "Each line must be an object."))
            continue
        for key in line:
            if key not in fields and not key.startswith("cust"):
                errors.append(
                    ErrorDetail("INVALID_FIELD", f"{where}.{key}", f"The {name} sublist has no field {key}.")
                )
        for key in _LINE_REQUIRED[name]:
            if line.get(key) in (None, "", {}):
                errors.append(
                    ErrorDetail(
                        "MISSING_REQUIRED_FIELD", f"{where}.{key}", f"Please enter value(s) for: {key}."
                    )
                )
        for key, kind in fields.items():
            field_value = line.get(key)
            if field_value in (None, ""):
                continue
            if kind == "decimal" and key in ("amount", "debit", "credit"):
                _money_value(field_value, f"{where}.{key}", errors)
            elif kind == "decimal" and parse_decimal(field_value) is None:
                errors.append(
                    ErrorDetail("INVALID_FLD_VALUE", f"{where}.{key}", f"{key} must be a decimal string.")
                )
            elif (
                kind == "ref"
                and _ref_ext(field_value) is None
                and not (isinstance(field_value, dict) and str(field_value.get("id") or "").isdigit())
            ):
                errors.append(
                    ErrorDetail(
                        "INVALID_KEY_OR_REF",
                        f"{where}.{key}",
                        f"{key} must be an object with externalId, refName or id.",
                    )
                )
            elif kind == "text" and not isinstance(field_value, str):
                errors.append(ErrorDetail("INVALID_FLD_VALUE", f"{where}.{key}", f"{key} must be a string."))
        if (
            name == "item"
            and line.get("sourceType") not in (None, "")
            and line.get("sourceType") not in LINE_SOURCES
        ):
            errors.append(
                ErrorDetail(
                    "INVALID_FLD_VALUE",
                    f"{where}.sourceType",
                    f"sourceType must be one of {', '.join(sorted(LINE_SOURCES))}.",
                )
            )
        if name == "apply":
            amount = parse_decimal(line.get("amount"))
            if amount is not None and amount <= 0:
                errors.append(
                    ErrorDetail("INVALID_FLD_VALUE", f"{where}.amount", "An applied amount must be positive.")
                )
        if name == "line":
            debit = parse_decimal(line.get("debit")) if line.get("debit") not in (None, "") else None
            credit = parse_decimal(line.get("credit")) if line.get("credit") not in (None, "") else None
            if (
                (debit is None) == (credit is None)
                or (debit is not None and debit < 0)
                or (credit is not None and credit < 0)
            ):
                errors.append(
                    ErrorDetail(
                        "INVALID_FLD_VALUE",
                        where,
                        "A journal line has either a debit or a credit, not negative.",
                    )
                )
                continue
            line_currency = _ref_ext(line.get("currency")) or currency
            if debit is not None:
                debits[line_currency] = debits.get(line_currency, Decimal(0)) + debit
            if credit is not None:
                credits[line_currency] = credits.get(line_currency, Decimal(0)) + credit
    if name == "line" and not errors:
        for key in sorted(set(debits) | set(credits)):
            debit_sum, credit_sum = debits.get(key, Decimal(0)), credits.get(key, Decimal(0))
            if debit_sum != credit_sum:
                label = key or "the journal currency"
                errors.append(
                    ErrorDetail(
                        "UNBALANCED_JOURNAL",
                        "line",
                        f"The journal entry is out of balance in {label}: debits {debit_sum} and credits "
                        f"{credit_sum} must be equal.",
                    )
                )
    return errors


def line_total(record_type: str, body: dict[str, Any]) -> Decimal | None:
    """Σ amount of the lines of an invoice/credit memo/payment (None without valid lines)."""
    items = sublist_items(record_type, body)
    amounts = [parse_decimal(line.get("amount")) for line in items]
    if not items or any(a is None for a in amounts):
        return None
    return sum((a for a in amounts if a is not None), Decimal(0))


def _applied_to(lookup: Lookup, record_type: str, body: dict[str, Any] | None) -> dict[int, Decimal]:
    """Invoice internal id -> amount this payment or credit memo body applies to it."""
    out: dict[int, Decimal] = {}
    if body is None:
        return out
    if record_type == "customerpayment":
        for line in sublist_items(record_type, body):
            invoice = lookup.resolve(line.get("doc"), ("invoice",))
            amount = parse_decimal(line.get("amount"))
            if invoice is not None and amount is not None and line.get("apply", True) is not False:
                out[invoice.id] = out.get(invoice.id, Decimal(0)) + amount
    elif record_type == "creditmemo" and body.get("createdFrom") not in (None, "", {}):
        invoice = lookup.resolve(body.get("createdFrom"), ("invoice",))
        amount = parse_decimal(body.get("total"))
        if invoice is not None and amount is not None:
            out[invoice.id] = amount
    return out


def application_errors(
    record_type: str, body: dict[str, Any], lookup: Lookup, existing: dict[str, Any] | None
) -> list[ErrorDetail]:
    """Totals against lines, and payments/credits against the invoices they apply to."""
    errors: list[ErrorDetail] = []
    if record_type in ("invoice", "creditmemo") and sublist_items(record_type, body):
        lines = line_total(record_type, body)
        total = parse_decimal(body.get("total"))
        if lines is not None and total is not None and lines != total:
            errors.append(
                ErrorDetail(
                    "INVALID_FLD_VALUE", "total", f"total {total} differs from the sum of the lines {lines}."
                )
            )
    if record_type == "invoice" and existing is not None:
        if existing.get("voided") is True:
            errors.append(ErrorDetail("INVALID_FLD_VALUE", "status", "A voided invoice cannot be changed."))
        old_total = parse_decimal(existing.get("total"))
        old_remaining = parse_decimal(existing.get("amountRemaining"))
        new_total = parse_decimal(body.get("total"))
        if old_total is not None and old_remaining is not None and new_total is not None:
            settled = old_total - old_remaining
            if new_total < settled:
                errors.append(
                    ErrorDetail(
                        "INVALID_FLD_VALUE",
                        "total",
                        f"total {new_total} is below the {settled} already paid or credited on this invoice.",
                    )
                )
    if record_type == "customerpayment":
        applied = line_total(record_type, body)
        payment = parse_decimal(body.get("payment"))
        if applied is not None and payment is not None and applied > payment:
            errors.append(
                ErrorDetail(
                    "INVALID_FLD_VALUE",
                    "apply",
                    f"The applied amounts {applied} exceed the payment {payment}.",
                )
            )
        for index, line in enumerate(sublist_items(record_type, body)):
            if (
                line.get("doc") not in (None, "", {})
                and lookup.resolve(line.get("doc"), ("invoice",)) is None
            ):
                errors.append(
                    ErrorDetail(
                        "INVALID_KEY_OR_REF", f"apply.items[{index}].doc", "Invalid doc reference key."
                    )
                )
    if record_type not in ("customerpayment", "creditmemo") or errors:
        return errors
    before = _applied_to(lookup, record_type, existing)
    payer = _ref_ext(body.get("customer" if record_type == "customerpayment" else "entity"))
    currency = _ref_ext(body.get("currency"))
    for invoice_id, amount in _applied_to(lookup, record_type, body).items():
        invoice = lookup.by_id[invoice_id]
        path = "apply" if record_type == "customerpayment" else "createdFrom"
        if invoice.body.get("voided") is True:
            errors.append(ErrorDetail("INVALID_FLD_VALUE", path, f"Invoice {invoice.external_id} is voided."))
            continue
        if payer is not None and _ref_ext(invoice.body.get("entity")) != payer:
            errors.append(
                ErrorDetail(
                    "INVALID_KEY_OR_REF", path, f"Invoice {invoice.external_id} belongs to another customer."
                )
            )
        if currency is not None and _ref_ext(invoice.body.get("currency")) != currency:
            errors.append(
                ErrorDetail(
                    "CURRENCY_MISMATCH", path, f"Invoice {invoice.external_id} is in another currency."
                )
            )
        remaining = parse_decimal(invoice.body.get("amountRemaining"))
        if remaining is None:
            remaining = parse_decimal(invoice.body.get("total")) or Decimal(0)
        available = remaining + before.get(invoice_id, Decimal(0))
        if amount > available:
            errors.append(
                ErrorDetail(
                    "INVALID_FLD_VALUE",
                    path,
                    f"{amount} exceeds the amount remaining {available} of invoice {invoice.external_id}.",
                )
            )
    return errors


def _is_summary(period: Row) -> bool:
    return period.body.get("isQuarter") is True or period.body.get("isYear") is True


def period_for(lookup: Lookup, body: dict[str, Any]) -> tuple[Row | None, str, ErrorDetail | None]:
    """The accounting period a transaction posts to, the field that chose it, or the reason none does."""
    subsidiary = _ref_ext(body.get("subsidiary"))
    if body.get("postingPeriod") not in (None, "", {}):
        period = lookup.resolve(body["postingPeriod"], ("accountingperiod",))
        if period is None:
            return (
                None,
                "postingPeriod",
                ErrorDetail("INVALID_KEY_OR_REF", "postingPeriod", "Invalid postingPeriod reference key."),
            )
        if _is_summary(period):
            return (
                None,
                "postingPeriod",
                ErrorDetail(
                    "INVALID_FLD_VALUE",
                    "postingPeriod",
                    "The posting period is a summary period (a quarter or a year); post to one of its months.",
                ),
            )
        if subsidiary is not None and _ref_ext(period.body.get("subsidiary")) != subsidiary:
            return (
                None,
                "postingPeriod",
                ErrorDetail(
                    "INVALID_KEY_OR_REF", "postingPeriod", "The posting period belongs to another subsidiary."
                ),
            )
        return period, "postingPeriod", None
    day = _date(body.get("tranDate"))
    if day is None or subsidiary is None:
        return None, "tranDate", None  # already reported by the shape checks
    best: Row | None = None
    for period in lookup.periods.get(subsidiary, []):
        if _is_summary(period):
            continue  # quarters and years roll up their months and take no posting themselves
        start, end = _date(period.body.get("startDate")), _date(period.body.get("endDate"))
        if (
            start is not None
            and end is not None
            and start <= day <= end
            and (best is None or (start, period.id) > (_date(best.body.get("startDate")) or start, best.id))
        ):
            best = period  # the shortest (latest-starting) period containing the date
    if best is None:
        return (
            None,
            "tranDate",
            ErrorDetail(
                "INVALID_FLD_VALUE", "tranDate", "No accounting period of the subsidiary contains tranDate."
            ),
        )
    return best, "tranDate", None


def period_lock_error(
    record_type: str, period: Row, path: str, *, existing: bool = False
) -> ErrorDetail | None:
    flags = ("closed", "allLocked", *POSTING_LOCKS.get(record_type, ()))
    for flag in flags:
        if period.body.get(flag) is True:
            what = "The existing transaction is" if existing else "The transaction is"
            return ErrorDetail(
                "PERIOD_CLOSED",
                path,
                f"{what} in accounting period {period.external_id}, which is {flag}; posting is not allowed.",
            )
    return None


def validate(
    record_type: str, body: dict[str, Any], lookup: Lookup, existing: dict[str, Any] | None = None
) -> list[ErrorDetail]:
    """All errors of one (merged) record body; ``existing`` is the stored body when updating."""
    errors = shape_errors(record_type, body)
    resolved: dict[str, Row] = {}
    for name, types in REF_TARGETS.get(record_type, {}).items():
        value = body.get(name)
        if value in (None, "", {}) or any(e.path == name for e in errors):
            continue
        row = lookup.resolve(value, types)
        if row is None:
            if name == "taxCode":
                errors.append(ErrorDetail("TAX_CODE_MISMATCH", name, "Unknown tax code."))
            elif name != "postingPeriod":  # reported by the period check
                errors.append(ErrorDetail("INVALID_KEY_OR_REF", name, f"Invalid {name} reference key."))
            continue
        resolved[name] = row
    if record_type in POSTING_LOCKS:
        for name in INACTIVE_CHECKED:
            row = resolved.get(name)
            if row is None:
                continue
            if row.is_inactive:
                errors.append(
                    ErrorDetail("INACTIVE_RECORD", name, f"The {row.type} {row.external_id} is inactive.")
                )
            elif row.type == "job":
                parent = lookup.resolve(row.body.get("parent"), ("customer",))
                if parent is not None and parent.is_inactive:
                    errors.append(
                        ErrorDetail(
                            "INACTIVE_RECORD",
                            name,
                            f"The customer {parent.external_id} of the job is inactive.",
                        )
                    )
        if record_type != "journalentry":  # a journal's lines may be in several currencies
            errors.extend(_currency_errors(record_type, resolved))
        if record_type in FX_TRANSACTIONS and not any(e.path in ("currency", "exchangeRate") for e in errors):
            errors.extend(_exchange_rate(body, resolved, lookup))
    if "taxCode" in resolved:
        tax = resolved["taxCode"]
        sub = resolved.get("subsidiary")
        if tax.is_inactive:
            errors.append(
                ErrorDetail("TAX_CODE_MISMATCH", "taxCode", f"Tax code {tax.external_id} is inactive.")
            )
        elif (
            sub is not None
            and str(tax.body.get("country", "")).upper() != str(sub.body.get("country", "")).upper()
        ):
            errors.append(
                ErrorDetail(
                    "TAX_CODE_MISMATCH",
                    "taxCode",
                    f"Tax code {tax.external_id} is for {tax.body.get('country')}, the subsidiary is in "
                    f"{sub.body.get('country')}.",
                )
            )
    if record_type in POSTING_LOCKS and not any(e.path in ("subsidiary", "tranDate") for e in errors):
        period, path, problem = period_for(lookup, body)
        if problem is not None:
            errors.append(problem)
        elif period is not None:
            locked = period_lock_error(record_type, period, path)
            if locked is not None:
                errors.append(locked)
    if record_type in POSTING_LOCKS and existing is not None:
        errors.extend(existing_period_errors(record_type, existing, lookup))
    if not any(e.code in ("MISSING_REQUIRED_FIELD", "INVALID_FLD_VALUE") for e in errors):
        errors.extend(application_errors(record_type, body, lookup, existing))
    return errors


def existing_period_errors(record_type: str, existing: dict[str, Any], lookup: Lookup) -> list[ErrorDetail]:
    """A stored transaction in a closed or locked period may be neither changed nor deleted."""
    period, path, _ = period_for(lookup, existing)
    if period is None:
        return []
    locked = period_lock_error(record_type, period, path, existing=True)
    return [locked] if locked is not None else []


def _currency_errors(record_type: str, resolved: dict[str, Row]) -> list[ErrorDetail]:
    currency = resolved.get("currency")
    if currency is None:
        return []
    # The job's currency binds first (for time and expenses the "customer" is the job), then the
    # customer's, then the subsidiary's base currency.
    source: Row | None = None
    for name in ("job", "customer", "entity", "subsidiary"):
        row = resolved.get(name)
        if row is not None and _ref_ext(row.body.get("currency")) is not None:
            source = row
            break
    if source is None:
        return []
    expected = _ref_ext(source.body.get("currency"))
    if expected != currency.external_id:
        return [
            ErrorDetail(
                "CURRENCY_MISMATCH",
                "currency",
                f"Currency {currency.external_id} differs from {expected} of {source.type} {source.external_id}.",
            )
        ]
    return []


def rate_on(lookup: Lookup, transaction: str, base: str, day: dt.date) -> Decimal | None:
    """The table's rate in force on ``day`` (latest ``effectiveDate`` not after it), or None."""
    best: tuple[dt.date, Decimal] | None = None
    for row in lookup.rates.get((transaction, base), []):
        effective = _date(row.body.get("effectiveDate"))
        rate = parse_decimal(row.body.get("exchangeRate"))
        if effective is None or rate is None or effective > day:
            continue
        if best is None or effective > best[0]:
            best = (effective, rate)
    return best[1] if best is not None else None


def _exchange_rate(body: dict[str, Any], resolved: dict[str, Row], lookup: Lookup) -> list[ErrorDetail]:
    """NetSuite's ``exchangeRate`` of a transaction: kept as sent (it must be positive); when left
    out, 1 in the subsidiary's base currency, else the table's rate for ``tranDate`` (written into
    ``body``, as NetSuite fills the field). No rate for a foreign currency: refused."""
    given = body.get("exchangeRate")
    if given not in (None, ""):
        rate = parse_decimal(given)
        if rate is not None and rate <= 0:
            return [ErrorDetail("INVALID_FLD_VALUE", "exchangeRate", "exchangeRate must be greater than 0.")]
        return []
    currency, subsidiary = resolved.get("currency"), resolved.get("subsidiary")
    day = _date(body.get("tranDate"))
    if currency is None or subsidiary is None or day is None:
        return []
    base = _ref_ext(subsidiary.body.get("currency"))
    if base is None or base == currency.external_id:
        body["exchangeRate"] = "1"
        return []
    found = rate_on(lookup, currency.external_id, base, day)
    if found is None:
        return [
            ErrorDetail(
                "INVALID_FLD_VALUE",
                "exchangeRate",
                f"No exchange rate of {currency.external_id} to {base} on {day.isoformat()}.",
            )
        ]
    body["exchangeRate"] = str(found)
    return []
