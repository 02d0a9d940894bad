"""The Workday simulator speaks Workday's shapes: OAuth2 refresh-token grant, ``{total, data}``
pages with ``limit`` 1..100 (more is refused, not clamped) and ``offset``, worker detail, the RaaS
cost-rate report, expired tokens and throttling (429 + Retry-After)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration

TOKEN_PATH = "/ccx/oauth2/acme/token"
WORKERS = "/ccx/api/v1/acme/workers"
REFRESH = "local-workday-refresh-token"


def seed(sim: RunningSimulator, n: int = 7) -> dict[str, Any]:
    body = {
        "workers": [
            {
                "employee_id": f"E{i}",
                "first_name": f"First{i}",
                "last_name": f"Last{i}",
                "email": f"w{i}@example.com",
                "company": "LE-US1" if i % 2 else "LE-UK1",
                "cost_center": f"CC-{i}",
                "hire_date": "2025-01-06",
                "termination_date": "2026-03-31" if i == 3 else None,
            }
            for i in range(1, n + 1)
        ],
        "cost_rates": [
            {"employee_id": "E1", "effective_date": "2025-01-06", "cost_rate": "80.00", "currency": "USD"},
            {"employee_id": "E1", "effective_date": "2026-01-01", "cost_rate": "85.50", "currency": "USD"},
        ],
    }
    sim.admin("POST", "/seed", json=body)
    return body


def token(sim: RunningSimulator, refresh: str = REFRESH) -> httpx.Response:
    return httpx.post(
        sim.base_url + TOKEN_PATH,
        data={"grant_type": "refresh_token", "refresh_token": refresh},
        auth=("client", "secret"),
    )


def bearer(sim: RunningSimulator) -> dict[str, str]:
    answer = token(sim)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    return {"Authorization": f"Bearer {body['access_token']}"}


def test_refresh_token_grant(workday_sim: RunningSimulator) -> None:
    assert token(workday_sim, "revoked").json()["error"] == "invalid_grant"
    assert token(workday_sim, "revoked").status_code == 400
    no_client = httpx.post(
        workday_sim.base_url + TOKEN_PATH, data={"grant_type": "refresh_token", "refresh_token": REFRESH}
    )
    assert no_client.status_code == 401 and no_client.json()["error"] == "invalid_client"
    assert httpx.get(workday_sim.base_url + WORKERS).status_code == 401
    bad = httpx.get(workday_sim.base_url + WORKERS, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_token"
    assert httpx.get(workday_sim.base_url + WORKERS, headers=bearer(workday_sim)).status_code == 200


def test_offset_paging_total_and_limit_bounds(workday_sim: RunningSimulator) -> None:
    seed(workday_sim, 7)
    auth = bearer(workday_sim)
    pages = [
        httpx.get(workday_sim.base_url + WORKERS, params={"limit": 3, "offset": o}, headers=auth).json()
        for o in (0, 3, 6, 9)
    ]
    assert [p["total"] for p in pages] == [7, 7, 7, 7]
    assert [len(p["data"]) for p in pages] == [3, 3, 1, 0]
    ids = [w["id"] for p in pages for w in p["data"]]
    assert len(set(ids)) == 7 and ids == sorted(ids)
    default = httpx.get(workday_sim.base_url + WORKERS, headers=auth).json()
    assert len(default["data"]) == 7  # default limit 20
    for params in ({"limit": 101}, {"limit": 0}, {"limit": "x"}, {"offset": -1}):
        refused = httpx.get(workday_sim.base_url + WORKERS, params=params, headers=auth)
        assert refused.status_code == 400, params
        assert refused.json()["errors"][0]["field"] in ("limit", "offset")
    assert httpx.get(workday_sim.base_url + WORKERS, params={"limit": 100}, headers=auth).status_code == 200


def test_worker_detail_and_cost_rate_report(workday_sim: RunningSimulator) -> None:
    seed(workday_sim, 3)
    auth = bearer(workday_sim)
    summaries = httpx.get(workday_sim.base_url + WORKERS, headers=auth).json()["data"]
    assert set(summaries[0]) == {"id", "descriptor", "href", "primaryWorkEmail", "businessTitle"}
    details = [httpx.get(s["href"], headers=auth).json() for s in summaries]
    by_emp = {d["workerId"]: d for d in details}
    assert by_emp["E3"]["terminationDate"] == "2026-03-31" and by_emp["E1"]["terminationDate"] is None
    assert by_emp["E1"]["hireDate"] == "2025-01-06"
    assert by_emp["E1"]["company"] == {"id": "LE-US1", "descriptor": "LE-US1"}
    assert by_emp["E2"]["costCenter"]["id"] == "CC-2"
    assert httpx.get(workday_sim.base_url + WORKERS + "/" + "0" * 32, headers=auth).status_code == 404
    report = httpx.get(
        workday_sim.base_url + "/ccx/service/customreport2/acme/ISU/Worker_Cost_Rates",
        params={"format": "json"},
        headers=auth,
    ).json()
    assert report["Report_Entry"] == [
        {"Employee_ID": "E1", "Effective_Date": "2025-01-06", "Cost_Rate": "80.00", "Currency": "USD"},
        {"Employee_ID": "E1", "Effective_Date": "2026-01-01", "Cost_Rate": "85.50", "Currency": "USD"},
    ]
    other = httpx.get(
        workday_sim.base_url + "/ccx/service/customreport2/acme/ISU/Other",
        params={"format": "json"},
        headers=auth,
    )
    assert other.status_code == 404


def test_token_expiry_and_throttling(workday_sim: RunningSimulator) -> None:
    auth = bearer(workday_sim)
    assert workday_sim.admin("POST", "/oauth/expire") == {"expired": 1}
    assert httpx.get(workday_sim.base_url + WORKERS, headers=auth).status_code == 401
    auth = bearer(workday_sim)
    workday_sim.admin(
        "PUT", "/config", json={"rate_limit_requests": 2, "rate_limit_window_s": 60, "retry_after_s": 7}
    )
    answers = [httpx.get(workday_sim.base_url + WORKERS, headers=auth) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].headers["Retry-After"] == "7"
    assert workday_sim.admin("GET", "/stats")["throttled"] == 1
    workday_sim.admin("POST", "/reset")
    assert workday_sim.admin("GET", "/config")["rate_limit_requests"] == 0
