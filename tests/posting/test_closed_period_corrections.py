"""Corrections (adjustments, reversals) of records the ERP holds in a period that has since closed.

Real path against the PSA and ERP simulators: post, close the period in the ERP (admin API),
change the records in the PSA, post again. The corrections follow the entity's period policy
(docs/posting.md) instead of being sent to the ERP and dead-lettered as ``PERIOD_CLOSED``: LE-UK1's
(``park``) are parked for finance, a replay while the period is still closed parks them again
without calling the ERP, and once the period reopens a replay posts them; LE-US1's
(``post_to_first_open``) become a correcting journal in the first open period
(``tests/posting/test_closed_corrections_first_open.py`` covers those in depth).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import RunningSimulator
from tests.posting.test_stateful import AS_OF, ERP_SEED, PSA_SEED, UK, US, extract_and_validate

pytestmark = pytest.mark.integration

ADJUSTED, REVERSED = 1, 5  # an LE-US1 entry (post_to_first_open) and an LE-UK1 entry (park), both October


class StalePeriodsOnce:
    """The real ERP client, except that its first period read answers ``rows`` (read before a
    period closed): as if the period closed between the planner's read and the sends."""

    def __init__(self, inner: Any, rows: list[dict[str, Any]]) -> None:
        self.inner = inner
        self.rows: list[dict[str, Any]] | None = rows

    def suiteql(self, query: str, *, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        from psa_erp_sync.posting.periods import PERIOD_QUERY

        if query == PERIOD_QUERY and self.rows is not None:
            rows, self.rows = self.rows, None
            return iter(rows)
        result: Iterator[dict[str, Any]] = self.inner.suiteql(query, page_size=page_size)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Pipeline:
    def __init__(self, dsn: str, psa: RunningSimulator, erp: RunningSimulator) -> None:
        from psa_erp_sync.config import load_config

        self.dsn, self.psa, self.erp = dsn, psa, erp
        self.config = load_config()
        self.runs = 0
        erp.admin("POST", "/seed", json=copy.deepcopy(ERP_SEED))
        psa.admin("PUT", "/config", json={"rate_limit_requests": 0})
        psa.admin("POST", "/seed", json=copy.deepcopy(PSA_SEED))

    def psa_admin(self, method: str, path: str, **kwargs: Any) -> None:
        response = httpx.request(method, f"{self.psa.base_url}/admin{path}", timeout=30, **kwargs)
        assert response.status_code < 300, response.text

    def run(
        self, *, extract: bool = True, stale_periods: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        from psa_erp_sync.clients.erp import NetSuiteClient
        from psa_erp_sync.posting.engine import EngineSettings
        from psa_erp_sync.posting.service import post_record_type

        self.runs += 1
        run_id = f"corr-{self.runs}"
        as_of = AS_OF + timedelta(minutes=self.runs)
        if extract:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                extract_and_validate(
                    conn,
                    psa_url=self.psa.base_url,
                    config=self.config,
                    dag="corrections",
                    run_id=run_id,
                    as_of=as_of,
                )
        with NetSuiteClient(base_url=self.erp.base_url, account_id="A", token="t", timeout=10) as erp:
            client: Any = erp if stale_periods is None else StalePeriodsOnce(erp, stale_periods)
            result = post_record_type(
                dsn=self.dsn,
                client=client,
                record_type="timebill",
                config=self.config,
                settings=EngineSettings(batch_size=5, max_concurrency=2, progress_every_s=3600),
                run_id=run_id,
            )
        return result.outcome

    def replay(self) -> int:
        from psa_erp_sync.posting import replay

        with psycopg.connect(self.dsn) as conn, conn.transaction():
            rows = replay.select(conn, replay.ReplayFilter(record_type="timebill"))
            return replay.release(conn, rows, run_id=f"replay-{self.runs}", actor="test")

    def latest(self, source_id: int) -> tuple[str, str]:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(
                "SELECT action, state FROM ledger.posting WHERE source_id = %s ORDER BY seq DESC LIMIT 1",
                (str(source_id),),
            ).fetchone()
        assert row is not None
        return row[0], row[1]

    def attempts(self, source_id: int) -> int:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM ledger.attempt a JOIN ledger.posting p USING (idempotency_key)"
                " WHERE p.source_id = %s",
                (str(source_id),),
            ).fetchone()
        return int(row[0]) if row else 0

    def open_items(self) -> list[tuple[str, str, str]]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(
                "SELECT source_id, kind, reason_code FROM exceptions.item WHERE status = 'open'"
                " AND kind IN ('parked', 'dead_letter') AND source_id = ANY(%s) ORDER BY 1",
                ([str(ADJUSTED), str(REVERSED)],),
            ).fetchall()

    def held(self) -> dict[str, Decimal]:
        items = self.erp.admin("GET", "/records/timebill", params={"limit": 1000})["items"]
        return {str(i["externalId"]): Decimal(str(i["hours"])) for i in items}


def test_corrections_in_a_closed_period_are_parked_not_dead_lettered(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator
) -> None:
    pipe = Pipeline(clean_ods, psa_sim, erp_sim)
    pipe.run()
    assert pipe.held()[f"psa-te-{ADJUSTED}"] == Decimal("1.00")
    assert f"psa-te-{REVERSED}" in pipe.held()

    for entity in (US, UK):  # October closes after both were posted
        erp_sim.admin("POST", f"/periods/{entity}-2026-10", json={"closed": True, "allLocked": True})
    pipe.psa_admin("PATCH", f"/time_entries/{ADJUSTED}", json={"hours": "2.75"})
    pipe.psa_admin("POST", f"/time_entries/{REVERSED}/unapprove")
    sent_before = pipe.attempts(REVERSED)

    pipe.run()
    # LE-US1 (post_to_first_open): a correcting journal in November carries the difference.
    assert pipe.latest(ADJUSTED) == ("adjust", "confirmed")
    journals = pipe.erp.admin("GET", "/records/journalentry")["items"]
    assert [
        (j["custbody_psa_corrects"], j["custbody_psa_hours"], j["postingPeriod"]["externalId"])
        for j in journals
    ] == [(f"psa-te-{ADJUSTED}", "1.75", f"{US}-2026-11")]
    # LE-UK1 (park): parked for finance, the ERP not asked.
    assert pipe.latest(REVERSED) == ("reverse", "parked")
    assert pipe.open_items() == [(str(REVERSED), "parked", "PERIOD_CLOSED")]
    assert pipe.attempts(REVERSED) == sent_before  # the ERP was not asked
    held = pipe.held()
    assert held[f"psa-te-{ADJUSTED}"] == Decimal("1.00")  # the closed period keeps what it had
    assert f"psa-te-{REVERSED}" in held

    # A replay while October is still closed parks it again, without a refused ERP call.
    assert pipe.replay() >= 1  # with the seed's own parked and rejected entries
    pipe.run(extract=False)
    assert pipe.latest(REVERSED) == ("reverse", "parked")
    assert [kind for _, kind, _ in pipe.open_items()] == ["parked"]
    assert pipe.attempts(REVERSED) == sent_before

    # Finance reopens October and replays: the reversal reaches the ERP.
    for entity in (US, UK):
        erp_sim.admin("POST", f"/periods/{entity}-2026-10", json={"closed": False, "allLocked": False})
    assert pipe.replay() >= 1  # with the seed's own parked and rejected entries
    pipe.run(extract=False)
    assert pipe.latest(REVERSED) == ("reverse", "confirmed")
    held = pipe.held()
    assert held[f"psa-te-{ADJUSTED}"] == Decimal("1.00")  # + its journal: 2.75 h in the ERP
    assert f"psa-te-{REVERSED}" not in held
    assert pipe.open_items() == []


def test_a_reversal_refused_as_period_closed_is_parked_by_policy(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator
) -> None:
    """The period closes after the plan read it (here: between planning and sending, by a stale
    period book): the ERP answers PERIOD_CLOSED to the DELETE, the engine re-reads the periods and
    parks the reversal instead of dead-lettering it."""
    pipe = Pipeline(clean_ods, psa_sim, erp_sim)
    pipe.run()
    pipe.psa_admin("POST", f"/time_entries/{REVERSED}/unapprove")
    before_close = _periods_as_suiteql(erp_sim)  # what the planner will see: October still open
    erp_sim.admin("POST", f"/periods/{UK}-2026-10", json={"closed": True, "allLocked": True})
    outcome = pipe.run(stale_periods=before_close)
    assert outcome["period_closed_replanned"] == 1
    assert pipe.latest(REVERSED) == ("reverse", "parked")
    assert pipe.open_items() == [(str(REVERSED), "parked", "PERIOD_CLOSED")]
    assert f"psa-te-{REVERSED}" in pipe.held()


def _periods_as_suiteql(erp: RunningSimulator) -> list[dict[str, Any]]:
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.posting.periods import PERIOD_QUERY

    with NetSuiteClient(base_url=erp.base_url, account_id="A", token="t") as client:
        return list(client.suiteql(PERIOD_QUERY))
