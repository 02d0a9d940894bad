"""SAP S/4HANA simulator: OData V2 timesheets (API_MANAGE_WORKFORCE_TIMESHEET), journal entries, periods."""

from __future__ import annotations
