"""Reconciliation: control totals per stage and the checks that fail a run on a mismatch."""

from __future__ import annotations
