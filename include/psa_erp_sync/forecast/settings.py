"""The forecast's business configuration (``config/forecast.yaml``), validated with pydantic.

Ratios arrive as decimal strings and are exposed as integers in parts per million (``PPM``), the
unit every vectorised formula of :mod:`psa_erp_sync.forecast.model` works in.
"""

from __future__ import annotations

import functools
import hashlib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from psa_erp_sync.config import default_config_dir

PPM = 1_000_000
SCENARIOS = ("base", "best", "worst")


def _ratio(value: object) -> Decimal:
    if not isinstance(value, str):
        raise ValueError('ratios are decimal strings, e.g. "0.90"')
    parsed = Decimal(value)
    if not parsed.is_finite() or parsed < 0:
        raise ValueError("a ratio is a finite, non-negative decimal")
    if parsed != parsed.quantize(Decimal("0.000001")):
        raise ValueError("at most 6 decimal places")
    return parsed


Ratio = Annotated[Decimal, BeforeValidator(_ratio)]


def ppm(value: Decimal) -> int:
    return int(value * PPM)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Realization(_Strict):
    default: Ratio
    practices: dict[str, Ratio] = {}

    def for_practice(self, practice: str) -> Decimal:
        return self.practices.get(practice, self.default)


class Scenario(_Strict):
    contracted: Ratio
    pipeline: Ratio
    pipeline_delay_months: int = Field(ge=0, le=12)
    milestone_delay_months: int = Field(ge=0, le=12)


class BillingKpis(_Strict):
    """The cash KPIs from the ERP billing read back (``psa_erp_sync.forecast.billing_kpis``)."""

    dso_period_days: int = Field(default=90, ge=1, le=366)
    leakage_days: int = Field(default=30, ge=1, le=366)


class ForecastSettings(_Strict):
    version: Literal[1]
    reporting_currency: str = Field(pattern=r"^[A-Z]{3}$")
    horizon_months: int = Field(ge=1, le=36)
    actual_months: int = Field(ge=1, le=36)
    fx_rates: dict[Annotated[str, Field(pattern=r"^[A-Z]{3}$")], Ratio]
    realization: Realization
    stage_probabilities: dict[str, Ratio]
    burn_profile: list[Ratio] = Field(min_length=1, max_length=36)
    scenarios: dict[Literal["base", "best", "worst"], Scenario]
    billing_kpis: BillingKpis = BillingKpis()
    digest: str = ""  # sha256 of the file: part of every snapshot's data versions

    @model_validator(mode="after")
    def _checks(self) -> ForecastSettings:
        if self.fx_rates.get(self.reporting_currency) != Decimal(1):
            raise ValueError(f"fx_rates must map the reporting currency {self.reporting_currency} to 1")
        if any(rate <= 0 for rate in self.fx_rates.values()):
            raise ValueError("fx rates must be positive")
        if any(p > 1 for p in self.stage_probabilities.values()):
            raise ValueError("stage probabilities are at most 1")
        if sum(self.burn_profile) <= 0:
            raise ValueError("the burn profile needs a positive weight")
        missing = set(SCENARIOS) - set(self.scenarios)
        if missing:
            raise ValueError(f"scenarios missing: {sorted(missing)}")
        return self


def parse(text: str) -> ForecastSettings:
    """Validate the YAML text of a forecast configuration."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("forecast.yaml must be a mapping")
    data["digest"] = hashlib.sha256(text.encode()).hexdigest()
    return ForecastSettings.model_validate(data)


@functools.cache
def load_forecast_settings(config_dir: Path | None = None) -> ForecastSettings:
    """``forecast.yaml`` of ``config_dir`` (default: the repo's ``config/``, or ``PSA_ERP_SYNC_CONFIG_DIR``)."""
    base = config_dir or default_config_dir()
    return parse((base / "forecast.yaml").read_text(encoding="utf-8"))
