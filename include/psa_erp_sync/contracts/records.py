"""The msgspec twins of the v1 transaction contracts: what validation writes and posting reads.

:class:`TimeEntry` and :class:`ExpenseEntry` are :class:`msgspec.Struct` twins of
:class:`~psa_erp_sync.contracts.v1.TimeEntry` and :class:`~psa_erp_sync.contracts.v1.ExpenseEntry`:
the same field names, the same Python types, the same defaults. pydantic stays the definition
(its JSON Schemas are published and guarded by the breaking-change check); the twins exist for
speed (validation builds ~100k records a second) and ``tests/contracts/test_records.py`` holds
them equal to the pydantic models, field by field. So renaming or retyping a v1 field fails that
test until the twin follows, and then the seam itself: validation builds each canonical record
through :func:`build` (a key the contract lacks, a missing one or a wrong type is refused) and
posting decodes each canonical row it plans from through :func:`from_row`.

The twins carry the types, not the value constraints (patterns, ranges): validation's rules
enforce those before a record is built, and ``tests/contracts/test_records.py`` validates what
validation writes against the pydantic model itself.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

import msgspec

#: v1's ``Timestamp``: an aware instant (a naive one is refused).
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]


class TimeEntry(msgspec.Struct, kw_only=True, frozen=True):
    """Twin of :class:`psa_erp_sync.contracts.v1.TimeEntry` (a row of ``canonical.time_entry``)."""

    contract_version: Literal["v1"] = "v1"
    source_system: str
    source_id: str
    version_hash: str
    spent_date: date
    user_ref: str
    project_ref: str
    task_ref: str | None
    legal_entity: str
    hours: Decimal
    billable: bool
    bill_rate_minor: int
    amount_minor: int
    currency: str
    approved: bool
    is_deleted: bool = False
    fingerprint: str
    source_updated_at: Timestamp


class ExpenseEntry(msgspec.Struct, kw_only=True, frozen=True):
    """Twin of :class:`psa_erp_sync.contracts.v1.ExpenseEntry` (a row of ``canonical.expense_entry``)."""

    contract_version: Literal["v1"] = "v1"
    source_system: str
    source_id: str
    version_hash: str
    spent_date: date
    user_ref: str
    project_ref: str
    legal_entity: str
    category: str
    billable: bool
    amount_minor: int
    currency: str
    approved: bool
    is_deleted: bool = False
    fingerprint: str
    source_updated_at: Timestamp


Record = TimeEntry | ExpenseEntry

#: The twin of each transactional kind (``contracts.kinds`` names).
TWINS: Final[Mapping[str, type[TimeEntry] | type[ExpenseEntry]]] = {
    "time_entry": TimeEntry,
    "expense_entry": ExpenseEntry,
}

#: The contract's fields of each kind, in order, without ``contract_version`` (the ODS has no
#: column for it): the canonical columns validation writes and posting reads.
FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    kind: tuple(f for f in twin.__struct_fields__ if f != "contract_version") for kind, twin in TWINS.items()
}

_FIELD_SETS: Final[Mapping[str, frozenset[str]]] = {
    kind: frozenset(twin.__struct_fields__) for kind, twin in TWINS.items()
}
_encoder = msgspec.json.Encoder()


def build(kind: str, values: Mapping[str, Any]) -> Record:
    """The canonical record of ``kind`` from Python values (dates, ``Decimal`` hours, aware
    datetimes): ``msgspec.ValidationError`` for a missing field, one the contract lacks or a wrong type."""
    unknown = values.keys() - _FIELD_SETS[kind]
    if unknown:  # v1 is extra="forbid"; the twin reads rows with more columns, so it checks here
        raise msgspec.ValidationError(f"fields the {kind} contract lacks: {', '.join(sorted(unknown))}")
    return msgspec.convert(values, TWINS[kind])


#: The row type of :func:`build_rows`, by twin and extra columns (built on first use).
_ROW_TYPES: dict[tuple[type, tuple[str, ...]], Any] = {}


def _row_type(twin: type[msgspec.Struct], extra: tuple[str, ...]) -> Any:
    """``list[<the twin's fields, then extra (any value, None by default)>]``, for one
    ``msgspec.convert`` of a whole list of rows."""
    key = (twin, extra)
    if key not in _ROW_TYPES:
        hints = typing.get_type_hints(twin, include_extras=True)
        fields = twin.__struct_fields__
        defaults = dict(
            zip(fields[len(fields) - len(twin.__struct_defaults__) :], twin.__struct_defaults__, strict=True)
        )
        spec: list[tuple[str, Any] | tuple[str, Any, Any]] = [
            (f, hints[f], defaults[f]) if f in defaults else (f, hints[f]) for f in fields
        ]
        spec += [(name, Any, None) for name in extra]
        row = msgspec.defstruct(f"{twin.__name__}Row", spec, kw_only=True, frozen=True)
        _ROW_TYPES[key] = list[row]  # type: ignore[valid-type]
    return _ROW_TYPES[key]


def build_rows(
    kind: str, rows: Sequence[Mapping[str, Any]], extra: tuple[str, ...] = ()
) -> list[tuple[Any, ...]]:
    """:func:`build` of each of ``rows`` in one call, as tuples: the contract's fields in order
    (without ``contract_version``), then the values of ``extra``, columns beside the contract
    passed as they are (None where a row has none). The same refusals as :func:`build`
    (``msgspec.ValidationError``): a missing field or a wrong type, then a key that neither the
    contract nor ``extra`` names."""
    twin = TWINS[kind]
    built = msgspec.convert(rows, _row_type(twin, extra))
    allowed = {*twin.__struct_fields__, *extra}
    unknown = set().union(*rows) - allowed
    if unknown:  # v1 is extra="forbid"
        raise msgspec.ValidationError(f"fields the {kind} contract lacks: {', '.join(sorted(unknown))}")
    astuple = msgspec.structs.astuple
    return [astuple(r)[1:] for r in built]


def encode(record: Record) -> str:
    """The record as the JSON of ``canonical.*.record`` (decimals and dates as strings)."""
    return _encoder.encode(record).decode()


def from_row(kind: str, row: Mapping[str, Any]) -> Record:
    """A canonical row read back as its contract: from ``to_jsonb`` (dates, timestamps and hours as
    strings) or column by column (the planner's candidates: dates, ``Decimal`` hours, aware
    timestamps); columns beside the contract's (FX, bookkeeping) are not read."""
    return msgspec.convert(row, TWINS[kind], strict=False)


def as_json_row(record: Record) -> dict[str, Any]:
    """The record's fields as JSON values (what ``to_jsonb`` of the row gave): ISO dates, hours as
    text, without ``contract_version``."""
    out: dict[str, Any] = msgspec.to_builtins(record)
    out.pop("contract_version", None)
    return out


def reads(kind: str, *names: str) -> tuple[str, ...]:
    """The contract fields of ``kind`` a set-based consumer (billing's and the forecast's SQL over
    ``canonical.*``) reads, checked when it is imported: ``KeyError`` for a name the contract lacks,
    so a v1 rename the twin followed breaks the consumer at once, not its figures later."""
    missing = [n for n in names if n not in FIELDS[kind]]
    if missing:
        raise KeyError(f"canonical {kind} has no field {', '.join(missing)} in contract v1")
    return names
