"""Retention of staged people payloads and webhook bodies, against real PostgreSQL (issue 13.11)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from psa_erp_sync.config import load_retention
from psa_erp_sync.ods import retention

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AS_OF = datetime(2026, 12, 6, 3, 15, tzinfo=UTC)


def _user(uid: int, email: str) -> str:
    return json.dumps(
        {"id": uid, "first_name": "Ada", "last_name": "Lovelace", "email": email, "is_active": True}
    )


def _seed(conn: psycopg.Connection) -> None:
    policy = load_retention(ROOT / "config")
    days = policy.staging[0].days
    old, fresh = AS_OF - timedelta(days=days + 1), AS_OF - timedelta(days=days - 1)
    rows = [
        ("/v2/users", "1", "h-old", _user(1, "ada.old@example.com"), old),  # superseded version
        ("/v2/users", "1", "h-new", _user(1, "ada@example.com"), fresh),  # current version
        ("/v2/time_entries", "9", "h-te", json.dumps({"id": 9, "notes": "x"}), old),  # not listed: kept
    ]
    for endpoint, sid, digest, payload, fetched in rows:
        conn.execute(
            "INSERT INTO staging.raw_record (source_system, endpoint, source_id, payload_hash, payload, fetched_at,"
            " first_run_key, last_run_key) VALUES ('psa', %s, %s, %s, %s, %s, 'k', 'k')",
            (endpoint, sid, digest, payload, fetched),
        )
    envelope = {"event": "time_entry.approved", "occurred_at": "2026-10-01T10:00:00Z"}
    for did, received, status in (
        ("d-old-processed", AS_OF - timedelta(days=policy.inbox.event_days + 1), "processed"),
        ("d-old-pending", AS_OF - timedelta(days=policy.inbox.event_days + 1), "pending"),
        ("d-fresh", AS_OF - timedelta(days=1), "processed"),
    ):
        body = {
            **envelope,
            "delivery_id": did,
            "data": {"id": 7, "notes": "sick leave", "user": {"name": "Ada"}},
        }
        conn.execute(
            "INSERT INTO inbox.event (delivery_id, source_system, event_type, source_id, payload, received_at,"
            " status) VALUES (%s, 'psa', 'time_entry.approved', '7', %s, %s, %s)",
            (did, json.dumps(body), received, status),
        )
    for digest, seen in (
        ("q-old", AS_OF - timedelta(days=policy.inbox.quarantine_days + 1)),
        ("q-new", AS_OF),
    ):
        conn.execute(
            "INSERT INTO inbox.quarantine (delivery_id, source_system, reason_code, body, body_sha256, last_seen)"
            " VALUES (%s, 'psa', 'SCHEMA', %s, %s, %s)",
            (digest, b'{"user": "Ada Lovelace"}', digest, seen),
        )


def test_retention_drops_and_pseudonymises_what_is_older_than_configured(clean_ods: str) -> None:
    with psycopg.connect(clean_ods) as conn:
        _seed(conn)
        conn.commit()
        result = retention.enforce(conn, load_retention(ROOT / "config"), as_of=AS_OF)
        assert result.as_dict() == {
            "staged_dropped": {"psa /v2/users": 1},
            "events_pseudonymised": 2,
            "quarantine_bodies_dropped": 1,
        }
        staged = conn.execute(
            "SELECT endpoint, payload_hash FROM staging.raw_record ORDER BY endpoint, payload_hash"
        ).fetchall()
        assert staged == [("/v2/time_entries", "h-te"), ("/v2/users", "h-new")]
        events = dict(
            conn.execute("SELECT delivery_id, payload::text FROM inbox.event ORDER BY delivery_id").fetchall()
        )
        for did in ("d-old-pending", "d-old-processed"):
            assert json.loads(events[did]) == {
                "delivery_id": did,
                "event": "time_entry.approved",
                "occurred_at": "2026-10-01T10:00:00Z",
                "data": {"id": 7},
            }
        assert "sick leave" in events["d-fresh"]
        bodies = {
            key: (bytes(body), purged)
            for key, body, purged in conn.execute(
                "SELECT body_sha256, body, body_purged_at IS NOT NULL FROM inbox.quarantine"
            )
        }
        assert bodies["q-old"] == (b"", True) and bodies["q-new"] == (b'{"user": "Ada Lovelace"}', False)
        # Idempotent: the same day again changes nothing.
        again = retention.enforce(conn, load_retention(ROOT / "config"), as_of=AS_OF)
        assert again.as_dict() == {
            "staged_dropped": {"psa /v2/users": 0},
            "events_pseudonymised": 0,
            "quarantine_bodies_dropped": 0,
        }


def test_retention_settings_are_validated(tmp_path: Path, pg_conn: psycopg.Connection) -> None:
    (tmp_path / "retention.yaml").write_text(
        (ROOT / "config" / "retention.yaml").read_text().replace("event_days: 30", "event_days: 0")
    )
    with pytest.raises(ValueError, match="event_days"):
        load_retention(tmp_path)
    with pytest.raises(ValueError, match="UTC offset"):
        retention.enforce(pg_conn, load_retention(ROOT / "config"), as_of=datetime(2026, 12, 6))
