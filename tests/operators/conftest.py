"""The ERP validation operator runs against the master data the masterdata tests seed."""

from __future__ import annotations

from tests.masterdata.conftest import clean_master, erp_master

__all__ = ["clean_master", "erp_master"]
