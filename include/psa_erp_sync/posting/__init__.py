"""Posting to the ERP with exactly-once effect: the ledger, the planner, periods and the engine.

Airflow runs tasks at least once, so exactly-once *effect* comes from here: a deterministic
idempotency key per (record, approved version, action, sequence), a ledger row written before
the ERP is called, upserts by external id, and resolution by read-back after any ambiguous
failure. See docs/posting.md for the state machine.
"""

from __future__ import annotations
