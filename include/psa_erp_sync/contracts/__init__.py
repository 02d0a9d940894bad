"""Canonical data contracts: versioned pydantic models, their published JSON Schemas and the
compatibility check that keeps a published version from breaking.

``v1`` holds the models; ``devtools/contracts_export.py`` (``make contracts``) writes
``schemas/v1/<Model>.json``; ``compat`` finds the changes that would break a consumer of a
published schema. ``records`` holds the msgspec twins of the two contracts in force
(``TimeEntry``, ``ExpenseEntry``: validation writes them; posting, billing and the forecast read
them); every other v1 model is an exported specification only. ``kinds`` is the registry of record
kinds (PSA endpoint, canonical table, ERP record type, external-id prefix, owner domain) every
layer reads.
"""

from __future__ import annotations
