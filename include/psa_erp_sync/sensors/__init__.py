"""Deferrable sensors: they wait in the triggerer, holding no worker slot."""

from __future__ import annotations
