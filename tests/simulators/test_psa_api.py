"""Behaviour of the PSA simulator: paging, filters, auth, rate limit, faults, seed, mutations, webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from simulators.psa import sample
from tests.simulators.receiver import HookReceiver, settle

pytestmark = pytest.mark.integration

HEADERS = {"Authorization": "Bearer test-token", "Harvest-Account-Id": "1", "User-Agent": "tests"}
SAMPLE = sample.build()
ALL_TE_IDS = sorted(r["id"] for r in SAMPLE["time_entries"])


def v2(sim: Any, path: str, *, headers: dict[str, str] | None = None, **params: Any) -> httpx.Response:
    return httpx.get(sim.base_url + "/v2" + path, params=params, headers=headers or HEADERS, timeout=30)


def span(low: str, high: str | None = None) -> dict[str, Any]:
    """Harvest's ``from``/``to`` query parameters (``from`` is a Python keyword)."""
    return {"from": low} if high is None else {"from": low, "to": high}


def walk(
    sim: Any, path: str, key: str, on_page: Callable[[int], None] | None = None, **params: Any
) -> list[int]:
    ids: list[int] = []
    response = v2(sim, path, **params)
    pages = 0
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        assert body["page"] == pages
        ids.extend(item["id"] for item in body[key])
        if on_page:
            on_page(pages)
        if not body["links"]["next"]:
            assert body["next_page"] is None
            return ids
        response = httpx.get(body["links"]["next"], headers=HEADERS, timeout=30)


_SEEDED = {"clean": False}


@pytest.fixture(scope="module", autouse=True)
def _forget_seed_state() -> None:
    _SEEDED["clean"] = False


@pytest.fixture
def psa(psa_sim: Any) -> Any:
    """Freshly reset and seeded, for tests that change state."""
    _SEEDED["clean"] = False
    psa_sim.admin("POST", "/seed", json=SAMPLE)
    return psa_sim


@pytest.fixture
def psa_ro(simulator_factory: Callable[[str], Any]) -> Any:
    """Seeded state shared by read-only tests (re-seeded only after a state-changing test).

    The rate limit is lifted here, so the many reads of these tests never meet it."""
    sim = simulator_factory("psa")
    if not _SEEDED["clean"]:
        sim.admin("POST", "/reset")
        sim.admin("POST", "/seed", json=SAMPLE)
        sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
        _SEEDED["clean"] = True
    return sim


# --- pagination --------------------------------------------------------------------------------


def test_links_next_walks_every_row_once(psa_ro: Any) -> None:
    first = v2(psa_ro, "/time_entries", per_page=7).json()
    assert (first["total_entries"], first["total_pages"], first["per_page"]) == (60, 9, 7)
    assert first["previous_page"] is None and first["next_page"] == 2
    assert first["links"]["next"].startswith(psa_ro.base_url + "/v2/time_entries?")
    assert "cursor=" in first["links"]["next"]
    assert walk(psa_ro, "/time_entries", "time_entries", per_page=7) == ALL_TE_IDS


def test_page_parameter_is_accepted(psa_ro: Any) -> None:
    by_page = [e["id"] for e in v2(psa_ro, "/time_entries", per_page=10, page=3).json()["time_entries"]]
    assert by_page == ALL_TE_IDS[20:30]
    body = v2(psa_ro, "/time_entries", per_page=10, page=3).json()
    assert body["previous_page"] == 2 and "page=2" in body["links"]["previous"]
    assert "page=6" in body["links"]["last"]


@pytest.mark.parametrize("per_page", [0, 2001, "x"])
def test_per_page_bounds(psa_ro: Any, per_page: Any) -> None:
    assert v2(psa_ro, "/time_entries", per_page=per_page).status_code == 422


def test_bad_cursor_is_rejected(psa_ro: Any) -> None:
    assert v2(psa_ro, "/time_entries", cursor="not-a-cursor").status_code == 400


