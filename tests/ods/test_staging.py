"""Staging: nothing lost, hostile payloads kept byte-for-byte (as text, migration 0040), dedupe by content."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import psycopg
import pytest

from psa_erp_sync.ods import staging

HOSTILE = [
    "back\\slash \\N \\t \\\\",
    "tab\tnew\nline\r",
    "'; DROP TABLE staging.raw_record; --",
    "\u202eRTL\u202c \U0001f680",
    "nul\x00byte",
    "escaped \\u0000 text",
]


def _pages(items: list[dict[str, object]], size: int = 2) -> list[list[dict[str, object]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def test_stage_counts_dedupe_and_hostile_text(clean_ods: str) -> None:
    items: list[dict[str, object]] = [
        {"id": i, "notes": note, "updated_at": f"2026-11-0{i % 9 + 1}T10:00:00Z"}
        for i, note in enumerate(HOSTILE)
    ]
    with psycopg.connect(clean_ods) as conn:
        first = staging.stage_pages(
            conn, _pages(items), run_key="r1", source_system="psa", endpoint="/v2/time_entries"
        )
        conn.commit()
        assert (first.extracted, first.staged, first.new_versions, first.known_versions) == (6, 6, 6, 0)
        again = staging.stage_pages(
            conn, _pages(items), run_key="r2", source_system="psa", endpoint="/v2/time_entries"
        )
        conn.commit()
        assert (again.new_versions, again.known_versions) == (0, 6)
        changed = [dict(items[0], notes="edited")]
        third = staging.stage_pages(
            conn, [changed], run_key="r3", source_system="psa", endpoint="/v2/time_entries"
        )
        conn.commit()
        assert third.new_versions == 1
        stored = dict(
            conn.execute(
                "SELECT source_id, payload::jsonb->>'notes' FROM staging.raw_record WHERE last_run_key = 'r2' ORDER BY source_id"
            ).fetchall()
        )
    assert stored["0"] == HOSTILE[0]
    assert stored["1"] == HOSTILE[1]
    assert stored["2"] == HOSTILE[2]
    assert stored["3"] == HOSTILE[3]
    assert stored["4"] == "nul\\u0000byte"  # jsonb cannot hold U+0000: kept as visible text, never dropped
    assert stored["5"] == HOSTILE[5]
    assert first.max_updated_at == datetime(2026, 11, 6, 10, tzinfo=UTC)


def test_an_item_without_an_id_is_staged_under_a_content_key(clean_ods: str) -> None:
    """One id-less item (or one that is not an object) must not stop the extract (issue 13): it is
    kept under a key derived from its content, for validation to quarantine."""
    items: list[object] = [{"notes": "x"}, {"id": None, "notes": "y"}, "not an object", {"id": 1}]
    with psycopg.connect(clean_ods) as conn:
        result = staging.stage_pages(conn, [items], run_key="r", source_system="psa", endpoint="/v2/x")  # type: ignore[list-item]
        ids = {r[0] for r in conn.execute("SELECT source_id FROM staging.raw_record")}
    assert (result.extracted, result.staged, result.new_versions) == (4, 4, 4)
    assert "1" in ids
    assert {staging.missing_id_key(i) for i in items[:3]} == ids - {"1"}


def test_watermark_never_moves_backwards(clean_ods: str) -> None:
    later = datetime(2026, 11, 20, tzinfo=UTC)
    earlier = datetime(2026, 11, 1, tzinfo=UTC)
    with psycopg.connect(clean_ods) as conn:
        staging.advance_watermark(conn, "psa", "/v2/time_entries", later)
        staging.advance_watermark(conn, "psa", "/v2/time_entries", earlier)
        staging.advance_watermark(conn, "psa", "/v2/time_entries", None)
        assert staging.get_watermark(conn, "psa", "/v2/time_entries") == later


def test_the_same_version_twice_in_one_extract_falls_back_to_the_sorted_upsert(clean_ods: str) -> None:
    """Without duplicates the upsert skips the ``DISTINCT ON`` sort; a version that appears twice
    (a page re-read while the source changed) makes PostgreSQL refuse that statement, and the sorted
    one runs inside the caller's transaction: same counts as before, nothing staged twice, and the
    caller's earlier work in the transaction (the extract run row, the watermark) is kept."""
    a, b = {"id": 1, "notes": "a"}, {"id": 2, "notes": "b"}
    with psycopg.connect(clean_ods) as conn:
        staging.stage_pages(conn, [[b]], run_key="r0", source_system="psa", endpoint="/v2/time_entries")
        conn.commit()
        staging.advance_watermark(conn, "psa", "/v2/time_entries", datetime(2026, 11, 1, tzinfo=UTC))
        result = staging.stage_pages(
            conn, [[a, b], [a, dict(a)], [b]], run_key="r1", source_system="psa", endpoint="/v2/time_entries"
        )
        conn.commit()
        rows = conn.execute(
            "SELECT source_id, first_run_key, last_run_key FROM staging.raw_record ORDER BY source_id"
        ).fetchall()
        watermark = staging.get_watermark(conn, "psa", "/v2/time_entries")
    counts = (result.staged, result.new_versions, result.known_versions, result.duplicates_in_extract)
    assert counts == (5, 1, 1, 3)
    assert rows == [("1", "r1", "r1"), ("2", "r0", "r1")]
    assert watermark == datetime(2026, 11, 1, tzinfo=UTC)


