"""Canonical data contracts: versioned pydantic models, their published JSON Schemas and the
compatibility check that keeps a published version from breaking.

``v1`` holds the models; ``export`` writes ``schemas/v1/<Model>.json``; ``compat`` finds the
changes that would break a consumer of a published schema. ``kinds`` is the registry of record
kinds (PSA endpoint, canonical table, ERP record type, external-id prefix, owner domain) every
layer reads.
"""

from __future__ import annotations
