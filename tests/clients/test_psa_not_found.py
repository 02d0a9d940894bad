"""A PSA 404 means "record not found" only in the PSA's own words (issue 13 item 6).

Harvest answers a missing record with 404 and its ``Error`` body (``{"code": 404, "message": ...}``,
contracts/harvest-openapi.yaml). A 404 without that body (a wrong base URL or route, a proxy, an
HTML page) is "endpoint not found": the client raises instead of reporting a deletion.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from psa_erp_sync.clients.http import RetryPolicy
from psa_erp_sync.clients.psa import HarvestClient, PsaEndpointNotFound
from simulators.psa import sample

FAST = RetryPolicy(max_attempts=2, base_delay_s=0.0, max_delay_s=0.0)


def _answering(status: int, body: bytes, content_type: str = "application/json") -> HarvestClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": content_type})

    return HarvestClient(
        base_url="http://psa.test",
        token="t",
        account_id="1",
        retry=FAST,
        transport=httpx.MockTransport(handler),
    )


def test_the_psa_error_body_is_a_missing_record() -> None:
    with _answering(404, b'{"code": 404, "message": "Not found"}') as client:
        assert client.get_time_entry(5) is None
        assert client.get_expense(5) is None


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"detail": "Not Found"}', "application/json"),  # a web framework's unknown route
        (b"<html><body>404 Not Found</body></html>", "text/html"),  # a proxy or web server
        (b"", "application/json"),
        (b'{"code": "404", "message": "Not found"}', "application/json"),  # not the spec's integer code
        (b'{"status": 404, "title": "Not Found"}', "application/problem+json"),  # another API's shape
    ],
    ids=["framework-json", "html", "empty", "string-code", "problem-json"],
)
def test_any_other_404_is_an_endpoint_not_found(body: bytes, content_type: str) -> None:
    with _answering(404, body, content_type) as client:
        with pytest.raises(PsaEndpointNotFound) as info:
            client.get_time_entry(5)
        assert info.value.status == 404 and info.value.endpoint == "/v2/time_entries/5"
        with pytest.raises(PsaEndpointNotFound):
            client.get_expense(5)


def test_a_record_answered_under_another_id_is_refused() -> None:
    with (
        _answering(200, b'{"id": 6, "hours": 1.0}') as client,
        pytest.raises(PsaEndpointNotFound, match="id 6"),
    ):
        client.get_time_entry(5)


@pytest.mark.integration
def test_real_simulators_missing_record_vs_wrong_base_url(psa_sim: Any, erp_sim: Any) -> None:
    psa_sim.admin("POST", "/seed", json=sample.build())
    with HarvestClient(base_url=psa_sim.base_url, token="t", account_id="1", retry=FAST) as client:
        assert client.get_time_entry(10004) is not None
        psa_sim.admin("DELETE", "/time_entries/10004")
        assert client.get_time_entry(10004) is None
        assert client.get_time_entry(99_999_999) is None
        # The PSA's own router, a route that does not exist (e.g. a wrong API version prefix).
        with pytest.raises(PsaEndpointNotFound):
            client._get_one("/v2/time_entry/10005")
    # The base URL of another system (here the ERP simulator): every id answers 404, never a deletion.
    misrouted = HarvestClient(base_url=erp_sim.base_url, token="t", account_id="1", retry=FAST)
    with misrouted, pytest.raises(PsaEndpointNotFound):
        misrouted.get_time_entry(10005)
