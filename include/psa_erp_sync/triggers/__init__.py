"""Triggers that run in the triggerer while deferrable sensors wait (no worker slot held)."""

from __future__ import annotations
