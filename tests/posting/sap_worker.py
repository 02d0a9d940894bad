"""One SAP posting pass in a process of its own (tests/posting/test_sap_fault_injection.py kills it).

    python -m tests.posting.sap_worker ARGS_JSON

The same path as the posting task: ``post_record_type`` with the SAP adapter
(:func:`psa_erp_sync.posting.adapter.adapter_for`). Prints one JSON line with the outcome.
"""

from __future__ import annotations

import json
import logging
import sys

from psa_erp_sync.clients.http import RetryPolicy
from psa_erp_sync.clients.sap import S4HanaClient
from psa_erp_sync.config import load_config
from psa_erp_sync.posting.adapter import SapMapping, adapter_for
from psa_erp_sync.posting.engine import EngineSettings
from psa_erp_sync.posting.service import post_record_type

COMPANY_CODES = {"LE-US1": "1010", "LE-US2": "1020", "LE-UK1": "2010"}
MAPPING = SapMapping(company_codes=COMPANY_CODES, activity_type="T001", fiscal_years=(2025, 2026, 2027))


def main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    retry = RetryPolicy(max_attempts=8, base_delay_s=0.02, max_delay_s=0.2)
    with S4HanaClient(
        base_url=args["sap_url"],
        user="PSA_COMM",
        password="secret",
        timeout=args.get("timeout", 10.0),
        retry=retry,
    ) as client:
        result = post_record_type(
            dsn=args["dsn"],
            client=adapter_for("sap", client, sap_mapping=MAPPING),
            record_type="timebill",
            config=load_config(),
            settings=EngineSettings(
                batch_size=args.get("batch_size", 50),
                max_concurrency=args.get("concurrency", 4),
                progress_every_s=3600,
            ),
            run_id=args.get("run_id", "sap-fault-run"),
        )
        print(json.dumps({"outcome": result.outcome, "csrf_fetches": client.csrf_fetches}), flush=True)
    return 3 if result.outcome["still_pending"] else 0  # as the posting command line: run again


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
