"""The OData services the SAP simulator serves, as functions of one database transaction.

``dispatch`` answers one request (a plain one, or one operation of a ``$batch``) inside the caller's
transaction and raises :class:`~simulators.sap.odata.ODataError` for an error answer, so the caller's
rollback undoes whatever the request (or its whole changeset) wrote.

- ``API_MANAGE_WORKFORCE_TIMESHEET``: ``TimeSheetEntryCollection``; every create, change and
  delete is a POST with ``TimeSheetOperation`` ``C``/``U``/``D``.
- ``ZPSA_JOURNALENTRY_SRV`` (our documented REST stand-in for the SOAP journal entry post):
  ``JournalEntryCollection`` (deep insert with ``to_Item``, balanced per document),
  ``PostingPeriodCollection``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg.rows import dict_row

from simulators.sap import masterdata
from simulators.sap.odata import (
    ODataError,
    bad_request,
    decimal_string,
    parse_filter,
    parse_key,
    parse_sap_date,
    sap_date,
    sap_timestamp,
    select,
    where_sql,
)

TIMESHEET = "API_MANAGE_WORKFORCE_TIMESHEET"
JOURNAL = "ZPSA_JOURNALENTRY_SRV"
SERVICES = {
    TIMESHEET: ["TimeSheetEntryCollection"],
    JOURNAL: ["JournalEntryCollection", "JournalEntryItemCollection", "PostingPeriodCollection"],
    masterdata.MASTER: masterdata.SETS,
}

DATA_FIELDS = (
    "ControllingArea",
    "SenderCostCenter",
    "ReceiverCostCenter",
    "InternalOrder",
    "ActivityType",
    "WBSElement",
    "WorkItem",
    "BillingControlCategory",
    "PurchaseOrder",
    "PurchaseOrderItem",
    "TimeSheetTaskType",
    "TimeSheetTaskLevel",
    "TimeSheetTaskComponent",
    "TimeSheetNoteText",
    "RecordedHours",
    "RecordedQuantity",
    "HoursUnitOfMeasure",
    "RejectionReason",
    "TimeSheetWrkLocCode",
    "TimeSheetOvertimeCategory",
    "SenderPubSecFund",
    "SendingPubSecFunctionalArea",
    "SenderPubSecGrant",
    "SenderPubSecBudgetPeriod",
    "ReceiverPubSecFund",
    "ReceiverPubSecFuncnlArea",
    "ReceiverPubSecGrant",
    "ReceiverPubSecBudgetPeriod",
)
ENTRY_FIELDS = frozenset(
    {
        "__metadata",
        "PersonWorkAgreementExternalID",
        "CompanyCode",
        "TimeSheetRecord",
        "PersonWorkAgreement",
        "TimeSheetDate",
        "TimeSheetIsReleasedOnSave",
        "TimeSheetPredecessorRecord",
        "TimeSheetStatus",
        "TimeSheetIsExecutedInTestRun",
        "TimeSheetOperation",
        "TimeSheetDataFields",
    }
)
NOTE_MAX = 255
MAX_HOURS = Decimal("24.00")
MAX_AMOUNT = Decimal("9999999999999.99")


@dataclass
class Reply:
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    root: str  # absolute URL of /sap/opu/odata/sap/
    page_size: int


def not_found(resource: str) -> ODataError:
    return ODataError(404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for segment '{resource}'")


def dispatch(
    conn: psycopg.Connection,
    ctx: Context,
    service: str,
    method: str,
    resource: str,
    query: dict[str, str],
    body: bytes,
) -> Reply:
    """Answer one OData request of ``service`` on ``resource`` (the path below the service root)."""
    if service not in SERVICES:
        raise ODataError(404, "/IWFND/MED/170", f"No service found for namespace '/SAP/', name '{service}'")
    name, _, key = resource.partition("(")
    if resource in ("", "/"):
        if method != "GET":
            raise ODataError(405, "/IWBEP/CM_MGW_RT/021", "Method not allowed on the service document")
        return Reply(200, {"d": {"EntitySets": SERVICES[service]}})
    if name not in SERVICES[service]:
        raise not_found(name)
    keys = parse_key(key) if key else None
    if method == "GET":
        if name == "TimeSheetEntryCollection":
            return _read(conn, ctx, TS_QUERY, keys, query, resource)
        if name == "JournalEntryCollection":
            return _read(conn, ctx, JE_QUERY, keys, query, resource)
        if name == "JournalEntryItemCollection":
            return _read(conn, ctx, JI_QUERY, keys, query, resource)
        if name in MASTER_QUERIES:
            return _read(conn, ctx, MASTER_QUERIES[name], keys, query, resource)
        return _read(conn, ctx, PP_QUERY, keys, query, resource)
    if method == "POST" and keys is None:
        payload = _json(body)
        if name in MASTER_QUERIES:
            row = masterdata.upsert(conn, name, payload)
            return Reply(201, {"d": _render(conn, ctx, MASTER_QUERIES[name], row, False)})
        if name == "TimeSheetEntryCollection":
            return post_timesheet(conn, ctx, payload)
        if name == "JournalEntryCollection":
            return post_journal_entry(conn, ctx, payload)
    # The real API changes and deletes timesheet records only through POST + TimeSheetOperation.
    raise ODataError(405, "/IWBEP/CM_MGW_RT/021", f"Method '{method}' is not supported for '{name}'")


def _json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body or b"{}")
    except ValueError as exc:
        raise bad_request(f"Malformed JSON in the request body: {exc}", "/IWBEP/CM_MGW_RT/001") from exc
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object", "/IWBEP/CM_MGW_RT/001")
    payload.pop("__metadata", None)
    return payload


# --------------------------------------------------------------------------- reads


@dataclass(frozen=True)
class EntityQuery:
    set_name: str
    service: str
    type_name: str
    sql: str  # SELECT ... FROM ...: the rows of the set
    columns: dict[str, str]  # OData property -> SQL expression usable in WHERE
    dates: frozenset[str]
    key: tuple[str, ...]  # key properties, in key-predicate order
    order: str  # the only order rows come in: a stable scramble, whatever $orderby says


TS_QUERY = EntityQuery(
    "TimeSheetEntryCollection",
    TIMESHEET,
    "API_MANAGE_WORKFORCE_TIMESHEET.TimeSheetEntry",
    "SELECT * FROM timesheet_record",
    {
        "PersonWorkAgreementExternalID": "pwa_external_id",
        "CompanyCode": "company_code",
        "TimeSheetRecord": "record",
        "PersonWorkAgreement": "person_work_agreement",
        "TimeSheetDate": "sheet_date",
        "TimeSheetStatus": "status",
        "TimeSheetPredecessorRecord": "predecessor",
    },
    frozenset({"TimeSheetDate"}),
    ("PersonWorkAgreementExternalID", "CompanyCode", "TimeSheetRecord"),
    "md5(record)",
)
JE_QUERY = EntityQuery(
    "JournalEntryCollection",
    JOURNAL,
    "ZPSA_JOURNALENTRY_SRV.JournalEntry",
    "SELECT * FROM journal_entry",
    {
        "CompanyCode": "company_code",
        "FiscalYear": "fiscal_year::text",
        "AccountingDocument": "accounting_document",
        "AccountingDocumentType": "document_type",
        "DocumentReferenceID": "document_reference_id",
        "PostingDate": "posting_date",
        "DocumentDate": "document_date",
    },
    frozenset({"PostingDate", "DocumentDate"}),
    ("CompanyCode", "FiscalYear", "AccountingDocument"),
    "md5(company_code || accounting_document)",
)
#: Items with their open amount: a customer item that applies to no invoice and is not cleared is
#: open for its amount less what the items referencing it (credit memos, payments) apply.
ITEMS_WITH_OPEN_AMOUNT = """i.*, CASE WHEN i.customer = '' OR i.invoice_reference <> '' OR i.clearing_document <> ''
        THEN 0 ELSE i.amount - coalesce((SELECT sum(r.amount) FROM journal_entry_item r
            WHERE r.company_code = i.company_code AND r.invoice_reference = i.accounting_document
              AND r.invoice_reference_fiscal_year = i.fiscal_year AND r.customer = i.customer), 0)
        END AS open_amount
    FROM journal_entry_item i"""
JI_QUERY = EntityQuery(
    "JournalEntryItemCollection",
    JOURNAL,
    "ZPSA_JOURNALENTRY_SRV.JournalEntryItem",
    f"SELECT {ITEMS_WITH_OPEN_AMOUNT}",
    {
        "CompanyCode": "company_code",
        "FiscalYear": "fiscal_year::text",
        "AccountingDocument": "accounting_document",
        "AccountingDocumentItem": "lpad(item::text, 3, '0')",
        "GLAccount": "gl_account",
        "Customer": "customer",
        "ClearingAccountingDocument": "clearing_document",
    },
    frozenset(),
    ("CompanyCode", "FiscalYear", "AccountingDocument", "AccountingDocumentItem"),
    "md5(company_code || accounting_document || item::text)",
)
PP_QUERY = EntityQuery(
    "PostingPeriodCollection",
    JOURNAL,
    "ZPSA_JOURNALENTRY_SRV.PostingPeriod",
    "SELECT * FROM posting_period",
    {
        "CompanyCode": "company_code",
        "FiscalYear": "fiscal_year::text",
        "FiscalPeriod": "lpad(period::text, 3, '0')",
    },
    frozenset(),
    ("CompanyCode", "FiscalYear", "FiscalPeriod"),
    "md5(company_code || fiscal_year::text || period::text)",
)


MASTER_QUERIES = {
    "WorkAgreementCollection": EntityQuery(
        "WorkAgreementCollection",
        masterdata.MASTER,
        f"{masterdata.MASTER}.WorkAgreement",
        "SELECT * FROM work_agreement",
        {"PersonWorkAgreementExternalID": "external_id", "CompanyCode": "company_code"},
        frozenset(),
        ("PersonWorkAgreementExternalID", "CompanyCode"),
        "md5(external_id || company_code)",
    ),
    "CustomerCollection": EntityQuery(
        "CustomerCollection",
        masterdata.MASTER,
        f"{masterdata.MASTER}.Customer",
        "SELECT * FROM customer",
        {"Customer": "customer", "CompanyCode": "company_code"},
        frozenset(),
        ("Customer", "CompanyCode"),
        "md5(customer || company_code)",
    ),
    "WBSElementCollection": EntityQuery(
        "WBSElementCollection",
        masterdata.MASTER,
        f"{masterdata.MASTER}.WBSElement",
        "SELECT * FROM wbs_element",
        {"WBSElement": "wbs_element", "CompanyCode": "company_code", "Customer": "customer"},
        frozenset(),
        ("WBSElement", "CompanyCode"),
        "md5(wbs_element || company_code)",
    ),
}


def _int_option(query: dict[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise bad_request(f"System query option '{name}' has an invalid value '{raw}'")
    return int(raw)


def _read(
    conn: psycopg.Connection,
    ctx: Context,
    spec: EntityQuery,
    keys: dict[str, str] | None,
    query: dict[str, str],
    resource: str,
) -> Reply:
    expand = "to_Item" in (query.get("$expand") or "")
    if keys is not None:
        if set(keys) != set(spec.key):
            raise bad_request(f"Key predicate of '{spec.set_name}' needs {', '.join(spec.key)}")
        where = " AND ".join(f"{spec.columns[k]} = %s" for k in spec.key)
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(f"{spec.sql} WHERE {where}", [keys[k] for k in spec.key]).fetchone()
        if row is None:
            raise not_found(resource)
        return Reply(200, {"d": select(_render(conn, ctx, spec, row, expand), query.get("$select"))})
    terms = parse_filter(query["$filter"]) if query.get("$filter") else []
    where, params = where_sql(terms, spec.columns, spec.dates)
    token = _int_option(query, "$skiptoken")
    skip = token if token is not None else (_int_option(query, "$skip") or 0)
    top = _int_option(query, "$top")
    limit = ctx.page_size if top is None else min(top, ctx.page_size)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"{spec.sql} WHERE {where} ORDER BY {spec.order} OFFSET %s LIMIT %s", [*params, skip, limit + 1]
        ).fetchall()
    more = len(rows) > limit and (top is None or top > limit)
    results = [select(_render(conn, ctx, spec, row, expand), query.get("$select")) for row in rows[:limit]]
    envelope: dict[str, Any] = {"results": results}  # no __count, whatever $inlinecount says
    if more:
        follow = {k: v for k, v in query.items() if k not in ("$skip", "$skiptoken", "$top")}
        if top is not None:
            follow["$top"] = str(top - limit)
        follow["$skiptoken"] = str(skip + limit)
        envelope["__next"] = (
            f"{ctx.root}{spec.service}/{spec.set_name}?{urlencode(follow, quote_via=quote, safe=chr(36) + chr(39) + ',')}"
        )
    return Reply(200, {"d": envelope})


def _uri(ctx: Context, spec: EntityQuery, values: dict[str, str]) -> str:
    key = ",".join(f"{k}='{quote(values[k].replace(chr(39), chr(39) * 2), safe='')}'" for k in spec.key)
    return f"{ctx.root}{spec.service}/{spec.set_name}({key})"


def _render(
    conn: psycopg.Connection, ctx: Context, spec: EntityQuery, row: dict[str, Any], expand: bool
) -> dict[str, Any]:
    if spec is TS_QUERY:
        entity = timesheet_entity(row)
    elif spec is JE_QUERY:
        entity = journal_entity(conn, ctx, row, expand)
    elif spec is JI_QUERY:
        entity = item_entity(row)
    elif spec.service == masterdata.MASTER:
        entity = masterdata.entity(spec.set_name, row)
    else:
        entity = {
            "CompanyCode": row["company_code"],
            "FiscalYear": str(row["fiscal_year"]),
            "FiscalPeriod": f"{row['period']:03d}",
            "FiscalPeriodStartDate": sap_date(row["start_date"]),
            "FiscalPeriodEndDate": sap_date(row["end_date"]),
            "PostingPeriodIsOpen": row["is_open"],
        }
    uri = _uri(ctx, spec, {k: str(entity[k]) for k in spec.key})
    return {"__metadata": {"id": uri, "uri": uri, "type": spec.type_name}, **entity}


# --------------------------------------------------------------------------- posting periods


def check_period_open(conn: psycopg.Connection, company_code: str, day: date) -> int:
    """The fiscal period of ``day`` (calendar months) if open in ``company_code``; else F5/201."""
    row = conn.execute(
        "SELECT is_open FROM posting_period WHERE company_code = %s AND fiscal_year = %s AND period = %s",
        (company_code, day.year, day.month),
    ).fetchone()
    if row is None or not row[0]:
        raise ODataError(400, "F5/201", f"Posting period {day.month:03d} {day.year} is not open")
    return day.month


def _company(conn: psycopg.Connection, company_code: Any) -> str:
    row = conn.execute(
        "SELECT currency FROM company_code WHERE company_code = %s", (company_code,)
    ).fetchone()
    if row is None:
        raise bad_request(f"Company code {company_code} does not exist", "F5/165", "CompanyCode")
    return str(row[0])


# --------------------------------------------------------------------------- timesheets


def timesheet_entity(row: dict[str, Any]) -> dict[str, Any]:
    fields = dict(row["data_fields"])
    fields["RecordedHours"] = f"{row['hours']:.2f}"
    return {
        "PersonWorkAgreementExternalID": row["pwa_external_id"],
        "CompanyCode": row["company_code"],
        "TimeSheetRecord": row["record"],
        "PersonWorkAgreement": row["person_work_agreement"],
        "TimeSheetDate": sap_date(row["sheet_date"]),
        "TimeSheetIsReleasedOnSave": row["released_on_save"],
        "TimeSheetPredecessorRecord": row["predecessor"],
        "TimeSheetStatus": row["status"],
        "TimeSheetIsExecutedInTestRun": False,
        "TimeSheetOperation": "",
        "TimeSheetDataFields": {"__metadata": {"type": f"{TIMESHEET}.TimeSheetDataFields"}, **fields},
    }


def _data_fields(raw: Any, previous: dict[str, Any] | None) -> tuple[dict[str, Any], Decimal]:
    if not isinstance(raw, dict):
        raise bad_request("TimeSheetDataFields is required", target="TimeSheetDataFields")
    raw = {k: v for k, v in raw.items() if k != "__metadata"}
    unknown = sorted(set(raw) - set(DATA_FIELDS))
    if unknown:
        raise bad_request(f"Property '{unknown[0]}' is invalid", "/IWBEP/CM_MGW_RT/022", unknown[0])
    fields = {name: "" for name in DATA_FIELDS} if previous is None else dict(previous)
    for name, value in raw.items():
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise bad_request(f"Property '{name}' is an Edm.String or Edm.Decimal string", target=name)
        fields[name] = value
    hours = decimal_string(fields["RecordedHours"], "RecordedHours", scale=2, maximum=MAX_HOURS)
    if hours == 0:
        raise bad_request(
            "Enter the hours worked (RecordedHours must be greater than 0)", "LR/240", "RecordedHours"
        )
    if fields["RecordedQuantity"]:
        decimal_string(fields["RecordedQuantity"], "RecordedQuantity", scale=3, maximum=Decimal("99999"))
    if fields["HoursUnitOfMeasure"] not in ("H", ""):
        raise bad_request("HoursUnitOfMeasure must be H", target="HoursUnitOfMeasure")
    fields["HoursUnitOfMeasure"] = "H"
    if len(fields["TimeSheetNoteText"]) > NOTE_MAX:
        raise bad_request(
            f"TimeSheetNoteText is longer than {NOTE_MAX} characters", target="TimeSheetNoteText"
        )
    if not (fields["WBSElement"] or fields["ReceiverCostCenter"] or fields["InternalOrder"]):
        raise bad_request("Enter a receiver: WBSElement, ReceiverCostCenter or InternalOrder", "LR/222")
    fields.pop("RecordedHours")
    return fields, hours


def post_timesheet(conn: psycopg.Connection, ctx: Context, payload: dict[str, Any]) -> Reply:
    unknown = sorted(set(payload) - ENTRY_FIELDS)
    if unknown:
        raise bad_request(f"Property '{unknown[0]}' is invalid", "/IWBEP/CM_MGW_RT/022", unknown[0])
    operation = payload.get("TimeSheetOperation")
    if operation not in ("C", "U", "D"):
        raise bad_request("TimeSheetOperation must be C, U or D", target="TimeSheetOperation")
    for flag in ("TimeSheetIsReleasedOnSave", "TimeSheetIsExecutedInTestRun"):
        if not isinstance(payload.get(flag, False), bool):
            raise bad_request(f"Property '{flag}' is an Edm.Boolean", target=flag)
    pwa, company = payload.get("PersonWorkAgreementExternalID"), payload.get("CompanyCode")
    if not isinstance(pwa, str) or not pwa or not isinstance(company, str) or not company:
        raise bad_request("PersonWorkAgreementExternalID and CompanyCode are required")
    _company(conn, company)
    agreement = conn.execute(
        "SELECT person_work_agreement FROM work_agreement WHERE external_id = %s AND company_code = %s",
        (pwa, company),
    ).fetchone()
    if agreement is None:
        raise bad_request(
            f"Person work agreement {pwa} does not exist in company code {company}",
            "HRPAD00/101",
            "PersonWorkAgreementExternalID",
        )
    if payload.get("PersonWorkAgreement") not in (None, "", agreement[0]):
        raise bad_request("PersonWorkAgreement does not match PersonWorkAgreementExternalID")
    if not payload.get("TimeSheetIsExecutedInTestRun", False):
        reply = _apply(conn, payload, operation, pwa, company, agreement[0])
        reply.headers["location"] = f"{ctx.root}{TIMESHEET}/{reply.headers['location']}"
        return reply
    # A dry run: every check and every write, then a rollback; the answer says what would be stored.
    with conn.transaction():
        reply = _apply(conn, payload, operation, pwa, company, agreement[0])
        raise psycopg.Rollback()
    assert reply.body is not None
    reply.body["d"]["TimeSheetIsExecutedInTestRun"] = True
    reply.headers.pop("location", None)
    return reply


def _apply(
    conn: psycopg.Connection, payload: dict[str, Any], operation: str, pwa: str, company: str, agreement: str
) -> Reply:
    released = bool(payload.get("TimeSheetIsReleasedOnSave", False))
    new_status = "20" if released else "10"
    record = payload.get("TimeSheetRecord") or ""
    cur = conn.cursor(row_factory=dict_row)
    if operation == "C":
        if record:
            raise bad_request(
                "TimeSheetRecord must be empty when creating a record", target="TimeSheetRecord"
            )
        day = parse_sap_date(payload.get("TimeSheetDate"), "TimeSheetDate")
        fields, hours = _data_fields(payload.get("TimeSheetDataFields"), None)
        check_period_open(conn, company, day)
        row = cur.execute(
            """
            INSERT INTO timesheet_record (pwa_external_id, company_code, record, person_work_agreement,
                sheet_date, status, released_on_save, hours, data_fields)
            VALUES (%s, %s, lpad(nextval('timesheet_record_no')::text, 12, '0'), %s, %s, %s, %s, %s, %s)
            RETURNING *
            """,
            (pwa, company, agreement, day, new_status, released, hours, json.dumps(fields)),
        ).fetchone()
        return _created(row)
    if not record:
        raise bad_request(
            "TimeSheetRecord is required to change or delete a record", target="TimeSheetRecord"
        )
    old = cur.execute(
        "SELECT * FROM timesheet_record WHERE pwa_external_id = %s AND company_code = %s AND record = %s "
        "FOR UPDATE",
        (pwa, company, record),
    ).fetchone()
    if old is None:
        raise ODataError(404, "LR/101", f"Time sheet record {record} does not exist")
    if old["status"] in ("50", "60"):
        raise bad_request(
            f"Time sheet record {record} has status {old['status']} and can no longer be changed", "LR/119"
        )
    check_period_open(conn, company, old["sheet_date"])
    if operation == "D":
        row = cur.execute(
            "UPDATE timesheet_record SET status = '60', changed_at = clock_timestamp() WHERE record = %s "
            "RETURNING *",
            (record,),
        ).fetchone()
        return _created(row)
    day = (
        parse_sap_date(payload["TimeSheetDate"], "TimeSheetDate")
        if payload.get("TimeSheetDate")
        else old["sheet_date"]
    )
    previous = dict(old["data_fields"])
    previous["RecordedHours"] = f"{old['hours']:.2f}"
    fields, hours = _data_fields(payload.get("TimeSheetDataFields") or {}, previous)
    check_period_open(conn, company, day)
    if old["status"] == "30":
        # Approved: never changed in place. The original becomes 50, a successor carries the change.
        cur.execute(
            "UPDATE timesheet_record SET status = '50', changed_at = clock_timestamp() WHERE record = %s",
            (record,),
        )
        row = cur.execute(
            """
            INSERT INTO timesheet_record (pwa_external_id, company_code, record, person_work_agreement,
                sheet_date, status, predecessor, released_on_save, hours, data_fields)
            VALUES (%s, %s, lpad(nextval('timesheet_record_no')::text, 12, '0'), %s, %s, %s, %s, %s, %s, %s)
            RETURNING *
            """,
            (pwa, company, agreement, day, new_status, record, released, hours, json.dumps(fields)),
        ).fetchone()
        return _created(row)
    row = cur.execute(
        """
        UPDATE timesheet_record SET sheet_date = %s, status = %s, released_on_save = %s, hours = %s,
               data_fields = %s, changed_at = clock_timestamp()
         WHERE record = %s RETURNING *
        """,
        (day, new_status, released, hours, json.dumps(fields), record),
    ).fetchone()
    return _created(row)


def _created(row: dict[str, Any] | None) -> Reply:
    assert row is not None
    entity = timesheet_entity(row)
    key = (
        f"PersonWorkAgreementExternalID='{quote(row['pwa_external_id'], safe='')}',"
        f"CompanyCode='{row['company_code']}',TimeSheetRecord='{row['record']}'"
    )
    return Reply(201, {"d": entity}, {"location": f"TimeSheetEntryCollection({key})"})


# --------------------------------------------------------------------------- journal entries


HEADER_FIELDS = frozenset(
    {
        "CompanyCode",
        "AccountingDocumentType",
        "DocumentDate",
        "PostingDate",
        "DocumentReferenceID",
        "DocumentHeaderText",
        "TransactionCurrency",
        "ExchangeRate",
        "to_Item",
    }
)
ITEM_FIELDS = frozenset(
    {
        "GLAccount",
        "AmountInTransactionCurrency",
        "DebitCreditCode",
        "DocumentItemText",
        "CostCenter",
        "WBSElement",
        "Customer",
        "InvoiceReference",
        "InvoiceReferenceFiscalYear",
        "AmountInCompanyCodeCurrency",
    }
)
#: Document types of customer documents: each needs a customer (debtor) item.
CUSTOMER_DOCUMENT_TYPES = frozenset({"DR", "DG", "DZ"})


def journal_entity(
    conn: psycopg.Connection, ctx: Context, row: dict[str, Any], expand: bool
) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "CompanyCode": row["company_code"],
        "FiscalYear": str(row["fiscal_year"]),
        "AccountingDocument": row["accounting_document"],
        "AccountingDocumentType": row["document_type"],
        "DocumentDate": sap_date(row["document_date"]),
        "PostingDate": sap_date(row["posting_date"]),
        "FiscalPeriod": f"{row['fiscal_period']:03d}",
        "DocumentReferenceID": row["document_reference_id"],
        "DocumentHeaderText": row["header_text"],
        "TransactionCurrency": row["currency"],
        "CompanyCodeCurrency": row.get("company_code_currency") or "",
        "ExchangeRate": _rate_text(row.get("exchange_rate")),
        "LastChangeDateTime": sap_timestamp(row["changed_at"]),
    }
    if expand:
        with conn.cursor(row_factory=dict_row) as cur:
            items = cur.execute(
                f"SELECT {ITEMS_WITH_OPEN_AMOUNT} WHERE company_code = %s AND fiscal_year = %s "
                "AND accounting_document = %s ORDER BY item",
                (row["company_code"], row["fiscal_year"], row["accounting_document"]),
            ).fetchall()
        entity["to_Item"] = {"results": [item_entity(i) for i in items]}
    else:
        uri = _uri(ctx, JE_QUERY, {k: str(entity[k]) for k in JE_QUERY.key})
        entity["to_Item"] = {"__deferred": {"uri": f"{uri}/to_Item"}}
    return entity


def item_entity(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "CompanyCode": row["company_code"],
        "FiscalYear": str(row["fiscal_year"]),
        "AccountingDocument": row["accounting_document"],
        "AccountingDocumentItem": f"{row['item']:03d}",
        "GLAccount": row["gl_account"],
        "AmountInTransactionCurrency": f"{row['amount']:.2f}",
        "TransactionCurrency": row["currency"],
        "AmountInCompanyCodeCurrency": (
            f"{row['amount_company_code']:.2f}" if row.get("amount_company_code") is not None else None
        ),
        "DebitCreditCode": row["debit_credit"],
        "DocumentItemText": row["item_text"],
        "CostCenter": row["cost_center"],
        "WBSElement": row["wbs_element"],
        "Customer": row.get("customer", ""),
        "InvoiceReference": row.get("invoice_reference", ""),
        "InvoiceReferenceFiscalYear": (
            str(row["invoice_reference_fiscal_year"]) if row.get("invoice_reference_fiscal_year") else ""
        ),
        "ClearingAccountingDocument": row.get("clearing_document", ""),
        "ClearingDate": sap_date(row["clearing_date"]) if row.get("clearing_date") else None,
        "OpenAmountInTransactionCurrency": f"{row.get('open_amount') or 0:.2f}",
    }


def _rate_text(rate: Decimal | None) -> str:
    """An exchange rate as answered: its digits without trailing zeros, "" when none was recorded."""
    if rate is None:
        return ""
    value = rate.normalize()
    return format(value.quantize(Decimal(1)) if value == value.to_integral() else value, "f")


def _text(payload: dict[str, Any], name: str, max_len: int, *, required: bool = False) -> str:
    value = payload.get(name) or ""
    if not isinstance(value, str) or len(value) > max_len or (required and not value):
        raise bad_request(f"Property '{name}' must be a string of at most {max_len} characters", target=name)
    return value


@dataclass(frozen=True)
class _Item:
    gl_account: str
    amount: Decimal
    side: str
    text: str
    cost_center: str
    wbs: str
    customer: str = ""
    reference: str = ""
    reference_year: int | None = None
    amount_company_code: Decimal | None = None


def _customer_of(conn: psycopg.Connection, company: str, customer: str) -> None:
    """A customer item names a customer of the company code that is not blocked for posting."""
    row = conn.execute(
        "SELECT is_blocked FROM customer WHERE customer = %s AND company_code = %s", (customer, company)
    ).fetchone()
    if row is None:
        raise bad_request(
            f"Customer {customer} is not defined in company code {company}", "F5/351", "Customer"
        )
    if row[0]:
        raise bad_request(f"Customer {customer} is blocked for posting", "F5/352", "Customer")


def _reference(
    conn: psycopg.Connection, company: str, raw: dict[str, Any], customer: str
) -> tuple[str, int | None]:
    """The invoice an item applies to (SAP's REBZG/REBZJ): an open customer item of the same
    customer in the company code."""
    reference = _text(raw, "InvoiceReference", 10)
    if not reference:
        return "", None
    year_text = _text(raw, "InvoiceReferenceFiscalYear", 4, required=True)
    if not customer or not year_text.isdigit():
        raise bad_request("An invoice reference needs a Customer and InvoiceReferenceFiscalYear", "F5/808")
    row = conn.execute(
        "SELECT clearing_document FROM journal_entry_item WHERE company_code = %s AND fiscal_year = %s"
        " AND accounting_document = %s AND customer = %s AND invoice_reference = '' LIMIT 1",
        (company, int(year_text), reference, customer),
    ).fetchone()
    if row is None:
        raise bad_request(
            f"Invoice {reference} {year_text} is not an item of customer {customer}",
            "F5/808",
            "InvoiceReference",
        )
    if row[0]:
        raise bad_request(f"Invoice {reference} {year_text} is already cleared", "F5/809", "InvoiceReference")
    return reference, int(year_text)


def _items(conn: psycopg.Connection, company: str, raw_items: Any) -> list[_Item]:
    if isinstance(raw_items, dict):
        raw_items = raw_items.get("results")
    if not isinstance(raw_items, list) or len(raw_items) < 2:
        raise bad_request("A journal entry needs at least two items (to_Item)", "F5/010", "to_Item")
    items = []
    for raw in raw_items:
        if not isinstance(raw, dict):
            raise bad_request("Each item of to_Item is an object", target="to_Item")
        raw = {k: v for k, v in raw.items() if k != "__metadata"}
        unknown = sorted(set(raw) - ITEM_FIELDS)
        if unknown:
            raise bad_request(f"Property '{unknown[0]}' is invalid", "/IWBEP/CM_MGW_RT/022", unknown[0])
        amount = decimal_string(
            raw.get("AmountInTransactionCurrency"), "AmountInTransactionCurrency", scale=2, maximum=MAX_AMOUNT
        )
        side = raw.get("DebitCreditCode")
        if side not in ("S", "H"):
            raise bad_request("DebitCreditCode must be S (debit) or H (credit)", target="DebitCreditCode")
        customer = _text(raw, "Customer", 40)
        if customer:
            _customer_of(conn, company, customer)
        reference, year = _reference(conn, company, raw, customer)
        local = raw.get("AmountInCompanyCodeCurrency")
        items.append(
            _Item(
                _text(raw, "GLAccount", 10, required=True),
                amount,
                side,
                _text(raw, "DocumentItemText", 50),
                _text(raw, "CostCenter", 10),
                _text(raw, "WBSElement", 24),
                customer,
                reference,
                year,
                None
                if local is None
                else decimal_string(local, "AmountInCompanyCodeCurrency", scale=2, maximum=MAX_AMOUNT),
            )
        )
    return items


def _in_company_code_currency(
    payload: dict[str, Any], items: list[_Item], currency: str, local: str
) -> tuple[Decimal | None, list[Decimal | None]]:
    """The document's rate and each item's amount in the company code's currency ``local``.

    In the company code's currency the rate is 1 and each amount its own. In another one the
    amounts are those sent (``AmountInCompanyCodeCurrency``), else the item's amount at the
    header's ``ExchangeRate`` (1 transaction currency = rate company code currency, half-even to
    the cent); they must balance. Without a rate (and amounts) the simulator, which has no rate
    table, records none (S/4HANA would translate at its own rate)."""
    raw_rate = payload.get("ExchangeRate")
    rate = (
        None
        if raw_rate in (None, "")
        else decimal_string(raw_rate, "ExchangeRate", scale=10, maximum=Decimal("999999999"))
    )
    if currency == local:
        if rate is not None and rate != 1:
            raise bad_request(f"Exchange rate of {currency} to itself must be 1", "F5/705", "ExchangeRate")
        if any(i.amount_company_code not in (None, i.amount) for i in items):
            raise bad_request("Amount in company code currency differs", "F5/706", "to_Item")
        return Decimal(1), [i.amount for i in items]
    if rate is None and any(i.amount_company_code is None for i in items):
        return None, [i.amount_company_code for i in items]
    if rate is not None and rate <= 0:
        raise bad_request("ExchangeRate must be positive", "F5/705", "ExchangeRate")
    amounts: list[Decimal | None] = [
        i.amount_company_code
        if i.amount_company_code is not None
        else (i.amount * (rate or Decimal(0))).quantize(Decimal("0.01"))
        for i in items
    ]
    balance = sum(
        (
            (a or Decimal(0)) if i.side == "S" else -(a or Decimal(0))
            for a, i in zip(amounts, items, strict=True)
        ),
        Decimal(0),
    )
    if balance != 0:
        raise bad_request(f"Balance in company code currency {local}: {balance:.2f}", "F5/703", "to_Item")
    return rate, amounts


def _clear_referenced(
    conn: psycopg.Connection, company: str, items: list[_Item], document: str, day: date
) -> None:
    """Clear each referenced invoice whose open amount the items referencing it now cover: the
    invoice's customer item and every item referencing it get this document as clearing document."""
    for ref, year in sorted({(i.reference, i.reference_year) for i in items if i.reference}):
        row = conn.execute(
            f"SELECT open_amount, customer FROM (SELECT {ITEMS_WITH_OPEN_AMOUNT}) o WHERE company_code = %s"
            " AND fiscal_year = %s AND accounting_document = %s AND customer <> '' AND invoice_reference = ''"
            " LIMIT 1",
            (company, year, ref),
        ).fetchone()
        if row is None or row[0] > 0:
            continue
        conn.execute(
            "UPDATE journal_entry_item SET clearing_document = %s, clearing_date = %s WHERE company_code = %s"
            " AND customer = %s AND ((fiscal_year = %s AND accounting_document = %s AND invoice_reference = '')"
            " OR (invoice_reference_fiscal_year = %s AND invoice_reference = %s)) AND clearing_document = ''",
            (document, day, company, row[1], year, ref, year, ref),
        )
        conn.execute(
            "UPDATE journal_entry SET changed_at = clock_timestamp() WHERE company_code = %s AND"
            " (fiscal_year, accounting_document) IN (SELECT fiscal_year, accounting_document"
            " FROM journal_entry_item WHERE company_code = %s AND clearing_document = %s)",
            (company, company, document),
        )


