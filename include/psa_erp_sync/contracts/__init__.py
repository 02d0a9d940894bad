"""Canonical data contracts: versioned pydantic models, their published JSON Schemas and the
compatibility check that keeps a published version from breaking.

``v1`` holds the models; ``export`` writes ``schemas/v1/<Model>.json``; ``compat`` finds the
changes that would break a consumer of a published schema.
"""

from __future__ import annotations
