"""Every key of every file under ``config/`` is read by code (issue 13 item 13).

How it detects an unread key: :data:`CONSUMERS` is the documented registry of who reads each key
(key paths with ``*`` for data keys such as legal entity codes, ``[]`` for list items). The test
walks every YAML file along its pydantic model and fails when

- a key in a file has no registered consumer (a new key that nothing reads), or a registered key
  is in no file (a stale entry);
- the registered consumer does not read the key: its source must contain the attribute access
  ``<parent>.<key>`` (``posting.batch_size``: reading some other ``batch_size`` does not count),
  or ``self.<key>`` in a method of the model, or ``x.<key>`` after a ``*`` / ``[]`` segment;
- the consumer itself is never called from production code (``include/``, ``dags/``, ``plugins/``).

``version`` keys are read by the loaders themselves: the model refuses any other version.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import textwrap
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from psa_erp_sync import config as cfg
from psa_erp_sync.billing.settings import BillingSettings
from psa_erp_sync.forecast.settings import ForecastSettings
from psa_erp_sync.masterdata.setup import RateCards
from psa_erp_sync.routing.settings import ErpRouting

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"
VERSION = "<loader: version pinned by Literal>"

# file -> the model its loader validates it with
MODELS: dict[str, type[BaseModel]] = {
    "systems_of_authority.yaml": cfg.AuthorityMap,
    "legal_entities.yaml": cfg.LegalEntities,
    "close_calendars.yaml": cfg.CloseCalendars,
    "ownership.yaml": cfg.Ownership,
    "mappings.yaml": cfg.Mappings,
    "forecast.yaml": ForecastSettings,
    "rate_cards.yaml": RateCards,
    "retention.yaml": cfg.Retention,
    "notifications.yaml": cfg.Notifications,
    "close_deadlines.yaml": cfg.CloseDeadlines,
    "erp_routing.yaml": ErpRouting,
    "billing.yaml": BillingSettings,
}
# Files no loader reads yet, and why (each must name the change that reads it).
PENDING: dict[str, str] = {}
# The environment files (config/environments/<name>.yaml) share one model.
ENVIRONMENT_FILES = [
    p.relative_to(CONFIG).as_posix() for p in sorted((CONFIG / "environments").glob("*.yaml"))
]
MODELS.update(dict.fromkeys(ENVIRONMENT_FILES, cfg.Environment))

E = "psa_erp_sync"
CONSUMERS: dict[str, str] = {
    # systems_of_authority.yaml
    "systems_of_authority.yaml:version": VERSION,
    "systems_of_authority.yaml:domains.*.authority": f"{E}.config:AuthorityMap.authority_of",
    "systems_of_authority.yaml:domains.*.propagation": f"{E}.config:AuthorityMap.flows_from",
    "systems_of_authority.yaml:domains.*.owner": f"{E}.config:AuthorityMap.owner_of",
    "systems_of_authority.yaml:reason_codes.*.fix": f"{E}.config:Config.fix_for",
    # billing.yaml
    "billing.yaml:version": VERSION,
    "billing.yaml:cycles.default": f"{E}.billing.events:_params",
    "billing.yaml:cycles.legal_entities": f"{E}.billing.events:_prepare",
    "billing.yaml:cycles.customers": f"{E}.billing.events:_prepare",
    "billing.yaml:grouping": f"{E}.billing.settings:BillingSettings.group_fields",
    "billing.yaml:retainers.*.amount_minor": f"{E}.billing.events:retainer_periods",
    "billing.yaml:retainers.*.currency": f"{E}.billing.events:retainer_periods",
    "billing.yaml:retainers.*.period": f"{E}.billing.events:retainer_periods",
    "billing.yaml:retainers.*.starts_on": f"{E}.billing.events:retainer_periods",
    "billing.yaml:retainers.*.ends_on": f"{E}.billing.events:retainer_periods",
    # legal_entities.yaml
    "legal_entities.yaml:version": VERSION,
    "legal_entities.yaml:reporting_currency": f"{E}.forecast.inputs:_extract_psa_people",
    "legal_entities.yaml:legal_entities.*.country": f"{E}.config:Config._cross_checks",
    "legal_entities.yaml:legal_entities.*.currency": f"{E}.forecast.inputs:_extract_psa_people",
    "legal_entities.yaml:legal_entities.*.timezone": f"{E}.validation.time_expense:_checks_of",
    "legal_entities.yaml:legal_entities.*.close_calendar": f"{E}.sensors.month_end:MonthEndWindowSensor.execute",
    "legal_entities.yaml:legal_entities.*.closed_period_policy": f"{E}.posting.planner:_Planning.policy",
    "legal_entities.yaml:revenue_accounts.revenue": f"{E}.config:RevenueAccounts.by_role",
    "legal_entities.yaml:revenue_accounts.contract_asset": f"{E}.config:RevenueAccounts.by_role",
    "legal_entities.yaml:revenue_accounts.contract_liability": f"{E}.config:RevenueAccounts.by_role",
    "legal_entities.yaml:revenue_accounts.loss_expense": f"{E}.config:RevenueAccounts.by_role",
    "legal_entities.yaml:revenue_accounts.loss_provision": f"{E}.config:RevenueAccounts.by_role",
    # close_calendars.yaml
    "close_calendars.yaml:version": VERSION,
    "close_calendars.yaml:calendars.*.holidays_country": f"{E}.calendar.close:close_window",
    "close_calendars.yaml:calendars.*.close_window.start_business_day": f"{E}.calendar.close:close_window",
    "close_calendars.yaml:calendars.*.close_window.end_business_day": f"{E}.calendar.close:close_window",
    # ownership.yaml
    "ownership.yaml:version": VERSION,
    "ownership.yaml:default": f"{E}.config:Ownership.owner_for",
    "ownership.yaml:owners[].domain": f"{E}.config:Ownership.owner_for",
    "ownership.yaml:owners[].legal_entity": f"{E}.config:Ownership.owner_for",
    "ownership.yaml:owners[].owner": f"{E}.config:Ownership.owner_for",
    "ownership.yaml:reason_codes.*.fix": f"{E}.config:Config.fix_for",
    # mappings.yaml
    "mappings.yaml:version": VERSION,
    "mappings.yaml:external_ids": f"{E}.posting.planner:erp_payload",
    "mappings.yaml:extract.overlap_minutes": f"{E}.extract.time_expense:extract_endpoints",
    "mappings.yaml:extract.sweep_days_back": f"{E}.extract.time_expense:extract_endpoints",
    "mappings.yaml:extract.per_page": f"{E}.extract.time_expense:extract_endpoints",
    "mappings.yaml:posting.batch_size": f"{E}.posting.engine:EngineSettings.from_config",
    "mappings.yaml:posting.lock_wait_seconds": f"{E}.posting.service:post_record_type",
    "mappings.yaml:replay.approval_above_count": f"{E}.config:ReplaySettings.needs_approval",
    "mappings.yaml:replay.approval_above_amount": f"{E}.config:ReplaySettings.needs_approval",
    # forecast.yaml
    "forecast.yaml:version": VERSION,
    "forecast.yaml:reporting_currency": f"{E}.forecast.model:fx_factor",
    "forecast.yaml:horizon_months": f"{E}.forecast.model:prepare",
    "forecast.yaml:actual_months": f"{E}.forecast.model:prepare",
    "forecast.yaml:fx_rates": f"{E}.forecast.model:fx_factor",
    "forecast.yaml:realization.default": f"{E}.forecast.settings:Realization.for_practice",
    "forecast.yaml:realization.practices": f"{E}.forecast.settings:Realization.for_practice",
    "forecast.yaml:stage_probabilities": f"{E}.forecast.model:_pipeline",
    "forecast.yaml:burn_profile": f"{E}.forecast.model:_pipeline",
    "forecast.yaml:scenarios.*.contracted": f"{E}.forecast.model:iter_scenarios",
    "forecast.yaml:scenarios.*.pipeline": f"{E}.forecast.model:iter_scenarios",
    "forecast.yaml:scenarios.*.pipeline_delay_months": f"{E}.forecast.model:iter_scenarios",
    "forecast.yaml:scenarios.*.milestone_delay_months": f"{E}.forecast.model:iter_scenarios",
    "forecast.yaml:billing_kpis.dso_period_days": f"{E}.forecast.billing_kpis:compute",
    "forecast.yaml:billing_kpis.leakage_days": f"{E}.forecast.billing_kpis:compute",
    # rate_cards.yaml
    "rate_cards.yaml:version": VERSION,
    "rate_cards.yaml:default": f"{E}.masterdata.setup:RateCards.hourly_rate",
    "rate_cards.yaml:practices": f"{E}.masterdata.setup:RateCards.hourly_rate",
    # retention.yaml
    "retention.yaml:version": VERSION,
    "retention.yaml:staging[].source_system": f"{E}.ods.retention:enforce",
    "retention.yaml:staging[].endpoint": f"{E}.ods.retention:enforce",
    "retention.yaml:staging[].days": f"{E}.ods.retention:enforce",
    "retention.yaml:staging[].action": f"{E}.ods.retention:enforce",
    "retention.yaml:inbox.event_days": f"{E}.ods.retention:enforce",
    "retention.yaml:inbox.quarantine_days": f"{E}.ods.retention:enforce",
    # close_deadlines.yaml
    "close_deadlines.yaml:version": VERSION,
    "close_deadlines.yaml:dags.*.legal_entities.*.approved_by": f"{E}.calendar.deadlines:approval_day",
    "close_deadlines.yaml:dags.*.legal_entities.*.business_days_after": f"{E}.calendar.deadlines:deadline_for",
    "close_deadlines.yaml:dags.*.legal_entities.*.in_erp_by": f"{E}.calendar.deadlines:deadline_for",
    "close_deadlines.yaml:dags.*.legal_entities.*.owner": f"{E}.notifications.deadlines:_notify",
    # notifications.yaml
    "notifications.yaml:version": VERSION,
    "notifications.yaml:console_url": f"{E}.notifications.owner_digest:send_digests",
    "notifications.yaml:email.conn_id": f"{E}.notifications.channels:send_email",
    "notifications.yaml:email.sender": f"{E}.notifications.channels:send_email",
    "notifications.yaml:recipients.default.email": f"{E}.config:Recipients.channels",
    "notifications.yaml:recipients.owners.*.email": f"{E}.config:Recipients.channels",
    # erp_routing.yaml (the optional keys after_gap, correction_policy and parallel_run.* have no
    # entry while the default file routes every entity to NetSuite: this test only registers keys
    # a file has; their readers are Router.routes_for_correction and Router.parallel_targets)
    "erp_routing.yaml:version": VERSION,
    "erp_routing.yaml:erps.*.connection": f"{E}.routing.settings:ErpRouting.connection_of",
    "erp_routing.yaml:versions[].version": f"{E}.routing.settings:ErpRouting.active",
    "erp_routing.yaml:versions[].legal_entities.*.effective[].first_day": f"{E}.routing.settings:EffectiveRange.covers",
    "erp_routing.yaml:versions[].legal_entities.*.effective[].last_day": f"{E}.routing.settings:EffectiveRange.covers",
    "erp_routing.yaml:versions[].legal_entities.*.effective[].erp": f"{E}.routing.route:Router._route",
    "erp_routing.yaml:versions[].legal_entities.*.effective[].account": f"{E}.routing.route:Router._route",
}
# environments/<name>.yaml: every environment file has the same keys and the same readers
for _env_file in ENVIRONMENT_FILES:
    CONSUMERS.update(
        {
            f"{_env_file}:airflow.executor": f"{E}.config:airflow_environment_variables",
            f"{_env_file}:airflow.load_examples": f"{E}.config:airflow_environment_variables",
            f"{_env_file}:openlineage.namespace": f"{E}.config:airflow_environment_variables",
            f"{_env_file}:openlineage.transport": f"{E}.config:Environment.openlineage_transport",
            f"{_env_file}:posting.cadence_minutes.normal": f"{E}.calendar.close:posting_interval_minutes",
            f"{_env_file}:posting.cadence_minutes.close": f"{E}.calendar.close:posting_interval_minutes",
            f"{_env_file}:erp.concurrency.default": f"{E}.config:erp_concurrency_limit",
            f"{_env_file}:erp.concurrency.accounts": f"{E}.config:erp_concurrency_limit",
        }
    )


def _inner(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _inner(args[0])
    return origin, args


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def key_paths(model: type[BaseModel], data: dict[str, Any], prefix: str = "") -> set[str]:
    """Every key path of ``data``, walked along ``model`` (data-keyed mappings become ``*``)."""
    paths: set[str] = set()
    for key, value in data.items():
        annotation = model.model_fields[key].annotation
        origin, args = _inner(annotation)
        path = f"{prefix}{key}"
        if _is_model(annotation) and annotation.model_config.get("extra") == "allow":
            paths.add(path)  # an open mapping handed on whole (an OpenLineage transport)
        elif _is_model(annotation):
            paths |= key_paths(annotation, value, f"{path}.")
        elif origin is dict and _is_model(args[1]):
            for item in value.values():
                paths |= key_paths(args[1], item, f"{path}.*.")
        elif origin is list and _is_model(args[0]):
            for item in value:
                paths |= key_paths(args[0], item, f"{path}[].")
        else:
            paths.add(path)
    return paths


def _file_keys() -> dict[str, str]:
    """``file:path`` -> file, for every key of every YAML file under config/."""
    keys: dict[str, str] = {}
    for path in sorted(CONFIG.rglob("*.yaml")):
        name = path.relative_to(CONFIG).as_posix()
        if name in PENDING:
            continue
        assert name in MODELS, f"config/{name}: no loader reads this file (add it to MODELS, or remove it)"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        keys.update({f"{name}:{p}": name for p in key_paths(MODELS[name], data)})
    return keys


def _function(spec: str) -> Any:
    module_name, _, qualname = spec.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return inspect.unwrap(target)


def _named(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def reads(source: str, path: str, *, method: bool) -> bool:
    """Does ``source`` read the key ``path``? ``a.b`` needs ``<...>.a.b``, or ``x.b`` where
    ``x = <...>.a``; ``a.*.b`` needs some ``<x>.b``; a model's method may say ``self.b``."""
    segments = path.replace("[]", ".[]").split(".")
    leaf = segments[-1]
    parent = segments[-2] if len(segments) > 1 else None
    tree = ast.parse(textwrap.dedent(source))
    names = {parent, "self"} if method else {parent}
    for node in ast.walk(tree):  # aliases: `settings = load_config().mappings.extract`
        if isinstance(node, ast.Assign) and _named(node.value) == parent:
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr == leaf):
            continue
        if parent is None or parent in ("*", "[]") or _named(node.value) in names:
            return True
    return False


