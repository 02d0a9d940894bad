"""The registry of record kinds: each kind the package moves is declared here once.

A transactional kind (time entries, expenses) has its PSA endpoint, its canonical ODS table, the
ledger's ERP record type (NetSuite's record name, which the ledger and the SAP adapter key on too),
the ERP object it becomes in each ERP, its external-id prefix in the ERP and the owner domain of
``config/systems_of_authority.yaml``. The PSA reference kinds validation reads beside them have an
endpoint and the record type their quarantine items carry. Everything else reads these: the
extract, validation, stream, reconciliation, posting, replay, trace and lineage.

The external-id templates the posting uses are business configuration (``config/mappings.yaml``,
``external_ids``); ``tests/contracts/test_kinds.py`` holds them equal to the prefixes here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

KindName = Literal["time_entry", "expense_entry"]


@dataclass(frozen=True)
class RecordKind:
    """One transactional record kind.

    :param name: the canonical kind, e.g. ``time_entry``.
    :param psa_endpoint: the PSA resource path it is extracted from.
    :param canonical_table: the ODS table (``schema.table``) holding its current valid version.
    :param record_type: the ledger's ERP record type (NetSuite's record name).
    :param erp_objects: per ERP (``netsuite``, ``sap``), the ERP object a posting becomes.
    :param external_id_prefix: our namespace for it in the ERP: prefix + PSA id.
    :param owner_domain: its data domain in ``config/systems_of_authority.yaml``.
    :param event_type: the PSA webhook's event type prefix (``time_entry.updated`` -> ``time_entry``).
    :param label: what people call it (forms, the console).
    """

    name: KindName
    psa_endpoint: str
    canonical_table: str
    record_type: str
    erp_objects: Mapping[str, str]
    external_id_prefix: str
    owner_domain: str
    event_type: str
    label: str

    @property
    def table(self) -> str:
        """The canonical table without its schema, e.g. ``time_entry``."""
        return self.canonical_table.split(".", 1)[1]

    def external_id(self, source_id: str | int) -> str:
        return f"{self.external_id_prefix}{source_id}"


@dataclass(frozen=True)
class ReferenceKind:
    """A PSA reference record validation reads beside the transactional kinds.

    :param record_type: the record type its quarantine items carry, e.g. ``project``.
    :param psa_endpoint: the PSA resource path it is extracted from (always in full).
    """

    record_type: str
    psa_endpoint: str


TIME_ENTRY = RecordKind(
    name="time_entry",
    psa_endpoint="/v2/time_entries",
    canonical_table="canonical.time_entry",
    record_type="timebill",
    erp_objects=MappingProxyType({"netsuite": "timebill", "sap": "TimeSheetEntry"}),
    external_id_prefix="psa-te-",
    owner_domain="time_entry",
    event_type="time_entry",
    label="Time entries",
)
EXPENSE_ENTRY = RecordKind(
    name="expense_entry",
    psa_endpoint="/v2/expenses",
    canonical_table="canonical.expense_entry",
    record_type="expensereport",
    erp_objects=MappingProxyType({"netsuite": "expensereport", "sap": "JournalEntry"}),
    external_id_prefix="psa-ex-",
    owner_domain="expense_entry",
    event_type="expense",
    label="Expenses",
)

#: The transactional kinds by name, in posting order.
KINDS: Mapping[str, RecordKind] = MappingProxyType({k.name: k for k in (TIME_ENTRY, EXPENSE_ENTRY)})
#: The same kinds by the ledger's ERP record type.
BY_RECORD_TYPE: Mapping[str, RecordKind] = MappingProxyType({k.record_type: k for k in KINDS.values()})
#: The same kinds by PSA endpoint.
BY_ENDPOINT: Mapping[str, RecordKind] = MappingProxyType({k.psa_endpoint: k for k in KINDS.values()})
#: The same kinds by the PSA webhook's event type prefix.
BY_EVENT_TYPE: Mapping[str, RecordKind] = MappingProxyType({k.event_type: k for k in KINDS.values()})
#: The PSA endpoints of the transactional kinds (extracted incrementally, swept for deletions).
TRANSACTIONAL_ENDPOINTS: tuple[str, ...] = tuple(BY_ENDPOINT)

REFERENCES: tuple[ReferenceKind, ...] = (
    ReferenceKind("project", "/v2/projects"),
    ReferenceKind("user", "/v2/users"),
    ReferenceKind("task_assignment", "/v2/task_assignments"),
    ReferenceKind("expense_category", "/v2/expense_categories"),
)
#: The PSA reference endpoints, extracted in full before validation.
REFERENCE_ENDPOINTS: tuple[str, ...] = tuple(r.psa_endpoint for r in REFERENCES)
#: Reference endpoint -> the record type its quarantine items carry.
REFERENCE_RECORD_TYPES: Mapping[str, str] = MappingProxyType(
    {r.psa_endpoint: r.record_type for r in REFERENCES}
)


def record_type_labels() -> dict[str, str]:
    """Each ledger record type of a kind with what people call it, e.g. ``Time entries (timebill)``."""
    return {kind.record_type: f"{kind.label} ({kind.record_type})" for kind in KINDS.values()}


def by_record_type(record_type: str) -> RecordKind:
    """The kind of a ledger record type; ``KeyError`` naming the known ones otherwise."""
    try:
        return BY_RECORD_TYPE[record_type]
    except KeyError:
        raise KeyError(f"no record kind posts as {record_type!r}; known: {sorted(BY_RECORD_TYPE)}") from None
