"""ERP simulator: NetSuite SuiteTalk REST (records, upsert by external id, SuiteQL, async batch)."""

from __future__ import annotations
