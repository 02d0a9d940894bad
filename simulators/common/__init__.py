"""Shared machinery of all simulators: the app factory, PostgreSQL state and fault injection."""

from __future__ import annotations
