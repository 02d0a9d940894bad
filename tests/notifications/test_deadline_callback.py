"""The close-deadline callback and wiring, without a scheduler: the message the owner gets, a
channel that fails, the DAGs' alerts and their round trip through Airflow's serialization."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from psa_erp_sync import config as cfg
from psa_erp_sync.notifications.deadlines import (
    CloseDeadline,
    DeadlineAlertNotSent,
    close_deadline_alerts,
    notify_deadline_missed,
)
from tests.conftest import SmtpSink, free_port

ROOT = Path(__file__).resolve().parents[2]
CONTEXT: dict[str, Any] = {
    "dag_run": {
        "dag_id": "time_expense_posting",
        "dag_run_id": "scheduled__2026-12-07T12:00:00+00:00",
        "state": "failed",
    },
    "deadline": {"id": "0193", "deadline_time": "2026-12-08T20:00:00+00:00"},
}


def test_the_owner_gets_one_clear_message(smtp_sink: SmtpSink) -> None:
    sent = asyncio.run(
        notify_deadline_missed(dag_id="time_expense_posting", legal_entity="LE-UK1", context=dict(CONTEXT))
    )
    assert sent == ["email"]
    (message,) = smtp_sink.messages
    assert message["Subject"] == (
        "[psa-erp-sync] Deadline missed: time_expense_posting for LE-UK1 by 2026-12-08 20:00 GMT"
        " (2026-12-08 20:00 UTC) (run scheduled__2026-12-07T12:00:00+00:00)"
    )
    assert message["X-Test-Rcpt"] == "finance-ops-uk@example.com"
    body = message.get_body(("html",)).get_content()
    assert "approved by 18:00 local, in the ERP by 20:00 local on business day +1" in body
    assert "state when the deadline passed: failed" in body


def test_new_york_times_are_shown_in_new_york(smtp_sink: SmtpSink) -> None:
    asyncio.run(
        notify_deadline_missed(dag_id="month_end_close", legal_entity="LE-US1", context=dict(CONTEXT))
    )
    (message,) = smtp_sink.messages
    assert "by 2026-12-08 15:00 EST (2026-12-08 20:00 UTC)" in message["Subject"]
    assert message["X-Test-Rcpt"] == "finance-ops-us-east@example.com"


def test_an_alert_no_channel_takes_fails_the_callback(
    monkeypatch: pytest.MonkeyPatch, smtp_sink: SmtpSink
) -> None:
    settings = cfg.load_notifications()
    teams_only = settings.model_copy(
        update={
            "recipients": cfg.RecipientMap(
                default=settings.recipients.default,
                owners={"finance-ops-uk": cfg.Recipients(teams=["teams_uk"])},
            )
        }
    )
    monkeypatch.setattr(cfg, "load_notifications", lambda config_dir=None: teams_only)
    monkeypatch.setenv(
        "AIRFLOW_CONN_TEAMS_UK", f'{{"conn_type": "http", "host": "http://127.0.0.1:{free_port()}/hook"}}'
    )
    with pytest.raises(DeadlineAlertNotSent, match="teams:teams_uk"):
        asyncio.run(
            notify_deadline_missed(
                dag_id="time_expense_posting", legal_entity="LE-UK1", context=dict(CONTEXT)
            )
        )
    assert smtp_sink.messages == []


def test_the_close_dags_carry_one_close_deadline_per_legal_entity(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("PSA_ERP_SYNC_DEADLINE_ALERTS", "on")  # tests/conftest.py turns them off

    entities = sorted(cfg.load_config().legal_entities.legal_entities)
    for dag_id in ("time_expense_posting", "month_end_close", "revenue_recognition", "billing"):
        bag = DagBag(str(ROOT / "dags" / f"{dag_id}.py"))
        assert bag.import_errors == {}
        alerts = bag.dags[dag_id].deadline
        assert [a.reference for a in alerts] == [CloseDeadline(legal_entity=e) for e in entities]
        assert all(a.callback.path.endswith("notifications.deadlines.notify_deadline_missed") for a in alerts)
        assert [a.callback.kwargs["legal_entity"] for a in alerts] == entities


def test_the_reference_round_trips_through_airflow_with_the_plugin() -> None:
    from airflow.serialization.decoders import decode_deadline_alert
    from airflow.serialization.encoders import encode_deadline_alert

    (alert, *_) = close_deadline_alerts("time_expense_posting")
    encoded = encode_deadline_alert(alert)
    assert encoded["reference"]["__class_path"] == "psa_erp_sync.notifications.deadlines.CloseDeadline"
    decoded = decode_deadline_alert(encoded)  # finds the class through the plugin's deadline_references
    assert decoded.reference.inner_ref == alert.reference
    # Monday 10:00 New York: due Tuesday 20:00 New York (what the scheduler stores at run creation).
    assert CloseDeadline(legal_entity="LE-US1") == CloseDeadline.deserialize_reference(
        CloseDeadline(legal_entity="LE-US1").serialize_reference()
    )
    from psa_erp_sync.notifications.deadlines import close_deadline

    assert close_deadline("time_expense_posting", "LE-US1", datetime(2026, 3, 2, 15, tzinfo=UTC)) == datetime(
        2026, 3, 4, 1, tzinfo=UTC
    )


def test_the_alerts_can_be_turned_off_for_dag_test(monkeypatch: pytest.MonkeyPatch) -> None:
    from psa_erp_sync.flows import close_deadlines

    monkeypatch.setenv("PSA_ERP_SYNC_DEADLINE_ALERTS", "off")
    assert close_deadlines("time_expense_posting") == {}
    monkeypatch.setenv("PSA_ERP_SYNC_DEADLINE_ALERTS", "on")
    assert len(close_deadlines("time_expense_posting")["deadline"]) == 3
