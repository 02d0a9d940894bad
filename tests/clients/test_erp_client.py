"""NetSuiteClient against the ERP simulator over loopback, and its retry rules on a mock transport."""

from __future__ import annotations

import concurrent.futures
import copy
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from psa_erp_sync.clients.erp import (
    ErpAmbiguous,
    ErpRejected,
    ErpThrottled,
    ErpUnavailable,
    NetSuiteClient,
)
from psa_erp_sync.clients.erp_models import AccountingPeriod, Job, TimeBill
from psa_erp_sync.clients.http import RetryPolicy
from tests.conftest import RunningSimulator, free_port
from tests.simulators.test_erp_sim import BASE_SEED, expense, timebill


class Sleeps:
    """A recording sleep that waits at most ``cap`` seconds for real."""

    def __init__(self, cap: float = 0.0) -> None:
        self.cap = cap
        self.calls: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.calls.append(seconds)
        if self.cap:
            time.sleep(min(seconds, self.cap))


def make_client(
    base_url: str, sleeps: Sleeps | None = None, attempts: int = 4, **kwargs: Any
) -> NetSuiteClient:
    policy = RetryPolicy(max_attempts=attempts, base_delay_s=0.01, max_delay_s=0.05)
    return NetSuiteClient(
        base_url=base_url,
        account_id="TSTDRV1",
        token="secret",
        retry=policy,
        sleep=sleeps or Sleeps(),
        **kwargs,
    )


@pytest.fixture
def erp(erp_sim: RunningSimulator) -> RunningSimulator:
    erp_sim.admin("POST", "/seed", json=copy.deepcopy(BASE_SEED))
    return erp_sim


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(erp: RunningSimulator, sleeps: Sleeps) -> Iterator[NetSuiteClient]:
    with make_client(erp.base_url, sleeps) as c:
        yield c


def fault(erp: RunningSimulator, **rule: Any) -> None:
    erp.admin("POST", "/faults", json=rule)


# --------------------------------------------------------------------------- against the simulator


@pytest.mark.integration
def test_get_record_and_upsert_is_idempotent(client: NetSuiteClient, erp: RunningSimulator) -> None:
    assert client.get_record("timebill", "psa-te-1") is None
    first = client.upsert("timebill", "psa-te-1", timebill(1))
    second = client.upsert("timebill", "psa-te-1", timebill(1, hours="6.25"))
    assert first == second
    assert first.isdigit()
    record = client.get_record("timebill", "psa-te-1")
    assert record is not None
    read_back = TimeBill.model_validate(record)
    assert (read_back.hours, read_back.rate, read_back.customer.key if read_back.customer else None) == (
        Decimal("6.25"),
        Decimal("150.00"),
        "psa-project-1",
    )
    assert erp.admin("GET", "/stats")["records"]["timebill"] == 1
    assert client.requests_made == 4


@pytest.mark.integration
def test_validation_failure_is_rejected_with_details(client: NetSuiteClient) -> None:
    with pytest.raises(ErpRejected) as caught:
        client.upsert("expensereport", "psa-ex-1", expense(1, taxCode={"externalId": "TX-UK-S"}))
    assert caught.value.status == 400
    assert [(d.code, d.path) for d in caught.value.details] == [("TAX_CODE_MISMATCH", "taxCode")]
    assert caught.value.codes == ["TAX_CODE_MISMATCH"]
    assert client.requests_made == 1  # a rejection is never retried


