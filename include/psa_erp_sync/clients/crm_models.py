"""Pydantic models of the CRM payloads master data reads (the CRM's contract, not ours: fields we do
not name are ignored). Money is :data:`~psa_erp_sync.money.Money` (decimal strings; a float is
refused)."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from psa_erp_sync.money import Money


class Opportunity(BaseModel):
    """A CRM opportunity as project setup (closed-won) and change orders read it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: int = Field(ge=1)
    account_id: int = Field(ge=1)
    name: str = Field(min_length=1, max_length=255)
    stage: str
    amount: Money
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    expected_start: date | None = None
    duration_months: int | None = Field(default=None, ge=1)
    legal_entity: str | None = None
    practice: str | None = None
    billing_type: str | None = None
    psa_project_id: int | None = None
    is_won: bool
