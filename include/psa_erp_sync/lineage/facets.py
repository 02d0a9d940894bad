"""Custom OpenLineage run facets. Each has a JSON Schema in ``lineage/schemas/`` and a
``_schemaURL`` pointing at it (base URL configurable with ``PSA_ERP_SYNC_FACET_SCHEMA_BASE``).

No personal data: counts, codes, amounts and identifiers of legal entities and periods only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attr
from openlineage.client.facet_v2 import RunFacet

SCHEMA_DIR = Path(__file__).parent / "schemas"
DEFAULT_BASE = "https://psa-erp-sync.github.io/spec/facets/1-0-0/"


def schema_url(name: str) -> str:
    base = os.environ.get("PSA_ERP_SYNC_FACET_SCHEMA_BASE", DEFAULT_BASE)
    return f"{base.rstrip('/')}/{name}.json#/$defs/{name}"


@attr.define
class ControlTotalsRunFacet(RunFacet):
    """Record counts, hours, amounts per currency (minor units, as strings) and a hash total."""

    counts: dict[str, int] = attr.field(factory=dict)
    hours: str = "0"
    amounts: dict[str, str] = attr.field(factory=dict)
    hashTotal: str = "0"  # OpenLineage facets use camelCase

    @staticmethod
    def _get_schema() -> str:
        return schema_url("ControlTotalsRunFacet")


@attr.define
class PostingOutcomeRunFacet(RunFacet):
    """What a posting run did, by outcome."""

    recordType: str
    posted: int = 0
    alreadyPosted: int = 0
    ambiguousResolved: int = 0
    reversed: int = 0
    rejected: int = 0
    parked: int = 0
    stillPending: int = 0
    erpRequests: int = 0
    rejectedByCode: dict[str, int] = attr.field(factory=dict)

    @staticmethod
    def _get_schema() -> str:
        return schema_url("PostingOutcomeRunFacet")

    @classmethod
    def from_outcome(cls, outcome: dict[str, Any]) -> PostingOutcomeRunFacet:
        return cls(
            recordType=str(outcome["record_type"]),
            posted=int(outcome.get("posted", 0)),
            alreadyPosted=int(outcome.get("already_posted", 0)),
            ambiguousResolved=int(outcome.get("ambiguous_resolved", 0)),
            reversed=int(outcome.get("reversed", 0)),
            rejected=int(outcome.get("rejected", 0)),
            parked=int(outcome.get("parked", 0)),
            stillPending=int(outcome.get("still_pending", 0)),
            erpRequests=int(outcome.get("erp_requests", 0)),
            rejectedByCode={str(k): int(v) for k, v in dict(outcome.get("rejected_by_code", {})).items()},
        )


@attr.define
class DataQualityRunFacet(RunFacet):
    """Validation verdicts: valid and quarantined counts, quarantined by reason code."""

    valid: int = 0
    quarantined: int = 0
    quarantinedByReason: dict[str, int] = attr.field(factory=dict)

    @staticmethod
    def _get_schema() -> str:
        return schema_url("DataQualityRunFacet")


@attr.define
class PeriodContextRunFacet(RunFacet):
    """The month-end context of a run: legal entity, period, close window."""

    legalEntity: str | None = None
    period: str | None = None
    closeWindowEnd: str | None = None
    waitedFor: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return schema_url("PeriodContextRunFacet")


@attr.define
class InvoiceTotalsRunFacet(RunFacet):
    """What an invoicing run planned: documents and lines per type, totals per currency in minor
    units (as strings; credit memos positive, as the ERP holds them), documents per state after it."""

    invoices: int = 0
    creditMemos: int = 0
    invoiceLines: int = 0
    creditMemoLines: int = 0
    totals: dict[str, dict[str, str]] = attr.field(factory=dict)
    documentsByState: dict[str, int] = attr.field(factory=dict)

    @staticmethod
    def _get_schema() -> str:
        return schema_url("InvoiceTotalsRunFacet")

    @classmethod
    def from_totals(cls, totals: dict[str, Any]) -> InvoiceTotalsRunFacet:
        """From :func:`psa_erp_sync.billing.invoices.run_totals`."""
        documents, lines = dict(totals.get("documents", {})), dict(totals.get("lines", {}))
        return cls(
            invoices=int(documents.get("invoice", 0)),
            creditMemos=int(documents.get("creditmemo", 0)),
            invoiceLines=int(lines.get("invoice", 0)),
            creditMemoLines=int(lines.get("creditmemo", 0)),
            totals={
                str(currency): {
                    "invoiced": str(int(t["invoiced"])),
                    "credited": str(int(t["credited"])),
                    "net": str(int(t["invoiced"]) - int(t["credited"])),
                }
                for currency, t in sorted(dict(totals.get("totals", {})).items())
            },
            documentsByState={str(k): int(v) for k, v in dict(totals.get("by_state", {})).items()},
        )


@attr.define
class ErpRoutesRunFacet(RunFacet):
    """Where a posting run's records went: per ERP dataset (namespace and name, the task's outputs)
    and legal entity, the first and last posting date and the number of postings the ERP confirmed."""

    recordType: str
    routes: list[dict[str, Any]] = attr.field(factory=list)

    @staticmethod
    def _get_schema() -> str:
        return schema_url("ErpRoutesRunFacet")
