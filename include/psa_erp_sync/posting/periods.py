"""ERP accounting periods and the closed-period policy.

Period membership uses the legal entity's local date (a PSA ``spent_date`` is already local).
An entry dated in a closed or locked period is never posted there: per legal entity (config),
it goes to the first open period after it, keeping its original date in the memo and the audit,
or it is parked in the exception queue for finance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AccountingPeriod(BaseModel):
    """An ERP accounting period as read from the ERP (validated at the boundary)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    external_id: str = Field(alias="externalid")
    subsidiary: str
    start_date: date = Field(alias="startdate")
    end_date: date = Field(alias="enddate")
    closed: bool = False
    all_locked: bool = Field(default=False, alias="alllocked")
    ar_locked: bool = Field(default=False, alias="arlocked")
    ap_locked: bool = Field(default=False, alias="aplocked")

    @field_validator("closed", "all_locked", "ar_locked", "ap_locked", mode="before")
    @classmethod
    def _netsuite_bool(cls, value: Any) -> Any:
        # SuiteQL answers booleans as "T" / "F".
        if isinstance(value, str) and value in ("T", "F"):
            return value == "T"
        return value

    def blocks(self, record_type: str) -> bool:
        if self.closed or self.all_locked:
            return True
        if record_type == "expensereport":
            return self.ap_locked
        if record_type == "invoice":
            return self.ar_locked
        return False


@dataclass(frozen=True)
class PeriodDecision:
    outcome: Literal["post", "moved", "park"]
    period: str | None
    original_period: str | None
    reason: str | None = None


class PeriodBook:
    """All periods per subsidiary, sorted, with the policy lookups the planner needs."""

    def __init__(self, periods: Iterable[AccountingPeriod]) -> None:
        self._by_entity: dict[str, list[AccountingPeriod]] = {}
        for period in periods:
            self._by_entity.setdefault(period.subsidiary, []).append(period)
        for periods_of in self._by_entity.values():
            periods_of.sort(key=lambda p: p.start_date)

    @classmethod
    def from_rows(cls, rows: Iterable[dict[str, Any]]) -> PeriodBook:
        return cls(AccountingPeriod.model_validate({k.lower(): v for k, v in row.items()}) for row in rows)

    def containing(self, legal_entity: str, day: date) -> AccountingPeriod | None:
        for period in self._by_entity.get(legal_entity, []):
            if period.start_date <= day <= period.end_date:
                return period
        return None

    def first_open_after(
        self, legal_entity: str, period: AccountingPeriod, record_type: str
    ) -> AccountingPeriod | None:
        for candidate in self._by_entity.get(legal_entity, []):
            if candidate.start_date > period.start_date and not candidate.blocks(record_type):
                return candidate
        return None

    def decide(self, legal_entity: str, day: date, record_type: str, policy: str) -> PeriodDecision:
        period = self.containing(legal_entity, day)
        if period is None:
            return PeriodDecision("park", None, None, "PERIOD_UNKNOWN")
        if not period.blocks(record_type):
            return PeriodDecision("post", period.external_id, period.external_id)
        if policy == "post_to_first_open":
            target = self.first_open_after(legal_entity, period, record_type)
            if target is not None:
                return PeriodDecision("moved", target.external_id, period.external_id)
        return PeriodDecision("park", None, period.external_id, "PERIOD_CLOSED")
