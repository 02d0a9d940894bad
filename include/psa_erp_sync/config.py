"""Business configuration from the versioned YAML files in ``config/``, validated with pydantic.

Loaded lazily (never at DAG parse time) and cached per directory. ``PSA_ERP_SYNC_CONFIG_DIR``
points at another directory, e.g. a deployment's own copy.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from string import Formatter
from typing import Any, Literal

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


class RevenueAccounts(_Strict):
    """GL accounts of revenue recognition journals (``revenue/journals.py``), one per role."""

    revenue: str = Field(min_length=1)
    contract_asset: str = Field(min_length=1)
    contract_liability: str = Field(min_length=1)
    loss_expense: str = Field(min_length=1)
    loss_provision: str = Field(min_length=1)

    def by_role(self) -> dict[str, str]:
        return {
            "revenue": self.revenue,
            "contract_asset": self.contract_asset,
            "contract_liability": self.contract_liability,
            "loss_expense": self.loss_expense,
            "loss_provision": self.loss_provision,
        }


class LegalEntities(_Strict):
    version: Literal[1]
    reporting_currency: str = Field(pattern=r"^[A-Z]{3}$")
    legal_entities: dict[str, LegalEntity]
    revenue_accounts: RevenueAccounts


class CloseWindow(_Strict):
    start_business_day: int = Field(le=-1)
    end_business_day: int = Field(ge=1)


class CloseCalendar(_Strict):
    holidays_country: str
    close_window: CloseWindow


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
    lock_wait_seconds: float = Field(gt=0, le=3600)


class ReplaySettings(_Strict):
    """When a dead-letter replay waits for a finance approval before anything is released."""

    approval_above_count: int = Field(ge=0)
    # Per currency, a decimal amount in major units ("50000.00"). A replay holding any amount in a
    # currency not listed here needs an approval.
    approval_above_amount: dict[str, Decimal]

    def needs_approval(self, count: int, amounts_minor: dict[str, int]) -> list[str]:
        """Why a replay of ``count`` records worth ``amounts_minor`` needs an approval ([] if not)."""
        from psa_erp_sync.money import to_minor

        reasons = []
        if count > self.approval_above_count:
            reasons.append(f"{count} records > {self.approval_above_count}")
        for currency, minor in sorted(amounts_minor.items()):
            limit = self.approval_above_amount.get(currency)
            if limit is None:
                reasons.append(f"{currency}: no approval limit configured")
            elif abs(minor) > to_minor(limit, currency):
                reasons.append(f"{currency} amount over {limit}")
        return reasons


class Mappings(_Strict):
    version: Literal[1]
    external_ids: dict[str, str]
    extract: ExtractSettings
    posting: PostingSettings
    replay: ReplaySettings

    def external_id(self, kind: str, source_id: str | int) -> str:
        return id_format(self.external_ids[kind])(source_id)


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


class EmailChannel(_Strict):
    conn_id: str = Field(min_length=1)
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")


class Recipients(_Strict):
    """Where one owner's digest goes: e-mail addresses and chat webhooks (Airflow connection ids)."""

    email: list[str] = Field(default_factory=list)
    slack: list[str] = Field(default_factory=list)
    teams: list[str] = Field(default_factory=list)

    def channels(self) -> dict[str, list[str]]:
        """Per channel, where the digest goes: e-mail addresses; Slack / Teams connection ids."""
        return {"email": self.email, "slack": self.slack, "teams": self.teams}

    @model_validator(mode="after")
    def _somewhere(self) -> Recipients:
        if not (self.email or self.slack or self.teams):
            raise ValueError("an owner's recipients need at least one e-mail address or webhook")
        return self


class RecipientMap(_Strict):
    default: Recipients
    owners: dict[str, Recipients] = Field(default_factory=dict)


class Notifications(_Strict):
    """``config/notifications.yaml``: where owner digests of new exception items go."""

    version: Literal[1]
    console_url: str = Field(pattern=r"^https?://")
    email: EmailChannel
    recipients: RecipientMap

    def recipients_of(self, owner: str) -> Recipients:
        return self.recipients.owners.get(owner, self.recipients.default)


_CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class CloseDeadlineRule(_Strict):
    """One legal entity's deadline for one DAG (``config/close_deadlines.yaml``): a run whose
    ``run_after`` is at or before ``approved_by`` (local time) on business day D must have finished
    by ``in_erp_by`` (local time) on business day D + ``business_days_after``."""

    approved_by: str = Field(pattern=_CLOCK)
    business_days_after: int = Field(ge=0, le=10)
    in_erp_by: str = Field(pattern=_CLOCK)
    close_window_only: bool = False
    owner: str = Field(min_length=1)

    @model_validator(mode="after")
    def _after_approval(self) -> CloseDeadlineRule:
        if self.business_days_after == 0 and self.in_erp_by <= self.approved_by:
            raise ValueError("on the same business day, in_erp_by must be later than approved_by")
        return self

    def describe(self) -> str:
        """The rule in words (for the alert): times are the legal entity's local time."""
        day = (
            "the same business day"
            if self.business_days_after == 0
            else f"business day +{self.business_days_after}"
        )
        window = " (close windows only)" if self.close_window_only else ""
        return f"approved by {self.approved_by} local, in the ERP by {self.in_erp_by} local on {day}{window}"


