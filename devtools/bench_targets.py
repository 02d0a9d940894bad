"""The targets of ``make bench`` (issue 16), in one table, and how a run's document meets them.

Each target compares a measured figure of the run with a threshold: either a ratio to a ceiling
or peer measured **in the same run** on the same rows (the machines are shared and noisy, so an
absolute rows/s figure says more about the neighbours than about the code), or an absolute bound
where there is no same-run baseline (latency, the forecast's wall time, memory).

Figures are addressed by dotted paths into the ``make bench`` document (``devtools.bench_all``):
``posting.stage_copy.rows_per_s`` is ``doc["posting"]["stage_copy"]["rows_per_s"]``. A target
whose figures the run does not hold (a benchmark left out with ``--only``, or failed) is reported
as not measured, never as met.

The benchmarks read their own thresholds from here (``threshold(key)``), so a target is changed
in one place. The posting targets compare with the bare client sending **the same records with the
same protocol** (``erp_capacity_same_records``: the engine's own batches, POST and job result,
same concurrency), as issue 16 defines them; ``erp_raw_capacity`` (synthetic timebills, POST only,
no result read) stays in the document as the ERP simulator's raw ceiling. Also: ``--as-of``, the date every benchmark and its seeding run as of.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    measured: str  # dotted path of the measured figure
    comparison: Literal[">=", "<="]
    threshold: float
    against: str | None = None  # dotted path of the same-run ceiling or peer; None: absolute
    against_label: str = ""
    unit: str = ""


TARGETS: tuple[Target, ...] = (
    Target(
        "validation_vs_pydantic_core",
        "validation vs bare pydantic-core, same payloads",
        "posting.validate.rows_per_s",
        ">=",
        0.5,
        against="posting.validate.bare_pydantic_same_payloads.rows_per_s",
        against_label="bare pydantic-core",
        unit="rows/s",
    ),
    Target(
        "stage_vs_durable_copy",
        "staging vs durable keyed COPY, same rows",
        "posting.stage_copy.rows_per_s",
        ">=",
        0.5,
        against="posting.copy_ceilings_same_rows.durable_text_keyed.rows_per_s",
        against_label="durable keyed COPY",
        unit="rows/s",
    ),
    Target(
        "stage_vs_pandas",
        "staging vs pandas to_sql, same rows",
        "posting.stage_copy.rows_per_s",
        ">=",
        5.0,
        against="posting.pandas_to_sql_same_rows.rows_per_s",
        against_label="pandas to_sql",
        unit="rows/s",
    ),
    Target(
        "stage_vs_dlt",
        "staging vs dlt merge, same rows",
        "posting.stage_copy.rows_per_s",
        ">=",
        10.0,
        against="posting.dlt_merge_same_rows.rows_per_s",
        against_label="dlt merge",
        unit="rows/s",
    ),
    Target(
        "post_vs_bare_client",
        "post vs bare client, local ERP",
        "posting.post.rows_per_s",
        ">=",
        0.85,
        against="posting.erp_capacity_same_records.rows_per_s",
        against_label="bare client, same records",
        unit="rows/s",
    ),
    Target(
        "post_vs_bare_client_remote",
        "post vs bare client, ERP 250 ms/request",
        "posting_remote.post.rows_per_s",
        ">=",
        0.95,
        against="posting_remote.erp_capacity_same_records.rows_per_s",
        against_label="bare client, same records",
        unit="rows/s",
    ),
    Target(
        "post_slots_busy_remote",
        "ERP slots busy while posting (of 15), ERP 250 ms/request",
        "posting_remote.post.erp_mean_requests_in_flight",
        ">=",
        14.0,
        unit="slots",
    ),
    Target(
        "billing_post_vs_bare_invoices",
        "billing post vs bare invoice capacity, same invoices, local ERP",
        "posting.billing.post.documents_per_s",
        ">=",
        0.85,
        against="posting.billing.bare_invoice_capacity.documents_per_s",
        against_label="bare client",
        unit="invoices/s",
    ),
    Target("peak_rss_mb", "peak RSS of the pipeline process", "posting.peak_rss_mb", "<=", 512.0, unit="MB"),
    Target("stream_p95_s", "stream webhook -> ERP, p95", "stream.end_to_end_s.p95", "<=", 1.5, unit="s"),
    Target("stream_p99_s", "stream webhook -> ERP, p99", "stream.end_to_end_s.p99", "<=", 2.5, unit="s"),
    Target(
        "stream_batch_p95_s",
        "stream webhook -> ERP while a batch posting pass runs, p95",
        "stream_batch.during_batch_pass.end_to_end_s.p95",
        "<=",
        3.0,
        unit="s",
    ),
    Target(
        "forecast_refresh_s",
        "forecast 50k projects x 12 months (incl. write)",
        "forecast.forecast_refresh.refresh_s",
        "<=",
        5.0,
        unit="s",
    ),
)

# Issue 16, deliverable 5: the month-end peak (``make bench-peak`` / ``make bench PEAK=1``,
# devtools/bench_peak.py) and the scaling check (devtools/bench_scaling.py): each stage's exponent
# of wall time against records over 1x, 2x and 4x a base size.
SCALING_STAGES = ("extract", "stage", "validate", "post", "billing_events", "billing_plan", "billing_post")
TARGETS += (
    Target(
        "peak_pipeline_wall_s",
        "month-end peak: PSA extract -> last ERP confirmation, wall",
        "peak.pipeline.wall_s",
        "<=",
        300.0,
        unit="s",
    ),
    Target(
        "peak_pipeline_rss_mb",
        "month-end peak: pipeline peak RSS",
        "peak.peak_rss_mb",
        "<=",
        512.0,
        unit="MB",
    ),
    *(
        Target(
            f"scaling_exponent_{stage}",
            f"scaling: {stage.replace('_', ' ')} time ~ records^b, b over 1x/2x/4x",
            f"scaling.exponents.{stage}",
            "<=",
            1.1,
        )
        for stage in SCALING_STAGES
    ),
)

BY_KEY = {t.key: t for t in TARGETS}


def threshold(key: str) -> float:
    return BY_KEY[key].threshold


def lookup(doc: dict[str, Any], path: str) -> Any:
    """The value at a dotted path, or None when any part is missing (a number indexes a list)."""
    node: Any = doc
    for part in path.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif not isinstance(node, dict) or part not in node:
            return None
        else:
            node = node[part]
    return node


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def evaluate(doc: dict[str, Any], targets: tuple[Target, ...] = TARGETS) -> list[dict[str, Any]]:
    """One row per target: measured, ceiling or peer, ratio, target and met (None: not measured)."""
    rows = []
    for t in targets:
        measured = _number(lookup(doc, t.measured))
        against = _number(lookup(doc, t.against)) if t.against else None
        value: float | None
        if t.against is None:
            value = measured
        elif measured is None or not against:
            value = None
        else:
            value = measured / against
        met = (
            None
            if value is None
            else (value >= t.threshold if t.comparison == ">=" else value <= t.threshold)
        )
        rows.append(
            {
                "key": t.key,
                "name": t.label,
                "measured": measured,
                "unit": t.unit,
                "against": against,
                "against_label": t.against_label,
                "ratio": round(value, 3) if value is not None and t.against else None,
                "comparison": t.comparison,
                "target": t.threshold,
                "met": met,
            }
        )
    return rows


def as_of_date(text: str) -> date:
    """``--as-of YYYY-MM-DD``."""
    try:
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc
    if day > datetime.now(UTC).date():
        # The simulators stamp what they serve with the real clock: rows seeded after it would be
        # "updated in the future" when extracted, and quarantined.
        raise argparse.ArgumentTypeError(f"{text} is after today: benchmarks run as of today or earlier")
    return day


def add_as_of(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--as-of",
        type=as_of_date,
        default=datetime.now(UTC).date(),
        help="the date the benchmark and its seeding run as of (YYYY-MM-DD; default today, UTC)",
    )