def test_nothing_is_staged_unless_the_caller_commits(clean_ods: str) -> None:
    """Staging and the watermark share the caller's transaction: a crash before the commit loses
    both, so the watermark never moves past rows that are not durably staged."""
    with psycopg.connect(clean_ods) as conn:
        staging.stage_pages(
            conn, [[{"id": 1}, {"id": 1}]], run_key="r", source_system="psa", endpoint="/v2/x"
        )
        staging.advance_watermark(conn, "psa", "/v2/x", datetime(2026, 11, 1, tzinfo=UTC))
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM staging.raw_record").fetchone() == (0,)
        assert staging.get_watermark(conn, "psa", "/v2/x") is None


def _raw_pages(items: list[object], size: int = 2) -> list[list[bytes]]:
    """Each item's JSON as a source would send it: pretty-printed, numbers as written (1.50)."""
    raw = [json.dumps(i, indent=1).replace('"HOURS"', "1.50").encode() for i in items]
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def test_raw_items_stage_as_sent_with_the_keys_counts_and_watermark_of_decoded_ones(clean_ods: str) -> None:
    """Pages of raw items (the PSA extract's path): hostile text kept, the same keys as decoded
    items get (id-less and non-object items by content), numbers as the source wrote them, and
    new / known / duplicate counts as the decoded path counts them."""
    items: list[object] = [
        {"id": i, "notes": note, "hours": "HOURS", "updated_at": f"2026-11-0{i % 9 + 1}T10:00:00Z"}
        for i, note in enumerate(HOSTILE)
    ]
    items += [
        {"notes": "x"},
        {"id": None},
        "not an object",
        {"id": "a\tb\x00c"},
        {"id": 99, "updated_at": "garbage"},
    ]
    with psycopg.connect(clean_ods) as conn:
        first = staging.stage_pages(  # a sweep's first query may answer one empty page
            conn, [[], *_raw_pages(items)], run_key="r1", source_system="psa", endpoint="/v2/time_entries"
        )
        conn.commit()
        assert (first.extracted, first.staged, first.new_versions, first.known_versions) == (11, 11, 11, 0)
        assert first.max_updated_at == datetime(2026, 11, 6, 10, tzinfo=UTC)
        texts = dict(conn.execute("SELECT source_id, payload FROM staging.raw_record").fetchall())
        stored = {k: json.loads(v) for k, v in texts.items()}
        hours = conn.execute(
            "SELECT payload::jsonb->>'hours' FROM staging.raw_record WHERE source_id = '0'"
        ).fetchone()
        hashes = dict(conn.execute("SELECT source_id, payload_hash FROM staging.raw_record").fetchall())
        # the same version twice, in one page and across pages: duplicates; the rest known
        pages = [*_raw_pages(items), _raw_pages(items[:1])[0] * 2]
        again = staging.stage_pages(
            conn, pages, run_key="r2", source_system="psa", endpoint="/v2/time_entries"
        )
        conn.commit()
        assert (again.extracted, again.new_versions, again.known_versions, again.duplicates_in_extract) == (
            13,
            0,
            11,
            2,
        )
        # the same run key read again (a cleared task): known, its read time moved
        retry = staging.stage_pages(
            conn, _raw_pages(items[:3]), run_key="r2", source_system="psa", endpoint="/v2/time_entries"
        )
        conn.commit()
        assert (retry.new_versions, retry.known_versions, retry.duplicates_in_extract) == (0, 3, 0)
        runs = {r[0] for r in conn.execute("SELECT DISTINCT last_run_key FROM staging.raw_record")}
    assert runs == {"r2"}
    for i, note in enumerate(HOSTILE[:4] + HOSTILE[5:]):
        assert stored[str(i if i < 4 else i + 1)]["notes"] == note
    assert stored["4"]["notes"] == "nul\\u0000byte"  # jsonb cannot hold U+0000: kept as visible text
    assert hours == ("1.50",)  # as the source wrote it (decoded items went through a float: 1.5)
    # stored as sent (pretty-printed, never parsed on write: migration 0040), hashed over those bytes
    sent = {json.loads(b)["id"]: b for page in _raw_pages(items[:6]) for b in page}
    assert texts["0"].encode() == sent[0]
    assert hashes["0"] == hashlib.sha256(sent[0]).hexdigest()
    assert texts["4"].encode() == sent[4].replace(b"\\u0000", b"\\\\u0000")  # U+0000 as visible text
    decoded_keys = {str(i["id"]) for i in items[:6] if isinstance(i, dict)} | {"a\tb\\u0000c", "99"}
    decoded_keys |= {staging.missing_id_key(i) for i in items[6:9]}
    assert set(stored) == decoded_keys


