"""Business configuration from the versioned YAML files in ``config/``, validated with pydantic.

Loaded lazily (never at DAG parse time) and cached per directory. ``PSA_ERP_SYNC_CONFIG_DIR``
points at another directory, e.g. a deployment's own copy.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

SystemName = Literal["psa", "erp", "crm", "planning", "hr", "ods"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DomainAuthority(_Strict):
    authority: SystemName
    propagation: str = Field(pattern=r"^[a-z]+_to_[a-z_]+$")
    owner: str = Field(min_length=1)


class ReasonCode(_Strict):
    fix: str


class AuthorityMap(_Strict):
    version: Literal[1]
    domains: dict[str, DomainAuthority]
    # Reason codes of master-data validation, with what the owner does to clear them.
    reason_codes: dict[str, ReasonCode] = {}

    def authority_of(self, domain: str) -> SystemName:
        return self.domains[domain].authority

    def owner_of(self, domain: str) -> str:
        return self.domains[domain].owner

    def flows_from(self, domain: str) -> str:
        """The system changes of ``domain`` propagate from (``erp`` for ``erp_to_psa``)."""
        return self.domains[domain].propagation.partition("_to_")[0]


class LegalEntity(_Strict):
    country: str = Field(pattern=r"^[A-Z]{2}$")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    timezone: str
    close_calendar: str
    closed_period_policy: Literal["post_to_first_open", "park"]


class LegalEntities(_Strict):
    version: Literal[1]
    reporting_currency: str = Field(pattern=r"^[A-Z]{3}$")
    legal_entities: dict[str, LegalEntity]


class CloseWindow(_Strict):
    start_business_day: int = Field(le=-1)
    end_business_day: int = Field(ge=1)


class PostingInterval(_Strict):
    normal: int = Field(gt=0)
    close: int = Field(gt=0)


class CloseCalendar(_Strict):
    holidays_country: str
    close_window: CloseWindow
    posting_interval_minutes: PostingInterval


class CloseCalendars(_Strict):
    version: Literal[1]
    calendars: dict[str, CloseCalendar]


class OwnerRule(_Strict):
    domain: str
    legal_entity: str | None = None
    owner: str


class Ownership(_Strict):
    version: Literal[1]
    default: str
    owners: list[OwnerRule]
    reason_codes: dict[str, ReasonCode]

    def owner_for(self, domain: str, legal_entity: str | None = None) -> str:
        """The most specific rule wins: (domain, legal entity), then domain, then the default."""
        for rule in self.owners:
            if rule.domain == domain and rule.legal_entity is not None and rule.legal_entity == legal_entity:
                return rule.owner
        for rule in self.owners:
            if rule.domain == domain and rule.legal_entity is None:
                return rule.owner
        return self.default


class ExtractSettings(_Strict):
    overlap_minutes: int = Field(ge=1)
    sweep_days_back: int = Field(ge=1)
    per_page: int = Field(ge=1, le=2000)


class PostingSettings(_Strict):
    batch_size: int = Field(ge=1, le=100)
    max_concurrency: int = Field(ge=1)
    lock_wait_seconds: float = Field(gt=0, le=3600)


class Mappings(_Strict):
    version: Literal[1]
    external_ids: dict[str, str]
    extract: ExtractSettings
    posting: PostingSettings

    def external_id(self, kind: str, source_id: str | int) -> str:
        return self.external_ids[kind].format(id=source_id)


class Config(_Strict):
    authority: AuthorityMap
    legal_entities: LegalEntities
    close_calendars: CloseCalendars
    ownership: Ownership
    mappings: Mappings

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        for code, entity in self.legal_entities.legal_entities.items():
            if entity.close_calendar not in self.close_calendars.calendars:
                raise ValueError(f"legal entity {code} uses unknown close calendar {entity.close_calendar}")
            holidays = self.close_calendars.calendars[entity.close_calendar].holidays_country
            if holidays != entity.country:
                raise ValueError(
                    f"legal entity {code} is in {entity.country} but its close calendar {entity.close_calendar}"
                    f" counts the holidays of {holidays}"
                )
        for rule in self.ownership.owners:
            if rule.legal_entity and rule.legal_entity not in self.legal_entities.legal_entities:
                raise ValueError(f"ownership rule names unknown legal entity {rule.legal_entity}")
        return self

    def fix_for(self, reason_code: str) -> str | None:
        """What the owner does to clear an exception with ``reason_code`` (``ownership.yaml`` for
        time and expense codes, then ``systems_of_authority.yaml`` for master data)."""
        for codes in (self.ownership.reason_codes, self.authority.reason_codes):
            if reason_code in codes:
                return codes[reason_code].fix
        return None


class StagingRetention(_Strict):
    source_system: SystemName
    endpoint: str = Field(pattern=r"^/[A-Za-z0-9_/]+$")
    days: int = Field(ge=1)
    # Only "drop": a pseudonymised staged version would be handed to validation again when the
    # same content is re-read (staging deduplicates by the original content's hash).
    action: Literal["drop"]


class InboxRetention(_Strict):
    event_days: int = Field(ge=1)
    quarantine_days: int = Field(ge=1)


class Retention(_Strict):
    """``config/retention.yaml``: how long personal data in staging and the inbox is kept."""

    version: Literal[1]
    staging: list[StagingRetention]
    inbox: InboxRetention


def default_config_dir() -> Path:
    env = os.environ.get("PSA_ERP_SYNC_CONFIG_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "config"


def _read(path: Path) -> object:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@functools.cache
def load_config(config_dir: Path | None = None) -> Config:
    """Load and validate every YAML file of ``config_dir`` (default: the repo's ``config/``)."""
    base = config_dir or default_config_dir()
    return Config.model_validate(
        {
            "authority": _read(base / "systems_of_authority.yaml"),
            "legal_entities": _read(base / "legal_entities.yaml"),
            "close_calendars": _read(base / "close_calendars.yaml"),
            "ownership": _read(base / "ownership.yaml"),
            "mappings": _read(base / "mappings.yaml"),
        }
    )


@functools.cache
def load_retention(config_dir: Path | None = None) -> Retention:
    """``retention.yaml`` of ``config_dir`` (default: the repo's ``config/``), validated."""
    return Retention.model_validate(_read((config_dir or default_config_dir()) / "retention.yaml"))
