"""Request and response models of the webhook ingress (strict; the envelope is ours, the record
inside is the sender's shape), the header patterns, and their OpenAPI rendering."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

_DELIVERY_ID = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
_SAFE_LOC = re.compile(r"[^A-Za-z0-9_.-]")  # field paths may hold the sender's keys: keep them inert
_DIGITS = re.compile(r"^[0-9]{1,19}$")
_EVENT = re.compile(r"^[a-z_]{1,40}\.[a-z_]{1,40}$")

PSA_EVENTS = (
    "time_entry.approved",
    "time_entry.updated",
    "time_entry.unapproved",
    "time_entry.deleted",
    "expense.approved",
    "milestone.completed",
)
ERP_EVENTS = ("invoice.created", "invoice.paid", "accountingperiod.closed")


class PsaRecordRef(BaseModel):
    """The announced PSA record. Only its identity is trusted: the stream re-reads it by id."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: StrictInt = Field(gt=0, le=2**53)
    updated_at: datetime | None = None


class PsaEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    delivery_id: StrictStr = Field(pattern=_DELIVERY_ID.pattern)
    event: Literal[
        "time_entry.approved",
        "time_entry.updated",
        "time_entry.unapproved",
        "time_entry.deleted",
        "expense.approved",
        "milestone.completed",
    ]
    occurred_at: datetime
    data: PsaRecordRef


class ErpRecordRef(BaseModel):
    """An ERP record: internal id and, where it has one, our external id."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: StrictStr = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    externalId: StrictStr | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,128}$")


class ErpEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    delivery_id: StrictStr = Field(pattern=_DELIVERY_ID.pattern)
    event: Literal["invoice.created", "invoice.paid", "accountingperiod.closed"]
    occurred_at: datetime
    data: ErpRecordRef


MODELS: dict[str, type[PsaEvent] | type[ErpEvent]] = {"psa": PsaEvent, "erp": ErpEvent}


class Accepted(BaseModel):
    status: Literal["accepted", "duplicate"]
    delivery_id: str


class Rejected(BaseModel):
    status: Literal["rejected", "quarantined"]
    error: str
    reason_code: str | None = None


def error_detail(exc: ValidationError) -> dict[str, Any]:
    """Where and what kind of error, never the offending values (they may be personal data)."""
    return {
        "errors": [
            {"loc": [_SAFE_LOC.sub("?", str(p))[:64] for p in e["loc"]][:8], "type": e["type"]}
            for e in exc.errors(include_input=False)
        ][:20]
    }


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema with its ``$defs`` inlined: the body is documented by hand (it is
    read raw, to verify the signature first), so the schema must stand alone."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
