"""The posting pass's client CPU (branch perf-post6, issue 16 deliverable 4): the cyclic collector
tuned for the pass and restored after it, a first post's candidate read without its ledger columns,
and the payloads a pass plans unchanged (a recorded digest of what main planned for the same rows).

Real PostgreSQL (and the ERP simulator for the pass itself).
"""

from __future__ import annotations

import gc
import hashlib
from typing import Any

import msgspec
import psycopg
import pytest

from psa_erp_sync.posting import ledger, planner, service
from tests.conftest import RunningSimulator
from tests.posting.test_planner_pipeline import _entries, _plan

pytestmark = pytest.mark.integration


def test_the_collector_is_tuned_for_the_pass_and_restored_after_it() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with service.collector_for_pass():
        assert gc.get_threshold() == service.PASS_GC_THRESHOLDS
        assert gc.get_freeze_count() > frozen  # what the process held before the pass
        with service.collector_for_pass():  # a second pass at once in the process (threads)
            assert gc.get_threshold() == service.PASS_GC_THRESHOLDS
        assert gc.get_threshold() == service.PASS_GC_THRESHOLDS  # the first is still running
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen
    with pytest.raises(RuntimeError), service.collector_for_pass():
        raise RuntimeError("the pass failed")
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen


def test_a_posting_pass_runs_under_the_pass_collector(
    clean_ods: str, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting.engine import EngineSettings

    seen: dict[str, Any] = {}

    def locked(**kwargs: Any) -> service.PostingResult:
        seen["threshold"], seen["frozen"] = gc.get_threshold(), gc.get_freeze_count()
        return service.PostingResult({}, {})

    monkeypatch.setattr(service, "_post_locked", locked)
    before = gc.get_threshold()
    with NetSuiteClient(base_url=erp_sim.base_url, account_id="A", token="t") as client:
        service.post_record_type(
            dsn=clean_ods,
            client=client,
            record_type="timebill",
            config=load_config(),
            settings=EngineSettings(),
            run_id="gc",
        )
    assert seen["threshold"] == service.PASS_GC_THRESHOLDS and seen["frozen"] > 0
    assert gc.get_threshold() == before


def test_a_first_post_holds_nothing_without_reading_its_ledger_columns(clean_ods: str) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entries(conn, 6)
    with psycopg.connect(clean_ods) as reader:
        cands = list(planner._candidates(reader, "timebill"))
    assert len(cands) == 6
    for cand in cands:
        assert cand["n"] == 0
        assert planner._held(cand) is planner.NOTHING_HELD
        assert ledger.Held.from_row(cand) == planner.NOTHING_HELD  # what the full read decides
    # A record the ledger knows is read in full.
    known = {**cands[0], "n": 1, "base_action": "post", "base_payload": {"hours": "2.50"}, "base_amount": 250}
    assert planner._held(known) == ledger.Held.from_row(known)
    assert planner._held(known).hours == 2.5 and planner._held(known).base_present


#: The payloads main (980461f) planned for ``_entries(conn, 30)``: sha256 of their JSON (keys
#: sorted), in ledger order. The pass sends each posting's payload as planned.
PAYLOADS_SHA256 = "9e8a4611cbe2bf9f76d1491a52d1c048e7228db972c294a725b8dc1672e8c263"


def test_the_payloads_a_pass_plans_are_those_main_planned(clean_ods: str) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entries(conn, 30)
    _plan(clean_ods, 10, None)
    with psycopg.connect(clean_ods) as conn:
        rows = conn.execute("SELECT payload FROM ledger.posting_full ORDER BY seq").fetchall()
    assert len(rows) == 30
    text = b"\n".join(msgspec.json.encode(row[0], order="sorted") for row in rows)
    assert hashlib.sha256(text).hexdigest() == PAYLOADS_SHA256
