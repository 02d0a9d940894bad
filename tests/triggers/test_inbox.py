"""InboxArrivalTrigger against a real ODS: deterministic serialization, NOTIFY wakes it at once,
polling finds what arrived before it listened, and announced events are not announced again."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import psycopg
import pytest

from devtools.airflow_env import psycopg_parts
from psa_erp_sync.triggers.inbox import InboxArrivalTrigger

pytestmark = pytest.mark.integration

TYPES = ["time_entry.approved", "expense.approved"]


def _insert(dsn: str, event_type: str = "time_entry.approved", source: str = "psa") -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO inbox.event (delivery_id, source_system, event_type, source_id, payload)"
            " VALUES (%s, %s, %s, '1', '{}')",
            (str(uuid.uuid4()), source, event_type),
        )


def test_serialize_is_deterministic_and_round_trips() -> None:
    a = InboxArrivalTrigger(event_types=["b.x", "a.y"], poll_seconds=2)
    b = InboxArrivalTrigger(event_types=("a.y", "b.x"), poll_seconds=2.0)
    assert a.serialize() == b.serialize()
    path, kwargs = a.serialize()
    assert path == "psa_erp_sync.triggers.inbox.InboxArrivalTrigger"
    assert json.dumps(kwargs, sort_keys=True) == json.dumps(
        {
            "event_types": ["a.y", "b.x"],
            "ods_conn_id": "ods_default",
            "poll_seconds": 2.0,
            "source_system": "psa",
        },
        sort_keys=True,
    )
    assert InboxArrivalTrigger(**kwargs).serialize() == a.serialize()


def test_fires_on_notify_quickly_polls_for_earlier_arrivals_and_ignores_other_events(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_ODS_DEFAULT", json.dumps({"conn_type": "postgres", **psycopg_parts(clean_ods)})
    )
    _insert(clean_ods)  # before the trigger runs: only polling can see it
    trigger = InboxArrivalTrigger(event_types=TYPES, poll_seconds=30.0)

    async def scenario() -> dict[str, Any]:
        events = trigger.run()
        first = await asyncio.wait_for(events.__anext__(), timeout=10)
        # Not ours (another source, another event type): no event.
        await asyncio.to_thread(_insert, clean_ods, "milestone.completed")
        await asyncio.to_thread(_insert, clean_ods, "invoice.paid", "erp")
        nothing = asyncio.ensure_future(events.__anext__())
        done, _ = await asyncio.wait({nothing}, timeout=1.0)
        assert not done, "fired for an event type it does not watch"
        started = time.monotonic()
        await asyncio.to_thread(_insert, clean_ods, "expense.approved")
        second = await asyncio.wait_for(nothing, timeout=10)
        latency = time.monotonic() - started
        await events.aclose()
        return {"first": first.payload, "second": second.payload, "latency": latency}

    got = asyncio.run(scenario())
    assert got["first"]["max_seq"] < got["second"]["max_seq"]
    # Woken by NOTIFY, not by the 30 s poll.
    assert got["latency"] < 5.0, got


def test_pending_events_left_over_fire_once_not_in_a_loop(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_ODS_DEFAULT", json.dumps({"conn_type": "postgres", **psycopg_parts(clean_ods)})
    )
    _insert(clean_ods)
    trigger = InboxArrivalTrigger(event_types=TYPES, poll_seconds=0.2)

    async def scenario() -> int:
        events = trigger.run()
        await asyncio.wait_for(events.__anext__(), timeout=10)
        again = asyncio.ensure_future(events.__anext__())
        done, _ = await asyncio.wait({again}, timeout=1.5)  # several polls pass; the event is still pending
        again.cancel()
        await asyncio.gather(again, return_exceptions=True)
        await events.aclose()
        return len(done)

    assert asyncio.run(scenario()) == 0


def test_with_a_minimum_age_it_announces_only_what_waited_that_long(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net's watcher: a fresh event (the consumer's) is not announced; once it has been
    pending ``min_age_seconds`` it is, by the poll."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_ODS_DEFAULT", json.dumps({"conn_type": "postgres", **psycopg_parts(clean_ods)})
    )
    trigger = InboxArrivalTrigger(event_types=TYPES, poll_seconds=0.2, min_age_seconds=2.0)
    assert trigger.serialize()[1]["min_age_seconds"] == 2.0

    async def scenario() -> float:
        events = trigger.run()
        first = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.5)  # listening
        started = time.monotonic()
        await asyncio.to_thread(_insert, clean_ods)
        await asyncio.wait_for(first, timeout=15)
        waited = time.monotonic() - started
        await events.aclose()
        return waited

    waited = asyncio.run(scenario())
    assert 1.8 <= waited < 6.0, waited
