"""``make bench`` aggregation: JSON found after log lines, targets normalised per benchmark."""

from __future__ import annotations

import pytest

from psa_erp_sync.devenv.bench_all import parse_output, targets_of


def test_parse_output_skips_logs_and_reads_the_last_document() -> None:
    out = 'seeding...\n{"not": "closed"\n{\n  "a": 1,\n  "targets": {}\n}\n'
    assert parse_output(out) == {"a": 1, "targets": {}}
    with pytest.raises(ValueError, match="no JSON"):
        parse_output("only logs\n")


def test_targets_are_normalised() -> None:
    posting = {"targets": {"peak_rss_mb": {"measured": 280, "target": 1024, "comparison": "<=", "met": True}}}
    assert targets_of("posting", posting)["posting.peak_rss_mb"]["met"] is True
    forecast = {
        "forecast_refresh": {"refresh_s": 25.0, "target_s": 20, "met": False, "includes_db_write": True}
    }
    assert targets_of("forecast", forecast)["forecast.refresh_s"] == {
        "measured": 25.0, "target": 20, "comparison": "<=", "met": False, "includes_db_write": True,
    }  # fmt: skip
    stream = {"end_to_end_s": {"p95": 1.9}, "goal_p95_s": 5.0, "goal_met": True}
    assert targets_of("stream", stream)["stream.end_to_end_p95_s"]["met"] is True
