"""The audit and exception-queue repositories (include/psa_erp_sync/ods/audit.py, exceptions.py) on
a real PostgreSQL: what each write stores, and which open items each resolve closes."""

from __future__ import annotations

import dataclasses

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


def _item_probes(conn: psycopg.Connection, source_ids: list[str]) -> str:
    """The line of ``resolve_for``'s plan (run, then rolled back) that probes an id's items."""
    params = {"ids": source_ids, "kind": "quarantine", "system": "psa", "type": "time_entry"}
    with conn.transaction(force_rollback=True):
        plan = [
            r[0]
            for r in conn.execute(
                "EXPLAIN (ANALYZE, COSTS OFF) " + queue.resolve_for_sql(by_reason=False), params
            )
        ]
    return next(line for line in plan if " on item i " in line)


def test_resolve_for_probes_no_id_when_its_range_holds_no_item(clean_ods: str) -> None:
    """The ids' range (smallest to largest) holds no item of the kind, system and record type:
    the statement's one probe of that range answers, and no id is probed (validation's chunks of
    a new month). Items in the range, even of other records, and every id is probed as before;
    what is closed is the same either way."""
    with psycopg.connect(clean_ods) as conn:
        queue.quarantine_many(conn, [_item(i, "HOURS_INVALID") for i in ("10", "20", "30")], run_id="r")
        queue.quarantine_many(
            conn,
            [dataclasses.replace(_item("15", "HOURS_INVALID"), record_type="expense_entry")],
            run_id="r",
        )
        conn.commit()
        assert "never executed" in _item_probes(conn, ["11", "12", "19"])  # only an expense's in range
        assert "never executed" in _item_probes(conn, ["31", "4"])  # "31" > "30", "4" > "30" (text)
        assert "loops=3" in _item_probes(conn, ["11", "12", "29"])  # "20" lies between: probed
        kw = {"source_system": "psa", "record_type": "time_entry"}
        assert queue.resolve_for(conn, kind="quarantine", source_ids=["11", "12", "19"], **kw) == 0
        assert queue.resolve_for(conn, kind="quarantine", source_ids=["11", "20", "29"], **kw) == 1
        assert queue.resolve_for(conn, kind="quarantine", source_ids=["10", "30"], **kw) == 2
        assert _open(conn) == {("quarantine", "15", "HOURS_INVALID")}


def _stored(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    """Every item as stored, its id as its rank (a sequence's values differ between transactions)."""
    return conn.execute(
        "SELECT rank() OVER (ORDER BY id), kind, domain, source_system, record_type, source_id,"
        " source_version, reason_code, detail, legal_entity, owner, status, occurrences, last_run_id,"
        " first_seen = last_seen FROM exceptions.item ORDER BY id"
    ).fetchall()


def test_the_bulk_upsert_stores_what_one_upsert_per_item_stores(clean_ods: str) -> None:
    """``quarantine_bulk`` on the same queue and the same items as ``quarantine_many``: the same
    rows, ids in the items' order, occurrences, the ignored kept ignored, the resolved reopened;
    items that repeat a key (one statement cannot upsert a row twice) take the old path."""

    def item(source_id: str, reason: str, **fields: object) -> queue.Item:
        return dataclasses.replace(_item(source_id, reason), **fields)

    earlier = [item(str(n), "HOURS_INVALID", detail={"n": n}) for n in range(1, 6)]
    batches = [
        [
            item("4", "HOURS_INVALID", source_version="v2", detail={"fields": ["hours"], "x": "é\x01"}),
            item("9", "RATE_MISSING", legal_entity="LE-US1", detail={"nested": {"a": [1, None, 2.5]}}),
            item("1", "HOURS_INVALID", owner="someone-else", legal_entity=None),
            item("7", "DUPLICATE_SUSPECTED", detail={"same_as": "3"}),
            item("2", "HOURS_INVALID", kind="validation"),
            item("3", "HOURS_INVALID"),
        ],
        [item("8", "A"), item("8", "A", detail={"second": True}), item("6", "B")],  # a key twice
        [],
    ]
    results = []
    for upsert in (queue.quarantine_many, queue.quarantine_bulk):
        with psycopg.connect(clean_ods) as conn:
            queue.quarantine_many(conn, earlier, run_id="r0")
            conn.execute("UPDATE exceptions.item SET status = 'ignored' WHERE source_id = '1'")
            conn.execute("UPDATE exceptions.item SET status = 'resolved' WHERE source_id = '3'")
            counts = [upsert(conn, batch, run_id="r1") for batch in batches]
            counts.append(upsert(conn, batches[0][:2], run_id="r1"))  # again in the same run
            results.append((counts, _stored(conn)))
            conn.rollback()
    assert results[1] == results[0]
    assert results[0][0] == [6, 3, 0, 2]
