"""Extracting from source systems into staging: windows, watermarks and streaming COPY."""

from __future__ import annotations
