"""Pydantic models of the CRM payloads we read (the CRM's contract, not ours: fields we do not
name are ignored). Money is :data:`~psa_erp_sync.money.Money` (decimal strings; a float is
refused).

One definition per CRM record, read by every consumer: :class:`Opportunity` and
:class:`ChangeOrder` as master data reads them (project setup, change orders), and the forecast's
stricter reading as subclasses that only add constraints (:class:`ForecastOpportunity`,
:class:`ForecastChangeOrder`): a record the forecast accepts, master data accepts too.
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

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


class ForecastOpportunity(Opportunity):
    """An opportunity as the forecast reads it: :class:`Opportunity` plus what spreading it over
    months needs. Ids and flags are strict (no ``"1"`` for 1, no ``"true"``), ``duration_months``,
    ``legal_entity``, ``practice`` and ``is_closed`` are required."""

    id: StrictInt = Field(ge=1)
    duration_months: StrictInt = Field(ge=1)
    legal_entity: str
    practice: str
    psa_project_id: StrictInt | None = None
    is_won: StrictBool
    is_closed: StrictBool


class ChangeOrder(BaseModel):
    """A CRM change order (a signed change of an opportunity's contract value)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: int = Field(ge=1)
    opportunity_id: int = Field(ge=1)
    amount_delta: Money
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    status: str


class ForecastChangeOrder(ChangeOrder):
    """A change order as the forecast reads it: :class:`ChangeOrder` with strict ids and the
    date the change takes effect."""

    id: StrictInt = Field(ge=1)
    opportunity_id: StrictInt = Field(ge=1)
    effective_date: date | None = None
