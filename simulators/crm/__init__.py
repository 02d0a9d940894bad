"""CRM simulator: accounts, opportunities, change orders and a pull-based event feed."""

from __future__ import annotations
