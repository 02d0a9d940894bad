"""Every benchmark runs on any day of the month: the seeded month is at a fixed position from
``--as-of``, so what is seeded (and what the benchmarks need of it) does not depend on the day.

The unit tests cover every day of months of 28, 29, 30 and 31 days. The integration tests run
each benchmark at a tiny scale as of the 1st, the 6th and the last day of a month (February of a
leap year), against the test PostgreSQL and simulators on their own ports. They take minutes, so
they are marked `bench` and run by `make bench-check` (in .ci/run), not by `make test`.
"""

from __future__ import annotations

import calendar
import json
import os
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from simulators.firm.generator import (
    FirmSpec,
    generate_firm,
    iter_time_entries,
    resolve_dates,
    settled_month,
)

DAYS = (date(2024, 2, 1), date(2024, 2, 6), date(2024, 2, 29))  # the 1st, the 6th, the last day
# The test's simulators, away from make demo's and make bench's; another offset for a second run of
# these tests on the same machine (several worktrees at once).
PORT_OFFSET = int(os.environ.get("PSA_ERP_SYNC_BENCH_TEST_PORT_OFFSET", "2700"))


def _month_days(year: int, month: int) -> list[date]:
    return [date(year, month, d) for d in range(1, calendar.monthrange(year, month)[1] + 1)]


def _pending(spec: FirmSpec) -> int:
    return sum(1 for chunk in iter_time_entries(generate_firm(spec)) for r in chunk if not r["is_closed"])


@pytest.mark.parametrize(("year", "month"), [(2024, 2), (2026, 2), (2026, 4), (2026, 12), (2027, 1)], ids=str)
def test_the_seeded_month_sits_at_a_fixed_position_from_any_day(year: int, month: int) -> None:
    for day in _month_days(year, month):
        seeded = settled_month(day)
        today, start, end = resolve_dates(FirmSpec(month=seeded))
        assert start == seeded and start.day == 1
        assert today == end + timedelta(days=7), "the firm's today is always its month end + 7 days"
        assert today <= day, f"{day}: the firm's today {today} lies after the as-of date"
        # the latest such month: the next month's settled day is after the as-of date
        following = (end + timedelta(days=1)).replace(day=1)
        assert resolve_dates(FirmSpec(month=following))[0] > day


def test_what_is_seeded_depends_on_the_month_only_and_lies_before_the_as_of_date() -> None:
    by_month: dict[date, int] = {}
    for day in _month_days(2024, 2) + _month_days(2026, 4):
        month = settled_month(day)
        if month not in by_month:
            firm = generate_firm(FirmSpec(seed=5, consultants=10, month=month))
            stamps = [
                max(r["created_at"], r["updated_at"]) for chunk in iter_time_entries(firm) for r in chunk
            ]
            assert max(stamps) < f"{firm.today.isoformat()}T00:00:00Z"
            by_month[month] = _pending(FirmSpec(seed=5, consultants=10, month=month))
    assert set(by_month) == {date(2023, 12, 1), date(2024, 1, 1), date(2026, 2, 1), date(2026, 3, 1)}


@pytest.mark.parametrize(
    "month", [date(2024, 2, 1), date(2026, 2, 1), date(2026, 11, 1), date(2027, 8, 1)], ids=str
)
def test_the_stream_benchmark_finds_enough_unapproved_entries_in_any_month(month: date) -> None:
    # Before: a fixed 130 consultants; November 2026 holds 573 unapproved entries, 605 wanted.
    from devtools.bench_stream import consultants_for, wanted_approvals

    assert _pending(FirmSpec(seed=5, consultants=130, month=date(2026, 11, 1))) < wanted_approvals(500)
    assert _pending(FirmSpec(seed=5, consultants=consultants_for(500), month=month)) >= wanted_approvals(500)


def test_as_of_after_today_is_refused() -> None:
    import argparse

    from devtools.bench_targets import as_of_date

    assert as_of_date("2024-02-29") == date(2024, 2, 29)
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    with pytest.raises(argparse.ArgumentTypeError, match="after today"):
        as_of_date(tomorrow.isoformat())
    with pytest.raises(argparse.ArgumentTypeError, match="not a date"):
        as_of_date("2024-02-30")


# -- each benchmark at a tiny scale on the 1st, the 6th and the last day ---------------------------


