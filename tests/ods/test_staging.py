"""Staging by COPY: nothing lost, hostile payloads kept byte-for-byte (as jsonb), dedupe by content."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from psa_erp_sync.ods import staging

HOSTILE = [
    "back\\slash \\N \\t \\\\", "tab\tnew\nline\r", "'; DROP TABLE staging.raw_record; --", "\u202eRTL\u202c \U0001f680",
    "nul\x00byte", "escaped \\u0000 text",
]  # fmt: skip


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
                "SELECT source_id, payload->>'notes' FROM staging.raw_record WHERE last_run_key = 'r2' ORDER BY source_id"
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
