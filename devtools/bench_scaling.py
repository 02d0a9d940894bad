"""The scaling check of ``make bench`` (issue 16, deliverable 5): is each stage's cost linear in the
month's records?

The posting pipeline (``devtools/bench_pipeline.py``: extract, stage, validate, post, and billing of
the posted time) runs at 1x, 2x and 4x a base size (``--base`` consultants, default 250: about
13,500 records at 1x, 54,000 at 4x), each size on a freshly seeded database and simulators, in one
run. Per stage, the exponent ``b`` of ``seconds = a * records ** b`` is fitted by least squares on
log-log axes over the three points (:func:`exponent`): 1.0 is linear, 2.0 quadratic; the target is
``b <= 1.1`` for every stage (``devtools/bench_targets.py``). The same fit is made of the stage's
CPU seconds (this process + the database's PostgreSQL backends), which a shared machine's load
disturbs less than wall time; both are printed.

The sizes run ``--repeats`` times (default 2), in rounds (1x, 2x, 4x, then 1x, 2x, 4x again), each
on a fresh database; per stage and size the fit takes the repeat with the least seconds
(:func:`best_of`), the usual estimate of a cost from timings a shared machine's load can only make
longer (a stage of 0.3-2 s that a neighbour's burst doubles at one size bends the fit by 0.3-0.5).
Every repeat's figures stay in the JSON (``sizes[i].repeats``).

    python -m devtools.bench_scaling                       # base 250 consultants: 1x, 2x, 4x, twice
    python -m devtools.bench_scaling --base 100 --factors 1,2 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from devtools.bench_common import RunDates, add_run_arguments, configure_logging, load_average

log = logging.getLogger("bench.scaling")

STAGES = ("extract", "stage", "validate", "post", "billing_events", "billing_plan", "billing_post")


def exponent(points: Sequence[tuple[float, float]]) -> float | None:
    """The slope of ``log(y)`` against ``log(x)`` by least squares: ``b`` in ``y = a * x ** b``.

    ``points`` are ``(records, seconds)``. None when it cannot be fitted: fewer than two points
    with positive values, or a single distinct ``x``.
    """
    logs = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len(logs) < 2:
        return None
    mean_x = sum(x for x, _ in logs) / len(logs)
    mean_y = sum(y for _, y in logs) / len(logs)
    sxx = sum((x - mean_x) ** 2 for x, _ in logs)
    if sxx == 0:
        return None
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in logs)
    return sxy / sxx


def fit(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage: the exponent of wall seconds and of CPU seconds against records, over the sizes."""
    out: dict[str, Any] = {}
    for stage in STAGES:
        found = [s["stages"][stage] for s in sizes if stage in s.get("stages", {})]
        if len(found) < 2:
            continue
        wall = exponent([(f["records"], f["seconds"]) for f in found])
        cpu = exponent([(f["records"], f["cpu_s_pipeline_and_backends"]) for f in found])
        # A fixed cost (connections, a periods read, a first page) flattens the fit over small
        # sizes; the CPU exponent between the two largest sizes shows what grows faster than the
        # records once that cost is amortised.
        last_cpu = exponent([(f["records"], f["cpu_s_pipeline_and_backends"]) for f in found[-2:]])
        # The product's own CPU (the simulators' backends taken out of the run database's): what
        # the PSA simulator spends rendering pages is the machine's, not the extract's.
        ours = (
            exponent([(f["records"], f["cpu_s_ours"]) for f in found])
            if all("cpu_s_ours" in f for f in found)
            else None
        )
        out[stage] = {
            "exponent": None if wall is None else round(wall, 3),
            "cpu_exponent": None if cpu is None else round(cpu, 3),
            "cpu_exponent_largest_pair": None if last_cpu is None else round(last_cpu, 3),
            "cpu_exponent_ours": None if ours is None else round(ours, 3),
            "records": [f["records"] for f in found],
            "seconds": [f["seconds"] for f in found],
            "rows_per_s": [f["rows_per_s"] for f in found],
            "cpu_s": [f["cpu_s_pipeline_and_backends"] for f in found],
            "cpu_s_ours": [f.get("cpu_s_ours") for f in found],
            "cpu_s_simulators": [f.get("cpu_s_simulators") for f in found],
        }
    return out


