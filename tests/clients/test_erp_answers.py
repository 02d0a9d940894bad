"""Every ERP answer around a write is classified (docs/posting.md, "How ERP answers are classified").

Pure unit tests on a mock httpx transport: the ERP script answers the batch POST, the job poll
or a DELETE with the status under test, and the test checks which error the client raises and
what it carries (``job_id`` once a batch was accepted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from psa_erp_sync.clients.erp import (
    ErpAmbiguous,
    ErpAuthFailed,
    ErpRejected,
    NetSuiteClient,
)
from psa_erp_sync.clients.http import RetryPolicy

BATCH = "/services/rest/record/v1/timebill/batch"
RESULT = "/services/rest/async/v1/job/77/result"
ITEM = {"externalId": "psa-te-1", "hours": "1.00"}


def _error(status: int, code: str | None = "INVALID_LOGIN") -> httpx.Response:
    body: dict[str, Any] = {"type": "x", "title": "refused", "status": status}
    if code is not None:
        body["o:errorDetails"] = [{"detail": "refused", "o:errorCode": code}]
    return httpx.Response(status, json=body)


def _ok_result() -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "jobId": "77",
            "status": "SUCCEEDED",
            "items": [{"externalId": "psa-te-1", "status": "succeeded", "id": "5"}],
        },
    )


def _client(answer: Callable[[httpx.Request], httpx.Response], seen: list[str]) -> NetSuiteClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return answer(request)

    return NetSuiteClient(
        base_url="http://erp.test",
        account_id="A",
        token="t",
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.0),
        transport=httpx.MockTransport(handler),
        sleep=lambda _: None,
        job_poll_timeout=1.0,
    )


def _accepted_then(poll: Callable[[], httpx.Response]) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json={"jobId": "77"})
        return poll()

    return answer


@pytest.mark.parametrize("status", [401, 403])
def test_auth_refused_on_the_post_fails_the_task_not_the_records(status: int) -> None:
    seen: list[str] = []
    with _client(lambda _: _error(status), seen) as client, pytest.raises(ErpAuthFailed) as caught:
        client.submit_batch("timebill", [ITEM], "key-1")
    assert caught.value.status == status
    assert caught.value.job_id is None  # refused before anything was accepted: nothing written
    assert not isinstance(caught.value, ErpRejected)  # never a dead letter
    assert seen == [f"POST {BATCH}"]  # not retried: the token will not heal by itself


@pytest.mark.parametrize("status", [401, 403])
def test_auth_refused_on_the_poll_after_a_202_names_the_accepted_job(status: int) -> None:
    seen: list[str] = []
    with (
        _client(_accepted_then(lambda: _error(status)), seen) as client,
        pytest.raises(ErpAuthFailed) as caught,
    ):
        client.submit_batch("timebill", [ITEM], "key-1")
    assert caught.value.job_id == "77"  # the items may have landed: read back before resending
    assert seen == [f"POST {BATCH}", f"GET {RESULT}"]


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (lambda: _error(404, "NONEXISTENT_ID"), 404),
        (lambda: _error(400, None), 400),
        (lambda: httpx.Response(429, headers={"Retry-After": "0"}, json={}), None),
        (lambda: httpx.Response(503, json={}), 503),
        (lambda: httpx.Response(200, content=b"not json"), None),
    ],
    ids=["404", "400-no-details", "429-every-time", "503-every-time", "unreadable"],
)
def test_any_failure_reading_an_accepted_job_is_ambiguous(
    answer: Callable[[], httpx.Response], status: int | None
) -> None:
    seen: list[str] = []
    with _client(_accepted_then(answer), seen) as client, pytest.raises(ErpAmbiguous) as caught:
        client.submit_batch("timebill", [ITEM], "key-1")
    assert caught.value.job_id == "77"
    assert caught.value.status == status
    assert caught.value.idempotency_key == "key-1"
    assert caught.value.external_ids == ["psa-te-1"]
    assert seen[0] == f"POST {BATCH}"
    assert seen.count(f"POST {BATCH}") == 1  # never re-POSTed


def test_a_429_on_the_poll_that_clears_is_just_a_slower_answer() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "0"}, json={}), _ok_result()])
    seen: list[str] = []
    with _client(_accepted_then(lambda: next(answers)), seen) as client:
        result = client.submit_batch("timebill", [ITEM], "key-1")
    assert [i.id for i in result.succeeded] == ["5"]
    assert seen == [f"POST {BATCH}", f"GET {RESULT}", f"GET {RESULT}"]


def test_a_reused_key_whose_earlier_job_cannot_be_read_is_ambiguous_too() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = _error(409, "IDEMPOTENCY_ERROR").json() | {"jobId": "77"}
            return httpx.Response(409, json=body)
        return _error(401)

    with _client(answer, []) as client, pytest.raises(ErpAuthFailed) as caught:
        client.submit_batch("timebill", [ITEM], "key-1")
    assert caught.value.job_id == "77"


def test_a_4xx_without_error_details_is_a_refused_request_not_an_index_error() -> None:
    with (
        _client(lambda _: httpx.Response(400, content=b""), []) as client,
        pytest.raises(ErpRejected) as caught,
    ):
        client.submit_batch("timebill", [ITEM], "key-1")
    assert caught.value.status == 400
    assert caught.value.details == []
    assert caught.value.per_record is False
    assert "no details" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "code", "per_record"),
    [
        (400, "PERIOD_CLOSED", True),
        (422, "INVALID_FLD_VALUE", True),
        (400, None, False),
        (404, "INVALID_RCRD_TYPE", False),
        (405, "METHOD_NOT_ALLOWED", False),
        (413, "EXCEEDED_MAX_RECORDS", False),
    ],
)
def test_only_a_coded_400_or_422_is_a_business_rejection(
    status: int, code: str | None, per_record: bool
) -> None:
    with _client(lambda _: _error(status, code), []) as client, pytest.raises(ErpRejected) as caught:
        client.delete("timebill", "psa-te-1")
    assert caught.value.per_record is per_record


@pytest.mark.parametrize("status", [401, 403])
def test_auth_refused_on_a_delete(status: int) -> None:
    with _client(lambda _: _error(status), []) as client, pytest.raises(ErpAuthFailed):
        client.delete("timebill", "psa-te-1")


def test_a_delete_is_already_done_only_on_nonexistent_id() -> None:
    with _client(lambda _: _error(404, "NONEXISTENT_ID"), []) as client:
        assert client.delete("timebill", "psa-te-1") is False
    with _client(lambda _: httpx.Response(404, text="no route"), []) as client, pytest.raises(ErpRejected):
        client.delete("timebill", "psa-te-1")
