"""The hooks: an Airflow connection becomes a client, a DSN or a lineage namespace, with nothing
secret leaking into what is reported, and the ERP account's limit from the environment file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from psa_erp_sync.config import ENV_VAR
from psa_erp_sync.hooks.psa import PsaHook
from psa_erp_sync.operators.time_expense import PsaExtractOperator

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of config/ that the code under test reads instead of the repo's."""
    target = tmp_path / "config"
    shutil.copytree(ROOT / "config", target)
    monkeypatch.setenv("PSA_ERP_SYNC_CONFIG_DIR", str(target))
    return target


def test_a_connection_with_credentials_in_its_host_gives_a_clean_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_PSA_DEFAULT",
        json.dumps(
            {"conn_type": "http", "host": "https://svc:s3cret@psa.example.com:8443", "password": "tok"}
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_ODS_DEFAULT",
        json.dumps({"conn_type": "postgres", "host": "db.internal", "port": 5432, "schema": "ods"}),
    )
    assert PsaHook("psa_default").openlineage_namespace() == "https://psa.example.com:8443"
    op = PsaExtractOperator(task_id="extract", endpoints=["/v2/time_entries"])
    inputs, _ = op.lineage_datasets()
    assert [(d.namespace, d.name) for d in inputs] == [("https://psa.example.com:8443", "/v2/time_entries")]
    assert "s3cret" not in json.dumps([d.namespace for d in inputs]) and "svc" not in inputs[0].namespace


def test_erp_hook_takes_the_account_limit_of_the_environment(
    config_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from psa_erp_sync.hooks.erp import ErpHook

    path = config_copy / "environments" / "prod.yaml"
    data = yaml.safe_load(path.read_text())
    data["erp"]["concurrency"] = {"default": 4, "accounts": {"ACCT9": 9}}
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv(ENV_VAR, "prod")
    monkeypatch.setenv(
        "AIRFLOW_CONN_ERP_ENVTEST",
        json.dumps(
            {
                "conn_type": "http",
                "host": "http://127.0.0.1:1",
                "password": "t",
                "extra": {"account_id": "ACCT9"},
            }
        ),
    )
    assert ErpHook("erp_envtest").max_concurrency() == 9


def test_sap_hook_names_its_account_and_takes_its_limit_from_the_environment(
    config_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SAP connection's account: the extra's ``account_id``, else ``sap:<host[:port]>[/<client>]``;
    its limit: that account's entry in ``erp.concurrency`` (else the default), carried by the client
    the budget governs (``posting.budget.shared_by_processes``)."""
    from psa_erp_sync.hooks.sap import SapHook

    path = config_copy / "environments" / "prod.yaml"
    data = yaml.safe_load(path.read_text())
    data["erp"]["concurrency"] = {"default": 4, "accounts": {"sap:s4.example.com:8443/100": 3, "UK10": 7}}
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv(ENV_VAR, "prod")
    base = {"conn_type": "http", "host": "https://s4.example.com:8443", "login": "PSA", "password": "p"}
    for name, extra in (("derived", {"sap_client": "100"}), ("named", {"account_id": "UK10"}), ("plain", {})):
        monkeypatch.setenv(f"AIRFLOW_CONN_SAP_{name.upper()}", json.dumps({**base, "extra": extra}))
    derived, named, plain = SapHook("sap_derived"), SapHook("sap_named"), SapHook("sap_plain")
    assert (derived.account_id(), derived.max_concurrency()) == ("sap:s4.example.com:8443/100", 3)
    assert (named.account_id(), named.max_concurrency()) == ("UK10", 7)
    assert (plain.account_id(), plain.max_concurrency()) == ("sap:s4.example.com:8443", 4)
    with derived.get_client() as client:
        assert (client.erp_name, client.account_id, client.concurrency_limit) == (
            "sap",
            "sap:s4.example.com:8443/100",
            3,
        )
        assert client.request_slot is None  # governed only inside a posting pass
