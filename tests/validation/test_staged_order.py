"""The order validation reads a run's staged versions in, with the payload as text (migration 0040):
numeric ids in numeric order, other ids after them, the versions of one id by ``updated_at``."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import pytest

from psa_erp_sync.ods import staging
from psa_erp_sync.validation import time_expense as validation

pytestmark = pytest.mark.integration

ENDPOINT = "/v2/time_entries"
READ = datetime(2026, 11, 3, tzinfo=UTC)


def _row(payload: object) -> tuple[str, str, str, datetime]:
    return (json.dumps(payload), "h", "1", READ)


def test_versions_of_one_id_in_update_order_missing_and_null_last() -> None:
    late = _row({"id": 1, "updated_at": "2026-11-03T12:00:00Z"})
    early = _row({"id": 1, "updated_at": "2026-11-03T09:00:00Z"})
    none = _row({"id": 1, "updated_at": None})
    missing = _row({"id": 1})
    hostile = ("[1, 2", "h", "1", READ)  # not JSON: sorted as if it had no update time
    number = _row({"id": 1, "updated_at": 5})
    assert validation._in_update_order([late, none, early]) == [early, late, none]
    assert validation._in_update_order([missing, late, hostile, early]) == [early, late, missing, hostile]
    assert validation._in_update_order([late, number]) == [late, number]  # "2026..." < "5", as text
    assert validation._in_update_order([late]) == [late]


def test_a_runs_versions_are_read_by_numeric_id_then_update_time(clean_ods: str) -> None:
    items: list[object] = [
        {"id": 10, "notes": "b", "updated_at": "2026-11-03T12:00:00Z"},
        {"id": 10, "notes": "a", "updated_at": "2026-11-03T09:00:00Z"},
        {"id": "x-1", "updated_at": "2026-11-03T09:00:00Z"},
        {"id": 9, "updated_at": "2026-11-03T09:00:00Z"},
        {"id": 100, "updated_at": "2026-11-03T09:00:00Z"},
    ]
    raw = [[json.dumps(i).encode() for i in items]]
    with psycopg.connect(clean_ods) as conn:
        staging.stage_pages(conn, raw, run_key="r1", source_system="psa", endpoint=ENDPOINT)
        conn.commit()
        read = [
            (source_id, json.loads(payload).get("notes"))
            for payload, _, source_id, _ in validation._staged(conn, "psa", ENDPOINT, "r1")
        ]
    assert read == [("9", None), ("10", "a"), ("10", "b"), ("100", None), ("x-1", None)]


def test_the_numeric_id_test_is_the_bounded_pattern(pg_dsn: str) -> None:
    """The read's sort tells numeric ids by :data:`validation._NUMERIC_ID`, the pattern
    ``^-?[0-9]{1,100}(\\.[0-9]{1,100})?$`` without its costly bounds where they cannot matter."""
    digits = "9" * 100
    ids = [
        *("1", "-1", "1.5", "-1.5", "007", "0", "-0.0", "1.", ".5", "-", "", "1e5", "1.2.3", " 1", "1 "),
        *("+1", "1\n", "\u0663", "x-1", "--1", digits, f"-{digits}", f"{digits}9", f"{digits}.{digits}"),
        *(
            f"{digits}9.1",
            f"1.{digits}",
            f"1.{digits}9",
            f"-{digits}.{digits}",
            f"{digits}.{digits}x",
            "a" * 150,
        ),
    ]
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            f"SELECT s, {validation._NUMERIC_ID.replace('source_id', 's')},"
            " s ~ '^-?[0-9]{1,100}(\\.[0-9]{1,100})?$' FROM unnest(%s::text[]) AS k(s)",
            (ids,),
        ).fetchall()
    assert [(s, fast) for s, fast, _ in rows] == [(s, bounded) for s, _, bounded in rows]
    assert sum(bounded for _, _, bounded in rows) == 12, rows  # both sides of each bound are tried
