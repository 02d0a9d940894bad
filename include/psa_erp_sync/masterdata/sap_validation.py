"""A deal validated against SAP's master data, for a legal entity that routes to SAP.

The SAP counterpart of :func:`psa_erp_sync.masterdata.validation.validate_batch` (same
:class:`~psa_erp_sync.masterdata.validation.Candidate` in, same
:class:`~psa_erp_sync.masterdata.validation.Verdict` and reason codes out; docs/multi-erp.md,
"Downstream per ERP"). SAP is read through the master-data service (``ZPSA_MASTERDATA_SRV``): per
company code of the batch, its customers and its WBS elements, two reads whatever the batch size.

- ``LEGAL_ENTITY_UNKNOWN``: the legal entity has no company code in the SAP connection's mapping;
- ``CUSTOMER_UNKNOWN`` / ``CUSTOMER_AMBIGUOUS`` / ``CUSTOMER_INACTIVE``: the customer (by id, else
  by an unambiguous name) in the entity's company code, blocked counts as inactive;
- ``CURRENCY_UNKNOWN`` / ``CURRENCY_MISMATCH``: a malformed code, or one other than the WBS
  element's (a posting on an existing project) else the customer's;
- ``PROJECT_UNKNOWN`` / ``PROJECT_INACTIVE``: the WBS element in the company code, closed counts
  as inactive; ``CONTRACT_INVALID`` as for NetSuite.

SAP's stand-in service keeps no tax codes: a deal's tax code is not judged in SAP. An SAP outage is
never a pass (:class:`~psa_erp_sync.masterdata.validation.ErpValidationUnavailable`). No Airflow here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psa_erp_sync.masterdata.validation import (
    _CONTROL,
    CURRENCY,
    REASON_CODES,
    Candidate,
    ErpValidationUnavailable,
    Verdict,
    _valid_ref,
)

Rows = dict[str, list[dict[str, Any]]]


def read_company(client: Any, company_code: str) -> tuple[Rows, Rows]:
    """The customers and WBS elements of ``company_code``, each by its key (2 reads)."""
    from psa_erp_sync.clients.sap import SapThrottled, SapUnavailable

    try:
        customers = [r.model_dump() for r in client.master_records("CustomerCollection", company_code)]
        wbs = [r.model_dump() for r in client.master_records("WBSElementCollection", company_code)]
    except (SapUnavailable, SapThrottled) as exc:
        raise ErpValidationUnavailable(f"SAP unavailable during validation: {exc}") from exc
    by_id: Rows = {}
    for row in customers:
        by_id.setdefault(str(row["Customer"]), []).append(row)
        by_id.setdefault("name:" + str(row.get("CustomerName")), []).append(row)
    projects: Rows = {}
    for row in wbs:
        projects.setdefault(str(row["WBSElement"]), []).append(row)
    return by_id, projects


def _customer(candidate: Candidate, customers: Rows, reasons: list[str]) -> dict[str, Any] | None:
    found: list[dict[str, Any]] = []
    if candidate.customer is not None:
        if not _valid_ref(candidate.customer):
            return None
        found = customers.get(candidate.customer, [])
    elif candidate.customer_name is not None and not _CONTROL.search(candidate.customer_name):
        found = customers.get("name:" + candidate.customer_name, [])
    else:
        return None
    if not found:
        reasons.append("CUSTOMER_UNKNOWN")
        return None
    if len(found) > 1:
        reasons.append("CUSTOMER_AMBIGUOUS")  # never guess between same-named customers
        return None
    if found[0].get("IsBlocked"):
        reasons.append("CUSTOMER_INACTIVE")
    return found[0]


def judge(candidate: Candidate, company_code: str | None, customers: Rows, projects: Rows) -> Verdict:
    """The verdict on one deal by SAP's master data of its company code (read beforehand)."""
    reasons: list[str] = []
    refs = (candidate.customer, candidate.legal_entity, candidate.tax_code, candidate.project_code)
    if not all(_valid_ref(r) for r in refs) or (
        candidate.customer_name is not None and _CONTROL.search(candidate.customer_name)
    ):
        reasons.append("INVALID_REFERENCE")
    if company_code is None:
        reasons.append("LEGAL_ENTITY_UNKNOWN")
    customer = _customer(candidate, customers, reasons) if company_code is not None else None
    wbs = None
    if company_code is not None and candidate.project_code is not None and _valid_ref(candidate.project_code):
        matches = projects.get(candidate.project_code, [])
        wbs = matches[0] if matches else None
        if wbs is None:
            reasons.append("PROJECT_UNKNOWN")
        elif wbs.get("IsClosed"):
            reasons.append("PROJECT_INACTIVE")
    if candidate.currency is not None:
        bound = (wbs or customer or {}).get("Currency")
        if not CURRENCY.match(candidate.currency):
            reasons.append("CURRENCY_UNKNOWN")
        elif bound not in (None, "", candidate.currency):
            reasons.append("CURRENCY_MISMATCH")
    value = candidate.contract_value
    if value is not None and (value <= 0 or value.as_tuple().exponent < -2):  # type: ignore[operator]
        reasons.append("CONTRACT_INVALID")
    ordered = tuple(code for code in REASON_CODES if code in reasons)
    return Verdict(
        key=candidate.key,
        ok=not ordered,
        reasons=ordered,
        customer=str(customer["Customer"]) if customer else None,
        legal_entity=candidate.legal_entity,
    )


def validate_in_sap(
    candidates: Sequence[Candidate], client: Any, company_codes: Mapping[str, str]
) -> tuple[list[Verdict], int]:
    """One verdict per candidate, in order, and the SAP reads it took (2 per company code).

    :param company_codes: legal entity -> company code (the SAP connection's mapping).
    :raises ErpValidationUnavailable: SAP could not be asked; no verdict is returned.
    """
    read: dict[str, tuple[Rows, Rows]] = {}
    try:
        for candidate in candidates:
            company = company_codes.get(candidate.legal_entity or "")
            if company is not None and company not in read:
                read[company] = read_company(client, company)
    except ErpValidationUnavailable as exc:
        raise ErpValidationUnavailable(f"{len(candidates)} records not validated: {exc}") from exc
    verdicts = []
    for candidate in candidates:
        company = company_codes.get(candidate.legal_entity or "")
        customers, projects = read.get(company or "", ({}, {}))
        verdicts.append(judge(candidate, company, customers, projects))
    return verdicts, 2 * len(read)
