"""Reading what a task needs from the Airflow context: kept here for the flows' imports; it lives
in :mod:`psa_erp_sync.operators.context` so that operators read it without importing a flow."""

from __future__ import annotations

from psa_erp_sync.operators.context import ids, is_scheduled, run_as_of

__all__ = ["ids", "is_scheduled", "run_as_of"]
