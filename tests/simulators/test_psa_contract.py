"""The PSA simulator's Harvest-shaped responses validate against the published Harvest spec.

The spec (``shared/contracts/harvest-openapi.yaml``) is normalised as SOURCE.txt explains:
response codes become strings and OpenAPI 3.0 ``nullable`` plus ``{type: "null"}`` anyOf
branches become plain JSON Schema, then each operation's 200 schema is checked with jsonschema.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from simulators.psa import sample

pytestmark = pytest.mark.integration

HEADERS = {"Authorization": "Bearer test-token", "Harvest-Account-Id": "1", "User-Agent": "tests"}
SPEC_URI = "urn:harvest-openapi"


def shared_dir() -> Path:
    env = os.environ.get("PSA_ERP_SYNC_SHARED_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"


def _normalise(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema 2020-12: string keys, ``nullable`` -> ``type: [T, "null"]``."""
    if isinstance(node, list):
        return [_normalise(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {str(k): _normalise(v) for k, v in node.items()}
    if out.pop("nullable", False):
        if isinstance(out.get("type"), str) and "anyOf" not in out:
            out["type"] = [out["type"], "null"]
        elif "anyOf" in out:
            out.pop("type", None)
            if not any(b.get("type") == "null" for b in out["anyOf"] if isinstance(b, dict)):
                out["anyOf"].append({"type": "null"})
        elif "$ref" in out:
            out = {"anyOf": [{"$ref": out.pop("$ref")}, {"type": "null"}], **out}
    return out


@cache
def spec() -> dict[str, Any]:
    path = shared_dir() / "contracts" / "harvest-openapi.yaml"
    if not path.exists():
        message = f"Harvest spec not found at {path} (set PSA_ERP_SYNC_SHARED_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message + ": CI must validate the PSA simulator against the published spec")
        pytest.skip(message)
    doc: dict[str, Any] = _normalise(yaml.safe_load(path.read_text()))
    return doc


def response_validator(path: str) -> Draft202012Validator:
    doc = spec()
    schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    registry: Registry = Registry().with_resource(SPEC_URI, Resource.from_contents(doc, DRAFT202012))
    # Resolve the operation's schema inside the document so its internal "#/..." refs work.
    ref = schema.get("$ref")
    root = {"$ref": SPEC_URI + ref} if ref else schema
    return Draft202012Validator(root, registry=registry, format_checker=FormatChecker())


def component_properties(name: str) -> set[str]:
    return set(spec()["components"]["schemas"][name]["properties"])


def get(sim: Any, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(sim.base_url + "/v2" + path, params=params, headers=HEADERS, timeout=30)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


@pytest.fixture(scope="module")
def seeded(simulator_factory: Callable[[str], Any]) -> Any:
    """Seeded once per module: these tests only read."""
    psa_sim = simulator_factory("psa")
    psa_sim.admin("POST", "/reset")
    psa_sim.admin("POST", "/seed", json=sample.build())
    # Add rows that exercise nullable branches: an invoiced entry with an external reference.
    psa_sim.admin(
        "PATCH",
        "/time_entries/10001",
        json={
            "is_billed": True,
            "invoice_id": 77,
            "invoice_number": "INV-77",
            "external_reference": {"id": "X1"},
        },
    )
    # Invoices: one paid (billing two time entries), one draft with a free line item.
    paid = httpx.post(
        psa_sim.base_url + "/v2/invoices",
        headers=HEADERS,
        json={"client_id": 100, "number": "C-1", "line_items_import": {"project_ids": [400], "time": {}}},
    ).json()
    httpx.post(
        psa_sim.base_url + f"/v2/invoices/{paid['id']}/messages", headers=HEADERS, json={"event_type": "send"}
    )
    httpx.post(
        psa_sim.base_url + f"/v2/invoices/{paid['id']}/payments",
        headers=HEADERS,
        json={"amount": str(paid["amount"])},
    )
    httpx.post(
        psa_sim.base_url + "/v2/invoices",
        headers=HEADERS,
        json={"client_id": 101, "line_items": [{"kind": "Service", "quantity": 1, "unit_price": "10.00"}]},
    )
    return psa_sim


LISTS = [
    ("/time_entries", "time_entries", "TimeEntry"),
    ("/clients", "clients", "Client"),
    ("/projects", "projects", "Project"),
    ("/users", "users", "User"),
    ("/tasks", "tasks", "Task"),
    ("/user_assignments", "user_assignments", "UserAssignment"),
    ("/task_assignments", "task_assignments", "TaskAssignment"),
    ("/expenses", "expenses", "Expense"),
    ("/expense_categories", "expense_categories", "ExpenseCategory"),
    ("/invoices", "invoices", "Invoice"),
]


@pytest.mark.parametrize(("path", "key", "component"), LISTS, ids=[x[0] for x in LISTS])
def test_list_responses_validate_against_the_harvest_spec(
    seeded: Any, path: str, key: str, component: str
) -> None:
    body = get(seeded, path, per_page=7)
    errors = sorted(response_validator(path).iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])
    assert body[key], f"{path} returned no rows to validate"
    # Every field the spec lists is present (extensions may add more).
    for item in body[key]:
        assert component_properties(component) <= set(item), component_properties(component) - set(item)


SINGLES: list[tuple[str, str, Callable[[dict[str, Any]], int]]] = [
    ("/time_entries/{timeEntryId}", "/time_entries/{}", lambda s: 10001),
    ("/time_entries/{timeEntryId}", "/time_entries/{}", lambda s: 10007),  # unknown task
    ("/clients/{clientId}", "/clients/{}", lambda s: 100),
    ("/projects/{projectId}", "/projects/{}", lambda s: 401),
    ("/users/{userId}", "/users/{}", lambda s: 200),
    ("/tasks/{taskId}", "/tasks/{}", lambda s: 300),
    ("/expenses/{expenseId}", "/expenses/{}", lambda s: 20001),
    ("/expense_categories/{expenseCategoryId}", "/expense_categories/{}", lambda s: 701),
    ("/invoices/{invoiceId}", "/invoices/{}", lambda s: 1),
    ("/invoices/{invoiceId}/payments", "/invoices/{}/payments", lambda s: 1),
]


@pytest.mark.parametrize(
    ("spec_path", "url", "pick"), SINGLES, ids=[f"{x[0]}#{i}" for i, x in enumerate(SINGLES)]
)
def test_single_responses_validate(seeded: Any, spec_path: str, url: str, pick: Callable[[Any], int]) -> None:
    body = get(seeded, url.format(pick(seeded)))
    errors = list(response_validator(spec_path).iter_errors(body))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def test_validator_rejects_a_wrong_shape(seeded: Any) -> None:
    """Guard against a vacuous validator: a garbled time entry must fail."""
    body = get(seeded, "/time_entries", per_page=1)
    body["time_entries"][0]["hours"] = "seven"
    body["time_entries"][0]["spent_date"] = 20261001
    assert len(list(response_validator("/time_entries").iter_errors(body))) >= 2


def test_time_entry_matches_the_documented_example_keys(seeded: Any) -> None:
    example = spec()["paths"]["/time_entries/{timeEntryId}"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]
    body = get(seeded, "/time_entries/10001")
    if "example" in example:
        assert set(example["example"]) <= set(body)
    assert body["is_closed"] is False and body["invoice"] == {"id": 77, "number": "INV-77"}
    assert body["external_reference"]["id"] == "X1"
    assert body["updated_at"].endswith("Z") and len(body["updated_at"]) == 20  # second precision


def test_openapi_document_is_published(psa_sim: Any) -> None:
    doc = httpx.get(psa_sim.base_url + "/openapi.json").json()
    assert "/v2/time_entries" in doc["paths"]
    assert "/v2/x/schedule" in doc["paths"]
