"""Workday HR simulator: REST workers, a RaaS cost-rate report, OAuth2 refresh-token auth."""

from __future__ import annotations