@functools.cache
def _production_names() -> frozenset[str]:
    """Every attribute and name used in production code (``include/``, ``dags/``, ``plugins/``)."""
    files = [*(ROOT / "include" / "psa_erp_sync").rglob("*.py"), *(ROOT / "dags").glob("*.py")]
    files += list((ROOT / "plugins").glob("*.py"))
    used: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.Name):
                used.add(node.id)
    return frozenset(used)


def called_from_production(spec: str) -> bool:
    """Is the consumer's name used (called or referenced) in production code? A model validator
    counts as called: the loader runs it."""
    owner, _, name = spec.partition(":")[2].rpartition(".")
    if owner:
        cls = _function(f"{spec.partition(':')[0]}:{owner}")
        if _is_model(cls) and name in cls.__pydantic_decorators__.model_validators:
            return True
    return name in _production_names()


def _model_of(file_key: str) -> type[BaseModel]:
    return MODELS[file_key.partition(":")[0]]


def test_every_config_file_key_has_a_registered_consumer_and_every_entry_a_key() -> None:
    in_files = set(_file_keys())
    assert sorted(in_files - set(CONSUMERS)) == [], "keys in config/ that no registered code reads"
    assert sorted(set(CONSUMERS) - in_files) == [], "registered keys that no config file has any more"


