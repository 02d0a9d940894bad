"""The PSA simulator's project and client writes (Harvest v2 shape) through the HarvestClient:
create with the required fields, patch, validation errors, and the absence of an idempotency key
that makes look-up-before-create necessary."""

from __future__ import annotations

from typing import Any

import pytest

from psa_erp_sync.clients.psa import PsaApiError
from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration


@pytest.fixture
def seeded(psa_sim: RunningSimulator) -> None:
    psa_sim.admin(
        "POST",
        "/seed",
        json={"clients": [{"id": 1, "name": "C1", "currency": "USD"}, {"id": 2, "name": "C2"}]},
    )


FIELDS = {
    "client_id": 1,
    "name": "New \u2018project\u2019 \u2013 \u00fcn\u00efcode",
    "code": "crm-opp-1",
    "is_billable": True,
    "bill_by": "Project",
    "hourly_rate": "175.00",
    "budget_by": "project_cost",
    "cost_budget": "120000.00",
    "currency": "USD",
    "legal_entity": "LE-US1",
}


def test_create_patch_and_read_back(seeded: None, psa_client: Any) -> None:
    created = psa_client.create_project(FIELDS)
    assert created["code"] == "crm-opp-1" and created["client"]["id"] == 1
    assert str(created["cost_budget"]) in ("120000.00", "120000.0", "120000")
    assert [p["id"] for p in psa_client.iter_client_projects(1)] == [created["id"]]
    patched = psa_client.update_project(
        created["id"], {"client_id": 2, "is_active": False, "cost_budget": "1.50"}
    )
    assert (patched["client"]["id"], patched["is_active"]) == (2, False)
    assert psa_client.get_project(created["id"])["client"]["id"] == 2
    client = psa_client.update_client(1, {"name": "Renamed", "is_active": False})
    assert (client["name"], client["is_active"]) == ("Renamed", False)
    # No idempotency key: the same POST twice makes two projects (hence look-up-before-create).
    psa_client.create_project(FIELDS)
    assert len(list(psa_client.iter_client_projects(1))) == 1  # the first one moved to client 2
    assert len([p for p in psa_client.iter_projects() if p["code"] == "crm-opp-1"]) == 2


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({k: v for k, v in FIELDS.items() if k != "bill_by"}, 422),
        (FIELDS | {"client_id": 99}, 422),
        (FIELDS | {"bill_by": "Nonsense"}, 422),
        (FIELDS | {"currency": "usd"}, 422),
        (FIELDS | {"unknown_field": 1}, 422),
        (FIELDS | {"name": "x\x00y"}, 422),
    ],
)
def test_bad_writes_are_refused(seeded: None, psa_client: Any, fields: dict[str, Any], status: int) -> None:
    with pytest.raises(PsaApiError) as info:
        psa_client.create_project(fields)
    assert info.value.status == status


def test_patch_of_a_missing_project_is_404(seeded: None, psa_client: Any) -> None:
    with pytest.raises(PsaApiError) as info:
        psa_client.update_project(123456, {"name": "x"})
    assert info.value.status == 404
