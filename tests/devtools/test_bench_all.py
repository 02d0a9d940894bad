"""``make bench`` aggregation: JSON found after log lines; the stream's latency table."""

from __future__ import annotations

import pytest

from devtools.bench_all import parse_output


def test_parse_output_skips_logs_and_reads_the_last_document() -> None:
    out = 'seeding...\n{"not": "closed"\n{\n  "a": 1,\n  "targets": {}\n}\n'
    assert parse_output(out) == {"a": 1, "targets": {}}
    with pytest.raises(ValueError, match="no JSON"):
        parse_output("only logs\n")


def test_stream_latency_table_lists_every_stage() -> None:
    from devtools.bench_stream import latency_table

    figures = {
        "ingress_roundtrip_s": {"p50": 0.002, "p95": 0.003, "p99": 0.004},
        "stages_s": {"trigger_detection": {"p50": 0.5, "p95": 0.97, "p99": 1.0}, "posting": {"p50": 0.05}},
        "end_to_end_s": {"p50": 0.66, "p95": 1.5, "p99": 1.84},
        "events_measured": 521,
        "goal_p95_s": 1.5,
        "goal_p99_s": 2.5,
        "goal_met": True,
    }
    table = latency_table(figures)
    for name in ("ingress round trip", "trigger_detection", "posting", "end to end"):
        assert name in table
    assert "1.84" in table and "goal p95 <= 1.5 s, p99 <= 2.5 s met: True" in table
    assert table.splitlines()[-1].count("-") == 0 and "      -" in table  # missing p95/p99 shown as '-'


def test_the_port_offset_reaches_every_benchmark_that_starts_simulators() -> None:
    from devtools.bench_all import BENCHES, NO_PORTS, OPTIONAL_BENCHES, _port_offset

    assert _port_offset("posting", 0) == []
    for name in {**BENCHES, **OPTIONAL_BENCHES}:
        assert _port_offset(name, 700) == ([] if name in NO_PORTS else ["--port-offset", "700"])
    assert set(BENCHES) >= NO_PORTS
