"""``make bench``: every benchmark in its own process, one JSON document with all targets.

- ``posting``: ``python -m devtools.bench`` (extract -> stage -> validate -> post, with
  same-run baselines: bare COPY, pandas ``to_sql``, dlt, the ERP's raw capacity; then billing of
  the posted time: events -> invoices -> ERP against a bare client's capacity for the same
  invoices, ``devtools/bench_billing.py``);
- ``forecast``: ``python -m devtools.bench_forecast`` (50,000 projects x 12
  months, computed and written to PostgreSQL);
- ``posting_remote``: the same month (2,000 consultants) with the ERP simulator taking 250 ms per
  request, without peers and billing;
- ``stream``: ``python -m devtools.bench_stream`` (webhook accepted -> ERP posting
  confirmed through the long-running consumer);
- ``stream_batch``: the same with batch posting passes of the month running meanwhile
  (``--with-batch``: the webhooks received during a pass are measured apart).

Each runs in a fresh process, one after the other, so one's memory and CPU do not colour the
next, all with the same ``--as-of`` (default today). Progress goes to stderr; the JSON, then a
table of every target (``devtools/bench_targets.py``), to stdout. The document (with the
machine, and the load average at start and end) and a chart are written to
``docs/bench/YYYY-MM-DD.json`` / ``.png`` (``devtools/bench_report.py``).
``--only posting,forecast`` runs a subset; each module takes more options when run alone.

- ``scaling``: ``python -m devtools.bench_scaling`` (the pipeline at 1x, 2x and 4x 250
  consultants, two rounds; per stage, the exponent of time against records over each size's
  fastest repeat);
- ``peak`` (only with ``--peak`` or ``--only peak``): ``python -m devtools.bench_peak``, the
  month-end peak (12,500 consultants) from the PSA extract to the last ERP confirmation, its wall
  time and the pipeline's peak RSS. ``make bench-peak`` runs it alone and saves
  ``docs/bench/YYYY-MM-DD-peak.json`` / ``.png`` (``--suffix peak``), beside the day's full run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devtools.bench_report import BENCH_DIR, machine, save, text_table
from devtools.bench_targets import add_as_of, evaluate

BENCHES: dict[str, list[str]] = {
    "posting": ["-m", "devtools.bench"],
    # The same month against an ERP that takes 250 ms per request (a remote ERP). The same scale as
    # ``posting``: each pass's fixed costs (the periods read, one request to the ERP; the first
    # chunk planned; the hand-over from the timebill pass to the expense pass; the tail) are ~1.5-2.5
    # s whatever the month's size, ~15 % of a 500-consultant month's 15 s of posting and ~4 % of
    # this month's ~45 s (docs/performance.md, "scaling5").
    "posting_remote": [
        "-m",
        "devtools.bench",
        "--erp-service-ms",
        "250",
        "--consultants",
        "2000",
        "--no-peers",
        "--no-billing",
        "--database",
        "psa_erp_sync_bench_remote",
    ],
    "forecast": ["-m", "devtools.bench_forecast"],
    "stream": ["-m", "devtools.bench_stream"],
    # The same while batch posting passes of the month run back to back (the same posting lock).
    "stream_batch": ["-m", "devtools.bench_stream", "--with-batch"],
    # Issue 16, deliverable 5: each stage's exponent of time against records over 1x, 2x and 4x
    # 250 consultants, two rounds (devtools/bench_scaling.py; about 3 minutes).
    "scaling": ["-m", "devtools.bench_scaling"],
}
# Run only when asked for (``--peak``, ``make bench PEAK=1``, ``make bench-peak``): the month-end
# peak, 12,500 consultants from the PSA extract to the last ERP confirmation (~10 min).
OPTIONAL_BENCHES: dict[str, list[str]] = {"peak": ["-m", "devtools.bench_peak"]}
NO_PORTS = frozenset({"forecast"})  # benchmarks that start no simulator (take no --port-offset)


def parse_output(stdout: str) -> dict[str, Any]:
    """The JSON document a benchmark printed last (logs may precede it)."""
    lines = stdout.splitlines()
    for start in range(len(lines)):
        if lines[start].startswith("{"):
            try:
                parsed = json.loads("\n".join(lines[start:]))
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                return parsed
    raise ValueError("the benchmark printed no JSON object")


def _port_offset(name: str, offset: int) -> list[str]:
    """``--port-offset`` for the benchmarks that start simulators (the forecast starts none)."""
    return ["--port-offset", str(offset)] if offset and name not in NO_PORTS else []


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", default=",".join(BENCHES), help="comma-separated subset of " + ", ".join(BENCHES)
    )
    parser.add_argument(
        "--out-dir", type=Path, default=BENCH_DIR, help="where the run's JSON and chart are written"
    )
    parser.add_argument("--no-save", action="store_true", help="print only; write no file")
    parser.add_argument(
        "--peak", action="store_true", help="also run the month-end peak (bench_peak, ~10 min)"
    )
    parser.add_argument(
        "--suffix", default="", help="saved as YYYY-MM-DD-SUFFIX.json/.png (make bench-peak: peak)"
    )
    parser.add_argument(
        "--port-offset",
        type=int,
        default=0,
        help="move every benchmark's simulators and Airflow ports (another stack or CI runs here)",
    )
    add_as_of(parser)
    args = parser.parse_args(argv)
    known = {**BENCHES, **OPTIONAL_BENCHES}
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    if args.peak and "peak" not in chosen:
        chosen.append("peak")
    unknown = [b for b in chosen if b not in known]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {list(known)}")
    started_all = time.monotonic()
    out: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "as_of": args.as_of.isoformat(),
        "machine": {**machine(), "load_average_at_start": _load()},
    }
    failed = False
    for name in chosen:
        command = [*known[name], "--as-of", args.as_of.isoformat(), *_port_offset(name, args.port_offset)]
        sys.stderr.write(f"=== bench {name}: python {' '.join(command)}\n")
        sys.stderr.flush()
        started = time.monotonic()
        proc = subprocess.run([sys.executable, *command], stdout=subprocess.PIPE, text=True, check=False)
        seconds = round(time.monotonic() - started, 1)
        try:
            result = parse_output(proc.stdout)
        except ValueError:
            result = {"error": f"exit code {proc.returncode}, no JSON", "stdout_tail": proc.stdout[-2000:]}
        result["wall_s"] = seconds
        out[name] = result
        if proc.returncode != 0 or "error" in result:
            failed = True
    out["machine"]["load_average_at_end"] = _load()
    out["wall_s"] = round(time.monotonic() - started_all, 1)
    out["targets"] = {row["key"]: row for row in evaluate(out)}
    sys.stdout.write(json.dumps(out, indent=2, default=str) + "\n\n")
    sys.stdout.write(text_table(out))
    if not args.no_save:
        json_path, chart_path = save(out, args.out_dir, suffix=args.suffix)
        sys.stdout.write(
            f"\nsaved {json_path} and {chart_path}; make bench-doc puts the table in docs/performance.md\n"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
