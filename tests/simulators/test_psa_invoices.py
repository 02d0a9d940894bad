"""PSA simulator invoices (Harvest v2): creating one marks its time entries and expenses billed,
payments move its state, and the list pages like every other endpoint."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from simulators.psa import sample
from tests.simulators.receiver import HookReceiver, settle

pytestmark = pytest.mark.integration

HEADERS = {"Authorization": "Bearer test-token", "Harvest-Account-Id": "1", "User-Agent": "tests"}
SAMPLE = sample.build()


@pytest.fixture
def psa(psa_sim: Any) -> Any:
    psa_sim.admin("POST", "/seed", json=SAMPLE)
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    return psa_sim


def call(sim: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, sim.base_url + "/v2" + path, headers=HEADERS, timeout=30, **kwargs)


def billable_entries(sim: Any, client_id: int) -> list[dict[str, Any]]:
    entries = call(sim, "GET", "/time_entries", params={"client_id": client_id, "is_billed": "false"}).json()
    return [e for e in entries["time_entries"] if e["billable"] and e["billable_rate"] is not None]


def test_invoices_start_empty_then_list_what_was_created(psa: Any) -> None:
    assert call(psa, "GET", "/invoices").json()["invoices"] == []
    client = SAMPLE["clients"][0]["id"]
    picked = billable_entries(psa, client)[:3]
    expected = sum(
        (Decimal(str(e["hours"])) * Decimal(str(e["billable_rate"]))).quantize(Decimal("0.01"))
        for e in picked
    )
    created = call(
        psa,
        "POST",
        "/invoices",
        json={
            "client_id": client,
            "number": "INV-1001",
            "issue_date": "2026-11-30",
            "line_items_import": {"time_entry_ids": [e["id"] for e in picked]},
        },
    )
    assert created.status_code == 201, created.text
    inv = created.json()
    assert inv["state"] == "draft" and inv["number"] == "INV-1001" and inv["client"]["id"] == client
    assert Decimal(str(inv["amount"])) == expected == Decimal(str(inv["due_amount"]))
    assert sum(Decimal(str(li["amount"])) for li in inv["line_items"]) == expected
    for entry in picked:
        after = call(psa, "GET", f"/time_entries/{entry['id']}").json()
        assert after["is_billed"] is True and after["is_locked"] is True
        assert after["invoice"] == {"id": inv["id"], "number": "INV-1001"}
        assert after["updated_at"] >= entry["updated_at"]
        # A billed entry cannot be edited any more, nor billed twice.
        assert call(psa, "PATCH", f"/time_entries/{entry['id']}", json={"notes": "x"}).status_code == 422
    again = call(
        psa,
        "POST",
        "/invoices",
        json={"client_id": client, "line_items_import": {"time_entry_ids": [picked[0]["id"]]}},
    )
    assert again.status_code == 422 and "already billed" in again.json()["message"]
    # The billed entries are what an updated_since extract re-reads.
    since = call(
        psa, "GET", "/time_entries", params={"updated_since": picked[0]["updated_at"], "is_billed": "true"}
    )
    assert {e["id"] for e in picked} <= {e["id"] for e in since.json()["time_entries"]}


def test_import_by_project_bills_time_and_expenses_and_delete_unbills(psa: Any) -> None:
    project = SAMPLE["projects"][0]
    client = project["client_id"]
    created = call(
        psa,
        "POST",
        "/invoices",
        json={
            "client_id": client,
            "line_items_import": {
                "project_ids": [project["id"]],
                "time": {"summary_type": "project"},
                "expenses": {},
            },
        },
    ).json()
    billed = call(
        psa, "GET", "/time_entries", params={"project_id": project["id"], "is_billed": "true"}
    ).json()
    billed_ids = {e["id"] for e in billed["time_entries"]}
    assert billed_ids and all(e["invoice"]["id"] == created["id"] for e in billed["time_entries"])
    kinds = {li["kind"] for li in created["line_items"]}
    expenses = call(psa, "GET", "/expenses", params={"project_id": project["id"], "is_billed": "true"}).json()
    assert ("Product" in kinds) == bool(expenses["expenses"])
    assert call(psa, "DELETE", f"/invoices/{created['id']}").status_code == 200
    left = call(psa, "GET", "/time_entries", params={"project_id": project["id"], "is_billed": "true"}).json()
    assert left["time_entries"] == []
    assert call(psa, "GET", f"/invoices/{created['id']}").status_code == 404


def test_payments_move_the_state_to_paid(psa: Any) -> None:
    client = SAMPLE["clients"][1]["id"]
    inv = call(
        psa,
        "POST",
        "/invoices",
        json={"client_id": client, "line_items": [{"kind": "Service", "quantity": 2, "unit_price": "50.00"}]},
    ).json()
    assert inv["amount"] == 100.0
    pay = call(psa, "POST", f"/invoices/{inv['id']}/payments", json={"amount": "40.00"})
    assert pay.status_code == 422  # a draft takes no payment
    message = call(psa, "POST", f"/invoices/{inv['id']}/messages", json={"event_type": "send"})
    assert message.status_code == 201 and message.json()["event_type"] == "send"
    assert call(psa, "GET", f"/invoices/{inv['id']}").json()["state"] == "open"
    assert (
        call(psa, "POST", f"/invoices/{inv['id']}/messages", json={"event_type": "send"}).status_code == 422
    )
    assert call(psa, "POST", f"/invoices/{inv['id']}/payments", json={"amount": "40.00"}).status_code == 201
    partial = call(psa, "GET", f"/invoices/{inv['id']}").json()
    assert partial["state"] == "open" and partial["due_amount"] == 60.0
    assert call(psa, "POST", f"/invoices/{inv['id']}/payments", json={"amount": "60.01"}).status_code == 422
    call(psa, "POST", f"/invoices/{inv['id']}/payments", json={"amount": "60.00", "paid_date": "2026-12-01"})
    paid = call(psa, "GET", f"/invoices/{inv['id']}").json()
    assert paid["state"] == "paid" and paid["due_amount"] == 0.0 and paid["paid_date"] == "2026-12-01"
    assert paid["updated_at"] >= partial["updated_at"]
    payments = call(psa, "GET", f"/invoices/{inv['id']}/payments").json()["invoice_payments"]
    assert [p["amount"] for p in payments] == [40.0, 60.0]
    assert [i["id"] for i in call(psa, "GET", "/invoices", params={"state": "paid"}).json()["invoices"]] == [
        inv["id"]
    ]
    assert call(psa, "GET", "/invoices", params={"state": "open"}).json()["invoices"] == []


def test_invoice_list_pages_by_cursor(psa: Any) -> None:
    client = SAMPLE["clients"][0]["id"]
    made = [
        call(
            psa,
            "POST",
            "/invoices",
            json={"client_id": client, "line_items": [{"kind": "Service", "unit_price": n}]},
        ).json()["id"]
        for n in range(1, 6)
    ]
    seen: list[int] = []
    page = call(psa, "GET", "/invoices", params={"per_page": 2}).json()
    assert page["total_entries"] == 5 and page["total_pages"] == 3
    while True:
        seen.extend(i["id"] for i in page["invoices"])
        if not page["links"]["next"]:
            break
        page = httpx.get(page["links"]["next"], headers=HEADERS, timeout=30).json()
    assert seen == made


def test_billing_announces_the_entries_as_updated(psa: Any) -> None:
    receiver = HookReceiver()
    try:
        psa.admin(
            "POST", "/webhooks", json={"url": receiver.url, "secret": "k", "events": ["time_entry.updated"]}
        )
        client = SAMPLE["clients"][0]["id"]
        picked = [e["id"] for e in billable_entries(psa, client)[:2]]
        inv = call(
            psa,
            "POST",
            "/invoices",
            json={"client_id": client, "line_items_import": {"time_entry_ids": picked}},
        ).json()
        settle(psa)
        data = [json.loads(body)["data"] for _, body in receiver.received]
        assert sorted(d["id"] for d in data) == sorted(picked)
        assert all(d["is_billed"] and d["invoice"]["id"] == inv["id"] for d in data)
    finally:
        receiver.close()
