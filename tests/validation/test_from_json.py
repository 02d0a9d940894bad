"""Validation judges a staged version from its JSON text (pydantic decodes it once, the screen
reads the model): every verdict, reason code, detail and canonical row must be the one the
per-payload judges give the decoded payload, as validation gave it before (issue 16)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psa_erp_sync.config import load_config
from psa_erp_sync.ods import staging
from psa_erp_sync.validation import time_expense as validation
from tests.validation.test_hostile import ENTRY, EXPENSE, _raw, hostile_item, te
from tests.validation.test_rules import AS_OF, REF

FETCHED = datetime(2026, 11, 9, 12, tzinfo=UTC)
TEMPLATES: dict[validation.Kind, dict[str, Any]] = {"time_entry": ENTRY, "expense_entry": EXPENSE}


def _both(kind: validation.Kind, text: str | bytes, fetched_at: datetime | None) -> tuple[Any, Any]:
    """(the per-payload judge of the decoded payload, :func:`judge_staged` of the text)."""
    config = load_config()
    judge = validation.judge_time_entry if kind == "time_entry" else validation.judge_expense
    old = judge(validation._json_loads(text), "h", ref=REF, config=config, as_of=AS_OF, fetched_at=fetched_at)
    new = validation.judge_staged(kind, text, "h", ref=REF, config=config, as_of=AS_OF, fetched_at=fetched_at)
    return old, new


BOUNDARY = [
    # the screen's checks, read from the model when the model accepts the payload
    te(id=2**63),
    te(id=0),
    te(project={"id": 2**64, "name": "p"}),
    te(task={"id": -1, "name": "t"}),
    te(user={"id": 2**63 - 1, "name": "u"}),
    te(id=2**63 - 1),
    te(created_at="0001-01-01T00:00:00+14:00"),
    te(updated_at="9999-12-31T23:59:59-23:59"),
    te(created_at="1969-12-31T23:59:59Z"),
    te(updated_at="1970-01-01T00:00:00+00:00"),
    te(updated_at="1970-01-01T00:59:59+01:00"),
    te(updated_at="2026-11-09T13:00:00Z"),
    te(updated_at="2026-11-09T13:00:01Z"),
    te(updated_at="2026-11-09T14:00:01+01:00"),
    te(updated_at="2099-01-01T00:00:00Z", created_at="bad"),
    te(updated_at="2026-11-03T10:00:00"),
    te(updated_at="9999-12-31T23:59:59+01:00"),
    te(created_at="0001-01-01T00:00:00-01:00"),
    te(hours=_raw("1e400")),
    te(hours=_raw("1" + "0" * 400)),
    te(billable_rate="1e400"),
    te(hours=_raw("-0")),
    te(hours=_raw("0.005")),
    te(hours=_raw("0.0049")),
    te(billable=True, billable_rate=None),
    te(spent_date="2026-11-10"),
    te(notes=None),
    te(id=_raw("1.0")),
    te(id=True),
]


@pytest.mark.parametrize("payload", BOUNDARY)
@pytest.mark.parametrize("fetched_at", [None, FETCHED])
def test_boundary_payloads_get_the_same_verdict(payload: dict[str, Any], fetched_at: datetime | None) -> None:
    old, new = _both("time_entry", msgspec.json.encode(payload), fetched_at)
    assert new == old


@pytest.mark.parametrize("kind", ["time_entry", "expense_entry"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_payload_gets_the_same_verdict_from_its_text(kind: validation.Kind, data: st.DataObject) -> None:
    payload = data.draw(hostile_item(TEMPLATES[kind]) | st.just(TEMPLATES[kind]))
    fetched_at = data.draw(st.sampled_from([None, FETCHED]))
    old, new = _both(kind, msgspec.json.encode(payload), fetched_at)
    assert new == old


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["time_entry", "expense_entry"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_staged_text_gets_the_verdict_of_the_staged_payload(
    pg_dsn: str, kind: validation.Kind, data: st.DataObject
) -> None:
    """A mixed fixture (good, boundary and hostile payloads) through real staging: the text
    PostgreSQL gives back (``jsonb`` normalises numbers) is judged as its decoded payload was."""
    template = TEMPLATES[kind]
    good = [dict(template, id=10**6 + i, notes=f"good {i}") for i in range(3)]
    boundary = [
        dict(p, id=2 * 10**6 + i) if isinstance(p.get("id"), int) else p for i, p in enumerate(BOUNDARY)
    ]
    items = (
        good
        + (boundary if kind == "time_entry" else [])
        + data.draw(st.lists(hostile_item(template), max_size=8))
    )
    random.Random(data.draw(st.integers(0, 2**16))).shuffle(items)
    run_key = f"json-{uuid.uuid4()}"
    with psycopg.connect(pg_dsn) as conn:
        staging.stage_pages(
            conn, [items], run_key=run_key, source_system="psa", endpoint=validation.ENDPOINTS[kind]
        )
        rows = conn.execute(
            "SELECT payload::text, fetched_at FROM staging.raw_record WHERE last_run_key = %s", (run_key,)
        ).fetchall()
        conn.rollback()
    assert rows
    for text, fetched_at in rows:
        old, new = _both(kind, text, fetched_at)
        assert new == old, text
