"""The ERP simulator against NetSuite SuiteTalk REST semantics, over loopback with real PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import copy
import time
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer test-token"}
REC = "/services/rest/record/v1"

BASE_SEED: dict[str, list[dict[str, Any]]] = {
    "currencies": [{"symbol": "USD", "name": "US Dollar"}, {"symbol": "GBP", "name": "British Pound"}],
    "subsidiaries": [
        {
            "external_id": "LE-US1",
            "name": "Acme US",
            "country": "US",
            "currency": "USD",
            "is_inactive": False,
        },
        {
            "external_id": "LE-UK1",
            "name": "Acme UK",
            "country": "GB",
            "currency": "GBP",
            "is_inactive": False,
        },
    ],
    "tax_codes": [
        {
            "external_id": "TX-US-EXEMPT",
            "code": "US-EXEMPT",
            "country": "US",
            "rate": "0.00",
            "is_inactive": False,
        },
        {"external_id": "TX-UK-S", "code": "GB-S20", "country": "GB", "rate": "20.00", "is_inactive": False},
    ],
    "employees": [
        {"external_id": "psa-user-1", "subsidiary": "LE-US1", "is_inactive": False},
        {"external_id": "psa-user-2", "subsidiary": "LE-UK1", "is_inactive": False},
        {"external_id": "psa-user-9", "subsidiary": "LE-US1", "is_inactive": True},
    ],
    "customers": [
        {
            "external_id": "psa-client-1",
            "company_name": "Client One",
            "subsidiary": "LE-US1",
            "currency": "USD",
            "tax_code": "TX-US-EXEMPT",
            "is_inactive": False,
        },
        {
            "external_id": "psa-client-2",
            "company_name": "Client Two",
            "subsidiary": "LE-US1",
            "currency": "USD",
            "tax_code": None,
            "is_inactive": True,
        },
        {
            "external_id": "psa-client-3",
            "company_name": "Client Three",
            "subsidiary": "LE-UK1",
            "currency": "GBP",
            "tax_code": "TX-UK-S",
            "is_inactive": False,
        },
    ],
    "jobs": [
        {
            "external_id": "psa-project-1",
            "name": "P1",
            "customer": "psa-client-1",
            "subsidiary": "LE-US1",
            "currency": "USD",
            "billing_type": "time_and_materials",
            "contract_value": "100000.00",
            "is_inactive": False,
        },
        {
            "external_id": "psa-project-2",
            "name": "P2",
            "customer": "psa-client-1",
            "subsidiary": "LE-US1",
            "currency": "USD",
            "billing_type": "fixed_fee",
            "contract_value": "5000.00",
            "is_inactive": True,
        },
        {
            "external_id": "psa-project-3",
            "name": "P3",
            "customer": "psa-client-2",
            "subsidiary": "LE-US1",
            "currency": "USD",
            "billing_type": "time_and_materials",
            "contract_value": None,
            "is_inactive": False,
        },
        {
            "external_id": "psa-project-4",
            "name": "P4",
            "customer": "psa-client-3",
            "subsidiary": "LE-UK1",
            "currency": "GBP",
            "billing_type": "time_and_materials",
            "contract_value": "20000.00",
            "is_inactive": False,
        },
    ],
    "accounting_periods": [
        {
            "external_id": "LE-US1-2026-10",
            "subsidiary": "LE-US1",
            "period_name": "Oct 2026",
            "start_date": "2026-10-01",
            "end_date": "2026-10-31",
            "closed": True,
            "all_locked": True,
            "ar_locked": True,
            "ap_locked": True,
        },
        {
            "external_id": "LE-US1-2026-11",
            "subsidiary": "LE-US1",
            "period_name": "Nov 2026",
            "start_date": "2026-11-01",
            "end_date": "2026-11-30",
            "closed": False,
            "all_locked": False,
            "ar_locked": False,
            "ap_locked": False,
        },
        {
            "external_id": "LE-UK1-2026-11",
            "subsidiary": "LE-UK1",
            "period_name": "Nov 2026",
            "start_date": "2026-11-01",
            "end_date": "2026-11-30",
            "closed": False,
            "all_locked": False,
            "ar_locked": False,
            "ap_locked": False,
        },
    ],
}


def seed(sim: RunningSimulator) -> None:
    sim.admin("POST", "/seed", json=copy.deepcopy(BASE_SEED))


def timebill(n: int, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "externalId": f"psa-te-{n}",
        "tranDate": "2026-11-10",
        "employee": {"externalId": "psa-user-1"},
        "customer": {"externalId": "psa-project-1"},
        "subsidiary": {"externalId": "LE-US1"},
        "hours": "7.50",
        "rate": "150.00",
        "currency": {"refName": "USD"},
        "isBillable": True,
        "memo": "work",
    }
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


def expense(n: int, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "externalId": f"psa-ex-{n}",
        "tranDate": "2026-11-12",
        "employee": {"externalId": "psa-user-1"},
        "customer": {"externalId": "psa-project-1"},
        "subsidiary": {"externalId": "LE-US1"},
        "amount": "42.10",
        "currency": {"refName": "USD"},
        "category": "Travel",
        "taxCode": {"externalId": "TX-US-EXEMPT"},
        "isBillable": True,
    }
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


@pytest.fixture
def erp(erp_sim: RunningSimulator) -> RunningSimulator:
    seed(erp_sim)
    return erp_sim


@pytest.fixture
def http(erp: RunningSimulator) -> httpx.Client:
    with httpx.Client(base_url=erp.base_url, headers=AUTH, timeout=30) as client:
        yield client


def put(http: httpx.Client, rtype: str, body: dict[str, Any]) -> httpx.Response:
    return http.put(f"{REC}/{rtype}/eid:{body['externalId']}", json=body)


def codes(response: httpx.Response) -> list[tuple[str, str]]:
    return [(d["o:errorCode"], d.get("o:errorPath", "")) for d in response.json()["o:errorDetails"]]


# --------------------------------------------------------------------------- records


def test_requires_bearer_token(erp: RunningSimulator) -> None:
    response = httpx.get(f"{erp.base_url}{REC}/customer/eid:psa-client-1")
    assert response.status_code == 401
    assert response.json()["o:errorDetails"][0]["o:errorCode"] == "INVALID_LOGIN"


def test_get_by_external_and_internal_id_and_404(http: httpx.Client) -> None:
    customer = http.get(f"{REC}/customer/eid:psa-client-1").json()
    assert customer["externalId"] == "psa-client-1"
    assert customer["currency"] == {"refName": "USD"}
    assert http.get(f"{REC}/customer/{customer['id']}").json()["externalId"] == "psa-client-1"
    missing = http.get(f"{REC}/customer/eid:nope")
    assert missing.status_code == 404
    body = missing.json()
    assert body["status"] == 404
    assert body["o:errorDetails"][0]["o:errorCode"] == "NONEXISTENT_ID"


def test_upsert_twice_yields_one_record(http: httpx.Client, erp: RunningSimulator) -> None:
    first = put(http, "timebill", timebill(1))
    assert first.status_code == 204, first.text
    second = put(http, "timebill", timebill(1, hours="8.00"))
    assert second.status_code == 204
    assert first.headers["Location"] == second.headers["Location"]
    assert first.headers["Location"].endswith(
        f"{REC}/timebill/" + first.headers["Location"].rsplit("/", 1)[1]
    )
    record = http.get(f"{REC}/timebill/eid:psa-te-1").json()
    assert record["hours"] == "8.00"
    assert record["rate"] == "150.00"
    stats = erp.admin("GET", "/stats")
    assert stats["records"]["timebill"] == 1
    assert stats["hours"]["timebill"] == "8.0000"


def test_concurrent_puts_of_one_external_id_make_one_record(
    http: httpx.Client, erp: RunningSimulator
) -> None:
    def one(i: int) -> int:
        return put(http, "timebill", timebill(7, memo=f"attempt {i}")).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(one, range(12)))
    assert statuses == [204] * 12
    dump = erp.admin("GET", "/records/timebill")
    assert dump["totalResults"] == 1
    assert dump["items"][0]["externalId"] == "psa-te-7"


def test_put_keeps_money_exact_and_rejects_floats(http: httpx.Client) -> None:
    response = http.put(
        f"{REC}/timebill/eid:psa-te-2",
        content=b'{"tranDate":"2026-11-10","employee":{"externalId":"psa-user-1"},'
        b'"customer":{"externalId":"psa-project-1"},"subsidiary":{"externalId":"LE-US1"},'
        b'"hours":0.1,"rate":"149.995","currency":{"refName":"USD"},"isBillable":true}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 204, response.text
    record = http.get(f"{REC}/timebill/eid:psa-te-2").json()
    assert record["hours"] == "0.1"
    assert record["rate"] == "149.995"
    too_precise = put(http, "expensereport", expense(1, amount="10.005"))
    assert codes(too_precise) == [("INVALID_FLD_VALUE", "amount")]


def test_patch_and_delete(http: httpx.Client) -> None:
    location = put(http, "timebill", timebill(3)).headers["Location"]
    internal = location.rsplit("/", 1)[1]
    assert http.patch(f"{REC}/timebill/{internal}", json={"memo": "changed"}).status_code == 204
    assert http.get(f"{REC}/timebill/{internal}").json()["memo"] == "changed"
    assert http.delete(f"{REC}/timebill/eid:psa-te-3").status_code == 204
    assert http.get(f"{REC}/timebill/{internal}").status_code == 404
    assert http.delete(f"{REC}/timebill/eid:psa-te-3").status_code == 404


# --------------------------------------------------------------------------- validation


VALIDATION_CASES: list[tuple[str, dict[str, Any], tuple[str, str]]] = [
    ("timebill", timebill(10, tranDate=None), ("MISSING_REQUIRED_FIELD", "tranDate")),
    ("timebill", timebill(10, hours=None), ("MISSING_REQUIRED_FIELD", "hours")),
    ("timebill", timebill(10, rate=None), ("MISSING_REQUIRED_FIELD", "rate")),
    ("timebill", timebill(10, employee={"externalId": "psa-user-404"}), ("INVALID_KEY_OR_REF", "employee")),
    (
        "timebill",
        timebill(10, customer={"externalId": "psa-project-404"}),
        ("INVALID_KEY_OR_REF", "customer"),
    ),
    ("timebill", timebill(10, subsidiary={"externalId": "LE-XX"}), ("INVALID_KEY_OR_REF", "subsidiary")),
    ("timebill", timebill(10, employee={"externalId": "psa-user-9"}), ("INACTIVE_RECORD", "employee")),
    ("timebill", timebill(10, customer={"externalId": "psa-project-2"}), ("INACTIVE_RECORD", "customer")),
    ("timebill", timebill(10, customer={"externalId": "psa-project-3"}), ("INACTIVE_RECORD", "customer")),
    ("timebill", timebill(10, currency={"refName": "GBP"}), ("CURRENCY_MISMATCH", "currency")),
    ("timebill", timebill(10, hours="25"), ("INVALID_FLD_VALUE", "hours")),
    ("timebill", timebill(10, tranDate="2026-13-01"), ("INVALID_FLD_VALUE", "tranDate")),
    ("timebill", timebill(10, tranDate="2027-01-05"), ("INVALID_FLD_VALUE", "tranDate")),
    ("timebill", timebill(10, tranDate="2026-10-15"), ("PERIOD_CLOSED", "tranDate")),
    (
        "timebill",
        timebill(10, postingPeriod={"externalId": "LE-US1-2026-10"}),
        ("PERIOD_CLOSED", "postingPeriod"),
    ),
    (
        "timebill",
        timebill(10, postingPeriod={"externalId": "LE-UK1-2026-11"}),
        ("INVALID_KEY_OR_REF", "postingPeriod"),
    ),
    ("timebill", timebill(10, unknownField="x"), ("INVALID_FIELD", "unknownField")),
    ("expensereport", expense(10, taxCode={"externalId": "TX-UK-S"}), ("TAX_CODE_MISMATCH", "taxCode")),
    ("expensereport", expense(10, taxCode={"externalId": "TX-NOPE"}), ("TAX_CODE_MISMATCH", "taxCode")),
    ("expensereport", expense(10, category=None), ("MISSING_REQUIRED_FIELD", "category")),
    ("expensereport", expense(10, amount=None), ("MISSING_REQUIRED_FIELD", "amount")),
]


def test_each_validation_error_code(http: httpx.Client) -> None:
    """One seeded account, every rule: each bad record gets exactly its code and path, and is not stored."""
    for rtype, body, expected in VALIDATION_CASES:
        response = put(http, rtype, body)
        assert response.status_code == 400, (expected, response.text)
        payload = response.json()
        assert payload["status"] == 400
        assert payload["title"]
        assert codes(response) == [expected], (expected, payload)
        assert payload["o:errorDetails"][0]["detail"]
        assert http.get(f"{REC}/{rtype}/eid:{body['externalId']}").status_code == 404


def test_valid_records_of_each_transaction_type(http: httpx.Client) -> None:
    assert put(http, "timebill", timebill(20, isBillable=False, rate=None)).status_code == 204
    assert put(http, "expensereport", expense(20)).status_code == 204
    uk = expense(
        21,
        employee={"externalId": "psa-user-2"},
        customer={"externalId": "psa-project-4"},
        subsidiary={"externalId": "LE-UK1"},
        currency={"refName": "GBP"},
        taxCode={"externalId": "TX-UK-S"},
    )
    assert put(http, "expensereport", uk).status_code == 204, put(http, "expensereport", uk).text
    invoice = {
        "externalId": "inv-1",
        "tranDate": "2026-11-30",
        "entity": {"externalId": "psa-client-1"},
        "job": {"externalId": "psa-project-1"},
        "subsidiary": {"externalId": "LE-US1"},
        "currency": {"refName": "USD"},
        "total": "1125.00",
        "status": "Open",
    }
    assert put(http, "invoice", invoice).status_code == 204
    revenue = {
        "externalId": "rev-1",
        "tranDate": "2026-11-30",
        "job": {"externalId": "psa-project-1"},
        "subsidiary": {"externalId": "LE-US1"},
        "currency": {"refName": "USD"},
        "amount": "1125.00",
        "method": "time_and_materials",
    }
    assert put(http, "revenueposting", revenue).status_code == 204


def test_period_locks_per_transaction_type(http: httpx.Client, erp: RunningSimulator) -> None:
    assert put(http, "timebill", timebill(30)).status_code == 204
    erp.admin("POST", "/periods/LE-US1-2026-11", json={"apLocked": True, "arLocked": True})
    assert put(http, "timebill", timebill(31)).status_code == 204  # AP/AR locks do not block time
    assert codes(put(http, "expensereport", expense(31))) == [("PERIOD_CLOSED", "tranDate")]
    invoice = {
        "externalId": "inv-2",
        "tranDate": "2026-11-30",
        "entity": {"externalId": "psa-client-1"},
        "subsidiary": {"externalId": "LE-US1"},
        "currency": {"refName": "USD"},
        "total": "10.00",
    }
    assert codes(put(http, "invoice", invoice)) == [("PERIOD_CLOSED", "tranDate")]
    erp.admin(
        "POST", "/periods/LE-US1-2026-11", json={"apLocked": False, "arLocked": False, "allLocked": True}
    )
    assert codes(put(http, "timebill", timebill(32))) == [("PERIOD_CLOSED", "tranDate")]
    # A posted transaction in a locked period can be neither changed nor deleted.
    assert codes(put(http, "timebill", timebill(30, memo="late edit"))) == [
        ("PERIOD_CLOSED", "tranDate"),
        ("PERIOD_CLOSED", "tranDate"),
    ]
    assert codes(http.delete(f"{REC}/timebill/eid:psa-te-30")) == [("PERIOD_CLOSED", "tranDate")]
    erp.admin("POST", "/periods/LE-US1-2026-11", json={"allLocked": False, "closed": False})
    assert put(http, "timebill", timebill(32)).status_code == 204


def test_summary_periods_take_no_posting(http: httpx.Client, erp: RunningSimulator) -> None:
    """An open quarter seeded after its closed October (same start date) is not where an
    October transaction posts; a summary period named as postingPeriod is refused."""
    quarter = {
        "external_id": "LE-US1-2026-Q4",
        "subsidiary": "LE-US1",
        "period_name": "Q4 2026",
        "start_date": "2026-10-01",
        "end_date": "2026-12-31",
        "closed": False,
        "all_locked": False,
        "is_quarter": True,
    }
    erp.admin("POST", "/seed", json={"accounting_periods": [quarter]})
    assert codes(put(http, "timebill", timebill(40, tranDate="2026-10-15"))) == [
        ("PERIOD_CLOSED", "tranDate")
    ]
    in_quarter = timebill(41, postingPeriod={"externalId": "LE-US1-2026-Q4"})
    assert codes(put(http, "timebill", in_quarter)) == [("INVALID_FLD_VALUE", "postingPeriod")]
    assert put(http, "timebill", timebill(42)).status_code == 204  # November: its month, open


# --------------------------------------------------------------------------- async batch


def submit(http: httpx.Client, rtype: str, items: list[dict[str, Any]], key: str) -> httpx.Response:
    return http.post(
        f"{REC}/{rtype}/batch", json={"items": items}, headers={"X-NetSuite-idempotency-key": key}
    )


def test_batch_partial_success_with_per_item_errors(http: httpx.Client, erp: RunningSimulator) -> None:
    items = [timebill(i) for i in range(100)]
    items[5] = timebill(5, customer={"externalId": "psa-project-2"})
    items[17] = timebill(17, currency={"refName": "GBP"})
    items[42] = timebill(42, tranDate="2026-10-03")
    items[77] = {k: v for k, v in timebill(77).items() if k != "employee"}
    items[99] = timebill(98)  # the same external id twice in one batch
    response = submit(http, "timebill", items, "run-1:timebill:0")
    assert response.status_code == 202, response.text
    job_id = response.json()["jobId"]
    assert response.json()["links"][0]["href"].endswith(f"/services/rest/async/v1/job/{job_id}")
    status = http.get(f"/services/rest/async/v1/job/{job_id}").json()
    assert (status["status"], status["succeededCount"], status["failedCount"]) == ("PARTIAL_SUCCESS", 95, 5)
    result = http.get(f"/services/rest/async/v1/job/{job_id}/result").json()
    by_index = result["items"]
    assert len(by_index) == 100
    failed = {
        i: (r["error"]["o:errorCode"], r["error"]["o:errorPath"])
        for i, r in enumerate(by_index)
        if r["status"] == "failed"
    }
    assert failed == {
        5: ("INACTIVE_RECORD", "customer"),
        17: ("CURRENCY_MISMATCH", "currency"),
        42: ("PERIOD_CLOSED", "tranDate"),
        77: ("MISSING_REQUIRED_FIELD", "employee"),
        99: ("DUP_RCRD", "externalId"),
    }
    assert all(r["id"] for r in by_index if r["status"] == "succeeded")
    assert erp.admin("GET", "/stats")["records"]["timebill"] == 95


def test_batch_over_100_items_is_rejected(http: httpx.Client, erp: RunningSimulator) -> None:
    response = submit(http, "timebill", [timebill(i) for i in range(101)], "too-big")
    assert response.status_code == 413
    assert codes(response) == [("EXCEEDED_MAX_RECORDS", "items")]
    assert "timebill" not in erp.admin("GET", "/stats")["records"]
    missing_key = http.post(f"{REC}/timebill/batch", json={"items": [timebill(1)]})
    assert missing_key.status_code == 400


def test_repeated_idempotency_key_points_to_earlier_job_and_does_nothing(
    http: httpx.Client, erp: RunningSimulator
) -> None:
    first = submit(http, "timebill", [timebill(1), timebill(2)], "key-A")
    assert first.status_code == 202
    again = submit(http, "timebill", [timebill(1, memo="changed"), timebill(3)], "key-A")
    assert again.status_code == 409
    body = again.json()
    assert body["o:errorDetails"][0]["o:errorCode"] == "IDEMPOTENCY_ERROR"
    assert body["jobId"] == first.json()["jobId"]
    assert http.get(f"{REC}/timebill/eid:psa-te-1").json()["memo"] == "work"
    assert http.get(f"{REC}/timebill/eid:psa-te-3").status_code == 404
    stats = erp.admin("GET", "/stats")
    assert (stats["records"]["timebill"], stats["batch_jobs"]) == (2, 1)


def test_concurrent_batches_with_one_key_run_once(http: httpx.Client, erp: RunningSimulator) -> None:
    items = [timebill(i) for i in range(100)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        statuses = sorted(pool.map(lambda _: submit(http, "timebill", items, "key-B").status_code, range(6)))
    assert statuses == [202] + [409] * 5
    assert erp.admin("GET", "/stats")["batch_jobs"] == 1


def test_drop_after_commit_commits_but_the_client_gets_no_answer(
    http: httpx.Client, erp: RunningSimulator
) -> None:
    erp.admin(
        "POST",
        "/faults",
        json={
            "id": "drop",
            "action": "drop_after_commit",
            "method": "POST",
            "path_regex": "/batch$",
            "max_hits": 1,
        },
    )
    with pytest.raises(httpx.TransportError):
        submit(http, "timebill", [timebill(1), timebill(2)], "key-drop")
    assert erp.admin("GET", "/stats")["records"]["timebill"] == 2
    # The retry with the same key is recognised.
    assert submit(http, "timebill", [timebill(1), timebill(2)], "key-drop").status_code == 409


def test_status_fault_before_commit_commits_nothing(http: httpx.Client, erp: RunningSimulator) -> None:
    erp.admin(
        "POST",
        "/faults",
        json={
            "id": "down",
            "action": "status",
            "status": 503,
            "method": "POST",
            "path_regex": "/batch$",
            "max_hits": 1,
        },
    )
    assert submit(http, "timebill", [timebill(1)], "key-503").status_code == 503
    stats = erp.admin("GET", "/stats")
    assert "timebill" not in stats["records"]
    assert stats["batch_jobs"] == 0
    assert submit(http, "timebill", [timebill(1)], "key-503").status_code == 202


# --------------------------------------------------------------------------- concurrency limit


def test_concurrency_limit_answers_429_with_retry_after(erp: RunningSimulator) -> None:
    erp.admin("PUT", "/config", json={"concurrency_limit": 5, "service_time_ms": 400})

    def call(_: int) -> httpx.Response:
        return httpx.get(f"{erp.base_url}{REC}/customer/eid:psa-client-1", headers=AUTH, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(max_workers=30) as pool:
        responses = list(pool.map(call, range(30)))
    throttled = [r for r in responses if r.status_code == 429]
    ok = [r for r in responses if r.status_code == 200]
    assert throttled
    assert ok
    assert len(ok) + len(throttled) == 30
    assert all(r.headers["Retry-After"] == "1" for r in throttled)
    assert throttled[0].json()["o:errorDetails"][0]["o:errorCode"] == "SSS_REQUEST_LIMIT_EXCEEDED"
    stats = erp.admin("GET", "/stats")
    assert stats["max_in_flight"] <= 5
    assert stats["throttled"] == len(throttled)


# --------------------------------------------------------------------------- SuiteQL and collections


def suiteql(http: httpx.Client, q: str, **params: Any) -> httpx.Response:
    return http.post(
        "/services/rest/query/v1/suiteql", json={"q": q}, params=params, headers={"Prefer": "transient"}
    )


def test_suiteql_paging_filters_and_order(http: httpx.Client) -> None:
    items = [timebill(i, hours=str(1 + i % 8), tranDate=f"2026-11-{1 + i % 28:02d}") for i in range(60)]
    assert submit(http, "timebill", items, "ql-seed").status_code == 202
    seen: list[str] = []
    offset = 0
    while True:
        page = suiteql(
            http, "SELECT id, externalId, hours FROM timebill ORDER BY id", limit=25, offset=offset
        ).json()
        seen.extend(item["externalid"] for item in page["items"])
        assert page["totalResults"] == 60
        if not page["hasMore"]:
            break
        offset += page["count"]
    assert sorted(seen) == sorted(f"psa-te-{i}" for i in range(60))
    assert len(seen) == 60
    subset = suiteql(
        http,
        "select ExternalId from TIMEBILL where externalid IN ('psa-te-1', 'psa-te-2') "
        "and Hours >= '2' order by externalid desc",
    ).json()
    assert [i["externalid"] for i in subset["items"]] == ["psa-te-2", "psa-te-1"]
    equal = suiteql(
        http, "SELECT * FROM timebill WHERE trandate = '2026-11-05' AND employee = 'psa-user-1'"
    ).json()
    assert {i["externalid"] for i in equal["items"]} == {"psa-te-4", "psa-te-32", "psa-te-60"} - {"psa-te-60"}
    row = equal["items"][0]
    assert row["customer"] == "psa-project-1"
    assert row["isbillable"] == "T"
    assert row["hours"] in {"5", "1"}
    lt = suiteql(
        http,
        "SELECT id FROM timebill WHERE hours < 2 AND trandate > '2026-11-01' AND trandate <= '2026-11-09'",
    )
    assert lt.json()["totalResults"] == sum(
        1 for i in range(60) if 1 + i % 8 < 2 and "2026-11-01" < f"2026-11-{1 + i % 28:02d}" <= "2026-11-09"
    )


def test_suiteql_is_parsed_safely(http: httpx.Client, erp: RunningSimulator) -> None:
    hostile = suiteql(http, "SELECT * FROM customer WHERE externalid = 'x''; DROP TABLE record; --'")
    assert hostile.status_code == 200
    assert hostile.json()["totalResults"] == 0
    assert suiteql(http, "SELECT * FROM customer; DROP TABLE record").status_code == 400
    assert suiteql(http, "SELECT * FROM pg_class").status_code == 400
    assert suiteql(http, "SELECT * FROM customer WHERE id = 'abc'").status_code == 400
    assert suiteql(http, "SELECT * FROM customer WHERE lastmodifieddate > 'not-a-date'").status_code == 400
    assert http.get(f"{REC}/customer", params={"q": 'lastModifiedDate AFTER "soon"'}).status_code == 400
    assert erp.admin("GET", "/stats")["records"]["customer"] == 3


def test_suiteql_incremental_extract_by_last_modified(http: httpx.Client) -> None:
    rows = suiteql(http, "SELECT id, lastmodifieddate FROM customer ORDER BY lastmodifieddate").json()[
        "items"
    ]
    mark = rows[-1]["lastmodifieddate"]
    time.sleep(0.01)
    assert (
        http.patch(f"{REC}/customer/eid:psa-client-3", json={"companyName": "Client Three Ltd"}).status_code
        == 204
    )
    changed = suiteql(
        http, f"SELECT externalid, companyname FROM customer WHERE lastmodifieddate > '{mark}'"
    ).json()
    assert [(i["externalid"], i["companyname"]) for i in changed["items"]] == [
        ("psa-client-3", "Client Three Ltd")
    ]


def test_collection_with_q_filters(http: httpx.Client) -> None:
    listing = http.get(f"{REC}/customer", params={"limit": 2}).json()
    assert (listing["count"], listing["hasMore"], listing["totalResults"]) == (2, True, 3)
    assert listing["items"][0]["links"][0]["rel"] == "self"
    filtered = http.get(
        f"{REC}/customer", params={"q": 'externalId ANY_OF ["psa-client-1", "psa-client-3"]'}
    ).json()
    assert filtered["totalResults"] == 2
    since = http.get(
        f"{REC}/customer", params={"q": 'lastModifiedDate ON_OR_AFTER "2000-01-01T00:00:00Z"'}
    ).json()
    assert since["totalResults"] == 3
    future = http.get(
        f"{REC}/customer", params={"q": 'lastModifiedDate ON_OR_AFTER "2999-01-01T00:00:00Z"'}
    ).json()
    assert future["totalResults"] == 0
    assert http.get(f"{REC}/customer", params={"q": "externalId LIKE x"}).status_code == 400


# --------------------------------------------------------------------------- admin


def test_seed_is_an_upsert_and_state_lives_in_postgres(erp: RunningSimulator, pg_dsn: str) -> None:
    seed(erp)
    seed(erp)
    stats = erp.admin("GET", "/stats")
    assert stats["records"]["customer"] == 3
    assert stats["records"]["accountingperiod"] == 3
    assert stats["amounts"]["job"] == "125000.00"
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(
            "SELECT body, amount FROM sim_erp.record WHERE type = 'job' AND external_id = 'psa-project-1'"
        ).fetchone()
    assert row is not None
    assert row[0]["contractValue"] == "100000.00"
    assert str(row[1]) == "100000.00"
    dump = erp.admin("GET", "/records/job", params={"limit": 2})
    assert (dump["count"], dump["totalResults"]) == (2, 4)


def test_concurrency_is_counted_and_limited_per_account(erp: RunningSimulator) -> None:
    erp.admin("PUT", "/config", json={"concurrency_limit": 2, "service_time_ms": 300})
    erp.admin("POST", "/concurrency/reset")

    def call(account: str) -> int:
        headers = AUTH | {"X-NetSuite-Account": account}
        return httpx.get(
            f"{erp.base_url}{REC}/customer/eid:psa-client-1", headers=headers, timeout=30
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(call, ["BUSY"] * 6 + ["QUIET"] * 2))
    seen = erp.admin("GET", "/concurrency")
    busy, quiet = seen["accounts"]["BUSY"], seen["accounts"]["QUIET"]
    assert seen["concurrency_limit"] == 2
    assert codes[6:] == [200, 200]  # the other account's limit is its own
    assert busy["throttled"] == codes[:6].count(429) > 0
    assert busy["max_in_flight"] == 2 < busy["max_requested"] <= 6
    assert quiet["max_requested"] <= 2 and (quiet["throttled"], quiet["requests"]) == (0, 2)
    assert busy["in_flight"] == quiet["in_flight"] == 0

    after = erp.admin("POST", "/concurrency/reset")["accounts"]["BUSY"]
    assert after == {"in_flight": 0, "max_in_flight": 0, "max_requested": 0, "requests": 0, "throttled": 0}
