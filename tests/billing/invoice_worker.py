"""One invoicing process of the fault suite (tests/billing/test_invoice_faults.py), killed at will.

    python -m tests.billing.invoice_worker DSN ERP_URL RUN_ID BATCH_SIZE MAX_LINES

Runs :func:`psa_erp_sync.billing.invoice_pass.invoice_ready_events` (what one try of the billing
DAG's ``invoice`` task does) and prints one JSON line with its plan and outcome.
"""

from __future__ import annotations

import json
import logging
import sys

from psa_erp_sync.billing.invoice_pass import invoice_ready_events
from psa_erp_sync.clients.erp import NetSuiteClient
from psa_erp_sync.config import load_config
from psa_erp_sync.posting.engine import EngineSettings


def main(dsn: str, erp_url: str, run_id: str, batch_size: str, max_lines: str) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = EngineSettings(batch_size=int(batch_size), max_concurrency=3, progress_every_s=3600)
    with NetSuiteClient(
        base_url=erp_url, account_id="A", token="t", timeout=10, concurrency_limit=3
    ) as client:
        result = invoice_ready_events(
            dsn=dsn,
            client=client,
            config=load_config(),
            settings=settings,
            run_id=run_id,
            max_lines=int(max_lines),
        )
    print(json.dumps({"plan": result.plan, "outcome": result.outcome, "documents": result.documents}))
    return 0 if not result.still_pending else 3


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
