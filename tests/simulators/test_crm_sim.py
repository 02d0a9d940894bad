"""CRM simulator: auth, seed upsert, filters, keyset pagination, admin transitions and the event feed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer test-token"}


def seed_body() -> dict[str, Any]:
    return {
        "accounts": [
            {
                "id": 1,
                "name": "Acme Corp",
                "legal_entity": "LE-US1",
                "erp_customer_external_id": "psa-client-1",
            },
            {"id": 2, "name": "Globex", "legal_entity": "LE-UK1", "erp_customer_external_id": None},
        ],
        "opportunities": [
            {
                "id": 10 + i,
                "account_id": 1 + i % 2,
                "name": f"Deal {i}",
                "stage": stage,
                "amount": "100000.00",
                "currency": "USD",
                "close_date": "2026-12-15",
                "expected_start": "2027-01-04",
                "duration_months": 6,
                "legal_entity": "LE-US1",
                "practice": "data",
                "billing_type": "fixed_fee",
                "psa_project_id": None,
            }
            for i, stage in enumerate(
                [
                    "Prospecting",
                    "Qualification",
                    "Proposal",
                    "Negotiation",
                    "Closed Won",
                    "Closed Lost",
                    "Proposal",
                ]
            )
        ],
        "change_orders": [
            {
                "id": 1,
                "opportunity_id": 14,
                "amount_delta": "5000.00",
                "currency": "USD",
                "status": "approved",
                "effective_date": "2027-02-01",
            }
        ],
    }


def get(sim: Any, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{sim.base_url}{path}", params=params, headers=AUTH, timeout=30)


def test_api_requires_a_bearer_token(crm_sim: Any) -> None:
    assert httpx.get(f"{crm_sim.base_url}/api/v1/accounts", timeout=10).status_code == 401
    bad = httpx.get(f"{crm_sim.base_url}/api/v1/accounts", headers={"Authorization": "Basic abc"}, timeout=10)
    assert bad.status_code == 401
    assert get(crm_sim, "/api/v1/accounts").status_code == 200


def test_seed_is_an_upsert_and_stage_sets_default_probability(crm_sim: Any) -> None:
    first = crm_sim.admin("POST", "/seed", json=seed_body())
    assert first["counts"]["opportunity"] == {"inserted": 7, "updated": 0, "unchanged": 0}
    again = crm_sim.admin("POST", "/seed", json=seed_body())
    assert again["counts"]["opportunity"] == {"inserted": 0, "updated": 0, "unchanged": 7}
    opps = {o["id"]: o for o in get(crm_sim, "/api/v1/opportunities").json()["data"]}
    assert [opps[i]["probability"] for i in range(10, 17)] == [10, 20, 50, 75, 100, 0, 50]
    assert opps[14]["is_won"]
    assert opps[14]["is_closed"]
    assert not opps[15]["is_won"]
    assert opps[15]["is_closed"]
    assert opps[10]["amount"] == "100000.00"
    assert crm_sim.admin("GET", "/stats")["opportunities"] == 7


def test_seed_rejects_float_money(crm_sim: Any) -> None:
    body = seed_body()
    body["opportunities"][0]["amount"] = 100.5
    response = httpx.post(f"{crm_sim.base_url}/admin/seed", json=body, timeout=10)
    assert response.status_code == 422


def test_filters_and_updated_since(crm_sim: Any) -> None:
    crm_sim.admin("POST", "/seed", json=seed_body())
    proposals = get(crm_sim, "/api/v1/opportunities", stage="Proposal").json()["data"]
    assert sorted(o["id"] for o in proposals) == [12, 16]
    won = get(crm_sim, "/api/v1/opportunities", is_won="true").json()["data"]
    assert [o["id"] for o in won] == [14]
    marker = get(crm_sim, "/api/v1/opportunities/16").json()["updated_at"]
    body = seed_body()
    body["opportunities"][0]["amount"] = "120000.00"  # only opportunity 10 changes
    body["opportunities"][1]["updated_at"] = "2020-01-01T00:00:00Z"  # an explicit, older timestamp
    crm_sim.admin("POST", "/seed", json=body)
    changed = get(crm_sim, "/api/v1/opportunities", updated_since=marker).json()["data"]
    assert 10 in {o["id"] for o in changed}
    assert 11 not in {o["id"] for o in changed}
    assert get(crm_sim, "/api/v1/opportunities/11").json()["updated_at"] == "2020-01-01T00:00:00Z"
    assert get(crm_sim, "/api/v1/opportunities/999").status_code == 404


def test_keyset_pagination_follows_next_without_gaps(crm_sim: Any) -> None:
    crm_sim.admin("POST", "/seed", json=seed_body())
    seen: list[int] = []
    url: str | None = f"{crm_sim.base_url}/api/v1/opportunities?limit=3"
    pages = 0
    while url:
        page = httpx.get(url, headers=AUTH, timeout=10).json()
        seen += [o["id"] for o in page["data"]]
        url = page["next"]
        pages += 1
    assert seen == list(range(10, 17))
    assert pages == 3
    assert get(crm_sim, "/api/v1/opportunities", cursor="!!bad!!").status_code == 400


def test_close_won_emits_one_event_and_feed_is_ordered(crm_sim: Any) -> None:
    crm_sim.admin("POST", "/seed", json=seed_body())
    result = crm_sim.admin("POST", "/opportunities/12/close_won", json={"psa_project_id": 501})
    assert result["opportunity"]["stage"] == "Closed Won"
    assert result["opportunity"]["probability"] == 100
    assert result["opportunity"]["psa_project_id"] == 501
    assert result["event"]["type"] == "opportunity.closed_won"
    repeat = crm_sim.admin("POST", "/opportunities/12/close_won")
    assert repeat["already_won"] is True
    assert repeat["event"] is None

    created = crm_sim.admin(
        "POST",
        "/change_orders",
        json={"opportunity_id": 12, "amount_delta": "2500.50", "effective_date": "2027-03-01"},
    )
    assert created["change_order"]["id"] == 2  # next after seeded id 1
    assert created["change_order"]["currency"] == "USD"
    event = created["event"]
    assert event["type"] == "change_order.approved"
    assert event["data"]["opportunity"]["contract_value"] == "102500.50"

    draft = crm_sim.admin(
        "POST", "/change_orders", json={"opportunity_id": 12, "amount_delta": "-500.00", "status": "draft"}
    )
    assert draft["event"] is None
    approved = crm_sim.admin("POST", f"/change_orders/{draft['change_order']['id']}/approve")
    assert approved["event"]["data"]["opportunity"]["contract_value"] == "102000.50"

    feed = get(crm_sim, "/api/v1/events", after=0).json()
    types = [e["type"] for e in feed["events"]]
    assert types == ["opportunity.closed_won", "change_order.approved", "change_order.approved"]
    seqs = [e["seq"] for e in feed["events"]]
    assert seqs == sorted(seqs)
    assert feed["next_after"] == seqs[-1]
    assert get(crm_sim, "/api/v1/events", after=seqs[-1]).json()["events"] == []
    only = get(crm_sim, "/api/v1/events", after=0, type="opportunity.closed_won").json()["events"]
    assert len(only) == 1


def test_change_order_currency_must_match_opportunity(crm_sim: Any) -> None:
    crm_sim.admin("POST", "/seed", json=seed_body())
    response = httpx.post(
        f"{crm_sim.base_url}/admin/change_orders",
        json={"opportunity_id": 12, "amount_delta": "1.00", "currency": "EUR"},
        timeout=10,
    )
    assert response.status_code == 422
    missing = httpx.post(
        f"{crm_sim.base_url}/admin/change_orders",
        json={"opportunity_id": 999, "amount_delta": "1.00"},
        timeout=10,
    )
    assert missing.status_code == 404


def test_redelivery_duplicates_an_event_under_a_new_seq(crm_sim: Any) -> None:
    crm_sim.admin("POST", "/seed", json=seed_body())
    first = crm_sim.admin("POST", "/opportunities/13/close_won")["event"]
    copy = crm_sim.admin("POST", "/events/redeliver", json={"seqs": [first["seq"]]})["events"][0]
    assert copy["id"] == first["id"]
    assert copy["seq"] > first["seq"]
    events = get(crm_sim, "/api/v1/events").json()["events"]
    assert [e["id"] for e in events] == [first["id"], first["id"]]


def test_change_orders_listing_and_filters(crm_sim: Any) -> None:
    crm_sim.admin("POST", "/seed", json=seed_body())
    crm_sim.admin(
        "POST", "/change_orders", json={"opportunity_id": 10, "amount_delta": "1.00", "status": "submitted"}
    )
    everything = get(crm_sim, "/api/v1/change_orders").json()["data"]
    assert [c["id"] for c in everything] == [1, 2]
    approved = get(crm_sim, "/api/v1/change_orders", status="approved").json()["data"]
    assert [c["id"] for c in approved] == [1]
    assert approved[0]["approved_at"] is not None
    assert get(crm_sim, "/api/v1/change_orders", opportunity_id=10).json()["data"][0]["id"] == 2


def test_injected_throttle_answers_429_with_retry_after(crm_sim: Any) -> None:
    crm_sim.admin(
        "POST",
        "/faults",
        json={
            "id": "t",
            "action": "throttle",
            "path_regex": "^/api/v1/accounts",
            "max_hits": 1,
            "retry_after": 2,
        },
    )
    throttled = get(crm_sim, "/api/v1/accounts")
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "2"
    assert get(crm_sim, "/api/v1/accounts").status_code == 200


def test_concurrent_close_won_emits_events_in_seq_order(crm_sim: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    crm_sim.admin("POST", "/seed", json=seed_body())
    targets = [10, 11, 12, 13, 16]
    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(pool.map(lambda i: crm_sim.admin("POST", f"/opportunities/{i}/close_won"), targets))
    assert all(r["event"] is not None for r in results)
    events = get(crm_sim, "/api/v1/events").json()["events"]
    assert sorted(e["data"]["opportunity"]["id"] for e in events) == targets
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)


def test_publishes_openapi(crm_sim: Any) -> None:
    paths = httpx.get(f"{crm_sim.base_url}/openapi.json", timeout=10).json()["paths"]
    assert {"/api/v1/opportunities", "/api/v1/events", "/admin/seed"} <= set(paths)
