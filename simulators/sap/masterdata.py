"""``ZPSA_MASTERDATA_SRV``: our documented stand-in for the SAP master-data services we write to.

Real systems take these through several APIs (business partner / customer, enterprise projects and
their WBS elements, workforce replication for people); the integration needs one write and one read
of each, per company code, so the simulator offers them as one OData V2 service (docs/simulators.md):

- ``WorkAgreementCollection`` key PersonWorkAgreementExternalID + CompanyCode (the work agreement a
  timesheet record books under): FirstName, LastName, StartDate, EndDate (``/Date(ms)/`` or null),
  IsInactive; SAP numbers ``PersonWorkAgreement`` on create.
- ``CustomerCollection`` key Customer + CompanyCode: CustomerName, Currency, IsBlocked.
- ``WBSElementCollection`` key WBSElement + CompanyCode: Description, Customer (must exist in the
  company code), Currency, IsClosed.

A POST to a collection creates the entity or replaces the one with its key (absolute values: a
repeated POST changes nothing) and answers 201 with the entity as stored. Reads: ``eq`` filters on
the key properties (the OData quirks of the other services apply).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from simulators.sap.odata import ODataError, bad_request, parse_sap_date, sap_date

MASTER = "ZPSA_MASTERDATA_SRV"
SETS = ["WorkAgreementCollection", "CustomerCollection", "WBSElementCollection"]
FIELDS = {
    "WorkAgreementCollection": frozenset(
        {
            "PersonWorkAgreementExternalID",
            "CompanyCode",
            "PersonWorkAgreement",
            "FirstName",
            "LastName",
            "StartDate",
            "EndDate",
            "IsInactive",
        }
    ),
    "CustomerCollection": frozenset({"Customer", "CompanyCode", "CustomerName", "Currency", "IsBlocked"}),
    "WBSElementCollection": frozenset(
        {"WBSElement", "CompanyCode", "Description", "Customer", "Currency", "IsClosed"}
    ),
}


def entity(set_name: str, row: dict[str, Any]) -> dict[str, Any]:
    """One stored row as the service answers it."""
    if set_name == "WorkAgreementCollection":
        return {
            "PersonWorkAgreementExternalID": row["external_id"],
            "CompanyCode": row["company_code"],
            "PersonWorkAgreement": row["person_work_agreement"],
            "FirstName": row["first_name"],
            "LastName": row["last_name"],
            "StartDate": sap_date(row["start_date"]) if row["start_date"] else None,
            "EndDate": sap_date(row["end_date"]) if row["end_date"] else None,
            "IsInactive": row["is_inactive"],
        }
    if set_name == "CustomerCollection":
        return {
            "Customer": row["customer"],
            "CompanyCode": row["company_code"],
            "CustomerName": row["customer_name"],
            "Currency": row["currency"],
            "IsBlocked": row["is_blocked"],
        }
    return {
        "WBSElement": row["wbs_element"],
        "CompanyCode": row["company_code"],
        "Description": row["description"],
        "Customer": row["customer"],
        "Currency": row["currency"],
        "IsClosed": row["is_closed"],
    }


def _text(payload: dict[str, Any], name: str, max_len: int, *, required: bool = True) -> str:
    value = payload.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > max_len or (required and not value):
        raise bad_request(f"Property '{name}' must be a string of 1 to {max_len} characters", target=name)
    return value


def _flag(payload: dict[str, Any], name: str) -> bool:
    value = payload.get(name, False)
    if not isinstance(value, bool):
        raise bad_request(f"Property '{name}' is an Edm.Boolean", target=name)
    return value


def _day(payload: dict[str, Any], name: str) -> Any:
    value = payload.get(name)
    return None if value is None else parse_sap_date(value, name)


def upsert(conn: psycopg.Connection, set_name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Create or replace one entity of ``set_name``; the stored row."""
    unknown = sorted(set(payload) - FIELDS[set_name])
    if unknown:
        raise bad_request(f"Property '{unknown[0]}' is invalid", "/IWBEP/CM_MGW_RT/022", unknown[0])
    company = _text(payload, "CompanyCode", 4)
    if conn.execute("SELECT 1 FROM company_code WHERE company_code = %s", (company,)).fetchone() is None:
        raise bad_request(f"Company code {company} does not exist", "F5/165", "CompanyCode")
    with conn.cursor(row_factory=dict_row) as cur:
        if set_name == "WorkAgreementCollection":
            return _work_agreement(cur, company, payload)
        if set_name == "CustomerCollection":
            return cur.execute(  # type: ignore[return-value]
                """
                INSERT INTO customer VALUES (%s, %s, %s, %s, %s) ON CONFLICT (customer, company_code)
                DO UPDATE SET customer_name = EXCLUDED.customer_name, currency = EXCLUDED.currency,
                    is_blocked = EXCLUDED.is_blocked
                RETURNING *
                """,
                (
                    _text(payload, "Customer", 40),
                    company,
                    _text(payload, "CustomerName", 80),
                    _text(payload, "Currency", 5),
                    _flag(payload, "IsBlocked"),
                ),
            ).fetchone()
        customer = _text(payload, "Customer", 40)
        if (
            cur.execute(
                "SELECT 1 FROM customer WHERE customer = %s AND company_code = %s", (customer, company)
            ).fetchone()
            is None
        ):
            raise bad_request(
                f"Customer {customer} does not exist in company code {company}", "F2/149", "Customer"
            )
        return cur.execute(  # type: ignore[return-value]
            """
            INSERT INTO wbs_element VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (wbs_element, company_code)
            DO UPDATE SET description = EXCLUDED.description, customer = EXCLUDED.customer,
                currency = EXCLUDED.currency, is_closed = EXCLUDED.is_closed
            RETURNING *
            """,
            (
                _text(payload, "WBSElement", 24),
                company,
                _text(payload, "Description", 40),
                customer,
                _text(payload, "Currency", 5),
                _flag(payload, "IsClosed"),
            ),
        ).fetchone()


def _work_agreement(cur: psycopg.Cursor[Any], company: str, payload: dict[str, Any]) -> dict[str, Any]:
    external_id = _text(payload, "PersonWorkAgreementExternalID", 20)
    row = cur.execute(
        """
        INSERT INTO work_agreement (external_id, company_code, person_work_agreement, first_name, last_name,
            start_date, end_date, is_inactive)
        VALUES (%s, %s, nextval('work_agreement_no')::text, %s, %s, %s, %s, %s)
        ON CONFLICT (external_id, company_code) DO UPDATE SET first_name = EXCLUDED.first_name,
            last_name = EXCLUDED.last_name, start_date = EXCLUDED.start_date, end_date = EXCLUDED.end_date,
            is_inactive = EXCLUDED.is_inactive
        RETURNING *
        """,
        (
            external_id,
            company,
            _text(payload, "FirstName", 40, required=False),
            _text(payload, "LastName", 40, required=False),
            _day(payload, "StartDate"),
            _day(payload, "EndDate"),
            _flag(payload, "IsInactive"),
        ),
    ).fetchone()
    if row is None:
        raise ODataError(500, "/IWBEP/CM_MGW_RT/000", "work agreement not stored")
    return dict(row)
