"""Simulators of the real systems (PSA, CRM, ERP, planning platform, Workday HR) for demos, tests and benchmarks.

They stand outside the product: they speak the real systems' shapes (Harvest API v2, NetSuite
SuiteTalk REST), keep their state in PostgreSQL (one schema each) and never import
``psa_erp_sync``. Production code never imports them.
"""

from __future__ import annotations

PORTS = {"psa": 18101, "crm": 18102, "erp": 18103, "planning": 18104, "workday": 18107}
SCHEMAS = {
    "psa": "sim_psa",
    "crm": "sim_crm",
    "erp": "sim_erp",
    "planning": "sim_planning",
    "workday": "sim_workday",
}