class DagCloseDeadlines(_Strict):
    legal_entities: dict[str, CloseDeadlineRule]


class CloseDeadlines(_Strict):
    """``config/close_deadlines.yaml``: per DAG and legal entity, the deadline rule and its owner."""

    version: Literal[1]
    dags: dict[str, DagCloseDeadlines]

    def rules_of(self, dag_id: str) -> dict[str, CloseDeadlineRule]:
        dag = self.dags.get(dag_id)
        return dag.legal_entities if dag else {}

    def rule(self, dag_id: str, legal_entity: str) -> CloseDeadlineRule | None:
        return self.rules_of(dag_id).get(legal_entity)


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


@functools.cache
def load_notifications(config_dir: Path | None = None) -> Notifications:
    """``notifications.yaml`` of ``config_dir`` (default: the repo's ``config/``), validated."""
    return Notifications.model_validate(_read((config_dir or default_config_dir()) / "notifications.yaml"))


@functools.cache
def load_close_deadlines(config_dir: Path | None = None) -> CloseDeadlines:
    """``close_deadlines.yaml`` of ``config_dir`` (default: the repo's ``config/``), validated;
    every legal entity it names must exist in ``legal_entities.yaml``."""
    directory = config_dir or default_config_dir()
    deadlines = CloseDeadlines.model_validate(_read(directory / "close_deadlines.yaml"))
    known = LegalEntities.model_validate(_read(directory / "legal_entities.yaml")).legal_entities
    for dag_id, dag in deadlines.dags.items():
        if unknown := sorted(set(dag.legal_entities) - set(known)):
            raise ValueError(f"close_deadlines.yaml: {dag_id} names unknown legal entities {unknown}")
    return deadlines


# --- Environments -------------------------------------------------------------------------------

ENV_VAR = "PSA_ERP_SYNC_ENV"
# The time_expense_posting DAG is scheduled every POSTING_TICK_MINUTES; its cadence gate lets a
# run post when the environment's cadence says so, so every cadence is a multiple of the tick.
POSTING_TICK_MINUTES = 15


class EnvironmentConfigError(ValueError):
    """The environment is not selected, unknown, or its file does not validate."""


class UnknownEnvironment(EnvironmentConfigError):
    pass


class AirflowSettings(_Strict):
    executor: Literal["LocalExecutor", "CeleryExecutor", "KubernetesExecutor"]
    load_examples: Literal[False]


