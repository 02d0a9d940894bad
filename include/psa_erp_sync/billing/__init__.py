"""Billing: from delivered work to ERP invoices and credit memos, each source line billed at most once.

Domain logic only: nothing here imports Airflow. Billing events (``billing.event`` in the ODS) are
the billable source lines per version (time and materials from posted billable time and expenses,
fixed fee from signed-off milestones, retainers per billing period); invoices and credit memos
group ready events and go through the posting ledger and engine like every ERP record.
"""

from __future__ import annotations
