"""The stream's deletions are plausible or refused (issue 13 item 6): real PSA and ERP simulators,
a real ODS, the stream's processing function.

A re-read that answers 404 used to reverse the record in the ERP, whatever said 404. Now a
deletion needs the PSA's own "record not found" answer, a PSA that still answers for records we
know exist, and a plausible share of the month (the sweep's ``MassDeletionRefused`` guard).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from psa_erp_sync.clients.http import RetryPolicy
from psa_erp_sync.clients.psa import HarvestClient, PsaEndpointNotFound
from psa_erp_sync.validation.time_expense import MassDeletionRefused
from tests.conftest import RunningSimulator
from tests.dags.test_time_expense_dag import TODAY
from tests.stream.helpers import process_as_triggered

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_attempts=2, base_delay_s=0.0, max_delay_s=0.0)
_ONE_RECORD = re.compile(r"^/v2/(time_entries|expenses)/\d+$")


@pytest.fixture
def posted(clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator) -> dict[str, Any]:
    """A small firm whose approved time entries the stream has posted to the ERP."""
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    firm = generate_firm(
        FirmSpec(seed=7, consultants=12, customers=10, projects=16, opportunities=5, today=TODAY)
    )
    load_firm(firm, psa_url=psa_sim.base_url, erp_url=erp_sim.base_url, crm_url=None, include_schedule=False)
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    with psycopg.connect(clean_ods) as conn:
        approved = [
            str(r[0]) for r in conn.execute("SELECT id FROM sim_psa.time_entries WHERE is_closed ORDER BY id")
        ]
    _announce(clean_ods, "time_entry.approved", approved)
    _run(clean_ods, HarvestClient(base_url=psa_sim.base_url, token="t", account_id="1"), erp_sim, "baseline")
    live = _live(clean_ods)
    assert len(live) > 100, "the fixture should post a month of entries"
    return {"dsn": clean_ods, "psa": psa_sim, "erp": erp_sim, "live": live}


def _announce(dsn: str, event: str, ids: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO inbox.event (delivery_id, source_system, event_type, source_id, occurred_at, payload)"
            " VALUES (%s, 'psa', %s, %s, now(), %s::jsonb)",
            [(uuid.uuid4().hex, event, sid, json.dumps({"data": {"id": int(sid)}})) for sid in ids],
        )


def _run(dsn: str, psa: HarvestClient, erp_sim: RunningSimulator, name: str) -> Any:
    from psa_erp_sync.clients.erp import NetSuiteClient

    with psa, NetSuiteClient(base_url=erp_sim.base_url, account_id="A1", token="t") as erp:
        return process_as_triggered(dsn, psa, erp, name)


def _live(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT source_id FROM canonical.time_entry WHERE NOT is_deleted AND approved"
                " ORDER BY source_id::bigint"
            )
        ]


def _reversals(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM ledger.posting WHERE action = 'reverse'").fetchone()
    return int(row[0]) if row else 0


def _another_account(psa_url: str) -> httpx.BaseTransport:
    """The PSA as seen with another account's id: lists answer, every record by id is Harvest's own
    "not found" (the simulator keeps one account, so the answer is shaped here)."""
    real = httpx.HTTPTransport()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and _ONE_RECORD.match(request.url.path):
            return httpx.Response(404, json={"code": 404, "message": "Not found"})
        response = real.handle_request(request)
        response.read()
        return response

    return httpx.MockTransport(handler)


def test_a_wrong_base_url_reverses_nothing(posted: dict[str, Any]) -> None:
    dsn, erp = posted["dsn"], posted["erp"]
    _announce(dsn, "time_entry.deleted", posted["live"][:5])
    misrouted = HarvestClient(base_url=erp.base_url, token="t", account_id="1", retry=FAST)  # the ERP's URL
    with pytest.raises(PsaEndpointNotFound):
        _run(dsn, misrouted, erp, "misrouted")
    assert _live(dsn) == posted["live"] and _reversals(dsn) == 0


def test_not_found_for_records_known_to_exist_reverses_nothing(posted: dict[str, Any]) -> None:
    """Every id answers "not found" in the PSA's own words, including records the PSA still has
    (a wrong account id): the control re-read of a live record exposes it."""
    dsn, psa, erp = posted["dsn"], posted["psa"], posted["erp"]
    _announce(dsn, "time_entry.deleted", posted["live"][:5])
    other = HarvestClient(
        base_url=psa.base_url, token="t", account_id="2", retry=FAST, transport=_another_account(psa.base_url)
    )
    with pytest.raises(MassDeletionRefused, match="records known to exist"):
        _run(dsn, other, erp, "other-account")
    assert _live(dsn) == posted["live"] and _reversals(dsn) == 0


def test_an_implausible_share_of_deletions_is_refused(posted: dict[str, Any]) -> None:
    dsn, psa, erp = posted["dsn"], posted["psa"], posted["erp"]
    doomed = posted["live"][: max(50, len(posted["live"]) // 4 + 1)]
    psa.admin("POST", "/time_entries/bulk", json={"action": "delete", "ids": [int(i) for i in doomed]})
    _announce(dsn, "time_entry.deleted", doomed)
    with pytest.raises(MassDeletionRefused, match=f"{len(doomed)} of"):
        _run(dsn, HarvestClient(base_url=psa.base_url, token="t", account_id="1"), erp, "mass")
    assert _live(dsn) == posted["live"] and _reversals(dsn) == 0


def test_plausible_deletions_are_reversed(posted: dict[str, Any]) -> None:
    """Deletions alone in a batch (every re-read is "not found"): a live record reads back, the
    share is small, so they are real and reversed in the ERP."""
    dsn, psa, erp = posted["dsn"], posted["psa"], posted["erp"]
    doomed = posted["live"][:3]
    psa.admin("POST", "/time_entries/bulk", json={"action": "delete", "ids": [int(i) for i in doomed]})
    _announce(dsn, "time_entry.deleted", doomed)
    result = _run(dsn, HarvestClient(base_url=psa.base_url, token="t", account_id="1"), erp, "plausible")
    assert result.gone_at_source == 3
    assert _live(dsn) == posted["live"][3:] and _reversals(dsn) == 3
    with psycopg.connect(dsn) as conn:
        in_erp = {
            r[0] for r in conn.execute("SELECT external_id FROM sim_erp.record WHERE type = 'timebill'")
        }
    assert not {f"psa-te-{i}" for i in doomed} & in_erp
