"""HarvestClient against the running PSA simulator: iteration, rate limits, faults, errors."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from psa_erp_sync.clients import psa_models
from psa_erp_sync.clients.http import RetryPolicy
from psa_erp_sync.clients.psa import HarvestClient, PsaApiError
from simulators.psa import sample

pytestmark = pytest.mark.integration

SAMPLE = sample.build()
FAST = RetryPolicy(max_attempts=5, base_delay_s=0.01, max_delay_s=0.05)


def client_for(sim: Any, **kwargs: Any) -> HarvestClient:
    kwargs.setdefault("retry", FAST)
    return HarvestClient(base_url=sim.base_url + "/v2", token="t0k3n", account_id="4242", **kwargs)


@pytest.fixture
def psa(psa_sim: Any) -> Any:
    psa_sim.admin("POST", "/seed", json=SAMPLE)
    return psa_sim


def test_full_iteration_equals_the_seeded_set(psa: Any) -> None:
    with client_for(psa) as client:
        entries = list(client.iter_time_entries(per_page=7))
        assert sorted(e["id"] for e in entries) == sorted(r["id"] for r in SAMPLE["time_entries"])
        assert len({e["id"] for e in entries}) == len(entries)
        assert client.pages_fetched == 9 and client.requests_made == 9
        parsed = [psa_models.TimeEntry.model_validate(e) for e in entries]
        assert any(p.billable_rate is None for p in parsed)  # the "missing rate" dirt survives
        assert any(p.task.name is None for p in parsed)  # "unknown task"
        expected: dict[str, tuple[str, type[BaseModel]]] = {
            "iter_expenses": ("expenses", psa_models.Expense),
            "iter_clients": ("clients", psa_models.Client),
            "iter_projects": ("projects", psa_models.Project),
            "iter_users": ("users", psa_models.User),
            "iter_tasks": ("tasks", psa_models.Task),
            "iter_task_assignments": ("task_assignments", psa_models.TaskAssignment),
            "iter_user_assignments": ("user_assignments", psa_models.UserAssignment),
            "iter_expense_categories": ("expense_categories", psa_models.ExpenseCategory),
            "iter_schedule": ("schedule", psa_models.ScheduleEntry),
            "iter_milestones": ("milestones", psa_models.Milestone),
        }
        for method, (key, model) in expected.items():
            items = list(getattr(client, method)())
            assert sorted(i["id"] for i in items) == sorted(r["id"] for r in SAMPLE[key]), method
            for item in items:
                model.model_validate(item)


def test_windows_and_filters(psa: Any) -> None:
    rows = SAMPLE["time_entries"]
    pivot = datetime.fromisoformat(rows[30]["updated_at"])
    with client_for(psa) as client:
        since = [e["id"] for e in client.iter_time_entries(updated_since=pivot)]
        assert since == [r["id"] for r in rows[30:]]
        window = [
            e["id"] for e in client.iter_time_entries(from_date=date(2026, 10, 2), to_date=date(2026, 10, 3))
        ]
        assert window == [r["id"] for r in rows if "2026-10-02" <= r["spent_date"] <= "2026-10-03"]
        assert [e["id"] for e in client.iter_time_entries(project_id=400, is_billed=False)] == [
            r["id"] for r in rows if r["project_id"] == 400
        ]
        assert [s["id"] for s in client.iter_schedule(user_id=201)] == [901, 906, 911, 916]
        assert [m["id"] for m in client.iter_milestones(project_id=403)] == [803]
        with pytest.raises(ValueError, match="timezone"):
            list(client.iter_time_entries(updated_since=datetime(2026, 10, 1)))


def test_waits_out_429_and_completes(psa: Any) -> None:
    psa.admin("PUT", "/config", json={"rate_limit_requests": 3, "rate_limit_window_s": 1})
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    with client_for(psa, sleep=sleep) as client:
        ids = [e["id"] for e in client.iter_time_entries(per_page=12)]
    assert len(ids) == 60 and client.pages_fetched == 5
    assert client.retries >= 1 and client.requests_made == 5 + client.retries
    assert all(s >= 1 for s in slept)  # Retry-After honoured, not jittered down


def test_retries_503_fault(psa: Any) -> None:
    psa.admin(
        "POST",
        "/faults",
        json={
            "id": "te503",
            "action": "status",
            "status": 503,
            "path_regex": "^/v2/time_entries",
            "every_nth": 2,
        },
    )
    with client_for(psa) as client:
        ids = [e["id"] for e in client.iter_time_entries(per_page=20)]
    # Pages 2 and 3 each fail once (every 2nd matching request), then succeed.
    assert len(ids) == 60 and client.retries == 2 and client.requests_made == 5


def test_retries_a_dropped_connection(psa: Any) -> None:
    psa.admin(
        "POST",
        "/faults",
        json={"id": "drop", "action": "drop_before_commit", "path_regex": "^/v2/users", "max_hits": 1},
    )
    with client_for(psa) as client:
        assert len(list(client.iter_users())) == 5
    assert client.retries == 1


def test_gives_up_after_max_attempts(psa: Any) -> None:
    psa.admin(
        "POST", "/faults", json={"id": "down", "action": "status", "status": 502, "path_regex": "^/v2/tasks"}
    )
    with (
        client_for(psa, retry=RetryPolicy(max_attempts=3, base_delay_s=0.01)) as client,
        pytest.raises(PsaApiError) as info,
    ):
        list(client.iter_tasks())
    assert info.value.status == 502 and info.value.endpoint == "/v2/tasks"
    assert client.requests_made == 3


def test_4xx_raises_a_clear_error_without_retrying(psa: Any) -> None:
    psa.admin(
        "POST",
        "/faults",
        json={"id": "auth", "action": "status", "status": 401, "path_regex": "^/v2/time", "max_hits": 1},
    )
    with client_for(psa) as client:
        with pytest.raises(PsaApiError) as info:
            list(client.iter_time_entries())
        assert info.value.status == 401 and info.value.endpoint == "/v2/time_entries"
        assert "401" in str(info.value) and "/v2/time_entries" in str(info.value)
        assert client.requests_made == 1
        with pytest.raises(PsaApiError) as info:
            list(client.iter_pages("/v2/no_such_endpoint"))
        assert info.value.status == 404
    with client_for(psa) as client:
        with pytest.raises(PsaApiError) as info:
            list(client.iter_pages("/v2/time_entries", {"from": "yesterday"}))
        assert info.value.status == 422 and "from" in str(info.value)


def test_real_401_from_the_simulator_and_credential_checks(psa: Any) -> None:
    with pytest.raises(ValueError, match="token"):
        HarvestClient(base_url=psa.base_url, token=" ", account_id="1")
    transport = httpx.HTTPTransport()
    with client_for(psa, transport=transport) as client:
        # The header reaches the server empty -> Harvest's 401, raised at once.
        client._http.headers["Harvest-Account-Id"] = ""
        with pytest.raises(PsaApiError) as info:
            list(client.iter_clients())
        assert info.value.status == 401 and client.requests_made == 1


def test_get_time_entry_and_deletion(psa: Any) -> None:
    with client_for(psa) as client:
        entry = client.get_time_entry(10004)
        assert entry is not None and entry["id"] == 10004
        psa.admin("DELETE", "/time_entries/10004")
        assert client.get_time_entry(10004) is None


def test_base_url_with_or_without_v2(psa: Any) -> None:
    for base in (psa.base_url, psa.base_url + "/v2/", psa.base_url + "/"):
        with HarvestClient(base_url=base, token="t", account_id="1") as client:
            assert len(list(client.iter_tasks())) == 2


def test_refuses_a_next_link_to_another_origin() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={"tasks": [{"id": 1}], "links": {"next": "https://evil.example/v2/tasks?cursor=x"}},
        )

    client = HarvestClient(
        base_url="https://api.harvestapp.com/v2",
        token="t",
        account_id="1",
        transport=httpx.MockTransport(handler),
    )
    pages = client.iter_pages("tasks", {"per_page": 1})
    assert next(pages) == [{"id": 1}]
    with pytest.raises(PsaApiError, match="another origin"):
        next(pages)


def test_sends_harvest_headers_and_follows_links_verbatim() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if "cursor" in request.url.params:
            return httpx.Response(200, json={"clients": [{"id": 2}], "links": {"next": None}})
        return httpx.Response(
            200,
            json={
                "clients": [{"id": 1}],
                "links": {"next": "https://api.harvestapp.com/v2/clients?cursor=abc"},
            },
        )

    client = HarvestClient(
        base_url="https://api.harvestapp.com/v2",
        token="tok",
        account_id="99",
        transport=httpx.MockTransport(handler),
    )
    assert [
        c["id"] for c in client.iter_clients(updated_since=datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=UTC))
    ] == [1, 2]
    assert seen[0].headers["Authorization"] == "Bearer tok" and seen[0].headers["Harvest-Account-Id"] == "99"
    assert seen[0].headers["User-Agent"].startswith("psa-erp-sync/")
    assert seen[0].url.params["updated_since"] == "2026-01-02T03:04:05Z"
    assert str(seen[1].url) == "https://api.harvestapp.com/v2/clients?cursor=abc"
