"""Generate a firm and load it into running simulators.

``python -m simulators.firm --seed 42 --consultants 200 --psa http://127.0.0.1:18101
--erp http://127.0.0.1:18103 --crm http://127.0.0.1:18102 --json-summary``

Without any URL it only generates and prints the summary. ``--today`` defaults to the caller's
date (this CLI is the caller: the generator itself never reads the clock).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import date

from simulators.firm.generator import FirmSpec, generate_firm, summary
from simulators.firm.load import apply_mutations, load_firm


def _month(value: str) -> date:
    return date.fromisoformat(f"{value}-01") if len(value) == 7 else date.fromisoformat(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.firm", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--consultants", type=int, default=200)
    parser.add_argument("--customers", type=int, default=120)
    parser.add_argument("--projects", type=int, default=300)
    parser.add_argument("--opportunities", type=int, default=150)
    parser.add_argument("--today", type=date.fromisoformat, default=None, help="YYYY-MM-DD (default: today)")
    parser.add_argument("--month", type=_month, default=None, help="YYYY-MM of the time entries")
    parser.add_argument("--previous-month-open", action="store_true")
    parser.add_argument("--psa", help="PSA simulator base URL")
    parser.add_argument("--erp", help="ERP simulator base URL")
    parser.add_argument("--crm", help="CRM simulator base URL")
    parser.add_argument("--chunk-size", type=int, default=20_000)
    parser.add_argument("--no-mutations", action="store_true", help="seed only; skip the post-seed mutations")
    parser.add_argument("--json-summary", action="store_true", help="print the summary as JSON")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(message)s")

    today = args.today or (None if args.month else date.today())  # the caller's date
    spec = FirmSpec(
        seed=args.seed,
        consultants=args.consultants,
        customers=args.customers,
        projects=args.projects,
        opportunities=args.opportunities,
        today=today,
        month=args.month,
        previous_month_open=args.previous_month_open,
    )
    started = time.monotonic()
    firm = generate_firm(spec)
    result = summary(firm)
    loaded: dict[str, int] = {}
    applied: dict[str, int] = {}
    if args.psa or args.erp or args.crm:
        loaded = load_firm(
            firm, psa_url=args.psa, erp_url=args.erp, crm_url=args.crm, chunk_size=args.chunk_size
        )
        if args.psa and not args.no_mutations:
            applied = apply_mutations(firm, args.psa)
    result["loaded"] = loaded
    result["mutations_applied"] = applied
    result["seconds"] = round(time.monotonic() - started, 2)
    if args.json_summary:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    else:
        for section in ("counts", "dirt", "mutations", "loaded", "mutations_applied"):
            for key, value in sorted(result[section].items()):
                sys.stdout.write(f"{section:18} {key:42} {value}\n")
        sys.stdout.write(f"seconds {result['seconds']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
