"""Thin Airflow hooks: each builds a plain client of one external system from an Airflow connection."""

from __future__ import annotations
