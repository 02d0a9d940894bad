"""Pydantic models of the Workday payloads we read: worker list and detail, the cost-rate report.

Validated at the boundary (:mod:`psa_erp_sync.clients.workday` yields raw dicts; the HR domain
validates them here). Unknown fields are ignored (``extra="ignore"``): Workday adds fields to its
REST resources over time, and a new field must not stop the feed. Money is a decimal string.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt


def _decimal_string(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError('a cost rate is a decimal string, e.g. "85.00"')
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Ref(_Model):
    id: str = Field(min_length=1, max_length=255)
    descriptor: str | None = None


class WorkerSummary(_Model):
    id: str = Field(min_length=1, max_length=64)
    descriptor: str | None = None
    href: str | None = None


class WorkersPage(_Model):
    total: StrictInt = Field(ge=0)
    data: list[dict[str, Any]]


class WorkerDetail(_Model):
    """``GET /workers/{id}``: the fields HR owns (people, legal entity, cost centre, dates)."""

    id: str = Field(min_length=1, max_length=64)
    workerId: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")  # Employee_ID
    firstName: str = Field(min_length=1, max_length=255)
    lastName: str = Field(min_length=1, max_length=255)
    primaryWorkEmail: str | None = Field(default=None, max_length=255)
    hireDate: date
    terminationDate: date | None = None
    company: Ref
    costCenter: Ref | None = None


class CostRateEntry(_Model):
    """One ``Report_Entry`` of the ``Worker_Cost_Rates`` custom report (RaaS)."""

    Employee_ID: str = Field(min_length=1, max_length=64)
    Effective_Date: date
    Cost_Rate: Annotated[Decimal, BeforeValidator(_decimal_string), Field(ge=0, allow_inf_nan=False)]
    Currency: str = Field(pattern=r"^[A-Z]{3}$")
