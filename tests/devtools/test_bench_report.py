"""The targets of ``make bench`` in one table, the human table, the files per run, the doc table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devtools import bench_report
from devtools.bench_targets import TARGETS, evaluate, threshold


def _doc() -> dict[str, Any]:
    return {
        "started_at": "2026-12-06T08:00:00+00:00",
        "as_of": "2026-12-06",
        "wall_s": 900.0,
        "machine": {
            "host": "h",
            "cpu_model": "Some CPU",
            "cpus": 2,
            "memory_gib": 24.0,
            "python": "3.11.7",
            "load_average_at_start": [1.0, 2.0, 3.0],
            "load_average_at_end": [4.0, 5.0, 6.0],
        },
        "posting": {
            "stage_copy": {"rows_per_s": 30_000},
            "bare_copy_same_rows": {"rows_per_s": 90_000},
            "copy_ceilings_same_rows": {
                "temp_text": {"rows_per_s": 100_000},
                "durable_text_keyed": {"rows_per_s": 50_000},
            },
            "pandas_to_sql_same_rows": {"rows_per_s": 5_000},
            "dlt_merge_same_rows": {"rows_per_s": 2_000},
            "validate": {"rows_per_s": 6_000},
            "post": {"rows_per_s": 2_000, "engine_rows_per_s": 2_500},
            "erp_raw_capacity": {"rows_per_s": 8_000},
            "erp_capacity_same_records": {"rows_per_s": 4_000},
            "peak_rss_mb": 250.0,
            "billing": {
                "post": {"documents_per_s": 45.0},
                "bare_invoice_capacity": {"documents_per_s": 50.0},
            },
        },
        "stream": {"end_to_end_s": {"p95": 1.2, "p99": 3.0}},
        "forecast": {"forecast_refresh": {"refresh_s": 4.0}},
    }


def test_issue_16_targets_are_in_one_table() -> None:
    assert threshold("validation_vs_pydantic_core") == 0.5
    assert threshold("stage_vs_durable_copy") == 0.5
    assert threshold("stage_vs_pandas") == 5
    assert threshold("stage_vs_dlt") == 10
    assert threshold("post_vs_bare_client") == 0.85
    assert threshold("post_vs_bare_client_remote") == 0.95
    assert threshold("post_slots_busy_remote") == 14
    assert threshold("stream_p95_s") == 1.5 and threshold("stream_p99_s") == 2.5
    assert threshold("forecast_refresh_s") == 5
    assert threshold("billing_post_vs_bare_invoices") == 0.85
    assert len({t.key for t in TARGETS}) == len(TARGETS)


def test_targets_are_ratios_to_the_same_run_and_missing_figures_are_not_measured() -> None:
    rows = {r["key"]: r for r in evaluate(_doc())}
    assert rows["stage_vs_durable_copy"]["ratio"] == 0.6 and rows["stage_vs_durable_copy"]["met"] is True
    assert rows["stage_vs_pandas"]["ratio"] == 6.0 and rows["stage_vs_pandas"]["met"] is True
    assert rows["stage_vs_dlt"]["ratio"] == 15.0 and rows["stage_vs_dlt"]["met"] is True
    assert rows["post_vs_bare_client"]["ratio"] == 0.5 and rows["post_vs_bare_client"]["met"] is False
    assert rows["stream_p95_s"]["met"] is True and rows["stream_p99_s"]["met"] is False
    assert rows["forecast_refresh_s"]["met"] is True and rows["forecast_refresh_s"]["ratio"] is None
    assert rows["peak_rss_mb"]["met"] is True
    billing = rows["billing_post_vs_bare_invoices"]
    assert billing["ratio"] == 0.9 and billing["met"] is True and billing["unit"] == "invoices/s"
    # no baseline or no run: never "met"
    for key in ("validation_vs_pydantic_core", "post_vs_bare_client_remote", "post_slots_busy_remote"):
        assert rows[key]["met"] is None


def test_the_text_table_has_every_target_with_its_columns() -> None:
    table = bench_report.text_table(_doc())
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["target", "measured"] and "ratio" in lines[0] and "met" in lines[0]
    assert len(lines) == 2 + len(TARGETS)
    staging = next(line for line in lines if line.startswith("staging vs durable keyed COPY"))
    assert "30,000 rows/s" in staging and "durable keyed COPY 50,000" in staging and "0.60x" in staging
    assert ">= 0.5x" in staging and staging.endswith("yes")
    assert next(line for line in lines if line.startswith("post vs bare client, local")).endswith("no")
    assert "not measured" in next(line for line in lines if line.startswith("validation vs"))


def test_a_run_is_saved_by_date_with_a_chart_and_rendered_into_the_doc(tmp_path: Path) -> None:
    json_path, png = bench_report.save(_doc(), tmp_path)
    assert json_path.name == "2026-12-06.json" and json.loads(json_path.read_text())["as_of"] == "2026-12-06"
    assert png.name == "2026-12-06.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Perf\n\n{bench_report.BEGIN}\nold\n{bench_report.END}\n\nafter\n")
    assert bench_report.main(["--doc", str(doc), "--bench-dir", str(tmp_path)]) == 0
    text = doc.read_text()
    assert "old" not in text and text.endswith(f"{bench_report.END}\n\nafter\n")
    block = bench_report.current_block(text)
    assert "| staging vs durable keyed COPY, same rows | 30,000 rows/s |" in block
    assert (
        "host h (Some CPU, 2 cores, 24.0 GiB)" in block and "load average 1.0/2.0/3.0 at the start" in block
    )
    assert "(bench/2026-12-06.png)" in block
    with pytest.raises(ValueError, match="markers"):
        bench_report.render("no markers", block)


def test_a_days_second_full_run_is_kept_beside_the_first_and_is_the_newest(tmp_path: Path) -> None:
    first, _ = bench_report.save(_doc(), tmp_path)
    later = {**_doc(), "started_at": "2026-12-06T14:05:00+00:00", "wall_s": 7.0}
    second, png = bench_report.save(later, tmp_path)
    assert first.name == "2026-12-06.json" and second.name == "2026-12-06T1405.json"
    assert png.name == "2026-12-06T1405.png" and json.loads(first.read_text())["started_at"].startswith(
        "2026-12-06T08"
    )
    peak, _ = bench_report.save(later, tmp_path, suffix="peak")  # a suffixed run is not a full run
    assert peak.name == "2026-12-06-peak.json"
    assert [name for name, _ in bench_report.runs(tmp_path)] == ["2026-12-06", "2026-12-06T1405"]
    assert "(bench/2026-12-06T1405.png)" in bench_report.doc_block(tmp_path)


def test_performance_doc_shows_the_newest_saved_run() -> None:
    """docs/performance.md's table is the newest docs/bench/*.json's (make bench-doc)."""
    saved = bench_report.runs()
    assert saved, "no run in docs/bench: run make bench, then make bench-doc"
    name = saved[-1][0]
    assert (bench_report.BENCH_DIR / f"{name}.png").exists()
    assert bench_report.current_block(bench_report.DOC.read_text()) == bench_report.doc_block()