def best_of(repeats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per stage, the figures of the repeat that took the least seconds (``repeat``: its index).

    ``repeats`` are one size's ``stages`` documents, one per repeat; a stage a repeat did not
    measure is taken from those that did.
    """
    best: dict[str, Any] = {}
    for index, stages in enumerate(repeats):
        for stage, figures in stages.items():
            if stage not in best or figures["seconds"] < best[stage]["seconds"]:
                best[stage] = {**figures, "repeat": index}
    return best


def run(
    *,
    base: int,
    factors: Sequence[int],
    database: str,
    port_offset: int,
    as_of_day: Any,
    billing: bool = True,
    concurrency: int = 15,
    batch: int = 100,
    repeats: int = 2,
) -> dict[str, Any]:
    """The pipeline at each size, ``repeats`` rounds, then the fit over each size's best."""
    dates = RunDates.of(as_of_day)
    runs: dict[int, list[dict[str, Any]]] = {factor: [] for factor in factors}
    for round_ in range(repeats):
        for factor in factors:
            log.info("scaling: round %d/%d, %dx = %d consultants", round_ + 1, repeats, factor, base * factor)
            runs[factor].append(
                _one_size(
                    consultants=base * factor,
                    database=f"{database}_{factor}x",
                    port_offset=port_offset,
                    dates=dates,
                    billing=billing,
                    concurrency=concurrency,
                    batch=batch,
                )
            )
    sizes = [
        {
            "factor": factor,
            **runs[factor][0],
            "stages": best_of([r["stages"] for r in runs[factor]]),
            "repeats": runs[factor],
        }
        for factor in factors
    ]
    exponents = fit(sizes)
    return {
        "base_consultants": base,
        "factors": list(factors),
        "repeats": repeats,
        "as_of": dates.describe(as_of_day),
        "exponents": {stage: e["exponent"] for stage, e in exponents.items()},
        "cpu_exponents": {stage: e["cpu_exponent"] for stage, e in exponents.items()},
        "cpu_exponents_largest_pair": {
            stage: e["cpu_exponent_largest_pair"] for stage, e in exponents.items()
        },
        "cpu_exponents_ours": {stage: e["cpu_exponent_ours"] for stage, e in exponents.items()},
        "by_stage": exponents,
        "sizes": sizes,
    }


def _one_size(
    *,
    consultants: int,
    database: str,
    port_offset: int,
    dates: RunDates,
    billing: bool,
    concurrency: int,
    batch: int,
) -> dict[str, Any]:
    """One size on a fresh database and simulators: seed, then the pipeline's figures."""
    from devtools.bench_pipeline import run_pipeline, seed
    from devtools.stack import Stack

    with Stack(database=database, port_offset=port_offset, simulators=("psa", "erp")) as stack:
        stack.start_postgres()
        stack.start_simulators()
        seeded = seed(stack, consultants, dates.today, concurrency=concurrency)
        load_before = load_average()
        figures = run_pipeline(
            stack, as_of=dates.as_of, concurrency=concurrency, batch=batch, restage=True, billing=billing
        )
    return {
        "consultants": consultants,
        "seed": seeded,
        "load_average": {"before": load_before, "after": load_average()},
        **figures,
    }


def summary(doc: dict[str, Any]) -> str:
    """Per stage: records, seconds and rows/s at each size, and the exponents, as a text table."""
    factors = doc["factors"]
    header = [
        "stage",
        *(f"{f}x records / s / rows/s" for f in factors),
        "exponent",
        "cpu exp.",
        "cpu exp. 2 largest",
        "cpu exp. ours",
    ]
    rows = [header]
    for stage, e in doc["by_stage"].items():
        cells = [
            f"{r:,} / {s:.1f} / {v:,}"
            for r, s, v in zip(e["records"], e["seconds"], e["rows_per_s"], strict=True)
        ]
        rows.append(
            [
                stage,
                *cells,
                f"{e['exponent']}",
                f"{e['cpu_exponent']}",
                f"{e['cpu_exponent_largest_pair']}",
                f"{e.get('cpu_exponent_ours')}",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return (
        "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", type=int, default=250, help="consultants at 1x")
    parser.add_argument("--factors", default="1,2,4", help="comma-separated multiples of --base")
    parser.add_argument("--no-billing", action="store_true", help="skip the billing stages")
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="rounds over the sizes; the fit takes each stage's fastest repeat per size (default 2)",
    )
    add_run_arguments(
        parser,
        consultants=None,
        database="psa_erp_sync_bench_scaling",
        database_help="prefix of the databases (one per size, <prefix>_<factor>x), dropped and recreated",
    )
    args = parser.parse_args(argv)
    configure_logging()
    factors = [int(f) for f in args.factors.split(",") if f.strip()]
    if len(factors) < 2:
        parser.error("--factors needs at least two sizes to fit an exponent")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    started = time.monotonic()
    load_start = load_average()
    doc = run(
        base=args.base,
        factors=factors,
        database=args.database,
        port_offset=args.port_offset,
        as_of_day=args.as_of,
        billing=not args.no_billing,
        concurrency=args.concurrency,
        batch=args.batch,
        repeats=args.repeats,
    )
    doc["machine"] = {
        "cpus": os.cpu_count(),
        "load_average_at_start": load_start,
        "load_average_at_end": load_average(),
    }
    doc["wall_seconds"] = round(time.monotonic() - started, 1)
    sys.stderr.write(summary(doc))
    print(json.dumps(doc, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
