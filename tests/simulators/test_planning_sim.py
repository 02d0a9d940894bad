"""Planning simulator: idempotent snapshot PUT (201 / 200 unchanged / 409), read-back, listing, auth."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer test-token"}


def snapshot(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "scenario": "base",
        "version": "2026-11-v1",
        "as_of": "2026-11-26",
        "reporting_currency": "USD",
        "lines": [
            {
                "project_ref": "psa-project-1",
                "practice": "data",
                "legal_entity": "LE-US1",
                "layer": "contracted",
                "month": "2026-12-01",
                "currency": "USD",
                "amount": "1000.00",
                "reporting_amount": "1000.00",
            },
            {
                "project_ref": "psa-project-2",
                "practice": "cloud",
                "legal_entity": "LE-UK1",
                "layer": "pipeline",
                "month": "2026-12-01",
                "currency": "GBP",
                "amount": "500.00",
                "reporting_amount": "632.50",
            },
        ],
    }
    body.update(overrides)
    return body


def put(sim: Any, snapshot_id: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.put(f"{sim.base_url}/api/v1/snapshots/{snapshot_id}", json=body, headers=AUTH, timeout=30)


def test_requires_bearer(planning_sim: Any) -> None:
    response = httpx.put(f"{planning_sim.base_url}/api/v1/snapshots/s1", json=snapshot(), timeout=10)
    assert response.status_code == 401


def test_put_is_idempotent_by_id_and_content(planning_sim: Any) -> None:
    created = put(planning_sim, "snap-1", snapshot())
    assert created.status_code == 201
    assert created.json()["status"] == "created"
    assert created.json()["line_count"] == 2
    body = snapshot()
    body["lines"].reverse()
    body["lines"][0]["amount"] = "500.0"  # same number, other spelling and order: the same content
    again = put(planning_sim, "snap-1", body)
    assert again.status_code == 200
    assert again.json()["status"] == "unchanged"
    changed = snapshot()
    changed["lines"][0]["amount"] = "1000.01"
    conflict = put(planning_sim, "snap-1", changed)
    assert conflict.status_code == 409
    assert conflict.json()["detail"]["code"] == "SNAPSHOT_CONFLICT"
    stats = planning_sim.admin("GET", "/stats")
    assert stats == {"snapshots": 1, "lines": 2, "puts_accepted": 2}


def test_read_back_with_totals_and_lines(planning_sim: Any) -> None:
    put(planning_sim, "snap-2", snapshot())
    got = httpx.get(f"{planning_sim.base_url}/api/v1/snapshots/snap-2", headers=AUTH, timeout=10).json()
    assert got["line_count"] == 2
    assert got["totals"] == {
        "reporting_amount": "1632.50",
        "reporting_amount_by_layer": {"contracted": "1000.00", "pipeline": "632.50"},
        "amount_by_currency": {"GBP": "500.00", "USD": "1000.00"},
    }
    assert "lines" not in got
    with_lines = httpx.get(
        f"{planning_sim.base_url}/api/v1/snapshots/snap-2",
        params={"include_lines": "true"},
        headers=AUTH,
        timeout=10,
    ).json()
    assert with_lines["lines"][1]["amount"] == "500.00"
    missing = httpx.get(f"{planning_sim.base_url}/api/v1/snapshots/nope", headers=AUTH, timeout=10)
    assert missing.status_code == 404


def test_list_by_scenario_with_pagination(planning_sim: Any) -> None:
    for i in range(5):
        put(planning_sim, f"base-{i}", snapshot(version=f"v{i}"))
    put(planning_sim, "worst-0", snapshot(scenario="worst"))
    ids: list[str] = []
    url: str | None = f"{planning_sim.base_url}/api/v1/snapshots?scenario=base&limit=2"
    while url:
        page = httpx.get(url, headers=AUTH, timeout=10).json()
        ids += [s["snapshot_id"] for s in page["data"]]
        url = page["next"]
    assert ids == [f"base-{i}" for i in range(5)]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("amount", 1000.0),  # a JSON number, not a decimal string
        ("amount", "12.34567"),  # more than 4 decimals
        ("month", "2026-12-15"),  # not the first of the month
        ("currency", "usd"),
        ("extra", "x"),
    ],
)
def test_rejects_bad_lines(planning_sim: Any, path: str, value: Any) -> None:
    body = snapshot()
    body["lines"][0][path] = value
    assert put(planning_sim, "bad", body).status_code == 422


def test_rejects_duplicate_line_keys(planning_sim: Any) -> None:
    body = snapshot()
    body["lines"].append(dict(body["lines"][0]))
    assert put(planning_sim, "dup", body).status_code == 422


def test_replay_after_commit_then_drop_is_unchanged(planning_sim: Any) -> None:
    planning_sim.admin(
        "POST",
        "/faults",
        json={"id": "d", "action": "status_after_commit", "status": 503, "method": "PUT", "max_hits": 1},
    )
    assert put(planning_sim, "amb-1", snapshot()).status_code == 503  # committed, client saw a 503
    retry = put(planning_sim, "amb-1", snapshot())
    assert retry.status_code == 200
    assert retry.json()["status"] == "unchanged"


def test_concurrent_puts_of_one_snapshot_store_it_once(planning_sim: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = sorted(pool.map(lambda _: put(planning_sim, "race-1", snapshot()).status_code, range(4)))
    assert statuses == [200, 200, 200, 201]
    assert planning_sim.admin("GET", "/stats")["snapshots"] == 1


def test_publishes_openapi(planning_sim: Any) -> None:
    paths = httpx.get(f"{planning_sim.base_url}/openapi.json", timeout=10).json()["paths"]
    assert {"/api/v1/snapshots", "/api/v1/snapshots/{snapshot_id}"} <= set(paths)
