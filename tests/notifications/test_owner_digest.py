"""Owners notified (issue 18.3): one digest per owner and run, over a real SMTP server (aiosmtpd)
and a real webhook receiver, parsed as received; never a second message for an announced item."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI, Request

from psa_erp_sync.config import Notifications, load_config, load_notifications
from psa_erp_sync.notifications.owner_digest import OwnerDigestNotifier, send_digests
from psa_erp_sync.ods import exceptions
from psa_erp_sync.ods.exceptions import Item
from tests.conftest import RunningSimulator, SmtpSink

pytestmark = pytest.mark.integration

# Things that must never reach a message: a person's name, a note, a personal e-mail address.
PERSONAL = ["Ada Lovelace", "ada.lovelace@", "lunch with client"]


def _time_entry(conn: psycopg.Connection, source_id: str, amount_minor: int, currency: str, le: str) -> None:
    conn.execute(
        """
        INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref,
            project_ref, task_ref, legal_entity, hours, billable, bill_rate_minor, amount_minor, currency,
            approved, fingerprint, source_updated_at, source_read_at, record)
        VALUES ('psa', %s, 'v1', %s, '7', '70', '1', %s, 1, true, %s, %s, %s, true, %s, now(), now(), '{}')
        """,
        (source_id, date(2026, 11, 3), le, amount_minor, amount_minor, currency, f"fp-{source_id}"),
    )


def _item(
    source_id: str, reason: str, owner: str, le: str | None, kind: str = "dead_letter", **detail: Any
) -> Item:
    return Item(
        kind=kind,
        domain="time_expense",
        source_system="psa",
        record_type="time_entry",
        source_id=source_id,
        reason_code=reason,
        owner=owner,
        legal_entity=le,
        detail={
            "note": PERSONAL[2],
            "user_name": PERSONAL[0],
            "email": PERSONAL[1] + "example.com",
            **detail,
        },
    )


@pytest.fixture
def seeded(clean_ods: str) -> str:
    with psycopg.connect(clean_ods) as conn:
        _time_entry(conn, "11", 125_050, "USD", "LE-US1")
        _time_entry(conn, "12", 10_000, "USD", "LE-US1")
        _time_entry(conn, "13", 40_000, "GBP", "LE-UK1")
        exceptions.quarantine_many(
            conn,
            [
                _item("11", "PROJECT_INACTIVE", "finance-ops-us-east", "LE-US1"),
                _item("12", "PROJECT_INACTIVE", "finance-ops-us-east", "LE-US1"),
                _item("99", "HOURS_INVALID", "finance-ops-us-east", "LE-US1", kind="quarantine"),
                _item("13", "PERIOD_CLOSED", "finance-ops-uk", "LE-UK1", kind="parked"),
                _item(
                    "14",
                    "RATE_MISSING",
                    "finance-ops-uk",
                    "LE-UK1",
                    kind="quarantine",
                    amount_minor="5000",
                    currency="GBP",
                ),
            ],
            run_id="run-1",
        )
    return clean_ods


class Webhooks:
    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any], str | None]] = []
        self.fail = False
        app = FastAPI()

        @app.post("/hook/{name}")
        async def hook(name: str, request: Request) -> dict[str, bool]:
            if self.fail:
                from fastapi import HTTPException

                raise HTTPException(status_code=503)
            self.received.append((name, await request.json(), request.headers.get("authorization")))
            return {"ok": True}

        self.server = RunningSimulator("webhooks", app).start()

    def connection(self, name: str, token: str | None = None) -> str:
        return json.dumps(
            {"conn_type": "http", "host": f"{self.server.base_url}/hook/{name}", "password": token}
        )


@pytest.fixture
def webhooks(monkeypatch: pytest.MonkeyPatch) -> Any:
    hooks = Webhooks()
    monkeypatch.setenv("AIRFLOW_CONN_TEAMS_FINANCE_UK", hooks.connection("teams", "s3cret"))
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_FP_AND_A", hooks.connection("slack"))
    yield hooks
    hooks.server.stop()


def _settings() -> Notifications:
    """The shipped config, with chat channels for two owners (Teams for the UK, Slack for FP&A)."""
    shipped = load_notifications().model_dump()
    shipped["recipients"]["owners"]["finance-ops-uk"]["teams"] = ["teams_finance_uk"]
    shipped["recipients"]["owners"]["fp-and-a"]["slack"] = ["slack_fp_and_a"]
    return Notifications.model_validate(shipped)


def _send(dsn: str, run_id: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return send_digests(
            conn,
            settings=_settings(),
            config_fixes=load_config().fix_for,
            dag_id="time_expense_posting",
            run_id=run_id,
        )


def _html(message: Any) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None, message
    return str(part.get_content())


def test_each_owner_gets_one_digest_with_counts_amounts_and_a_link(
    seeded: str, smtp_sink: SmtpSink, webhooks: Webhooks
) -> None:
    assert _send(seeded, "run-1") == []
    by_owner = {m["X-PSA-ERP-Sync-Owner"]: m for m in smtp_sink.messages}
    assert sorted(by_owner) == ["finance-ops-uk", "finance-ops-us-east"]
    assert len(smtp_sink.messages) == 2
    us = by_owner["finance-ops-us-east"]
    assert us["Subject"] == "[psa-erp-sync] 3 new exception items for finance-ops-us-east"
    assert us["X-Test-Rcpt"] == "finance-ops-us-east@example.com"
    assert us["From"] == "psa-erp-sync@example.com"
    assert us["X-PSA-ERP-Sync-Run"] == "time_expense_posting/run-1"
    body = _html(us)
    cells = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>", body)
    assert ("PROJECT_INACTIVE", "dead_letter", "2") in cells and ("HOURS_INVALID", "quarantine", "1") in cells
    assert "USD 1350.50" in body  # 1,250.50 + 100.00 of the two canonical entries
    assert "1 item(s) without a known amount" in body  # the quarantined record never became canonical
    assert "Reactivate the project" in body  # the fix for PROJECT_INACTIVE, from config/ownership.yaml
    assert "http://localhost:8080/psa-erp-sync/console/?owner=finance-ops-us-east&amp;status=open" in body
    uk = _html(by_owner["finance-ops-uk"])
    assert "GBP 450.00" in uk  # 400.00 canonical + 50.00 from the item's own detail
    for message in smtp_sink.messages:
        text = message.as_string()
        assert not any(p in text for p in PERSONAL), text
    # The UK owner's Teams channel got the same digest, with the connection's token.
    assert [(name, auth) for name, _, auth in webhooks.received] == [("teams", "Bearer s3cret")]
    card = webhooks.received[0][1]
    assert card["@type"] == "MessageCard" and "2 new exception items for finance-ops-uk" in card["title"]
    assert not any(p in json.dumps(card) for p in PERSONAL)
    with psycopg.connect(seeded) as conn:
        sent = conn.execute(
            "SELECT owner, run_id, channels, items FROM exceptions.notification ORDER BY owner"
        ).fetchall()
        unannounced = conn.execute(
            "SELECT count(*) FROM exceptions.item WHERE notified_at IS NULL"
        ).fetchone()
    assert sent == [
        ("finance-ops-uk", "run-1", ["email", "teams:teams_finance_uk"], 2),
        ("finance-ops-us-east", "run-1", ["email"], 3),
    ]
    assert unannounced == (0,)


def test_no_second_message_for_announced_items_only_for_new_ones(
    seeded: str, smtp_sink: SmtpSink, webhooks: Webhooks
) -> None:
    _send(seeded, "run-1")
    smtp_sink.messages.clear()
    _send(seeded, "run-2")  # nothing new
    assert smtp_sink.messages == []
    with psycopg.connect(seeded) as conn:  # the same items seen again by a later run, and one new item
        exceptions.quarantine_many(
            conn,
            [
                _item("11", "PROJECT_INACTIVE", "finance-ops-us-east", "LE-US1"),
                _item("15", "TASK_UNKNOWN", "finance-ops-us-east", "LE-US1", kind="quarantine"),
            ],
            run_id="run-3",
        )
    _send(seeded, "run-3")
    assert [m["Subject"] for m in smtp_sink.messages] == [
        "[psa-erp-sync] 1 new exception item for finance-ops-us-east"
    ]
    assert "TASK_UNKNOWN" in _html(smtp_sink.messages[0]) and "PROJECT_INACTIVE" not in _html(
        smtp_sink.messages[0]
    )


def test_a_failing_channel_does_not_stop_the_others_and_no_channel_means_a_retry(
    seeded: str, smtp_sink: SmtpSink, webhooks: Webhooks
) -> None:
    webhooks.fail = True  # the UK owner's Teams webhook answers 503: the e-mail still goes
    failures = _send(seeded, "run-1")
    assert len(failures) == 1 and failures[0].startswith(
        "finance-ops-uk over teams:teams_finance_uk: HTTPStatusError"
    )
    assert sorted(m["X-PSA-ERP-Sync-Owner"] for m in smtp_sink.messages) == [
        "finance-ops-uk",
        "finance-ops-us-east",
    ]
    with psycopg.connect(seeded) as conn:
        assert conn.execute("SELECT count(*) FROM exceptions.item WHERE notified_at IS NULL").fetchone() == (
            0,
        )
        assert conn.execute(
            "SELECT channels FROM exceptions.notification WHERE owner = 'finance-ops-uk'"
        ).fetchone() == (["email"],)
        exceptions.quarantine_many(
            conn, [_item("16", "TASK_UNKNOWN", "finance-ops-uk", "LE-UK1", kind="quarantine")], run_id="run-2"
        )
    smtp_sink.stop()  # now no channel takes the UK owner's digest: its item waits for the next run
    failures = _send(seeded, "run-2")
    assert {f.split(":")[0] for f in failures} == {"finance-ops-uk over email", "finance-ops-uk over teams"}
    with psycopg.connect(seeded) as conn:
        assert conn.execute("SELECT source_id FROM exceptions.item WHERE notified_at IS NULL").fetchall() == [
            ("16",)
        ]
    webhooks.fail = False
    third = _send(seeded, "run-3")  # the SMTP server is still down, the webhook is back
    assert [f.split(":")[0] for f in third] == ["finance-ops-uk over email"]
    with psycopg.connect(seeded) as conn:  # told over Teams this time: announced
        assert conn.execute("SELECT count(*) FROM exceptions.item WHERE notified_at IS NULL").fetchone() == (
            0,
        )
        assert conn.execute(
            "SELECT channels FROM exceptions.notification WHERE run_id = 'run-3'"
        ).fetchone() == (["teams:teams_finance_uk"],)


def test_without_an_smtp_connection_digests_are_off_and_nothing_is_marked(
    seeded: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.conftest import connect_airflow

    monkeypatch.delenv("AIRFLOW_CONN_SMTP_DEFAULT", raising=False)
    connect_airflow(monkeypatch, seeded)
    context = {"dag_run": type("Run", (), {"dag_id": "d", "run_id": "r"})()}
    OwnerDigestNotifier().notify(context)
    assert "owner digests are off" in caplog.text
    with psycopg.connect(seeded) as conn:
        assert conn.execute("SELECT count(*) FROM exceptions.item WHERE notified_at IS NULL").fetchone() == (
            5,
        )
