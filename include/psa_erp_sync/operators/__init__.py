"""Custom Airflow operators: thin adapters that hand domain logic its clients, context and state."""

from __future__ import annotations
