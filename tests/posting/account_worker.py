"""One posting process of the per-account proof (tests/posting/test_accounts_in_parallel.py).

    python -m tests.posting.account_worker ARGS_JSON GO_FILE

Imports everything first, then waits for ``GO_FILE`` so every worker starts at once, then runs one
posting pass (:func:`~psa_erp_sync.posting.service.post_record_type`) of ``record_type`` for ERP
account ``account``. Prints one JSON line: when the pass started and ended, and its outcome.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from psa_erp_sync.clients.erp import NetSuiteClient
from psa_erp_sync.config import load_config
from psa_erp_sync.posting.engine import EngineSettings
from psa_erp_sync.posting.service import LockSettings, post_record_type


def run(args: dict[str, Any]) -> dict[str, Any]:
    settings = EngineSettings(
        batch_size=args["batch_size"], max_concurrency=args["limit"], progress_every_s=60.0
    )
    with NetSuiteClient(
        base_url=args["erp_url"], account_id=args["account"], token="t", concurrency_limit=args["limit"]
    ) as erp:
        started = time.time()
        result = post_record_type(
            dsn=args["dsn"],
            client=erp,
            record_type=args["record_type"],
            config=load_config(),
            settings=settings,
            run_id=f"acct-{args['account']}-{args['record_type']}",
            lock_settings=LockSettings(wait_s=2.0, poll_s=0.1),
        )
        ended = time.time()
    return {"started": started, "ended": ended, "outcome": result.outcome}


def main() -> int:
    args, go = json.loads(sys.argv[1]), Path(sys.argv[2])
    (go.parent / f"ready-{args['account']}-{args['record_type']}").touch()
    while not go.exists():
        time.sleep(0.01)
    print(
        json.dumps({"account": args["account"], "record_type": args["record_type"], **run(args)}, default=str)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
