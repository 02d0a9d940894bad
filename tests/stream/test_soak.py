"""Soak: the stream and the batch work the same month at the same time while the PSA keeps
changing (issue 13 items 5, 6 and 12).

Real PSA and ERP simulators and the real webhook ingress over loopback, a real ODS. Three
threads for ~30 s: the PSA (edits, unapprovals, re-approvals and deletions, concentrated on a
few hot entries so both paths read the same records while they change), the stream (the
``process_inbox`` a triggered run calls, fed by the PSA's lossy webhooks) and the batch
(extract -> validate -> post, the functions the DAG's tasks call; incremental passes and sweeps).
Then the PSA stops, the inbox drains, one last sweep runs, and:

- canonical holds no stale version: every live row is the PSA's current version, every deleted
  row is gone from the PSA, and no audited update ever moved a row back in time;
- the ERP equals the approved PSA set to the cent (the reconciliation's own read-back);
- nothing was posted twice and no deletion was refused.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest

from psa_erp_sync.api import ingress
from tests.conftest import RunningSimulator
from tests.dags.test_time_expense_dag import AS_OF, TODAY

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "whsec-soak"
SOAK_SECONDS = 30.0
REFERENCE = ("/v2/projects", "/v2/users", "/v2/task_assignments", "/v2/expense_categories")
TRANSACTIONAL = ("/v2/time_entries", "/v2/expenses")
KINDS = {"time_entry": "/v2/time_entries", "expense_entry": "/v2/expenses"}


def _batch_pass(dsn: str, psa_url: str, erp_url: str, run_id: str, mode: str) -> None:
    """One time_expense_posting run, by the functions its tasks call (extract, validate, post)."""
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.extract import psa as psa_extract
    from psa_erp_sync.ods import staging
    from psa_erp_sync.posting.engine import EngineSettings
    from psa_erp_sync.posting.service import post_record_type
    from psa_erp_sync.validation import time_expense as validation

    config = load_config()
    settings = config.mappings.extract
    keys = {e: psa_extract.run_key_for("soak", run_id, e) for e in REFERENCE + TRANSACTIONAL}
    with (
        HarvestClient(base_url=psa_url, token="t", account_id="1") as psa,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        for endpoint in REFERENCE + TRANSACTIONAL:
            window = psa_extract.plan_window(
                staging.get_watermark(conn, "psa", endpoint),
                mode="full" if endpoint in REFERENCE else mode,  # type: ignore[arg-type]
                as_of=AS_OF,
                overlap=timedelta(minutes=settings.overlap_minutes),
                sweep_days=settings.sweep_days_back,
            )
            psa_extract.extract_endpoint(
                conn, psa, endpoint=endpoint, run_key=keys[endpoint], window=window, per_page=500
            )
        ref = validation.PsaReference.from_staging(conn, {e: keys[e] for e in REFERENCE})
        for kind, endpoint in KINDS.items():
            with conn.transaction():
                validation.validate_run(
                    conn,
                    kind=kind,
                    run_key=keys[endpoint],
                    ref=ref,
                    config=config,  # type: ignore[arg-type]
                    as_of=AS_OF,
                    dag_run_id=run_id,
                ).check()
    with NetSuiteClient(base_url=erp_url, account_id="A1", token="t") as erp:
        for record_type in ("timebill", "expensereport"):
            outcome = post_record_type(
                dsn=dsn,
                client=erp,
                record_type=record_type,
                config=config,
                settings=EngineSettings(max_concurrency=4, progress_every_s=60.0),
                run_id=run_id,
            ).outcome
            assert not outcome.get("still_pending"), outcome


def _stream_run(dsn: str, psa_url: str, erp_url: str, run_id: str) -> int:
    """One time_expense_stream run (``process_inbox``); returns the events it claimed."""
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.stream.time_expense import process_inbox

    with (
        HarvestClient(base_url=psa_url, token="t", account_id="1") as psa,
        NetSuiteClient(base_url=erp_url, account_id="A1", token="t") as erp,
    ):
        result = process_inbox(
            dsn=dsn,
            psa_client=psa,
            erp_client=erp,
            config=load_config(),
            run_id=run_id,
            run_key_prefix=f"time_expense_stream/{run_id}",
            as_of=AS_OF + timedelta(minutes=30),
        )
    return result.claimed


class Loop(threading.Thread):
    """Run ``step(n)`` until stopped; a failing step is retried (as Airflow retries a task) and
    recorded; three failures in a row end the loop."""

    def __init__(self, name: str, step: Callable[[int], Any], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.step, self.stop, self.n = step, stop, 0
        self.errors: list[str] = []
        self.retried = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.n += 1
            for attempt in range(3):
                try:
                    self.step(self.n)
                    break
                except Exception:  # recorded, and asserted on by the test
                    self.retried += 1
                    if attempt == 2:
                        self.errors.append(traceback.format_exc())
                        return


def _mutate(psa_url: str, entries: list[int], stop_at: float, seed: int = 13) -> Counter[str]:
    """The PSA changing during the soak: hot entries edited, unapproved and re-approved over and
    over, and a few deletions (well under the mass-deletion share)."""
    rng = random.Random(seed)
    hot = rng.sample(entries, 20)
    doomed = set(rng.sample([e for e in entries if e not in hot], 8))
    deleted: set[int] = set()
    done: Counter[str] = Counter()
    with httpx.Client(base_url=f"{psa_url}/admin", timeout=30) as http:
        while time.monotonic() < stop_at:
            roll = rng.random()
            if roll < 0.06 and doomed - deleted:
                target = sorted(doomed - deleted)[0]
                response = http.delete(f"/time_entries/{target}")
                deleted.add(target)
                kind = "delete"
            else:
                target = rng.choice(hot)
                if roll < 0.6:
                    kind = "edit"
                    response = http.patch(f"/time_entries/{target}", json={"hours": rng.randrange(2, 33) / 4})
                else:
                    kind = rng.choice(["unapprove", "approve"])
                    response = http.post(f"/time_entries/{target}/{kind}")
            assert response.status_code < 300, (kind, target, response.status_code, response.text)
            done[kind] += 1
            time.sleep(rng.uniform(0.02, 0.12))
    return done


def _settle(psa: RunningSimulator, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deliveries = psa.admin("GET", "/webhooks/deliveries")["deliveries"]
        if all(d["status"] != "pending" for d in deliveries):
            return
        time.sleep(0.1)
    raise AssertionError("webhook deliveries did not settle")


def test_stream_and_batch_on_the_same_changing_month_end_with_the_approved_set_posted(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator
) -> None:
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.reconcile import erp_readback
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    dsn, psa_url, erp_url = clean_ods, psa_sim.base_url, erp_sim.base_url
    firm = generate_firm(
        FirmSpec(seed=7, consultants=12, customers=10, projects=16, opportunities=5, today=TODAY)
    )
    load_firm(firm, psa_url=psa_url, erp_url=erp_url, crm_url=None, include_schedule=False)
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    _batch_pass(dsn, psa_url, erp_url, "scheduled__soak_baseline", "full")
    with psycopg.connect(dsn) as conn:
        entries = [
            int(r[0])
            for r in conn.execute(
                "SELECT source_id FROM canonical.time_entry WHERE approved AND NOT is_deleted ORDER BY 1"
            )
        ]
    assert len(entries) > 100

    ingress.signing.SECRET_CACHE_S = 0.0
    app = ingress.create_app(dsn=dsn, secrets=lambda source: ingress.Secrets(SECRET.encode()))
    server = RunningSimulator("ingress", app).start()
    stop = threading.Event()
    stream = Loop("stream", lambda n: _stream_run(dsn, psa_url, erp_url, f"asset_triggered__soak_{n}"), stop)
    batch = Loop(
        "batch",
        lambda n: _batch_pass(
            dsn, psa_url, erp_url, f"scheduled__soak_{n}", "sweep" if n % 2 else "incremental"
        ),
        stop,
    )
    try:
        psa_sim.admin(
            "PUT",
            "/config",
            json={
                "webhook_drop_rate": 0.05,
                "webhook_duplicate_rate": 0.05,
                "webhook_reorder_window": 8,
                "webhook_seed": 5,
            },
        )
        psa_sim.admin(
            "POST",
            "/webhooks",
            json={
                "url": f"{server.base_url}/psa/events",
                "secret": SECRET,
                "events": [
                    "time_entry.approved",
                    "time_entry.updated",
                    "time_entry.unapproved",
                    "time_entry.deleted",
                    "expense.approved",
                ],
            },
        )
        stream.start()
        batch.start()
        mutations = _mutate(psa_url, entries, time.monotonic() + SOAK_SECONDS)
        _settle(psa_sim)
    finally:
        stop.set()
        stream.join(timeout=120)
        batch.join(timeout=120)
        server.stop()
        app.state.inbox_writer.close()
    assert not stream.errors and not batch.errors, (stream.errors + batch.errors)[:2]
    assert stream.n > 3 and batch.n > 1, (stream.n, batch.n)
    assert mutations["edit"] and mutations["unapprove"] and mutations["delete"], mutations

    # Quiet PSA: drain what is left in the inbox, then the last sweep.
    for n in range(10):
        if not _stream_run(dsn, psa_url, erp_url, f"asset_triggered__soak_drain_{n}"):
            break
    _batch_pass(dsn, psa_url, erp_url, "scheduled__soak_final", "sweep")

    with psycopg.connect(dsn) as conn:
        psa_now = {
            str(i): (u, h, closed)
            for i, u, h, closed in conn.execute(
                "SELECT id, date_trunc('second', updated_at), hours, is_closed FROM sim_psa.time_entries"
            )
        }
        canonical = {
            sid: (u, h, approved, deleted)
            for sid, u, h, approved, deleted in conn.execute(
                "SELECT source_id, source_updated_at, hours, approved, is_deleted FROM canonical.time_entry"
            )
        }
        quarantined = {
            r[0]
            for r in conn.execute(
                "SELECT source_id FROM exceptions.item WHERE kind = 'quarantine' AND record_type = 'time_entry'"
                " AND status = 'open'"
            )
        }
        backwards = conn.execute(
            "SELECT entity_key, before->>'source_updated_at', after->>'source_updated_at' FROM audit.change"
            " WHERE entity = 'canonical.time_entry' AND action = 'update'"
            " AND (after->>'source_updated_at')::timestamptz < (before->>'source_updated_at')::timestamptz"
        ).fetchall()
        posted_twice = conn.execute(
            "SELECT idempotency_key FROM ledger.attempt WHERE outcome LIKE 'confirmed%%'"
            " GROUP BY 1 HAVING count(*) > 1"
        ).fetchall()
    assert backwards == [], f"a stale version overwrote a newer one: {backwards[:5]}"
    stale = []
    for sid, (updated_at, hours, approved, deleted) in canonical.items():
        if deleted:
            if sid in psa_now:
                stale.append((sid, "deleted in canonical, present in the PSA"))
            continue
        if sid not in psa_now:
            stale.append((sid, "deleted in the PSA, live in canonical"))
        elif sid not in quarantined and not _converged((updated_at, hours, approved), psa_now[sid]):
            stale.append((sid, (updated_at, hours, approved), psa_now[sid]))
    assert stale == [], f"{len(stale)} stale canonical rows, e.g. {stale[:3]}"
    assert all(sid in canonical or sid in quarantined for sid in psa_now)

    with NetSuiteClient(base_url=erp_url, account_id="A1", token="t") as erp, psycopg.connect(dsn) as conn:
        for record_type, prefix in (("timebill", "psa-te-"), ("expensereport", "psa-ex-")):
            want, want_rows = erp_readback.expected(conn, record_type)
            have, have_rows = erp_readback.actual(erp, record_type, prefix)
            diff = erp_readback.differences(want_rows, have_rows)
            assert (diff["missing_in_erp"], diff["unexpected_in_erp"], diff["different_in_erp"]) == (
                0,
                0,
                0,
            ), (
                record_type,
                diff,
            )
            assert want == have, (record_type, want.as_dict(), have.as_dict())
    assert posted_twice == []


def _converged(canonical: tuple[Any, ...], psa: tuple[Any, ...]) -> bool:
    """Canonical holds the PSA's newest content. An edit canonical does not carry (same hours and
    approval: notes, or the billed mark) is no new version, so the row keeps the update time of the
    version it holds (content versioning, docs/performance.md); it may never be newer than the PSA's."""
    (c_updated, *c_content), (p_updated, *p_content) = canonical, psa
    return c_content == p_content and c_updated <= p_updated
