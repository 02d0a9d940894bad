"""``python -m psa_erp_sync.trace <source system> <source id> [--json] [--dsn DSN]``."""

from __future__ import annotations

import argparse
import json
import os
import sys

import psycopg

from psa_erp_sync.trace import RecordNotFound, format_text, trace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m psa_erp_sync.trace",
        description="Print the path of one source record: staging, validation, ledger, ERP, forecast, billing, lineage runs.",
    )
    parser.add_argument("source_system", help="e.g. psa")
    parser.add_argument("source_id", help="the source id (12345) or the ERP external id (psa-te-12345)")
    parser.add_argument(
        "--dsn", default=os.environ.get("PSA_ERP_SYNC_DSN"), help="ODS DSN (default: $PSA_ERP_SYNC_DSN)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    if not args.dsn:
        print("no ODS given: pass --dsn or set PSA_ERP_SYNC_DSN", file=sys.stderr)
        return 2
    try:
        with psycopg.connect(args.dsn) as conn:
            traces = trace(conn, args.source_system, args.source_id)
    except RecordNotFound as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(json.dumps(traces, indent=2) if args.json else format_text(traces))
    return 0


if __name__ == "__main__":
    sys.exit(main())