class OpenLineageTransport(BaseModel):
    """An OpenLineage transport as the provider takes it in ``[openlineage] transport``."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal["file", "http", "console", "kafka", "composite"]


class OpenLineageSettings(_Strict):
    namespace: str = Field(min_length=1)
    transport: OpenLineageTransport


class PostingCadence(_Strict):
    """Minutes between posting runs outside (``normal``) and inside (``close``) a close window."""

    normal: int = Field(gt=0, le=1440)
    close: int = Field(gt=0, le=1440)

    @model_validator(mode="after")
    def _on_the_tick(self) -> PostingCadence:
        for name, minutes in (("normal", self.normal), ("close", self.close)):
            if minutes % POSTING_TICK_MINUTES or 1440 % minutes:
                raise ValueError(
                    f"posting cadence {name}={minutes}: must be a multiple of the DAG's "
                    f"{POSTING_TICK_MINUTES}-minute schedule and divide a day"
                )
        return self


class PostingEnvSettings(_Strict):
    cadence_minutes: PostingCadence


class ErpConcurrency(_Strict):
    default: int = Field(ge=1)
    accounts: dict[str, int] = {}

    @model_validator(mode="after")
    def _positive(self) -> ErpConcurrency:
        for account, limit in self.accounts.items():
            if limit < 1:
                raise ValueError(f"erp.concurrency.accounts.{account}: must be at least 1, got {limit}")
        return self


class ErpEnvSettings(_Strict):
    concurrency: ErpConcurrency


class Environment(_Strict):
    """One deployment environment (``config/environments/<name>.yaml``). Never holds secrets."""

    name: str
    airflow: AirflowSettings
    openlineage: OpenLineageSettings
    posting: PostingEnvSettings
    erp: ErpEnvSettings

    def openlineage_transport(self, root: Path | None = None) -> dict[str, Any]:
        """The transport as ``AIRFLOW__OPENLINEAGE__TRANSPORT`` takes it (JSON object); a relative
        file path is resolved against ``root`` (default: the directory above ``config/``)."""
        transport = self.openlineage.transport.model_dump()
        if transport["type"] == "file" and not Path(transport["log_file_path"]).is_absolute():
            base = root or default_config_dir().resolve().parent
            transport["log_file_path"] = str(base / transport["log_file_path"])
        return transport


def environment_names(config_dir: Path | None = None) -> list[str]:
    """The valid environment names: one per ``environments/*.yaml`` file."""
    base = config_dir or default_config_dir()
    return sorted(p.stem for p in (base / "environments").glob("*.yaml"))


def load_environment(name: str | None = None, config_dir: Path | None = None) -> Environment:
    """The environment ``name`` (default: ``$PSA_ERP_SYNC_ENV``), validated.

    Raises :class:`UnknownEnvironment` naming the valid environments when the name is missing or
    has no file, so a misconfigured deployment fails at start instead of running with the wrong
    cadence, lineage target or ERP concurrency.
    """
    base = config_dir or default_config_dir()
    valid = environment_names(base)
    chosen = name if name is not None else os.environ.get(ENV_VAR, "")
    if not chosen.strip():
        raise UnknownEnvironment(
            f"no environment selected: set {ENV_VAR} to one of {', '.join(valid)} "
            f"(files in {base / 'environments'})"
        )
    if chosen not in valid:
        raise UnknownEnvironment(
            f"unknown environment {chosen!r} in {ENV_VAR}: valid environments are {', '.join(valid)} "
            f"(files in {base / 'environments'})"
        )
    return _load_environment(chosen, base)


@functools.cache
def _load_environment(name: str, base: Path) -> Environment:
    data = _read(base / "environments" / f"{name}.yaml")
    if not isinstance(data, dict):
        raise EnvironmentConfigError(f"{base / 'environments' / f'{name}.yaml'}: expected a mapping")
    return Environment.model_validate({"name": name, **data})


def erp_concurrency_limit(account_id: str) -> int:
    """ERP requests in flight at once for ``account_id`` in the current environment: the account's
    own limit if the environment names it, else the environment's default."""
    concurrency = load_environment().erp.concurrency
    return concurrency.accounts.get(account_id, concurrency.default)


def posting_cadence() -> PostingCadence:
    """The posting cadence in force in the current environment."""
    return load_environment().posting.cadence_minutes


def airflow_environment_variables(environment: Environment, root: Path | None = None) -> dict[str, str]:
    """The Airflow settings an environment fixes, as the ``AIRFLOW__*`` variables that set them
    (what ``make airflow``, the demo, compose and a Helm chart's ``env`` put into Airflow)."""
    import json

    return {
        "AIRFLOW__CORE__EXECUTOR": environment.airflow.executor,
        "AIRFLOW__CORE__LOAD_EXAMPLES": str(environment.airflow.load_examples),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": environment.openlineage.namespace,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            environment.openlineage_transport(root), sort_keys=True
        ),
    }


def environment_mismatches(
    environment: Environment, *, transport: str | None, namespace: str | None, root: Path | None = None
) -> list[str]:
    """Where Airflow's running OpenLineage settings differ from the environment file (empty: none).

    ``transport`` and ``namespace`` are what Airflow's ``[openlineage]`` section holds; no
    transport means OpenLineage is off entirely, which is a mismatch too."""
    import json

    problems = []
    expected = environment.openlineage_transport(root)
    try:
        actual = json.loads(transport) if transport else None
    except ValueError:
        actual = transport
    if actual != expected:
        problems.append(
            f"[openlineage] transport is {actual!r}, environment {environment.name!r} says {expected!r}"
        )
    if namespace != environment.openlineage.namespace:
        problems.append(
            f"[openlineage] namespace is {namespace!r}, environment {environment.name!r} says "
            f"{environment.openlineage.namespace!r}"
        )
    return problems


@functools.lru_cache(maxsize=64)
def id_format(template: str) -> Callable[[Any], str]:
    """``template.format(id=...)`` (the templates of :attr:`Mappings.external_ids`), as one
    concatenation for a str id when the template is text around one ``{id}``: the same text
    without ``str.format``'s parse per call (most of the planner's time in its external ids)."""
    parts = list(Formatter().parse(template))
    literal = [text for text, _, _, _ in parts]
    if [(name, spec, conv) for _, name, spec, conv in parts] in (
        [("id", "", None)],
        [("id", "", None), (None, None, None)],
    ):
        head, tail = literal[0], literal[1] if len(literal) == 2 else ""
        if not any(c in head + tail for c in "{}"):  # escaped braces: left to str.format
            return lambda value: head + value + tail if type(value) is str else template.format(id=value)
    return lambda value: template.format(id=value)
