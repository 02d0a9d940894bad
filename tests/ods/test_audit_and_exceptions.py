"""The audit and exception-queue repositories (include/psa_erp_sync/ods/audit.py, exceptions.py) on
a real PostgreSQL: what each write stores, and which open items each resolve closes."""

from __future__ import annotations

import psycopg

from psa_erp_sync.ods import audit, jsonb
from psa_erp_sync.ods import exceptions as queue


def test_audit_rows_store_json_or_null(clean_ods: str) -> None:
    with psycopg.connect(clean_ods) as conn:
        audit.record(
            conn, audit.Change("t", "plan", "ledger.posting", "timebill", after={"n": 1}), run_id="r1"
        )
        n = audit.record_many(
            conn,
            [
                audit.Change(
                    "t", "replay", "ledger.posting", "k1", before={"state": "parked", "reason": None}
                ),
                audit.Change(
                    "t", "replay", "ledger.posting", "k2", before={"state": "rejected"}, after={"s": 2}
                ),
            ],
            run_id="r2",
        )
        assert n == 2 and audit.record_many(conn, [], run_id="r3") == 0
        rows = conn.execute(
            "SELECT entity_key, before, after, run_id FROM audit.change WHERE actor = 't' ORDER BY entity_key"
        ).fetchall()
    assert rows == [
        ("k1", {"state": "parked", "reason": None}, None, "r2"),
        ("k2", {"state": "rejected"}, {"s": 2}, "r2"),
        ("timebill", None, {"n": 1}, "r1"),
    ]


def _item(source_id: str, reason: str, kind: str = "quarantine") -> queue.Item:
    return queue.Item(kind, "time_expense", "psa", "time_entry", source_id, reason, "finance-integration")


def _open(conn: psycopg.Connection) -> set[tuple[str, str, str]]:
    rows = conn.execute("SELECT kind, source_id, reason_code FROM exceptions.item WHERE status = 'open'")
    return set(rows.fetchall())


def test_resolves_close_only_what_they_name(clean_ods: str) -> None:
    with psycopg.connect(clean_ods) as conn:
        queue.quarantine_many(
            conn,
            [_item("1", "REFERENCE_INVALID"), _item("1", "HOURS_INVALID"), _item("2", "HOURS_INVALID")],
            run_id="r",
        )
        queue.quarantine_many(
            conn, [_item("3", "A", "validation"), _item("3", "B", "validation")], run_id="r"
        )
        kw = {"source_system": "psa", "record_type": "time_entry"}
        assert (
            queue.resolve_for(
                conn, kind="quarantine", source_ids=["1"], reason_code="REFERENCE_INVALID", **kw
            )
            == 1
        )
        assert queue.resolve_for(conn, kind="quarantine", source_ids=[], **kw) == 0
        assert queue.close_reasons_not_in(conn, kind="validation", verdicts=[("3", ("B",))], **kw) == 1
        assert _open(conn) == {
            ("quarantine", "1", "HOURS_INVALID"),
            ("quarantine", "2", "HOURS_INVALID"),
            ("validation", "3", "B"),
        }
        assert queue.resolve_for(conn, kind="quarantine", source_ids=["1", "2"], **kw) == 2
        ids = [r[0] for r in conn.execute("SELECT id FROM exceptions.item WHERE kind = 'validation'")]
        assert queue.mark_replayed(conn, ids, run_id="replay-1") == 2
        assert conn.execute(
            "SELECT DISTINCT status, last_run_id FROM exceptions.item WHERE kind = 'validation'"
        ).fetchall() == [("replayed", "replay-1")]


def test_nul_escapes_stay_text_once() -> None:
    assert jsonb.escape_nul(b'{"a":"x\\u0000y"}') == b'{"a":"x\\\\u0000y"}'
    assert jsonb.escape_nul(b'{"a":"x\\\\u0000y"}') == b'{"a":"x\\\\u0000y"}'  # already an escaped backslash
    assert jsonb.escape_nul(b'{"a":1}') == b'{"a":1}'


#: Source ids an array literal must quote or escape (the ids are sent as binary arrays).
_ARRAY_HOSTILE = ["a,b", '"q"', "{c}", "back\\slash", " lead", "NULL", "", "x y", "é"]


def test_resolve_for_closes_items_of_ids_an_array_literal_would_quote(clean_ods: str) -> None:
    with psycopg.connect(clean_ods) as conn:
        queue.quarantine_many(
            conn, [_item(i, "HOURS_INVALID") for i in [*_ARRAY_HOSTILE, "keep"]], run_id="r"
        )
        kw = {"source_system": "psa", "record_type": "time_entry"}
        assert queue.resolve_for(conn, kind="quarantine", source_ids=_ARRAY_HOSTILE, **kw) == len(
            _ARRAY_HOSTILE
        )
        assert _open(conn) == {("quarantine", "keep", "HOURS_INVALID")}
