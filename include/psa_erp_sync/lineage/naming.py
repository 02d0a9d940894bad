"""Dataset names that join into one graph across PSA, ODS, ERP and planning.

- PostgreSQL (OpenLineage naming spec): namespace ``postgres://{host}:{port}``, name
  ``{database}.{schema}.{table}``.
- HTTP systems (project convention): namespace ``scheme://host[:port]`` of the system's base URL
  (``http_namespace``: user info such as ``user:password@`` never reaches the namespace, and scheme
  and host are lower-cased), name = the resource path, e.g. ``/v2/time_entries`` (PSA) or
  ``/services/rest/record/v1/timebill`` (NetSuite), or SAP's entity set, e.g.
  ``/sap/opu/odata/sap/API_MANAGE_WORKFORCE_TIMESHEET/TimeSheetEntryCollection`` (:func:`erp_dataset`:
  each ERP's datasets in its own namespace). The provider drops hook-level lineage for https
  URIs, so operators return these datasets themselves.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from psa_erp_sync.contracts.kinds import KINDS

ERP_RECORD_PATH = "/services/rest/record/v1/{record_type}"
PLANNING_SNAPSHOTS = "/api/v1/snapshots"
#: The canonical table (in schema ``canonical``) of each ledger record type.
CANONICAL_TABLE = {kind.record_type: kind.table for kind in KINDS.values()}


def http_namespace(base_url: str) -> str:
    """``scheme://host[:port]`` of ``base_url``: no user info, no path, no query."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}{f':{parts.port}' if parts.port else ''}"


def postgres(namespace: str, database: str, schema: str, table: str) -> Any:
    from openlineage.client.event_v2 import Dataset

    return Dataset(namespace=namespace, name=f"{database}.{schema}.{table}")


def http(namespace: str, path: str) -> Any:
    from openlineage.client.event_v2 import Dataset

    return Dataset(namespace=namespace, name=path)


def erp_record(namespace: str, record_type: str) -> Any:
    return http(namespace, ERP_RECORD_PATH.format(record_type=record_type))


#: Where SAP S/4HANA holds what we post and the master data we read, per (NetSuite) record type:
#: its OData entity sets (the master data in our stand-in service ``ZPSA_MASTERDATA_SRV``).
SAP_RECORD_PATHS = {
    "timebill": "/sap/opu/odata/sap/API_MANAGE_WORKFORCE_TIMESHEET/TimeSheetEntryCollection",
    "expensereport": "/sap/opu/odata/sap/ZPSA_JOURNALENTRY_SRV/JournalEntryCollection",
    "customer": "/sap/opu/odata/sap/ZPSA_MASTERDATA_SRV/CustomerCollection",
    "job": "/sap/opu/odata/sap/ZPSA_MASTERDATA_SRV/WBSElementCollection",
    "employee": "/sap/opu/odata/sap/ZPSA_MASTERDATA_SRV/WorkAgreementCollection",
    "accountingperiod": "/sap/opu/odata/sap/ZPSA_JOURNALENTRY_SRV/PostingPeriodCollection",
    # revenue journals (revenue.sap.RevenueSapAdapter): journal entries too
    "journalentry": "/sap/opu/odata/sap/ZPSA_JOURNALENTRY_SRV/JournalEntryCollection",
    # billing (billing.sap.SapBillingAdapter): customer documents DR, DG and payments DZ are FI
    # journal entries too (docs/billing.md, "Billing on SAP")
    "invoice": "/sap/opu/odata/sap/ZPSA_JOURNALENTRY_SRV/JournalEntryCollection",
    "creditmemo": "/sap/opu/odata/sap/ZPSA_JOURNALENTRY_SRV/JournalEntryCollection",
    "customerpayment": "/sap/opu/odata/sap/ZPSA_JOURNALENTRY_SRV/JournalEntryCollection",
}


def erp_dataset(erp: str, namespace: str, record_type: str) -> Any:
    """The dataset of ``record_type`` in the ERP named ``erp``, in that ERP's own namespace:
    NetSuite's record path, SAP's entity set (NetSuite's path for a type SAP does not take)."""
    if erp == "sap" and record_type in SAP_RECORD_PATHS:
        return http(namespace, SAP_RECORD_PATHS[record_type])
    return erp_record(namespace, record_type)
