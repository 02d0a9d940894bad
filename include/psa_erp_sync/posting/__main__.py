"""Post one ERP record type from the command line, outside Airflow (break-glass, tests, benchmarks).

    python -m psa_erp_sync.posting --dsn $DSN --erp-url http://127.0.0.1:18103 --record-type timebill

Same path as the operator: periods, planner, ledger, engine. Prints the outcome as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from psa_erp_sync.config import load_config
from psa_erp_sync.posting.engine import EngineSettings
from psa_erp_sync.posting.service import post_record_type


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default=os.environ.get("PSA_ERP_SYNC_DSN"), help="ODS DSN")
    parser.add_argument("--erp-url", required=True)
    parser.add_argument("--erp-token", default=os.environ.get("ERP_TOKEN", "local-erp-token"))
    parser.add_argument("--account-id", default="TSTDRV100001")
    parser.add_argument("--record-type", default="timebill", choices=["timebill", "expensereport"])
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="the ERP account's limit of requests in flight, shared with every other process posting to it"
        " (default: posting.max_concurrency in config/mappings.yaml)",
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--run-id", default="cli")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("give --dsn or set PSA_ERP_SYNC_DSN")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.posting.budget import account_limit

    limit = args.concurrency or account_limit()
    with NetSuiteClient(
        base_url=args.erp_url,
        account_id=args.account_id,
        token=args.erp_token,
        timeout=args.timeout,
        concurrency_limit=limit,
    ) as client:
        result = post_record_type(
            dsn=args.dsn,
            client=client,
            record_type=args.record_type,
            config=load_config(),
            settings=EngineSettings(batch_size=args.batch_size, max_concurrency=limit),
            run_id=args.run_id,
        )
    print(json.dumps({"plan": result.plan, "outcome": result.outcome}))
    return 0 if not result.outcome["still_pending"] else 3


if __name__ == "__main__":
    sys.exit(main())