@pytest.mark.parametrize("file_key", sorted(CONSUMERS))
def test_the_registered_consumer_reads_the_key(file_key: str) -> None:
    spec = CONSUMERS[file_key]
    path = file_key.partition(":")[2]
    if spec == VERSION:  # the loader's model refuses any other version
        data = yaml.safe_load((CONFIG / file_key.partition(":")[0]).read_text(encoding="utf-8"))
        with pytest.raises(ValidationError, match="version"):
            _model_of(file_key).model_validate({**data, "version": 99})
        return
    source = inspect.getsource(_function(spec))
    method = "." in spec.partition(":")[2]
    assert reads(source, path, method=method), f"{spec} does not read {path}"
    assert called_from_production(spec), f"{spec} reads {path} but no production code calls it"


def test_the_check_catches_an_unread_key() -> None:
    """The checker itself: the operator before issue 13 read its own batch_size, never posting's."""
    before = "def execute(self, config):\n    n = config.mappings.posting.max_concurrency\n    return self.batch_size\n"
    after = "def from_config(cls, config):\n    posting = config.mappings.posting\n    return posting.batch_size\n"
    assert not reads(before, "posting.batch_size", method=False)
    assert reads(before, "posting.max_concurrency", method=False)
    assert reads(after, "posting.batch_size", method=False)
    assert not called_from_production("tests.nowhere:a_function_nobody_calls")
    extra = key_paths(
        cfg.Mappings,
        {
            **yaml.safe_load((CONFIG / "mappings.yaml").read_text()),
            "posting": {"batch_size": 5, "lock_wait_seconds": 2},
        },
    )
    assert "posting.batch_size" in extra
