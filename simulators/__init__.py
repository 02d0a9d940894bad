"""Simulators of the real systems (PSA, CRM, ERP, SAP S/4HANA, planning platform, Workday HR) for demos, tests and benchmarks.

They stand outside the product: they speak the real systems' shapes (Harvest API v2, NetSuite
SuiteTalk REST, SAP OData V2), keep their state in PostgreSQL (one schema each) and never import
``psa_erp_sync``. Production code never imports them.
"""

from __future__ import annotations

PORTS = {"psa": 18101, "crm": 18102, "erp": 18103, "planning": 18104, "sap": 18105, "workday": 18107}
SCHEMAS = {
    "psa": "sim_psa",
    "crm": "sim_crm",
    "erp": "sim_erp",
    "planning": "sim_planning",
    "sap": "sim_sap",
    "workday": "sim_workday",
}
