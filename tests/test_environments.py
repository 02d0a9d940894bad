"""config/environments/*.yaml: one setting selects the environment; code reads its lineage
transport, posting cadence and ERP concurrency; a wrong or missing name fails with the valid list."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from psa_erp_sync import cli
from psa_erp_sync.config import (
    ENV_VAR,
    Environment,
    PostingCadence,
    UnknownEnvironment,
    airflow_environment_variables,
    environment_mismatches,
    environment_names,
    erp_concurrency_limit,
    load_config,
    load_environment,
    posting_cadence,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"


@pytest.fixture
def config_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of config/ that the code under test reads instead of the repo's."""
    target = tmp_path / "config"
    shutil.copytree(CONFIG, target)
    monkeypatch.setenv("PSA_ERP_SYNC_CONFIG_DIR", str(target))
    return target


def test_the_three_environments_validate() -> None:
    assert environment_names(CONFIG) == ["dev", "prod", "staging"]
    for name in environment_names(CONFIG):
        environment = load_environment(name, CONFIG)
        assert environment.name == name
        assert environment.openlineage.namespace == f"psa-erp-sync-{name}"


@pytest.mark.parametrize("value", [None, "", "production", "DEV"])
def test_wrong_or_missing_name_fails_with_the_valid_list(
    value: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv(ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(ENV_VAR, value)
    with pytest.raises(UnknownEnvironment) as caught:
        load_environment(config_dir=CONFIG)
    assert "dev, prod, staging" in str(caught.value)
    assert ENV_VAR in str(caught.value)


def test_cli_fails_at_start_on_an_unknown_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_VAR, "qa")
    assert cli.main(["env", "check"]) == 2
    assert "unknown environment 'qa'" in capsys.readouterr().err
    monkeypatch.setenv(ENV_VAR, "prod")
    assert cli.main(["env", "check"]) == 0


def test_no_secrets_in_environment_files() -> None:
    for path in (CONFIG / "environments").glob("*.yaml"):
        text = path.read_text().lower()
        for word in ("password", "token", "secret:", "api_key", "apikey"):
            assert word not in text, f"{path.name} mentions {word}: secrets come from connections only"


def test_erp_concurrency_comes_from_the_environment_file(
    config_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = config_copy / "environments" / "staging.yaml"
    data = yaml.safe_load(path.read_text())
    data["erp"]["concurrency"] = {"default": 3, "accounts": {"ACME1": 7}}
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv(ENV_VAR, "staging")
    assert erp_concurrency_limit("ACME1") == 7
    assert erp_concurrency_limit("OTHER") == 3
    monkeypatch.setenv(ENV_VAR, "dev")
    assert erp_concurrency_limit("TSTDRV100001") == 15


def test_posting_cadence_comes_from_the_environment_file(
    config_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from psa_erp_sync.calendar import close

    path = config_copy / "environments" / "staging.yaml"
    data = yaml.safe_load(path.read_text())
    data["posting"]["cadence_minutes"] = {"normal": 120, "close": 30}
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv(ENV_VAR, "staging")
    cadence = posting_cadence()
    assert cadence == PostingCadence(normal=120, close=30)
    us = load_config(CONFIG).close_calendars.calendars["US"]
    inside = datetime(2026, 11, 27, 15, tzinfo=UTC)
    outside = datetime(2026, 11, 18, 15, tzinfo=UTC)
    assert close.posting_interval_minutes(inside, us, "America/New_York", cadence) == 30
    assert close.posting_interval_minutes(outside, us, "America/New_York", cadence) == 120


@pytest.mark.parametrize("minutes", [20, 0, 105])
def test_a_cadence_off_the_dags_schedule_is_refused(minutes: int) -> None:
    with pytest.raises(ValueError, match="close"):
        PostingCadence(normal=60, close=minutes)


def test_openlineage_transport_and_the_check_against_airflow() -> None:
    dev = load_environment("dev", CONFIG)
    variables = airflow_environment_variables(dev, ROOT)
    transport = json.loads(variables["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert transport["type"] == "file"
    assert transport["log_file_path"] == str(ROOT / ".local/openlineage/events.jsonl")
    assert variables["AIRFLOW__OPENLINEAGE__NAMESPACE"] == "psa-erp-sync-dev"
    assert (
        environment_mismatches(
            dev,
            transport=variables["AIRFLOW__OPENLINEAGE__TRANSPORT"],
            namespace="psa-erp-sync-dev",
            root=ROOT,
        )
        == []
    )
    problems = environment_mismatches(
        dev, transport='{"type": "console"}', namespace="psa-erp-sync-prod", root=ROOT
    )
    assert len(problems) == 2
    assert environment_mismatches(dev, transport=None, namespace="psa-erp-sync-dev", root=ROOT)


def test_compose_uses_an_environment_and_its_lineage_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    env = compose["x-airflow-common-env"]
    environment = load_environment(env["PSA_ERP_SYNC_ENV"], CONFIG)
    assert isinstance(environment, Environment)
    assert (
        environment_mismatches(
            environment,
            transport=env["AIRFLOW__OPENLINEAGE__TRANSPORT"],
            namespace=env["AIRFLOW__OPENLINEAGE__NAMESPACE"],
        )
        == []
    )
    assert env["AIRFLOW__CORE__EXECUTOR"] == environment.airflow.executor
