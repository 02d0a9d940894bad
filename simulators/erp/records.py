"""Catalog of the ERP simulator's record types: their fields, field kinds and money columns.

Field names follow NetSuite's REST record shapes where the record exists in NetSuite (camelCase,
references as objects ``{"externalId": ...}`` or, for currencies, ``{"refName": "USD"}``).
``revenueposting`` is our name for a revenue-recognition posting (NetSuite would book it as a
journal from a revenue arrangement); its fields are documented in ``simulators/erp/README.md``.
"""

from __future__ import annotations

import re
from typing import Literal

Kind = Literal["text", "decimal", "bool", "date", "ref", "lines"]

EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")

FIELDS: dict[str, dict[str, Kind]] = {
    "subsidiary": {"name": "text", "country": "text", "currency": "ref"},
    "currency": {"symbol": "text", "name": "text"},
    "taxcode": {"itemId": "text", "country": "text", "rate": "decimal"},
    "employee": {
        "subsidiary": "ref",
        "firstName": "text",
        "lastName": "text",
        "hireDate": "date",
        "releaseDate": "date",
    },
    "customer": {"companyName": "text", "subsidiary": "ref", "currency": "ref", "taxCode": "ref"},
    "job": {
        "companyName": "text",
        "parent": "ref",
        "subsidiary": "ref",
        "currency": "ref",
        "billingType": "text",
        "contractValue": "decimal",
    },
    "accountingperiod": {
        "periodName": "text",
        "startDate": "date",
        "endDate": "date",
        "subsidiary": "ref",
        "closed": "bool",
        "allLocked": "bool",
        "arLocked": "bool",
        "apLocked": "bool",
        "isQuarter": "bool",
        "isYear": "bool",
    },
    "timebill": {
        "tranDate": "date",
        "employee": "ref",
        "customer": "ref",
        "subsidiary": "ref",
        "hours": "decimal",
        "rate": "decimal",
        "currency": "ref",
        "exchangeRate": "decimal",
        "isBillable": "bool",
        "memo": "text",
        "postingPeriod": "ref",
    },
    "expensereport": {
        "tranDate": "date",
        "employee": "ref",
        "customer": "ref",
        "subsidiary": "ref",
        "amount": "decimal",
        "currency": "ref",
        "exchangeRate": "decimal",
        "category": "text",
        "taxCode": "ref",
        "isBillable": "bool",
        "memo": "text",
        "postingPeriod": "ref",
    },
    "invoice": {
        "tranId": "text",
        "tranDate": "date",
        "dueDate": "date",
        "entity": "ref",
        "job": "ref",
        "subsidiary": "ref",
        "currency": "ref",
        "taxCode": "ref",
        "exchangeRate": "decimal",
        "total": "decimal",
        "amountRemaining": "decimal",
        "status": "text",
        "memo": "text",
        "postingPeriod": "ref",
        "voided": "bool",
        "item": "lines",
    },
    "creditmemo": {
        "tranId": "text",
        "tranDate": "date",
        "entity": "ref",
        "job": "ref",
        "subsidiary": "ref",
        "currency": "ref",
        "taxCode": "ref",
        "createdFrom": "ref",
        "exchangeRate": "decimal",
        "total": "decimal",
        "status": "text",
        "memo": "text",
        "postingPeriod": "ref",
        "item": "lines",
    },
    "customerpayment": {
        "tranId": "text",
        "tranDate": "date",
        "customer": "ref",
        "subsidiary": "ref",
        "currency": "ref",
        "payment": "decimal",
        "memo": "text",
        "postingPeriod": "ref",
        "apply": "lines",
    },
    # Balanced debit and credit lines per currency. ``amount`` is optional: the signed net effect
    # the integration reads back (a custom body field in a real account). The integration books the
    # difference of a correction of a transaction held in a closed period as one (custom
    # ``custbody_psa_*`` fields name the record it corrects).
    "journalentry": {
        "tranId": "text",
        "tranDate": "date",
        "subsidiary": "ref",
        "currency": "ref",
        "amount": "decimal",
        "memo": "text",
        "postingPeriod": "ref",
        "line": "lines",
    },
    "currencyrate": {
        "baseCurrency": "ref",
        "transactionCurrency": "ref",
        "exchangeRate": "decimal",
        "effectiveDate": "date",
    },
    "revenueposting": {
        "tranDate": "date",
        "job": "ref",
        "subsidiary": "ref",
        "currency": "ref",
        "amount": "decimal",
        "method": "text",
        "memo": "text",
        "postingPeriod": "ref",
    },
}

#: Columns of the read-only SuiteQL table ``transactionline``: one row per line of a transaction's
#: sublist (invoice/creditmemo ``item``, customerpayment ``apply``, journalentry ``line``).
LINE_FIELDS: dict[str, Kind] = {
    "transaction": "text",
    "transactionType": "text",
    "transactionExternalId": "text",
    "lineSequenceNumber": "decimal",
    "description": "text",
    "quantity": "decimal",
    "rate": "decimal",
    "amount": "decimal",
    "debit": "decimal",
    "credit": "decimal",
    "account": "ref",
    "currency": "ref",
    "sourceType": "text",
    "sourceId": "text",
    "appliedTo": "text",
    "memo": "text",
}

#: Record types answered by the REST record API (``transactionline`` is SuiteQL only).
RECORD_TYPES = frozenset(FIELDS)
QUERY_TYPES = RECORD_TYPES | {"transactionline"}

#: The sublist (``{"items": [...]}``) of each transaction type that has lines.
SUBLIST = {"invoice": "item", "creditmemo": "item", "customerpayment": "apply", "journalentry": "line"}

#: Sources an invoice or credit memo line may bill (``sourceType``; ``sourceId`` is its external id).
LINE_SOURCES = frozenset({"timebill", "expensereport", "milestone", "retainerperiod"})

#: Which body field is copied into the NUMERIC ``amount`` column per type.
AMOUNT_FIELD = {
    "expensereport": "amount",
    "invoice": "total",
    "creditmemo": "total",
    "customerpayment": "payment",
    "revenueposting": "amount",
    "journalentry": "amount",
    "job": "contractValue",
}

#: Lower-case field name -> canonical field name, per type (SuiteQL columns are case-insensitive).
LOWER_FIELDS = {
    t: {name.lower(): name for name in fields}
    for t, fields in {**FIELDS, "transactionline": LINE_FIELDS}.items()
}


def ref_key(value: object) -> str | None:
    """The key a reference object names: its ``externalId``, else ``refName``, else ``id``."""
    if isinstance(value, dict):
        for key in ("externalId", "refName", "id"):
            found = value.get(key)
            if found is not None and found != "":
                return str(found)
        return None
    if isinstance(value, str) and value:
        return value
    return None


def catalog(record_type: str) -> dict[str, Kind]:
    """The fields of a record type, or of the SuiteQL table ``transactionline``."""
    return LINE_FIELDS if record_type == "transactionline" else FIELDS[record_type]
