"""Plugin apps are mounted without Airflow's auth: when Airflow's security helpers cannot be
imported, the app must refuse every request rather than serve it unguarded."""

from __future__ import annotations

import sys

import pytest
from fastapi.testclient import TestClient

from psa_erp_sync.api.exceptions_app import create_app

SECURITY = "airflow.api_fastapi.core_api.security"


@pytest.mark.parametrize("path", ["/exceptions/summary", "/trace/psa/1", "/console/", "/console/replay"])
def test_without_the_security_helpers_every_route_is_refused(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.setitem(sys.modules, SECURITY, None)  # `import` of it now raises ImportError
    app = create_app(dsn="postgresql://nobody@127.0.0.1:1/none")  # never reached
    answer = TestClient(app).get(path)
    assert answer.status_code == 503, answer.text
    assert "refus" in answer.json()["detail"]
