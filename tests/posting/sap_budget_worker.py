"""One posting process of the SAP budget proof (tests/posting/test_sap_budget_across_processes.py).

    python -m tests.posting.sap_budget_worker ARGS_JSON GO_FILE

Imports everything first, then waits for ``GO_FILE`` so every worker starts at once, then runs one
posting pass (:func:`~psa_erp_sync.posting.service.post_record_type`) of ``record_type`` to ``erp``
through the connection's hook (``SapHook("sap_default")`` or ``ErpHook("erp_default")``: the
account and its limit as a deployment gets them). Prints one JSON line: when the pass started and
ended, and its outcome.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from psa_erp_sync.config import load_config
from psa_erp_sync.hooks.erp import ErpHook
from psa_erp_sync.hooks.sap import SapHook
from psa_erp_sync.posting.engine import EngineSettings
from psa_erp_sync.posting.service import LockSettings, post_record_type


def run(args: dict[str, Any]) -> dict[str, Any]:
    hook: Any = SapHook("sap_default") if args["erp"] == "sap" else ErpHook("erp_default")
    settings = EngineSettings(batch_size=2, max_concurrency=args["threads"], progress_every_s=60.0)
    with hook.get_client() as client:
        started = time.time()
        result = post_record_type(
            dsn=args["dsn"],
            client=hook.adapter(client),
            record_type=args["record_type"],
            config=load_config(),
            settings=settings,
            run_id=f"budget-{args['erp']}-{args['record_type']}",
            lock_settings=LockSettings(wait_s=5.0, poll_s=0.1),
        )
        ended = time.time()
        account, limit = client.account_id, client.concurrency_limit
    return {"started": started, "ended": ended, "outcome": result.outcome, "account": account, "limit": limit}


def main() -> int:
    args, go = json.loads(sys.argv[1]), Path(sys.argv[2])
    (go.parent / f"ready-{args['erp']}-{args['record_type']}").touch()
    while not go.exists():
        time.sleep(0.01)
    print(json.dumps({"erp": args["erp"], "record_type": args["record_type"], **run(args)}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