@pytest.mark.integration
def test_submit_batch_partial_success_and_replay(client: NetSuiteClient, erp: RunningSimulator) -> None:
    items = [timebill(i) for i in range(100)]
    items[3] = timebill(3, tranDate="2026-10-20")
    items[4] = timebill(4, employee={"externalId": "psa-user-404"})
    result = client.submit_batch("timebill", items, "run-7:timebill:chunk-0")
    assert not result.replayed
    assert len(result.items) == 100
    assert len(result.succeeded) == 98
    failed = {item.external_id: (item.error.code, item.error.path) for item in result.failed if item.error}
    assert failed == {
        "psa-te-3": ("PERIOD_CLOSED", "tranDate"),
        "psa-te-4": ("INVALID_KEY_OR_REF", "employee"),
    }
    assert result.by_external_id()["psa-te-0"].id

    again = client.submit_batch("timebill", [timebill(0, memo="changed")], "run-7:timebill:chunk-0")
    assert again.replayed
    assert again.job_id == result.job_id
    assert len(again.items) == 100
    assert client.get_record("timebill", "psa-te-0")["memo"] == "work"  # type: ignore[index]
    assert erp.admin("GET", "/stats")["batch_jobs"] == 1
    with pytest.raises(ValueError, match="at most 100"):
        client.submit_batch("timebill", [timebill(i) for i in range(101)], "too-many")


@pytest.mark.integration
def test_drop_after_commit_on_batch_is_ambiguous_and_resolved_by_the_key(
    client: NetSuiteClient, erp: RunningSimulator
) -> None:
    fault(erp, id="drop", action="drop_after_commit", method="POST", path_regex="/batch$", max_hits=1)
    items = [timebill(1), timebill(2)]
    with pytest.raises(ErpAmbiguous) as caught:
        client.submit_batch("timebill", items, "key-drop")
    assert caught.value.idempotency_key == "key-drop"
    assert caught.value.external_ids == ["psa-te-1", "psa-te-2"]
    assert client.requests_made == 1  # the write was not retried blindly
    assert erp.admin("GET", "/stats")["records"]["timebill"] == 2  # committed all the same
    resolved = client.submit_batch("timebill", items, "key-drop")
    assert resolved.replayed
    assert [item.status for item in resolved.items] == ["succeeded", "succeeded"]
    assert erp.admin("GET", "/stats")["records"]["timebill"] == 2


@pytest.mark.integration
def test_503_before_commit_is_ambiguous_to_the_client_but_nothing_is_committed(
    client: NetSuiteClient, erp: RunningSimulator
) -> None:
    fault(erp, id="down", action="status", status=503, method="POST", path_regex="/batch$", max_hits=1)
    with pytest.raises(ErpAmbiguous) as caught:
        client.submit_batch("timebill", [timebill(1)], "key-503")
    assert caught.value.status == 503
    assert client.get_record("timebill", "psa-te-1") is None  # resolution by reading back
    assert erp.admin("GET", "/stats")["batch_jobs"] == 0
    assert not client.submit_batch("timebill", [timebill(1)], "key-503").replayed


@pytest.mark.integration
def test_drop_after_commit_on_put_is_ambiguous(client: NetSuiteClient, erp: RunningSimulator) -> None:
    fault(erp, id="drop", action="drop_after_commit", method="PUT", path_regex="/timebill/", max_hits=1)
    with pytest.raises(ErpAmbiguous):
        client.upsert("timebill", "psa-te-5", timebill(5))
    assert client.get_record("timebill", "psa-te-5") is not None


@pytest.mark.integration
def test_reads_retry_on_5xx_and_writes_retry_on_429(
    client: NetSuiteClient, erp: RunningSimulator, sleeps: Sleeps
) -> None:
    fault(erp, id="flaky", action="status", status=502, method="GET", path_regex="/customer/", max_hits=2)
    assert client.get_record("customer", "psa-client-1") is not None
    assert client.requests_made == 3
    erp.admin("DELETE", "/faults")
    fault(erp, id="busy", action="throttle", retry_after=2, method="PUT", max_hits=2)
    client.upsert("timebill", "psa-te-9", timebill(9))
    assert sleeps.calls[-2:] == [2.0, 2.0]  # Retry-After honoured
    assert client.requests_made == 6
    fault(erp, id="storm", action="throttle", retry_after=1, method="GET")
    with pytest.raises(ErpThrottled) as caught:
        client.get_record("customer", "psa-client-1")
    assert caught.value.retry_after == 1.0


