"""CrmClient against the running CRM simulator: pagination, filters, events, retries, errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest

from psa_erp_sync.clients.crm import CrmClient, CrmError, CrmNotFoundError
from psa_erp_sync.clients.http import RetryPolicy

pytestmark = pytest.mark.integration


def seed(sim: Any, n: int = 7) -> None:
    stages = ["Prospecting", "Qualification", "Proposal", "Negotiation", "Closed Won", "Closed Lost"]
    sim.admin(
        "POST",
        "/seed",
        json={
            "accounts": [{"id": i, "name": f"Account {i}", "legal_entity": "LE-US1"} for i in range(1, 4)],
            "opportunities": [
                {
                    "id": 100 + i,
                    "account_id": 1 + i % 3,
                    "name": f"Deal {i}",
                    "stage": stages[i % len(stages)],
                    "amount": f"{1000 + i}.50",
                    "currency": "USD",
                    "legal_entity": "LE-US1",
                }
                for i in range(n)
            ],
            "change_orders": [
                {
                    "id": 1,
                    "opportunity_id": 100,
                    "amount_delta": "10.00",
                    "currency": "USD",
                    "status": "submitted",
                }
            ],
        },
    )


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(sim: Any, **kwargs: Any) -> CrmClient:
    kwargs.setdefault("sleep", Sleeps())
    return CrmClient(base_url=sim.base_url, token="test-token", **kwargs)


def test_paginates_every_record_in_id_order(crm_sim: Any) -> None:
    seed(crm_sim, n=11)
    with client(crm_sim, page_size=3) as crm:
        opportunities = list(crm.iter_opportunities())
        assert [o["id"] for o in opportunities] == list(range(100, 111))
        assert opportunities[0]["amount"] == "1000.50"
        assert [a["id"] for a in crm.iter_accounts()] == [1, 2, 3]
        assert [c["id"] for c in crm.iter_change_orders(opportunity_id=100)] == [1]


def test_filters(crm_sim: Any) -> None:
    seed(crm_sim)
    with client(crm_sim) as crm:
        assert [o["id"] for o in crm.iter_opportunities(is_won=True)] == [104]
        assert [o["id"] for o in crm.iter_opportunities(stage="Prospecting")] == [100, 106]
        assert {o["account_id"] for o in crm.iter_opportunities(account_id=2)} == {2}
        latest = max(o["updated_at"] for o in crm.iter_opportunities())
        since = datetime.fromisoformat(latest)
        assert [o["id"] for o in crm.iter_opportunities(updated_since=since)] != []
        with pytest.raises(ValueError, match="timezone"):
            list(crm.iter_opportunities(updated_since=datetime(2026, 1, 1)))


def test_get_opportunity_and_not_found(crm_sim: Any) -> None:
    seed(crm_sim)
    with client(crm_sim) as crm:
        assert crm.get_opportunity(102)["probability"] == 50
        with pytest.raises(CrmNotFoundError) as info:
            crm.get_opportunity(999)
        assert info.value.status_code == 404
        assert info.value.code == "NOT_FOUND"


def test_event_feed_is_read_to_the_end_with_duplicates(crm_sim: Any) -> None:
    seed(crm_sim)
    won = crm_sim.admin("POST", "/opportunities/101/close_won")["event"]
    crm_sim.admin("POST", "/change_orders/1/approve")
    crm_sim.admin("POST", "/events/redeliver", json={"seqs": [won["seq"]]})
    with client(crm_sim, page_size=2) as crm:
        events = list(crm.iter_events())
        assert [e.type for e in events] == [
            "opportunity.closed_won",
            "change_order.approved",
            "opportunity.closed_won",
        ]
        assert events[0].id == events[2].id
        assert events[1].data["opportunity"]["contract_value"] == "1010.50"
        page = crm.read_events(after=events[0].seq, limit=1)
        assert [e.seq for e in page.events] == [events[1].seq]
        assert page.has_more
        assert page.next_after == events[1].seq
        assert list(crm.iter_events(after=events[-1].seq)) == []


def test_retries_a_throttle_honouring_retry_after(crm_sim: Any) -> None:
    seed(crm_sim)
    crm_sim.admin(
        "POST",
        "/faults",
        json={
            "id": "t",
            "action": "throttle",
            "path_regex": "^/api/v1/opportunities",
            "max_hits": 2,
            "retry_after": 7,
        },
    )
    sleeps = Sleeps()
    with client(crm_sim, sleep=sleeps) as crm:
        assert len(list(crm.iter_opportunities())) == 7
    assert sleeps == [7.0, 7.0]


def test_retries_5xx_and_dropped_connections_with_bounded_backoff(crm_sim: Any) -> None:
    seed(crm_sim)
    crm_sim.admin(
        "PUT",
        "/faults",
        json=[
            {"id": "s", "action": "status", "status": 503, "path_regex": "^/api/v1/accounts", "max_hits": 1},
            {"id": "d", "action": "drop_before_commit", "path_regex": "^/api/v1/accounts", "max_hits": 1},
        ],
    )
    sleeps = Sleeps()
    with client(crm_sim, sleep=sleeps, retry=RetryPolicy(base_delay_s=0.5, max_delay_s=30.0)) as crm:
        assert len(list(crm.iter_accounts())) == 3
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5
    assert 0 <= sleeps[1] <= 1.0


def test_gives_up_after_max_attempts(crm_sim: Any) -> None:
    crm_sim.admin(
        "POST",
        "/faults",
        json={"id": "s", "action": "status", "status": 502, "path_regex": "^/api/v1/events"},
    )
    sleeps = Sleeps()
    with (
        client(crm_sim, sleep=sleeps, retry=RetryPolicy(max_attempts=3)) as crm,
        pytest.raises(CrmError) as info,
    ):
        crm.read_events()
    assert info.value.status_code == 502
    assert len(sleeps) == 2


def test_requires_a_token_and_reports_401(crm_sim: Any) -> None:
    with pytest.raises(ValueError, match="token"):
        CrmClient(base_url=crm_sim.base_url, token="")
    anonymous = httpx.MockTransport(
        lambda request: httpx.Response(401, json={"detail": {"code": "UNAUTHORIZED", "message": "no"}})
    )
    with (
        CrmClient(base_url="http://crm.test", token="t", transport=anonymous) as crm,
        pytest.raises(CrmError) as info,
    ):
        list(crm.iter_accounts())
    assert info.value.code == "UNAUTHORIZED"


def test_refuses_a_next_link_to_another_origin() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer secret"
        return httpx.Response(
            200, json={"data": [{"id": 1}], "next": "https://elsewhere.test/api/v1/accounts?cursor=x"}
        )

    with CrmClient(base_url="http://crm.test", token="secret", transport=httpx.MockTransport(handler)) as crm:
        records = crm.iter_accounts()
        assert next(records) == {"id": 1}
        with pytest.raises(CrmError, match="FOREIGN_NEXT_LINK"):
            next(records)
