"""The month-end peak (issue 16, deliverable 5): ``--consultants 12500`` (about 598k time entries +
82k expenses) from the PSA extract to the last ERP confirmation, with the ERP simulator on the same
machine.

The firm is seeded first (child process, not timed); then ``devtools/bench_pipeline.py`` runs
extract -> validate -> post with nothing in between (no re-staging, no peers, no settling VACUUM:
the pipeline as a month end runs it). Printed as JSON:

- ``pipeline.wall_s``: one clock from the first PSA request to the return of the last posting
  pass, i.e. the last ERP confirmation (target <= 300 s); ``pipeline.last_confirmation_s`` is the
  same read from the ledger's latest attempt;
- per stage (``stages``): records, seconds, rows/s, CPU seconds of this process, of the run's
  PostgreSQL backends and of the ERP and PSA simulators, RSS after the stage;
- ``peak_rss_mb``: the pipeline process's peak resident set (target <= 512 MB; the seeding child's
  is ``seed.child_peak_rss_mb``).

    python -m devtools.bench_peak                     # make bench-peak
    python -m devtools.bench_peak --consultants 2000  # a smaller month, same figures
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from devtools.bench_common import (
    RunDates,
    add_run_arguments,
    configure_logging,
    load_average,
    machine,
)
from devtools.bench_targets import evaluate

log = logging.getLogger("bench.peak")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_run_arguments(parser, consultants=12500, database="psa_erp_sync_bench_peak")
    args = parser.parse_args(argv)
    configure_logging()

    from devtools.bench_pipeline import run_pipeline, seed
    from devtools.stack import Stack

    dates = RunDates.of(args.as_of)
    started = time.monotonic()
    doc: dict[str, Any] = {
        "machine": machine(),
        "as_of": dates.describe(args.as_of),
        "scale": {"consultants": args.consultants, "concurrency": args.concurrency, "batch": args.batch},
    }
    with Stack(database=args.database, port_offset=args.port_offset, simulators=("psa", "erp")) as stack:
        stack.start_postgres()
        stack.start_simulators()
        log.info("seeding %d consultants (child process)", args.consultants)
        doc["seed"] = seed(stack, args.consultants, dates.today, concurrency=args.concurrency)
        doc["machine"]["load_average_before_pipeline"] = load_average()
        doc.update(run_pipeline(stack, as_of=dates.as_of, concurrency=args.concurrency, batch=args.batch))
    doc["machine"]["load_average_at_end"] = load_average()
    doc["wall_seconds"] = round(time.monotonic() - started, 1)
    doc["targets"] = {row["key"]: row for row in evaluate({"peak": doc}) if row["met"] is not None}
    print(json.dumps(doc, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
