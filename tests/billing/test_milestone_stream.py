"""Signed-off milestones become billing events within seconds: the PSA simulator's signed
``milestone.completed`` webhook -> the real ingress over loopback -> the inbox -> the stream's
milestone processing (and, through real Airflow, the ``bill_milestones`` task of
``time_expense_stream``). The forecast's full extract stays the safety net."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from psa_erp_sync.api import ingress
from psa_erp_sync.billing.events import build_billing_events
from psa_erp_sync.billing.milestones import process_milestone_inbox
from tests.billing.conftest import events, project, settings
from tests.conftest import RunningSimulator, connect_airflow

SECRET = "whsec-billing-milestones"
MILESTONE = 7001


def _seed_psa(psa_sim: RunningSimulator) -> None:
    psa_sim.admin("POST", "/reset")
    psa_sim.admin(
        "POST",
        "/seed",
        json={
            "clients": [{"id": 1, "name": "Client One"}],
            "projects": [
                {
                    "id": 501,
                    "client_id": 1,
                    "name": "Fixed fee",
                    "code": "FF-501",
                    "is_fixed_fee": True,
                    "fee": "100000.00",
                    "billing_type": "fixed_fee",
                    "legal_entity": "LE-US1",
                    "currency": "USD",
                }
            ],
            "milestones": [
                {
                    "id": MILESTONE,
                    "project_id": 501,
                    "name": "Go-live",
                    "due_date": "2026-11-30",
                    "amount": "40000.00",
                    "status": "planned",
                }
            ],
        },
    )
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})


def _announce(conn: psycopg.Connection, milestone_id: int) -> str:
    delivery = uuid.uuid4().hex
    conn.execute(
        "INSERT INTO inbox.event (delivery_id, source_system, event_type, source_id, occurred_at, payload)"
        " VALUES (%s, 'psa', 'milestone.completed', %s, now(), %s::jsonb)",
        (delivery, str(milestone_id), json.dumps({"data": {"id": milestone_id}})),
    )
    conn.commit()
    return delivery


def test_a_signed_off_milestone_is_billed_within_seconds_of_its_webhook(
    ods: psycopg.Connection, pg_dsn: str, psa_sim: RunningSimulator, psa_client: Any
) -> None:
    _seed_psa(psa_sim)
    project(ods, "501", "fixed_fee")
    ods.commit()
    ingress.signing.SECRET_CACHE_S = 0.0
    app = ingress.create_app(dsn=pg_dsn, secrets=lambda source: ingress.Secrets(SECRET.encode()))
    server = RunningSimulator("ingress", app).start()
    try:
        psa_sim.admin(
            "POST",
            "/webhooks",
            json={
                "url": f"{server.base_url}/psa/events",
                "secret": SECRET,
                "events": ["milestone.completed"],
            },
        )
        started = time.monotonic()
        psa_sim.admin("POST", f"/milestones/{MILESTONE}/sign-off")
        while not ods.execute("SELECT count(*) FROM inbox.event WHERE status = 'pending'").fetchone()[0]:  # type: ignore[index]
            ods.rollback()
            assert time.monotonic() - started < 10, "the webhook never reached the inbox"
            time.sleep(0.05)
        ods.rollback()
        today = datetime.now(UTC).date()
        result = process_milestone_inbox(ods, psa_client, config=settings(), as_of=today, run_id="stream-1")
        elapsed = time.monotonic() - started
    finally:
        server.stop()
        app.state.inbox_writer.close()
    assert elapsed < 5, f"sign-off to billing event took {elapsed:.1f} s"
    assert (result.claimed, result.milestones) == (1, 1)
    assert result.events["created"]["milestone"] == 1
    (row,) = events(ods)
    assert (row["event_ref"].split(":")[:3], row["amount_minor"], row["billing_type"], row["event_date"]) == (
        ["milestone", "psa", str(MILESTONE)],
        4_000_000,
        "fixed_fee",
        today,
    )
    assert row["group_key"].startswith("customer=psa-client-1|project=501|")
    assert ods.execute("SELECT status, outcome FROM inbox.event").fetchall() == [("processed", "read")]
    # The periodic build agrees while the full extract is older than the read: nothing moves.
    again = build_billing_events(ods, config=settings(), as_of=today, run_id="periodic-1")
    ods.commit()
    assert again.total("created") == again.total("withdrawn") == 0 and again.unchanged == {"milestone": 1}


def test_the_later_read_wins_between_the_stream_and_the_full_extract(
    ods: psycopg.Connection, psa_sim: RunningSimulator, psa_client: Any
) -> None:
    _seed_psa(psa_sim)
    project(ods, "501", "fixed_fee")
    # The forecast's last full extract saw the milestone planned; then it was signed off.
    ods.execute(
        "INSERT INTO forecast.src_milestone VALUES (%s, '501', '2026-11-30', 4000000, 'planned', NULL)",
        (str(MILESTONE),),
    )
    ods.execute(
        "INSERT INTO forecast.extract VALUES ('psa.milestones', 'h0', 1, 'forecast-0', now() - interval '1 hour')"
    )
    psa_sim.admin("POST", f"/milestones/{MILESTONE}/sign-off")
    _announce(ods, MILESTONE)
    as_of = datetime.now(UTC).date()
    process_milestone_inbox(ods, psa_client, config=settings(), as_of=as_of, run_id="stream-1")
    assert [r["state"] for r in events(ods)] == ["ready"]
    # Later the PSA loses the milestone; the next full extract no longer lists it: withdrawn.
    ods.execute("DELETE FROM forecast.src_milestone")
    ods.execute("UPDATE forecast.extract SET extracted_at = now() + interval '1 second'")
    ods.commit()
    outcome = build_billing_events(ods, config=settings(), as_of=as_of, run_id="periodic-1")
    ods.commit()
    assert outcome.withdrawn == {"milestone": 1}


def test_a_milestone_gone_at_source_withdraws_its_event(
    ods: psycopg.Connection, psa_sim: RunningSimulator, psa_client: Any
) -> None:
    _seed_psa(psa_sim)
    project(ods, "501", "fixed_fee")
    psa_sim.admin("POST", f"/milestones/{MILESTONE}/sign-off")
    _announce(ods, MILESTONE)
    as_of = datetime.now(UTC).date()
    process_milestone_inbox(ods, psa_client, config=settings(), as_of=as_of, run_id="stream-1")
    ods.execute("DELETE FROM sim_psa.milestones WHERE id = %s", (MILESTONE,))
    _announce(ods, MILESTONE)
    result = process_milestone_inbox(ods, psa_client, config=settings(), as_of=as_of, run_id="stream-2")
    assert result.gone_at_source == 1 and result.events["withdrawn"]["milestone"] == 1
    assert (
        process_milestone_inbox(ods, psa_client, config=settings(), as_of=as_of, run_id="stream-3").claimed
        == 0
    )


@pytest.mark.integration
@pytest.mark.airflow
def test_the_stream_dag_bills_an_announced_milestone(
    airflow_db: str,
    ods: psycopg.Connection,
    pg_dsn: str,
    psa_sim: RunningSimulator,
    erp_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import DAGS

    _seed_psa(psa_sim)
    project(ods, "501", "fixed_fee")
    psa_sim.admin("POST", f"/milestones/{MILESTONE}/sign-off")
    delivery = _announce(ods, MILESTONE)
    connect_airflow(monkeypatch, pg_dsn, psa=psa_sim, erp=erp_sim)
    bag = DagBag(dag_folder=str(DAGS / "time_expense_stream.py"), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("time_expense_stream")
    assert {t.task_id for t in dag.tasks} == {"process_inbox", "bill_milestones"}
    assert not dag.get_task("bill_milestones").upstream_task_ids  # neither waits for the other
    for task in dag.tasks:
        task.retries = 0
    run = dag.test(logical_date=datetime.now(UTC))
    assert run.state == "success"
    ods.rollback()
    assert ods.execute(
        "SELECT status, claimed_by FROM inbox.event WHERE delivery_id = %s", (delivery,)
    ).fetchone() == (
        "processed",
        run.run_id,
    )
    assert [(r["kind"], r["amount_minor"], r["run_id"]) for r in events(ods)] == [
        ("milestone", 4_000_000, run.run_id)
    ]
