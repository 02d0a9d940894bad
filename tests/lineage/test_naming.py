"""Dataset namespaces of HTTP systems: ``scheme://host[:port]`` only, never user info (issue 13.11)."""

from __future__ import annotations

import json

import pytest

from psa_erp_sync.hooks.psa import PsaHook
from psa_erp_sync.lineage import naming
from psa_erp_sync.operators.time_expense import PsaExtractOperator


@pytest.mark.parametrize(
    ("url", "namespace"),
    [
        ("https://user:pw@api.example.com", "https://api.example.com"),
        ("https://user:p%40ss@api.example.com:8443/v2/base", "https://api.example.com:8443"),
        ("http://token@127.0.0.1:18101", "http://127.0.0.1:18101"),
        ("http://u:pw@[::1]:8080/x", "http://[::1]:8080"),
        ("HTTPS://API.Example.com", "https://api.example.com"),
        ("https://api.example.com", "https://api.example.com"),
    ],
)
def test_http_namespace_never_carries_user_info(url: str, namespace: str) -> None:
    assert naming.http_namespace(url) == namespace


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