def post_journal_entry(conn: psycopg.Connection, ctx: Context, payload: dict[str, Any]) -> Reply:
    unknown = sorted(set(payload) - HEADER_FIELDS)
    if unknown:
        raise bad_request(f"Property '{unknown[0]}' is invalid", "/IWBEP/CM_MGW_RT/022", unknown[0])
    company = _text(payload, "CompanyCode", 4, required=True)
    local = _company(conn, company)
    currency = _text(payload, "TransactionCurrency", 5, required=True)
    doc_type = _text(payload, "AccountingDocumentType", 2, required=True)
    posting = parse_sap_date(payload.get("PostingDate"), "PostingDate")
    document = parse_sap_date(payload.get("DocumentDate"), "DocumentDate")
    reference = _text(payload, "DocumentReferenceID", 16)
    header_text = _text(payload, "DocumentHeaderText", 25)
    items = _items(conn, company, payload.get("to_Item"))
    if doc_type in CUSTOMER_DOCUMENT_TYPES and not any(i.customer for i in items):
        raise bad_request(f"Document type {doc_type} needs a customer item", "F5/823", "to_Item")
    balance = sum((i.amount if i.side == "S" else -i.amount for i in items), Decimal(0))
    if balance != 0:
        raise bad_request(f"Balance in transaction currency {currency}: {balance:.2f}", "F5/702")
    rate, local_amounts = _in_company_code_currency(payload, items, currency, local)
    period = check_period_open(conn, company, posting)
    with conn.cursor(row_factory=dict_row) as cur:
        header = cur.execute(
            """
            INSERT INTO journal_entry (company_code, fiscal_year, accounting_document, document_type,
                document_date, posting_date, fiscal_period, document_reference_id, header_text, currency,
                exchange_rate, company_code_currency)
            VALUES (%s, %s, lpad(nextval('accounting_document_no')::text, 10, '0'), %s, %s, %s, %s, %s, %s, %s,
                %s, %s)
            RETURNING *
            """,
            (
                company,
                posting.year,
                doc_type,
                document,
                posting,
                period,
                reference,
                header_text,
                currency,
                rate,
                local,
            ),
        ).fetchone()
        assert header is not None
        cur.executemany(
            """
            INSERT INTO journal_entry_item (company_code, fiscal_year, accounting_document, item, gl_account,
                amount, currency, debit_credit, item_text, cost_center, wbs_element, customer,
                invoice_reference, invoice_reference_fiscal_year, amount_company_code)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            [
                (
                    company,
                    posting.year,
                    header["accounting_document"],
                    n,
                    i.gl_account,
                    i.amount,
                    currency,
                    i.side,
                    i.text,
                    i.cost_center,
                    i.wbs,
                    i.customer,
                    i.reference,
                    i.reference_year,
                    amount,
                )
                for n, (i, amount) in enumerate(zip(items, local_amounts, strict=True), start=1)
            ],
        )
    _clear_referenced(conn, company, items, header["accounting_document"], posting)
    entity = journal_entity(conn, ctx, header, expand=True)
    uri = _uri(ctx, JE_QUERY, {k: str(entity[k]) for k in JE_QUERY.key})
    return Reply(
        201,
        {"d": {"__metadata": {"id": uri, "uri": uri, "type": JE_QUERY.type_name}, **entity}},
        {"location": uri},
    )
