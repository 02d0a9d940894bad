"""A pass reads the ERP's periods in a thread while its planner starts (issue 16, deliverable 4:
with a remote ERP the read is one request's whole service time, with no slot busy), and still
sends nothing before they are in: a failed read fails the pass as it did when it came first.

Real PostgreSQL and the real PSA and ERP simulators, as ``test_lock_hand_off.py``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from psa_erp_sync.clients.erp import NetSuiteClient
from psa_erp_sync.posting.adapter import NetSuiteAdapter
from tests.conftest import RunningSimulator
from tests.posting.staged_firm import assert_settled, stage_firm
from tests.posting.test_lock_hand_off import AS_OF, TODAY

pytestmark = [pytest.mark.integration]

READ_S = 1.5


@pytest.fixture
def firm(clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator) -> str:
    from simulators.firm.generator import FirmSpec

    spec = FirmSpec(seed=5, consultants=8, customers=6, projects=10, opportunities=1, today=TODAY)
    approved = stage_firm(clean_ods, psa_sim, spec, erp_url=erp_sim.base_url, prefix="aside", as_of=AS_OF)
    assert approved >= 100, approved
    return clean_ods


def _post(dsn: str, client: NetSuiteClient) -> Any:
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting.engine import EngineSettings
    from psa_erp_sync.posting.service import post_record_type

    settings = EngineSettings(batch_size=20, max_concurrency=2, progress_every_s=3600, plan_chunk=50)
    return post_record_type(
        dsn=dsn,
        client=client,
        record_type="timebill",
        config=load_config(),
        settings=settings,
        run_id="aside",
    )


def _sent(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM sim_erp.record WHERE type = 'timebill'").fetchone()
    assert row is not None
    return int(row[0])


def test_the_planner_starts_while_the_periods_are_read(
    firm: str, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from psa_erp_sync.posting import planner

    marks: dict[str, float] = {}
    records_to_plan = planner._records_to_plan

    def timed_records(*args: Any, **kwargs: Any) -> Any:
        marks.setdefault("planner_started", time.monotonic())
        return records_to_plan(*args, **kwargs)

    monkeypatch.setattr(planner, "_records_to_plan", timed_records)
    read = NetSuiteAdapter.read_periods

    def slow_read(self: NetSuiteAdapter) -> list[dict[str, Any]]:
        marks["read_started"] = time.monotonic()
        time.sleep(READ_S)  # a remote ERP's service time
        rows = read(self)
        marks["read_done"] = time.monotonic()
        return rows

    monkeypatch.setattr(NetSuiteAdapter, "read_periods", slow_read)
    with NetSuiteClient(base_url=erp_sim.base_url, account_id="A", token="t", timeout=10) as client:
        result = _post(firm, client)
    # On the old pass the planner began after the read: here it is under way before the read ends.
    assert marks["planner_started"] < marks["read_done"] - READ_S / 2, marks
    assert result.outcome["posted"] > 100 and result.outcome["still_pending"] == 0, result.outcome
    with psycopg.connect(firm) as conn:
        assert_settled(conn)
        row = conn.execute("SELECT count(*) FROM ledger.posting WHERE state = 'confirmed'").fetchone()
    assert row is not None and row[0] == _sent(firm) == result.outcome["posted"]


def test_a_failed_periods_read_fails_the_pass_with_nothing_sent(
    firm: str, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = threading.Event()

    def down(self: NetSuiteAdapter) -> list[dict[str, Any]]:
        started.set()
        time.sleep(0.3)  # the planner is under way meanwhile
        raise ConnectionError("ERP unreachable")

    monkeypatch.setattr(NetSuiteAdapter, "read_periods", down)
    with NetSuiteClient(base_url=erp_sim.base_url, account_id="A", token="t", timeout=10) as client:
        with pytest.raises(ConnectionError, match="ERP unreachable"):
            _post(firm, client)
        assert started.is_set()
        assert _sent(firm) == 0
        with psycopg.connect(firm) as conn:
            attempts = conn.execute("SELECT count(*) FROM ledger.attempt").fetchone()
        assert attempts is not None and attempts[0] == 0
        # The ERP back: the next pass posts the month, each record once.
        monkeypatch.undo()
        result = _post(firm, client)
    assert result.outcome["still_pending"] == 0 and result.outcome["posted"] == _sent(firm) > 100
    with psycopg.connect(firm) as conn:
        assert_settled(conn)