@pytest.mark.integration
def test_shared_concurrency_limit_is_survived_by_retrying(erp: RunningSimulator) -> None:
    erp.admin("PUT", "/config", json={"concurrency_limit": 3, "service_time_ms": 100, "retry_after_s": 0})
    with make_client(erp.base_url, Sleeps(cap=0.05), attempts=400) as c:
        with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
            found = list(pool.map(lambda _: c.get_record("customer", "psa-client-1"), range(12)))
        assert all(r is not None for r in found)
        stats = erp.admin("GET", "/stats")
        assert stats["max_in_flight"] <= 3
        assert stats["throttled"] > 0
        assert c.requests_made == 12 + stats["throttled"]


@pytest.mark.integration
def test_suiteql_follows_pages(client: NetSuiteClient) -> None:
    assert len(client.submit_batch("timebill", [timebill(i) for i in range(45)], "ql").succeeded) == 45
    before = client.requests_made
    rows = list(
        client.suiteql("SELECT * FROM timebill WHERE employee = 'psa-user-1' ORDER BY id", page_size=10)
    )
    assert client.requests_made - before == 5
    assert len({row["externalid"] for row in rows}) == 45
    bills = [TimeBill.model_validate(row) for row in rows]
    assert sum(b.hours for b in bills) == Decimal("337.50")
    assert all(b.is_billable for b in bills)
    periods = [AccountingPeriod.model_validate(r) for r in client.suiteql("SELECT * FROM accountingperiod")]
    by_id = {p.external_id: p for p in periods}
    assert by_id["LE-US1-2026-10"].blocks("timebill")
    assert not by_id["LE-US1-2026-11"].blocks("expensereport")
    jobs = [Job.model_validate(r) for r in client.suiteql("SELECT * FROM job WHERE isinactive = 'F'")]
    assert {j.external_id: j.contract_value for j in jobs}["psa-project-1"] == Decimal("100000.00")
    with pytest.raises(ErpRejected):
        list(client.suiteql("DELETE FROM timebill"))


# --------------------------------------------------------------------------- retry rules (mock transport)


def mock_client(handler: Any, attempts: int = 3) -> NetSuiteClient:
    return make_client(
        "https://tstdrv1.suitetalk.example", attempts=attempts, transport=httpx.MockTransport(handler)
    )


def test_read_timeouts_are_retried_but_write_timeouts_are_ambiguous() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        assert request.headers["Authorization"] == "Bearer secret"
        if len(calls) == 1 or request.method == "PUT":
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(200, json={"id": "1", "externalId": "c"})

    client = mock_client(handler)
    assert client.get_record("customer", "c") == {"id": "1", "externalId": "c"}
    with pytest.raises(ErpAmbiguous):
        client.upsert("customer", "c", {"companyName": "x"})
    assert calls == ["GET", "GET", "PUT"]
    assert client.requests_made == 3


def test_unsent_writes_are_retried_and_5xx_on_reads_gives_up() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if request.method == "PUT" and len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        if request.method == "PUT":
            return httpx.Response(204, headers={"Location": "https://x/services/rest/record/v1/customer/77"})
        return httpx.Response(503, json={"o:errorDetails": []})

    client = mock_client(handler)
    assert client.upsert("customer", "c", {"companyName": "x"}) == "77"
    with pytest.raises(ErpUnavailable):
        client.get_record("customer", "c")
    assert calls == ["PUT", "PUT", "GET", "GET", "GET"]


def test_unreachable_erp_is_unavailable_not_ambiguous() -> None:
    with make_client(f"http://127.0.0.1:{free_port()}", attempts=2) as client, pytest.raises(ErpUnavailable):
        client.upsert("customer", "c", {"companyName": "x"})


def test_bad_identifiers_never_reach_the_wire() -> None:
    client = mock_client(lambda request: httpx.Response(500))
    with pytest.raises(ValueError, match="external ids"):
        client.get_record("customer", "../../admin")
    with pytest.raises(ValueError, match="record type"):
        client.get_record("Customer/x", "c")
    assert client.requests_made == 0
