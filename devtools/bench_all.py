"""``make bench``: every benchmark in its own process, one JSON document with all targets.

- ``posting``: ``python -m devtools.bench`` (extract -> stage -> validate -> post, with
  same-run baselines: bare COPY, pandas ``to_sql``, dlt, the ERP's raw capacity);
- ``forecast``: ``python -m devtools.bench_forecast`` (50,000 projects x 12
  months, computed and written to PostgreSQL);
- ``stream``: ``python -m devtools.bench_stream`` (webhook accepted -> ERP posting
  confirmed, with a real API server, scheduler, triggerer and DAG processor).

Each runs in a fresh process, one after the other, so one's memory and CPU do not colour the
next. Progress goes to stderr, the JSON to stdout, and a table of the targets to stderr at the end.
``--only posting,forecast`` runs a subset; each module takes more options when run alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

BENCHES: dict[str, list[str]] = {
    "posting": ["-m", "devtools.bench"],
    "forecast": ["-m", "devtools.bench_forecast"],
    "stream": ["-m", "devtools.bench_stream"],
}


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


def targets_of(name: str, result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each benchmark's targets in one shape: measured, target, comparison, met."""
    if name == "posting":
        return {f"posting.{k}": v for k, v in result.get("targets", {}).items()}
    if name == "forecast":
        fr = result["forecast_refresh"]
        return {
            "forecast.refresh_s": {
                "measured": fr["refresh_s"], "target": fr["target_s"], "comparison": "<=", "met": fr["met"],
                "includes_db_write": fr.get("includes_db_write"),
            }
        }  # fmt: skip
    if name == "stream":
        return {
            "stream.end_to_end_p95_s": {
                "measured": result["end_to_end_s"]["p95"], "target": result["goal_p95_s"], "comparison": "<=",
                "met": result["goal_met"],
            }
        }  # fmt: skip
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", default=",".join(BENCHES), help="comma-separated subset of " + ", ".join(BENCHES)
    )
    args = parser.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {list(BENCHES)}")
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                                       "load_average_before": [round(x, 2) for x in os.getloadavg()]}}  # fmt: skip
    targets: dict[str, dict[str, Any]] = {}
    failed = False
    for name in chosen:
        sys.stderr.write(f"=== bench {name}: python {' '.join(BENCHES[name])}\n")
        sys.stderr.flush()
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, *BENCHES[name]], stdout=subprocess.PIPE, text=True, check=False
        )
        seconds = round(time.monotonic() - started, 1)
        try:
            result = parse_output(proc.stdout)
        except ValueError:
            result = {"error": f"exit code {proc.returncode}, no JSON", "stdout_tail": proc.stdout[-2000:]}
        result["wall_s"] = seconds
        out[name] = result
        if proc.returncode != 0 or "error" in result:
            failed = True
            continue
        targets.update(targets_of(name, result))
    out["targets"] = targets
    sys.stdout.write(json.dumps(out, indent=2, default=str) + "\n")
    sys.stderr.write("\n target                                   measured      target   met\n")
    for key, t in targets.items():
        sys.stderr.write(
            f" {key:<40} {t['measured']!s:>10} {t['comparison']} {t['target']!s:<8} {t['met']}\n"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