def _server() -> str:
    """The test PostgreSQL server: ``PSA_ERP_SYNC_TEST_DSN``, else the embedded one every test
    uses (tests/conftest.py), so `make bench-check` runs on a machine without a PostgreSQL service."""
    from tests.conftest import _server_dsn

    return _server_dsn()


def _json_of(out: str) -> dict[str, Any]:
    from devtools.bench_all import parse_output

    return parse_output(out)


@pytest.fixture
def bench_server(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The benchmarks' stacks on the test server, in databases dropped afterwards."""
    server = _server()
    monkeypatch.setenv("PSA_ERP_SYNC_DSN", server)
    names: list[str] = []

    def database(tag: str) -> str:
        names.append(f"pes_bench_{tag}_{os.getpid()}")
        return names[-1]

    yield database
    with psycopg.connect(server, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.integration
@pytest.mark.bench
@pytest.mark.parametrize("day", DAYS, ids=str)
def test_posting_benchmark_runs_on_any_day(
    day: date, bench_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from devtools import bench

    args = ["--consultants", "5", "--as-of", day.isoformat(), "--database", bench_server("posting")]
    args += ["--port-offset", str(PORT_OFFSET)]
    if day != DAYS[-1]:
        args.append("--no-peers")  # the peers load the same rows whatever the day: once is enough
    assert bench.main(args) == 0
    result = _json_of(capsys.readouterr().out)
    assert result["as_of"]["seeded_month"] == settled_month(day).isoformat()[:7]
    assert result["as_of"]["pipeline_as_of"] <= f"{day.isoformat()}T23:59:59"
    assert result["extract_and_stage"]["records"] > 100
    assert result["validate"]["quarantined"] < result["validate"]["records"] / 4
    assert result["post"]["records_sent"] > 100
    targets = result["targets"]
    assert {"stage_vs_durable_copy", "post_vs_bare_client", "peak_rss_mb"} <= set(targets)
    # billing of the posted time: every posted billable T&M entry is an event on an invoice in the ERP
    billing = result["billing"]
    assert billing["events"]["events"] > 10
    assert billing["plan"]["lines"] == billing["events"]["events"] and billing["plan"]["documents"] > 0
    assert billing["post"]["outcome"] == {
        "posted": billing["plan"]["documents"],
        "rejected": 0,
        "parked": 0,
        "still_pending": 0,
    }
    assert billing["post"]["documents_by_state"] == {"posted": billing["plan"]["documents"]}
    assert billing["bare_invoice_capacity"]["records"] == billing["plan"]["documents"]
    assert targets["billing_post_vs_bare_invoices"]["ratio"] > 0
    if day == DAYS[-1]:
        assert targets["stage_vs_dlt"]["ratio"] > 0 and targets["stage_vs_pandas"]["ratio"] > 0


@pytest.mark.integration
@pytest.mark.bench
@pytest.mark.parametrize("day", DAYS, ids=str)
def test_scaling_benchmark_runs_on_any_day(
    day: date, bench_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from devtools import bench_scaling

    prefix = bench_server("scaling")
    args = ["--base", "5", "--factors", "1,2", "--as-of", day.isoformat(), "--database", prefix]
    args += ["--port-offset", str(PORT_OFFSET)]
    if day != DAYS[-1]:
        args.append("--no-billing")  # billing's stages are the same whatever the day: once is enough
        args += ["--repeats", "1"]  # and so are the repeats (the default, 2, runs on the last day)
    try:
        assert bench_scaling.main(args) == 0
    finally:
        with psycopg.connect(_server(), autocommit=True) as conn:
            for factor in (1, 2):
                conn.execute(f'DROP DATABASE IF EXISTS "{prefix}_{factor}x" WITH (FORCE)')
    result = _json_of(capsys.readouterr().out)
    assert result["as_of"]["seeded_month"] == settled_month(day).isoformat()[:7]
    small, large = result["sizes"]
    assert small["consultants"] == 5 and large["consultants"] == 10
    stages = {"extract", "stage", "validate", "post"}
    if day == DAYS[-1]:
        stages |= {"billing_events", "billing_plan", "billing_post"}
    assert set(result["exponents"]) == stages
    for stage in stages:
        assert 0 < small["stages"][stage]["records"] < large["stages"][stage]["records"], stage
        assert isinstance(result["exponents"][stage], float), stage
    assert small["pipeline"]["records_sent"] == small["stages"]["post"]["records"] > 20
    assert result["repeats"] == (2 if day == DAYS[-1] else 1)
    for size in (small, large):
        assert len(size["repeats"]) == result["repeats"]
        for stage in stages:  # each repeat measured the same month: the fit takes its fastest
            fastest = min(r["stages"][stage]["seconds"] for r in size["repeats"])
            assert size["stages"][stage]["seconds"] == fastest, stage
            assert {r["stages"][stage]["records"] for r in size["repeats"]} == {
                size["stages"][stage]["records"]
            }


@pytest.mark.integration
@pytest.mark.bench
@pytest.mark.parametrize("day", DAYS, ids=str)
def test_peak_benchmark_runs_on_any_day(
    day: date, bench_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from devtools import bench_peak

    args = ["--consultants", "5", "--as-of", day.isoformat(), "--database", bench_server("peak")]
    assert bench_peak.main([*args, "--port-offset", str(PORT_OFFSET)]) == 0
    result = _json_of(capsys.readouterr().out)
    assert result["as_of"]["seeded_month"] == settled_month(day).isoformat()[:7]
    pipeline, stages = result["pipeline"], result["stages"]
    assert set(stages) == {"extract", "validate", "post"}
    assert pipeline["records_extracted"] == stages["extract"]["records"] > 100
    assert pipeline["records_sent"] == stages["post"]["records"] > 50
    # one clock over the stages run one after the other: at least their sum, and the ledger's last
    # confirmation inside it
    assert pipeline["wall_s"] >= sum(s["seconds"] for s in stages.values()) - 0.05
    assert 0 < pipeline["last_confirmation_s"] <= pipeline["wall_s"] + 1.0
    assert {"peak_pipeline_wall_s", "peak_pipeline_rss_mb"} <= set(result["targets"])


@pytest.mark.integration
@pytest.mark.bench
@pytest.mark.parametrize("day", DAYS, ids=str)
def test_forecast_benchmark_runs_on_any_day(
    day: date, clean_ods: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from devtools import bench_forecast

    assert bench_forecast.main(["--projects", "200", "--as-of", day.isoformat(), "--dsn", clean_ods]) == 0
    refresh = _json_of(capsys.readouterr().out)["forecast_refresh"]
    assert refresh["as_of"] == day.isoformat()
    assert refresh["written"] == [True, True, True] and refresh["line_series_rows_3_scenarios"] > 0


@pytest.mark.integration
@pytest.mark.bench
@pytest.mark.parametrize("day", DAYS, ids=str)
def test_stream_benchmark_seeds_what_it_approves_on_any_day(day: date, bench_server: Any) -> None:
    """The stream benchmark's calendar-dependent part: seeding the month and picking unapproved
    entries (what failed on 2026-12-06). The Airflow part is the same on any day; it runs once in
    ``test_stream_benchmark_end_to_end``."""
    from devtools.bench_stream import consultants_for, prepare, wanted_approvals
    from devtools.stack import Stack

    with Stack(database=bench_server("stream"), fresh=True, port_offset=PORT_OFFSET) as stack:
        stack.start_postgres()
        stack.start_simulators()
        chosen = prepare(stack, events=20, consultants=consultants_for(20), seed=5, as_of=day)
        with psycopg.connect(stack.dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE NOT is_closed), min(spent_date), max(spent_date)"
                " FROM sim_psa.time_entries WHERE id = ANY(%s)",
                (chosen,),
            ).fetchone()
    assert len(chosen) == wanted_approvals(20)
    assert row is not None and row[0] == len(chosen)


@pytest.mark.integration
@pytest.mark.airflow
@pytest.mark.bench
def test_stream_benchmark_end_to_end(bench_server: Any) -> None:
    from devtools.bench_stream import run

    figures = run(
        events=5,
        rate=5.0,
        port=18990,
        port_offset=PORT_OFFSET + 10,
        ingress_samples=5,
        drain_timeout=180,
        as_of=DAYS[0],
        database=bench_server("stream_e2e"),
    )
    assert figures["as_of"] == DAYS[0].isoformat()
    assert figures["events_measured"] >= 4
    assert figures["end_to_end_s"]["p95"] is not None
    json.dumps(figures, default=str)
