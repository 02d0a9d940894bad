"""The long-running inbox consumer (``psa_erp_sync.stream.consumer``) against a real ODS and the
real PSA and ERP simulators over loopback: announced approvals are posted exactly once, a
consumer killed mid-burst loses nothing and doubles nothing, two consumers at once split the
inbox, a hostile record is quarantined while the rest post."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration

TODAY = date(2026, 11, 9)


@pytest.fixture
def firm(clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator) -> dict[str, Any]:
    """A small firm in the PSA and the ERP, its reference extracted into staging (as the batch DAG
    leaves it)."""
    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.extract import psa as psa_extract
    from psa_erp_sync.stream import time_expense as stream
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    spec = FirmSpec(seed=7, consultants=12, customers=10, projects=16, opportunities=5, today=TODAY)
    load_firm(generate_firm(spec), psa_url=psa_sim.base_url, erp_url=erp_sim.base_url, crm_url=None)
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    window = psa_extract.plan_window(
        None, mode="full", as_of=datetime.now(UTC), overlap=timedelta(0), sweep_days=0
    )
    with (
        HarvestClient(base_url=psa_sim.base_url, token="t", account_id="1") as client,
        psycopg.connect(clean_ods, autocommit=True) as conn,
    ):
        for endpoint in stream.REFERENCE_ENDPOINTS:
            psa_extract.extract_endpoint(
                conn, client, endpoint=endpoint, run_key=f"test/ref{endpoint}", window=window, per_page=200
            )
    return {"dsn": clean_ods, "psa": psa_sim, "erp": erp_sim}


def _candidates(dsn: str, n: int) -> list[int]:
    with psycopg.connect(dsn) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM sim_psa.time_entries WHERE NOT is_closed AND billable_rate > 0"
                " AND spent_date <= %s ORDER BY id",
                (TODAY,),
            )
        ]
    assert len(ids) >= n
    return ids[:: max(1, len(ids) // n)][:n]


def _announce(dsn: str, psa: RunningSimulator, ids: list[int], *, duplicate: bool = False) -> None:
    """Approve each entry in the PSA, then store their webhooks in the inbox in one transaction
    (one burst; the commit NOTIFYs)."""
    for entry in ids:
        psa.admin("POST", f"/time_entries/{entry}/approve")
    with psycopg.connect(dsn) as conn:
        for entry in ids:
            for _ in range(2 if duplicate else 1):
                conn.execute(
                    "INSERT INTO inbox.event (delivery_id, source_system, event_type, source_id,"
                    " occurred_at, payload) VALUES (%s, 'psa', 'time_entry.approved', %s, now(), %s::jsonb)",
                    (str(uuid.uuid4()), str(entry), json.dumps({"data": {"id": entry}})),
                )


def _wait_processed(dsn: str, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'processed'), count(*) FROM inbox.event"
            ).fetchone()
        if row == (n, n):
            return
        time.sleep(0.2)
    raise AssertionError(f"inbox not drained: {row}")


@pytest.fixture
def consumers(firm: dict[str, Any]) -> Iterator[Any]:
    """Start consumers in threads (each with its own clients); stop and join them at the end."""
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.stream.consumer import Consumer, ConsumerSettings

    stop = threading.Event()
    threads: list[threading.Thread] = []
    failures: list[BaseException] = []
    stats: dict[str, Any] = {}

    def start(name: str, **settings: Any) -> None:
        def main() -> None:
            try:
                with (
                    HarvestClient(base_url=firm["psa"].base_url, token="t", account_id="1") as psa,
                    NetSuiteClient(base_url=firm["erp"].base_url, account_id="A1", token="t") as erp,
                ):
                    stats[name] = Consumer(
                        dsn=firm["dsn"],
                        psa_client=psa,
                        erp_client=erp,
                        config=load_config(),
                        name=name,
                        settings=ConsumerSettings(**{"lifetime_s": 300.0, "poll_s": 0.5, **settings}),
                        stop=stop,
                    ).run()
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=main, name=f"consumer-{name}", daemon=True)
        thread.start()
        threads.append(thread)

    yield type("Consumers", (), {"start": staticmethod(start), "stats": stats, "failures": failures})
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures


def _posted_once(dsn: str, ids: list[int]) -> dict[str, Any]:
    """Each announced entry: posted (one confirmed post, in the ERP once) or quarantined / parked;
    no posting confirmed twice. Returns the verdicts."""
    wanted = [str(i) for i in ids]
    with psycopg.connect(dsn) as conn:
        posts = Counter(
            r[0]
            for r in conn.execute(
                "SELECT source_id FROM ledger.posting WHERE record_type = 'timebill' AND action = 'post'"
                " AND state IN ('confirmed', 'resolved') AND source_id = ANY(%s)",
                (wanted,),
            )
        )
        twice = conn.execute(
            "SELECT idempotency_key, count(*) FROM ledger.attempt WHERE outcome LIKE 'confirmed%%'"
            " GROUP BY 1 HAVING count(*) > 1"
        ).fetchall()
        held = {
            r[0]
            for r in conn.execute(
                "SELECT source_id FROM exceptions.item WHERE kind = 'quarantine' AND status = 'open'"
                " UNION SELECT source_id FROM ledger.posting WHERE state IN ('parked', 'rejected')"
            )
        }
        in_erp = Counter(
            r[0].removeprefix("psa-te-")
            for r in conn.execute("SELECT external_id FROM sim_erp.record WHERE type = 'timebill'")
        )
    assert twice == []
    assert all(n == 1 for n in posts.values()), posts
    for sid in wanted:
        assert (sid in posts and in_erp[sid] == 1) or sid in held, sid
    return {"posted": set(posts), "held": held & set(wanted)}


def test_the_consumer_posts_each_announced_approval_exactly_once(
    firm: dict[str, Any], consumers: Any
) -> None:
    dsn = firm["dsn"]
    ids = _candidates(dsn, 10)
    consumers.start("solo")
    time.sleep(1.0)  # listening
    started = time.monotonic()
    _announce(dsn, firm["psa"], ids[:5], duplicate=True)  # a duplicate delivery of each
    _wait_processed(dsn, 10)
    _announce(dsn, firm["psa"], ids[5:])  # a second burst, to the same warm consumer
    _wait_processed(dsn, 15)
    elapsed = time.monotonic() - started
    verdicts = _posted_once(dsn, ids)
    assert verdicts["posted"], "nothing was posted"
    with psycopg.connect(dsn) as conn:
        claimers = conn.execute("SELECT DISTINCT claimed_by, attempts FROM inbox.event").fetchall()
    assert claimers == [("consumer:solo", 1)]
    assert elapsed < 60, elapsed


def test_a_consumer_killed_mid_burst_loses_nothing_and_doubles_nothing(
    firm: dict[str, Any], consumers: Any
) -> None:
    from tests.conftest import ROOT

    dsn, erp = firm["dsn"], firm["erp"]
    ids = _candidates(dsn, 12)
    erp.admin("PUT", "/config", json={"service_time_ms": 1500})  # a slow ERP: the burst is in flight
    env = {**os.environ, "PYTHONPATH": f"{ROOT}/include{os.pathsep}{ROOT}"}
    victim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "psa_erp_sync.stream.consumer",
            *("--dsn", dsn, "--psa-url", firm["psa"].base_url, "--erp-url", erp.base_url),
            *("--name", "victim", "--takeover-after", "3", "--renew-every", "1"),
        ],
        env=env,
        cwd=ROOT,
    )
    try:
        time.sleep(3.0)  # imports, LISTEN
        _announce(dsn, firm["psa"], ids)
        deadline = time.monotonic() + 60
        sent = 0
        while time.monotonic() < deadline and not sent:
            with psycopg.connect(dsn) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM ledger.posting WHERE state = 'sent'"
                    " AND source_id IN (SELECT source_id FROM inbox.event WHERE claimed_by = 'consumer:victim')"
                ).fetchone()
            sent = row[0] if row else 0
            time.sleep(0.05)
        assert sent, "the victim never had a batch in flight"
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    with psycopg.connect(dsn) as conn:
        left = conn.execute("SELECT count(*) FROM inbox.event WHERE status = 'claimed'").fetchone()
    assert left == (len(ids),), left  # the victim settled nothing
    erp.admin("PUT", "/config", json={"service_time_ms": 0})
    consumers.start("heir", takeover_after=timedelta(seconds=3), renew_every_s=1.0)
    _wait_processed(dsn, len(ids), timeout=120)
    verdicts = _posted_once(dsn, ids)
    assert verdicts["posted"]
    with psycopg.connect(dsn) as conn:
        settled = conn.execute("SELECT DISTINCT claimed_by FROM inbox.event").fetchall()
    assert settled == [("consumer:heir",)]


def test_two_consumers_at_once_split_the_inbox_and_post_each_record_once(
    firm: dict[str, Any], consumers: Any
) -> None:
    dsn = firm["dsn"]
    ids = _candidates(dsn, 24)
    consumers.start("host-a", limit=3)
    consumers.start("host-b", limit=3)
    time.sleep(1.0)
    _announce(dsn, firm["psa"], ids)
    _wait_processed(dsn, len(ids), timeout=180)
    _posted_once(dsn, ids)
    with psycopg.connect(dsn) as conn:
        claims = conn.execute("SELECT claimed_by, attempts FROM inbox.event").fetchall()
    assert {a for _, a in claims} == {1}, "an event was claimed twice"
    by = Counter(c for c, _ in claims)
    assert set(by) <= {"consumer:host-a", "consumer:host-b"}, by
    assert len(by) == 2, f"one consumer took everything: {by}"


def test_a_hostile_record_is_quarantined_while_the_rest_post(firm: dict[str, Any], consumers: Any) -> None:
    dsn = firm["dsn"]
    ids = _candidates(dsn, 6)
    hostile = ids[2]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE sim_psa.time_entries SET hours = 10000000 WHERE id = %s", (hostile,))
    consumers.start("solo")
    time.sleep(1.0)
    _announce(dsn, firm["psa"], ids)
    _wait_processed(dsn, len(ids))
    verdicts = _posted_once(dsn, ids)
    assert str(hostile) in verdicts["held"]
    assert str(hostile) not in verdicts["posted"]
    assert len(verdicts["posted"]) >= len(ids) - 2, verdicts
    with psycopg.connect(dsn) as conn:
        reason = conn.execute(
            "SELECT reason_code FROM exceptions.item WHERE source_id = %s AND status = 'open'",
            (str(hostile),),
        ).fetchall()
    assert reason == [("HOURS_INVALID",)]


def test_claims_of_a_live_consumer_are_renewed_and_not_taken_over(clean_ods: str) -> None:
    """``takeover`` takes only claims not renewed within the lease; a renewed claim stays put."""
    from psa_erp_sync.ods import inbox

    with psycopg.connect(clean_ods, autocommit=True) as conn:
        for n in range(2):
            conn.execute(
                "INSERT INTO inbox.event (delivery_id, source_system, event_type, source_id, occurred_at,"
                " payload) VALUES (%s, 'psa', 'time_entry.approved', %s, now(), '{}'::jsonb)",
                (f"delivery-{n}", str(n)),
            )
        kwargs: dict[str, Any] = {"source_system": "psa", "event_types": inbox.TIME_EXPENSE_EVENTS}
        assert len(inbox.claim(conn, run_id="consumer:a", **kwargs)) == 2
        conn.execute("UPDATE inbox.event SET claimed_at = now() - interval '1 minute'")
        assert inbox.renew(conn, run_id="consumer:a", source_system="psa") == 2
        short = ("consumer:", timedelta(seconds=30))
        assert inbox.claim(conn, run_id="consumer:b", takeover=short, **kwargs) == []
        conn.execute("UPDATE inbox.event SET claimed_at = now() - interval '1 minute'")
        assert inbox.claim(conn, run_id="run-x", **kwargs) == []  # the DAG's 10-minute lease
        assert len(inbox.claim(conn, run_id="consumer:b", takeover=short, **kwargs)) == 2
