"""Validation of staged source payloads into canonical records, or into quarantine with a reason."""

from __future__ import annotations
