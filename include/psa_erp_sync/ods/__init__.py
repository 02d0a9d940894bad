"""The operational data store (PostgreSQL): migrations and repositories, one module per schema."""

from __future__ import annotations