def _raw(i: int, note: str = "") -> bytes:
    return json.dumps({"id": i, "notes": note, "updated_at": "2026-11-02T10:00:00Z"}).encode()


def _versions(conn: psycopg.Connection) -> dict[str, tuple[str, str, datetime]]:
    rows = conn.execute(
        "SELECT source_id, first_run_key, last_run_key, fetched_at FROM staging.raw_record"
    ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_new_versions_go_by_copy_batches_and_a_version_twice_across_batches_is_a_duplicate(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A month's first extract: batches of new versions by COPY. The same version again in a later
    batch makes that batch's COPY meet it: rolled back to its savepoint and upserted, the version
    counted once (a duplicate), nothing lost, and the batches after it COPYed again."""
    monkeypatch.setattr(staging, "_COPY_FIRST_BATCH", 2)
    monkeypatch.setattr(staging, "_COPY_BATCH", 4)
    copies: list[int] = []

    pages = [[_raw(1), _raw(2)], [_raw(3), _raw(1), _raw(4)], [_raw(5), _raw(6)], [_raw(7), _raw(8), _raw(9)]]
    with psycopg.connect(clean_ods) as conn:
        original = psycopg.Copy.write_row

        def counting(self: psycopg.Copy, row: Sequence[object]) -> None:
            copies.append(int(str(row[2])))
            original(self, row)

        monkeypatch.setattr(psycopg.Copy, "write_row", counting)
        result = staging.stage_pages(
            conn, pages, run_key="r1", source_system="psa", endpoint="/v2/time_entries"
        )
        started = conn.execute("SELECT now()").fetchone()
        conn.commit()
        versions = _versions(conn)
    counts = (result.extracted, result.new_versions, result.known_versions, result.duplicates_in_extract)
    assert counts == (10, 9, 0, 1)
    assert set(versions) == {str(i) for i in range(1, 10)}
    assert {v[:2] for v in versions.values()} == {("r1", "r1")}
    assert started is not None and {v[2] for v in versions.values()} == {
        started[0]
    }  # the transaction's start
    # batch 1 (1, 2) by COPY; batch 2 (3, 1, 4, 5, 6) met 1 and was upserted; batch 3 (7, 8, 9) by COPY again
    assert copies == [1, 2, 3, 1, 4, 5, 6, 7, 8, 9]


def test_a_re_read_switches_from_copy_to_upserts_and_counts_known_versions(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Versions staged by an earlier run, met in a later batch of an extract that began with new
    ones: known (their run key and read time move to this run), the new ones new, every page
    after that upserted, and nothing lost."""
    monkeypatch.setattr(staging, "_COPY_FIRST_BATCH", 2)
    monkeypatch.setattr(staging, "_COPY_BATCH", 2)
    with psycopg.connect(clean_ods) as conn:
        staging.stage_pages(
            conn, [[_raw(5), _raw(6), _raw(7)]], run_key="r0", source_system="psa", endpoint="/v2/x"
        )
        conn.commit()
        pages = [[_raw(1), _raw(2)], [_raw(3), _raw(5)], [_raw(6), _raw(8)], [_raw(7, "edited"), _raw(9)]]
        result = staging.stage_pages(conn, pages, run_key="r1", source_system="psa", endpoint="/v2/x")
        started = conn.execute("SELECT now()").fetchone()
        conn.commit()
        rows = conn.execute(
            "SELECT source_id, first_run_key, last_run_key, fetched_at = %s FROM staging.raw_record"
            " ORDER BY source_id, first_run_key",
            (started[0] if started else None,),
        ).fetchall()
    assert (result.extracted, result.new_versions, result.known_versions, result.duplicates_in_extract) == (
        8,
        6,
        2,
        0,
    )
    assert rows == [
        ("1", "r1", "r1", True),
        ("2", "r1", "r1", True),
        ("3", "r1", "r1", True),
        ("5", "r0", "r1", True),
        ("6", "r0", "r1", True),
        ("7", "r0", "r0", False),  # the version before the edit: not in this read
        ("7", "r1", "r1", True),
        ("8", "r1", "r1", True),
        ("9", "r1", "r1", True),
    ]


def test_a_version_another_transaction_stages_during_the_extract_is_known_not_lost(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another transaction (the stream, a second extract) commits a version while this extract is
    between pages: the COPY that meets it is rolled back to its savepoint and its batch upserted;
    the version counts as known and moves to this run, the others are new, and until this
    transaction commits no other session sees any of them."""
    monkeypatch.setattr(staging, "_COPY_FIRST_BATCH", 2)
    monkeypatch.setattr(staging, "_COPY_BATCH", 100)
    with psycopg.connect(clean_ods) as conn, psycopg.connect(clean_ods, autocommit=True) as other:

        def pages() -> Iterator[list[bytes]]:
            yield [_raw(1), _raw(2)]
            staging.stage_pages(other, [[_raw(3)]], run_key="stream", source_system="psa", endpoint="/v2/x")
            yield [_raw(3), _raw(4)]
            assert other.execute("SELECT count(*) FROM staging.raw_record").fetchone() == (1,)
            yield [_raw(5)]

        result = staging.stage_pages(conn, pages(), run_key="r1", source_system="psa", endpoint="/v2/x")
        assert other.execute("SELECT count(*) FROM staging.raw_record").fetchone() == (1,)
        conn.commit()
        versions = _versions(conn)
    assert (result.extracted, result.new_versions, result.known_versions, result.duplicates_in_extract) == (
        5,
        4,
        1,
        0,
    )
    assert {k: v[:2] for k, v in versions.items()} == {
        "1": ("r1", "r1"),
        "2": ("r1", "r1"),
        "3": ("stream", "r1"),
        "4": ("r1", "r1"),
        "5": ("r1", "r1"),
    }
