"""Business calendars: month-end close windows per country, in business days."""

from __future__ import annotations
