"""Planning-platform simulator: receives immutable forecast snapshots per scenario and version."""

from __future__ import annotations
