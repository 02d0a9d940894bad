"""Billing configuration (``config/billing.yaml``), validated with pydantic: billing cycles, the
invoice grouping key, and retainers.

- **Cycles**: one default (``monthly``), overridden per legal entity and, above that, per customer
  (ERP customer external id): ``weekly`` (ISO weeks), ``semi_monthly`` (1st-15th, 16th-end) or
  ``monthly``. The cycle key of an event (``monthly:2026-11``, ``weekly:2026-W45``,
  ``semi_monthly:2026-11-2``) comes from its event date.
- **Grouping**: the fields that make up an invoice's grouping key, a subset of ``customer``,
  ``project``, ``legal_entity``, ``currency``, ``cycle`` (default all five). An ERP invoice has one
  customer, one subsidiary and one currency, so those three are required.
- **Retainers**: per PSA project, an amount in minor units per ``month`` in a currency, from a start
  date to an optional end date (a partial first or last month is prorated by days).
"""

from __future__ import annotations

import functools
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from psa_erp_sync.config import default_config_dir

Cycle = Literal["weekly", "semi_monthly", "monthly"]
GroupField = Literal["customer", "project", "legal_entity", "currency", "cycle"]
GROUP_FIELDS: tuple[GroupField, ...] = ("customer", "project", "legal_entity", "currency", "cycle")
REQUIRED_GROUP_FIELDS = ("customer", "legal_entity", "currency")
Ref = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/-]{1,128}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Cycles(_Strict):
    """The billing cycle of a customer: its own override, else its legal entity's, else the default."""

    default: Cycle = "monthly"
    legal_entities: dict[Ref, Cycle] = {}
    customers: dict[Ref, Cycle] = {}

    def cycle_for(self, *, customer: str, legal_entity: str) -> Cycle:
        return self.customers.get(customer) or self.legal_entities.get(legal_entity) or self.default


class Retainer(_Strict):
    """A fixed amount billed per period on the period's first day (prorated when partial)."""

    amount_minor: StrictInt = Field(gt=0, le=2**62)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    period: Literal["month"] = "month"
    starts_on: date
    ends_on: date | None = None

    @model_validator(mode="before")
    @classmethod
    def _dates(cls, data: object) -> object:
        # YAML gives dates as date objects; strict mode would refuse a quoted ISO string otherwise.
        if isinstance(data, dict):
            for key in ("starts_on", "ends_on"):
                if isinstance(data.get(key), str):
                    data = {**data, key: date.fromisoformat(data[key])}
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Retainer:
        if self.ends_on is not None and self.ends_on < self.starts_on:
            raise ValueError("ends_on is before starts_on")
        return self


class BillingSettings(_Strict):
    version: Literal[1]
    cycles: Cycles = Cycles()
    grouping: tuple[GroupField, ...] = GROUP_FIELDS
    retainers: dict[Ref, Retainer] = {}

    @model_validator(mode="before")
    @classmethod
    def _grouping_list(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("grouping"), list):
            data = {**data, "grouping": tuple(data["grouping"])}
        return data

    @model_validator(mode="after")
    def _grouping_checks(self) -> BillingSettings:
        if len(set(self.grouping)) != len(self.grouping):
            raise ValueError(f"grouping names a field twice: {list(self.grouping)}")
        missing = [f for f in REQUIRED_GROUP_FIELDS if f not in self.grouping]
        if missing:
            raise ValueError(
                f"grouping must include {missing}: an ERP invoice has one customer, legal entity and currency"
            )
        return self

    def group_fields(self) -> list[str]:
        """The grouping fields in their canonical order (the order of the key's parts)."""
        return [f for f in GROUP_FIELDS if f in self.grouping]


class BillingConfigError(ValueError):
    """``billing.yaml`` is not valid; the message names the file and each bad field."""


def parse(text: str, *, source: str = "billing.yaml") -> BillingSettings:
    """Validate the YAML text of a billing configuration."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise BillingConfigError(f"{source}: must be a mapping")
    try:
        return BillingSettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
            for e in exc.errors(include_input=False)
        )
        raise BillingConfigError(f"{source}: {problems}") from exc


@functools.cache
def load_billing_settings(config_dir: Path | None = None) -> BillingSettings:
    """``billing.yaml`` of ``config_dir`` (default: the repo's ``config/``, or ``PSA_ERP_SYNC_CONFIG_DIR``)."""
    path = (config_dir or default_config_dir()) / "billing.yaml"
    return parse(path.read_text(encoding="utf-8"), source=str(path))