def test_seed_time_is_stamped_in_utc(psa_ro: Any) -> None:
    body = v2(psa_ro, "/time_entries/10000").json()
    assert body["created_at"] == datetime(2026, 10, 1, 8, 0, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- filters -----------------------------------------------------------------------------------


def test_updated_since_is_inclusive_at_second_granularity(psa_ro: Any) -> None:
    rows = SAMPLE["time_entries"]
    pivot = datetime.fromisoformat(rows[10]["updated_at"])
    expected = sorted(r["id"] for r in rows if datetime.fromisoformat(r["updated_at"]) >= pivot)
    with_fraction = (pivot + timedelta(microseconds=500_000)).isoformat()
    assert walk(psa_ro, "/time_entries", "time_entries", updated_since=with_fraction) == expected
    assert (
        walk(psa_ro, "/time_entries", "time_entries", updated_since=pivot.isoformat().replace("+00:00", "Z"))
        == expected
    )
    later = (pivot + timedelta(seconds=1)).isoformat()
    assert walk(psa_ro, "/time_entries", "time_entries", updated_since=later) == expected[1:]


def test_expense_schedule_and_milestone_filters(psa_ro: Any) -> None:
    assert walk(psa_ro, "/expenses", "expenses", **span("2026-10-03", "2026-10-04")) == [
        20002,
        20003,
    ]
    assert walk(psa_ro, "/x/schedule", "schedule", user_id=200, per_page=2) == [900, 905, 910, 915]
    assert walk(psa_ro, "/x/schedule", "schedule", **span("2026-10-05", "2026-10-05")) == list(
        range(905, 910)
    )
    assert walk(psa_ro, "/x/milestones", "milestones", project_id=402) == [802]


def test_seed_rejects_unknown_columns(psa_ro: Any) -> None:
    response = httpx.post(
        psa_ro.base_url + "/admin/seed", json={"clients": [{"id": 1, "name": "x", "colour": "red"}]}
    )
    assert response.status_code == 422 and "colour" in response.text
    assert httpx.post(psa_ro.base_url + "/admin/seed", json={"widgets": []}).status_code == 422


# --- auth and rate limit -----------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["Authorization", "Harvest-Account-Id"])
def test_missing_auth_header_is_401(psa_ro: Any, missing: str) -> None:
    headers = {k: v for k, v in HEADERS.items() if k != missing}
    response = v2(psa_ro, "/time_entries", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_missing_user_agent_is_400(psa_ro: Any) -> None:
    assert v2(psa_ro, "/time_entries", headers={**HEADERS, "User-Agent": ""}).status_code == 400


def test_rate_limit_answers_429_with_retry_after(psa: Any) -> None:
    psa.admin("PUT", "/config", json={"rate_limit_requests": 3, "rate_limit_window_s": 1.5})
    statuses = [v2(psa, "/clients").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = v2(psa, "/clients")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    # Another account has its own window.
    assert v2(psa, "/clients", headers={**HEADERS, "Harvest-Account-Id": "2"}).status_code == 200
    time.sleep(int(limited.headers["Retry-After"]))
    assert v2(psa, "/clients").status_code == 200
    psa.admin("PUT", "/config", json={"rate_limit_requests": 0})
    assert all(v2(psa, "/clients").status_code == 200 for _ in range(10))


def test_default_limit_is_100_per_15s(psa: Any) -> None:
    assert psa.admin("GET", "/config")["rate_limit_requests"] == 100
    with httpx.Client(headers=HEADERS) as client:
        statuses = [client.get(psa.base_url + "/v2/tasks").status_code for _ in range(101)]
    assert statuses.count(200) == 100 and statuses[-1] == 429


# --- state-changing reads ----------------------------------------------------------------------


def test_walk_is_stable_when_rows_change_mid_iteration(psa: Any) -> None:
    def mutate(page: int) -> None:
        if page == 2:
            psa.admin("PATCH", "/time_entries/10000", json={"hours": 3.5})  # already seen
            psa.admin("PATCH", "/time_entries/10040", json={"notes": "edited"})  # not yet seen
            psa.admin("POST", "/time_entries/bulk", json={"action": "approve", "ids": ALL_TE_IDS})
            psa.admin("POST", "/seed", json={"time_entries": SAMPLE["time_entries"][10:20]})

    ids = walk(psa, "/time_entries", "time_entries", on_page=mutate, per_page=7)
    assert ids == ALL_TE_IDS


def test_from_to_and_equality_filters(psa: Any) -> None:
    rows = SAMPLE["time_entries"]
    got = walk(psa, "/time_entries", "time_entries", **span("2026-10-05", "2026-10-09"))
    assert got == sorted(r["id"] for r in rows if "2026-10-05" <= r["spent_date"] <= "2026-10-09")
    assert walk(psa, "/time_entries", "time_entries", project_id=401) == sorted(
        r["id"] for r in rows if r["project_id"] == 401
    )
    assert walk(psa, "/time_entries", "time_entries", user_id=202) == sorted(
        r["id"] for r in rows if r["user_id"] == 202
    )
    client_projects = {p["id"] for p in SAMPLE["projects"] if p["client_id"] == 101}
    assert walk(psa, "/time_entries", "time_entries", client_id=101) == sorted(
        r["id"] for r in rows if r["project_id"] in client_projects
    )
    psa.admin("PATCH", "/time_entries/10003", json={"is_billed": True})
    assert walk(psa, "/time_entries", "time_entries", is_billed="true") == [10003]
    assert len(walk(psa, "/time_entries", "time_entries", is_billed="false")) == 59
    assert v2(psa, "/time_entries", **span("October")).status_code == 422


# --- faults and seed ---------------------------------------------------------------------------


def test_fault_rule_503_on_time_entries(psa: Any) -> None:
    psa.admin(
        "POST",
        "/faults",
        json={
            "id": "te503",
            "action": "status",
            "status": 503,
            "path_regex": "^/v2/time_entries",
            "max_hits": 2,
        },
    )
    assert [v2(psa, "/time_entries").status_code for _ in range(3)] == [503, 503, 200]
    assert v2(psa, "/clients").status_code == 200
    rule = psa.admin("GET", "/faults")["rules"][0]
    assert rule["hits"] == 2


def test_seed_is_idempotent(psa: Any) -> None:
    before = v2(psa, "/time_entries/10002").json()
    stats = psa.admin("GET", "/stats")["counts"]
    psa.admin("POST", "/seed", json=SAMPLE)
    assert psa.admin("GET", "/stats")["counts"] == stats
    assert v2(psa, "/time_entries/10002").json() == before
    assert stats["time_entries"] == 60 and stats["schedule"] == 20
    # A changed row without an explicit updated_at is bumped; identical ones are not.
    client = dict(SAMPLE["clients"][0], name="Renamed")
    old = v2(psa, "/clients/100").json()["updated_at"]
    time.sleep(1.05)
    psa.admin("POST", "/seed", json={"clients": [client, SAMPLE["clients"][1]]})
    assert v2(psa, "/clients/100").json()["updated_at"] > old
    assert v2(psa, "/clients/101").json()["updated_at"] == old


# --- v2 writes ---------------------------------------------------------------------------------


def test_v2_create_update_delete_time_entry(psa: Any) -> None:
    url = psa.base_url + "/v2/time_entries"
    created = httpx.post(
        url,
        headers=HEADERS,
        json={"user_id": 201, "project_id": 400, "task_id": 300, "spent_date": "2026-10-20", "hours": 2.5},
    )
    assert created.status_code == 201, created.text
    entry = created.json()
    assert entry["billable"] is True and entry["billable_rate"] == 175.0 and entry["cost_rate"] == 80.0
    patched = httpx.patch(f"{url}/{entry['id']}", headers=HEADERS, json={"hours": 3})
    assert patched.status_code == 200 and patched.json()["hours"] == 3
    assert (
        httpx.patch(f"{url}/10000", headers=HEADERS, json={"hours": 1}).status_code == 422
    )  # approved: locked
    assert httpx.delete(f"{url}/{entry['id']}", headers=HEADERS).status_code == 200
    assert v2(psa, f"/time_entries/{entry['id']}").status_code == 404
    missing = httpx.post(url, headers=HEADERS, json={"project_id": 400})
    assert missing.status_code == 422


# --- webhooks ----------------------------------------------------------------------------------

# The receiver and the settle helper are shared with the ERP's webhook tests (tests/simulators/receiver.py).
Receiver = HookReceiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def verify(headers: dict[str, str], body: bytes, secret: str) -> dict[str, Any]:
    expected = hmac.new(
        secret.encode(), headers["x-psa-timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(headers["x-psa-signature"], "sha256=" + expected)
    assert abs(int(headers["x-psa-timestamp"]) - time.time()) < 60
    payload: dict[str, Any] = json.loads(body)
    assert payload["delivery_id"] == headers["x-psa-delivery-id"]
    assert payload["event"] == headers["x-psa-event"]
    return payload


ALL_EVENTS = [
    "time_entry.approved",
    "time_entry.updated",
    "time_entry.unapproved",
    "time_entry.deleted",
    "expense.approved",
    "milestone.completed",
]


def test_mutations_bump_updated_at_and_fire_signed_webhooks(psa: Any, receiver: Receiver) -> None:
    psa.admin("POST", "/webhooks", json={"url": receiver.url, "secret": "s3cret", "events": ALL_EVENTS})
    before = v2(psa, "/time_entries/10001").json()
    assert psa.admin("POST", "/time_entries/10001/approve") == {"id": 10001, "changed": True}
    assert psa.admin("POST", "/time_entries/10001/approve") == {"id": 10001, "changed": False}
    after = v2(psa, "/time_entries/10001").json()
    assert after["is_closed"] and after["is_locked"] and after["updated_at"] > before["updated_at"]
    psa.admin("PATCH", "/time_entries/10001", json={"hours": "4.25", "notes": "changed", "billable": False})
    psa.admin("POST", "/time_entries/10001/unapprove")
    psa.admin("DELETE", "/time_entries/10002")
    psa.admin("POST", "/expenses/20001/approve")
    psa.admin("POST", "/milestones/801/complete")
    settle(psa)
    events = [verify(h, b, "s3cret") for h, b in receiver.received]
    assert [e["event"] for e in events] == [
        "time_entry.approved",
        "time_entry.updated",
        "time_entry.unapproved",
        "time_entry.deleted",
        "expense.approved",
        "milestone.completed",
    ]
    assert events[0]["data"]["id"] == 10001 and events[0]["data"]["is_closed"] is True
    assert events[1]["data"]["hours"] == 4.25 and events[1]["data"]["billable"] is False
    assert events[2]["data"]["is_closed"] is False
    assert events[3]["data"]["id"] == 10002
    assert events[5]["data"]["status"] == "completed" and events[5]["data"]["completed_at"]
    assert v2(psa, "/time_entries/10002").status_code == 404
    assert len({e["delivery_id"] for e in events}) == 6


def test_non_2xx_is_redelivered_with_the_same_id(psa: Any) -> None:
    failing = Receiver(fail_first=True)
    try:
        psa.admin(
            "POST", "/webhooks", json={"url": failing.url, "secret": "k", "events": ["time_entry.approved"]}
        )
        psa.admin("POST", "/time_entries/bulk", json={"action": "approve", "ids": [10001, 10002]})
        deliveries = settle(psa)
        assert [d["status"] for d in deliveries] == ["delivered", "delivered"]
        assert [d["attempts"] for d in deliveries] == [2, 2]
        ids = [h["x-psa-delivery-id"] for h, _ in failing.received]
        assert sorted(ids) == sorted([d["delivery_id"] for d in deliveries] * 2)
        bodies: dict[str, bytes] = {}
        for h, b in failing.received:
            verify(h, b, "k")
            assert bodies.setdefault(h["x-psa-delivery-id"], b) == b  # same body on redelivery
    finally:
        failing.close()


def expected_faults(seqs: list[int], seed: int, drop: float, dup: float) -> dict[int, str]:
    out = {}
    for seq in seqs:
        rng = random.Random(f"{seed}:{seq}")
        d, u = rng.random(), rng.random()
        out[seq] = "dropped" if d < drop else ("duplicated" if u < dup else "once")
    return out


def test_drops_duplicates_and_reordering_follow_the_seed(psa: Any, receiver: Receiver) -> None:
    psa.admin(
        "PUT",
        "/config",
        json={
            "webhook_drop_rate": 0.25,
            "webhook_duplicate_rate": 0.25,
            "webhook_reorder_window": 6,
            "webhook_seed": 42,
        },
    )
    psa.admin(
        "POST", "/webhooks", json={"url": receiver.url, "secret": "k", "events": ["time_entry.approved"]}
    )
    unapproved = [i for i in ALL_TE_IDS if (i - 10_000) % 3 != 0][:30]
    changed = psa.admin("POST", "/time_entries/bulk", json={"action": "approve", "ids": unapproved})[
        "changed"
    ]
    assert changed == unapproved
    deliveries = settle(psa)
    plan = expected_faults([d["seq"] for d in deliveries], 42, 0.25, 0.25)
    assert {"dropped", "duplicated", "once"} <= set(plan.values())
    counts: dict[str, int] = {}
    for h, b in receiver.received:
        verify(h, b, "k")
        counts[h["x-psa-delivery-id"]] = counts.get(h["x-psa-delivery-id"], 0) + 1
    for d in deliveries:
        want = plan[d["seq"]]
        assert d["status"] == ("dropped" if want == "dropped" else "delivered")
        assert counts.get(d["delivery_id"], 0) == {"dropped": 0, "duplicated": 2, "once": 1}[want]
    # Reordered, but only within windows of 6 deliveries.
    order = [json.loads(b)["data"]["id"] for _, b in receiver.received]
    firsts = list(dict.fromkeys(order))
    assert firsts != sorted(firsts)
    sent = [entry for entry in unapproved if plan[deliveries[unapproved.index(entry)]["seq"]] != "dropped"]
    assert sorted(firsts) == sorted(sent)


def test_reset_restores_default_config(psa: Any) -> None:
    psa.admin("PUT", "/config", json={"rate_limit_requests": 1})
    psa.admin("POST", "/reset")
    assert psa.admin("GET", "/config")["rate_limit_requests"] == 100
    bad = httpx.put(psa.base_url + "/admin/config", json={"webhook_drop_rate": 2})
    assert bad.status_code == 422


def test_bulk_unapprove_and_delete(psa: Any) -> None:
    assert psa.admin(
        "POST", "/time_entries/bulk", json={"action": "unapprove", "ids": [10000, 10001, 10003]}
    )["changed"] == [10000, 10003]
    assert psa.admin("POST", "/time_entries/bulk", json={"action": "delete", "ids": [10000, 1]})[
        "changed"
    ] == [10000]
    assert psa.admin("GET", "/stats")["counts"]["time_entries"] == 59
    assert httpx.post(psa.base_url + "/admin/time_entries/424242/approve").status_code == 404
