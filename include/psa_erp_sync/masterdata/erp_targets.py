"""Master data written to the ERP each legal entity routes to: NetSuite, or SAP.

The writers of master data (the project setup's customers and jobs, ``hr_sync``'s employees) speak
NetSuite's ``upsert(record_type, external_id, body)`` with NetSuite-shaped bodies. During a
transition (docs/multi-erp.md, "Downstream per ERP"):

- :class:`SapMasterWriter` takes the same call and writes SAP's shapes through the master-data
  service (``ZPSA_MASTERDATA_SRV``, docs/simulators.md): ``employee`` -> a work agreement
  (``PersonWorkAgreementExternalID`` = our employee external id, the key timesheet records book
  under), ``customer`` -> a customer, ``job`` -> a WBS element (the receiver timesheet records name)
  of the company code the body's ``subsidiary`` maps to;
- :class:`RoutedErpWriter` sends each upsert to the writer of the ERP the body's legal entity routes
  to on the run's date (:meth:`psa_erp_sync.routing.route.Router.route`), never by processing time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from psa_erp_sync.clients.erp import ErpRejected
from psa_erp_sync.clients.erp_models import ErrorDetail
from psa_erp_sync.routing.route import Router

SETS = {
    "employee": "WorkAgreementCollection",
    "customer": "CustomerCollection",
    "job": "WBSElementCollection",
}


def _ref(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if isinstance(value, Mapping):
        found = value.get("externalId") or value.get("refName")
        return str(found) if found else None
    return str(value) if value else None


def _sap_date(value: Any) -> str | None:
    if not value:
        return None
    day = date.fromisoformat(str(value))
    return f"/Date({(day - date(1970, 1, 1)).days * 86_400_000})/"


def _refused(code: str, field: str) -> ErpRejected:
    return ErpRejected(400, [ErrorDetail.model_validate({"o:errorCode": code, "o:errorPath": field})])


class SapMasterWriter:
    """NetSuite-shaped master-data upserts written to one SAP system.

    :param client: an :class:`~psa_erp_sync.clients.sap.S4HanaClient`.
    :param company_codes: legal entity -> company code (the SAP connection's mapping).
    """

    name = "sap"

    def __init__(self, client: Any, company_codes: Mapping[str, str]) -> None:
        self.client = client
        self.company_codes = dict(company_codes)

    def payload(self, record_type: str, external_id: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """SAP's entity for a NetSuite-shaped body; None for a body without a legal entity (a
        NetSuite-only field, such as the job's PSA project link, which SAP does not hold)."""
        if record_type not in SETS:
            raise _refused("SAP_RECORD_TYPE_UNSUPPORTED", record_type)
        entity = _ref(body, "subsidiary")
        if entity is None:
            return None
        company = self.company_codes.get(entity)
        if company is None:
            raise _refused("COMPANY_CODE_UNMAPPED", "subsidiary")
        if record_type == "employee":
            return {
                "PersonWorkAgreementExternalID": external_id,
                "CompanyCode": company,
                "FirstName": str(body.get("firstName") or ""),
                "LastName": str(body.get("lastName") or ""),
                "StartDate": _sap_date(body.get("hireDate")),
                "EndDate": _sap_date(body.get("releaseDate")),
                "IsInactive": bool(body.get("isInactive")),
            }
        currency = _ref(body, "currency") or ""
        name = str(body.get("companyName") or body.get("entityId") or external_id)
        if record_type == "customer":
            return {
                "Customer": external_id,
                "CompanyCode": company,
                "CustomerName": name[:80],
                "Currency": currency,
                "IsBlocked": bool(body.get("isInactive")),
            }
        return {
            "WBSElement": external_id,
            "CompanyCode": company,
            "Description": name[:40],
            "Customer": _ref(body, "parent") or _ref(body, "customer") or "",
            "Currency": currency,
            "IsClosed": bool(body.get("isInactive")),
        }

    def upsert(self, record_type: str, external_id: str, body: Mapping[str, Any]) -> str:
        """Create or replace the SAP entity; its key (our external id, as SAP keys it)."""
        from psa_erp_sync.clients import sap

        entity = self.payload(record_type, external_id, body)
        if entity is None:
            return external_id
        try:
            self.client.upsert_master(SETS[record_type], entity)
        except sap.SapRejected as exc:
            raise _refused(exc.code or f"SAP_HTTP_{exc.status}", record_type) from exc
        return external_id


class RoutedErpWriter:
    """``upsert`` to the writer of the ERP the body's legal entity routes to on ``as_of``.

    :param writer_for: ERP name -> its writer (NetSuite's client, or a :class:`SapMasterWriter`).
    :param placed: (record type, external id) -> the ERP an earlier run wrote that record to (the
        project setup's ``master.project_setup.erp_name``, else its entity's route on ``as_of``).
    A body without a legal entity (a link field) goes where this writer last sent that record, else
    where ``placed`` says, else to NetSuite.
    """

    def __init__(
        self,
        router: Router,
        writer_for: Callable[[str], Any],
        *,
        as_of: date,
        placed: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        self.router = router
        self.writer_for = writer_for
        self.as_of = as_of
        self.placed = dict(placed or {})
        self.sent: dict[tuple[str, str], str] = {}

    def target(self, record_type: str, external_id: str, body: Mapping[str, Any]) -> str:
        entity = _ref(body, "subsidiary")
        if entity is None:
            key = (record_type, external_id)
            return self.sent.get(key) or self.placed.get(key) or "netsuite"
        return self.router.route(entity, self.as_of).erp

    def placed_in(self, record_type: str, external_id: str) -> str | None:
        """The ERP this writer sent the record to in this run (None: not sent)."""
        return self.sent.get((record_type, external_id))

    def upsert(self, record_type: str, external_id: str, body: Mapping[str, Any]) -> str:
        erp = self.target(record_type, external_id, body)
        written = str(self.writer_for(erp).upsert(record_type, external_id, body))
        self.sent[(record_type, external_id)] = erp
        return written
