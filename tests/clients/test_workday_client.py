"""WorkdayClient against the simulator over loopback: offset paging to ``total``, OAuth2 refresh
(before expiry and on a 401), backoff on 429 honouring Retry-After, and refusals that must not be
retried (a revoked refresh token, a limit Workday would refuse)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import RunningSimulator
from tests.simulators.test_workday_sim import REFRESH, seed

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_client(workday_sim: RunningSimulator) -> Iterator[Any]:
    from psa_erp_sync.clients.http import RetryPolicy
    from psa_erp_sync.clients.workday import WorkdayClient

    made: list[WorkdayClient] = []
    sleeps: list[float] = []

    def make(**kwargs: Any) -> WorkdayClient:
        options: dict[str, Any] = {
            "base_url": workday_sim.base_url,
            "tenant": "acme",
            "client_id": "client",
            "client_secret": "secret",
            "refresh_token": REFRESH,
            "retry": RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.02),
            "sleep": sleeps.append,
            **kwargs,
        }
        client = WorkdayClient(**options)
        made.append(client)
        return client

    make.sleeps = sleeps  # type: ignore[attr-defined]
    yield make
    for client in made:
        client.close()


def test_pages_by_offset_up_to_total(workday_sim: RunningSimulator, make_client: Any) -> None:
    seed(workday_sim, 7)
    client = make_client(page_size=3)
    workers = list(client.iter_workers())
    assert len({w["id"] for w in workers}) == 7
    assert client.requests_made == 1 + 3  # one token, pages at offsets 0, 3, 6
    stats = workday_sim.admin("GET", "/stats")
    assert stats["api_calls"] == 3 and stats["token_grants"] == 1
    detail = client.get_worker(workers[0]["id"])
    assert detail is not None and detail["workerId"].startswith("E")
    assert client.get_worker("f" * 32) is None
    rates = client.cost_rate_report()
    assert [r["Cost_Rate"] for r in rates] == ["80.00", "85.50"]


def test_limit_above_100_is_refused_before_any_call(make_client: Any) -> None:
    with pytest.raises(ValueError, match="page_size"):
        make_client(page_size=101)


def test_refreshes_on_401_and_before_expiry(workday_sim: RunningSimulator, make_client: Any) -> None:
    seed(workday_sim, 2)
    clock = Clock()
    client = make_client(clock=clock)
    assert len(list(client.iter_workers())) == 2
    workday_sim.admin("POST", "/oauth/expire")  # revoked early: the server says 401
    assert len(list(client.iter_workers())) == 2
    assert client.token_refreshes == 2
    assert workday_sim.admin("GET", "/stats")["unauthorized"] == 1
    clock.now += 3600  # past the stated lifetime: refreshed before the call, no 401
    assert len(list(client.iter_workers())) == 2
    assert client.token_refreshes == 3
    assert workday_sim.admin("GET", "/stats")["unauthorized"] == 1


def test_backs_off_on_429_with_retry_after(workday_sim: RunningSimulator, make_client: Any) -> None:
    seed(workday_sim, 5)
    workday_sim.admin(
        "POST",
        "/faults",
        json={
            "id": "storm",
            "action": "throttle",
            "path_regex": "/workers$",
            "every_nth": 2,
            "retry_after": 3,
        },
    )
    client = make_client(page_size=2)
    assert len(list(client.iter_workers())) == 5
    assert client.throttled >= 1
    assert 3.0 in make_client.sleeps  # Retry-After honoured
    workday_sim.admin("DELETE", "/faults")


def test_revoked_refresh_token_is_not_retried(workday_sim: RunningSimulator, make_client: Any) -> None:
    from psa_erp_sync.clients.workday import WorkdayAuthError

    client = make_client(refresh_token="revoked")
    with pytest.raises(WorkdayAuthError, match="invalid refresh token"):
        list(client.iter_workers())
    assert client.requests_made == 1
    assert workday_sim.admin("GET", "/stats")["token_refusals"] == 1


def test_a_worker_deleted_mid_walk_makes_the_client_walk_again(
    workday_sim: RunningSimulator, make_client: Any
) -> None:
    seed(workday_sim, 5)
    client = make_client(page_size=2)
    walk = client.iter_workers()
    first_page = [next(walk), next(walk)]
    # The first worker in WID order goes: offset 2 now starts one row later, skipping a worker.
    gone = client.get_worker(first_page[0]["id"])["workerId"]
    workday_sim.admin("DELETE", f"/workers/{gone}")
    rest = list(walk)
    ids = [w["id"] for w in first_page + rest]
    assert len(ids) == len(set(ids)) == 5  # the 4 still there, plus the one yielded before it went
    # token, first walk (offsets 0 and 2: total now 4), the detail read, second walk (0 and 2)
    assert client.requests_made == 1 + 2 + 1 + 2
