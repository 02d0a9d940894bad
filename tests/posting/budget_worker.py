"""One posting process of the shared-budget proof (tests/posting/test_account_budget.py).

    python -m tests.posting.budget_worker JOB ARGS_JSON GO_FILE

Imports everything first, then waits for ``GO_FILE`` so every worker starts sending at once, then
runs ``JOB``: ``timebill`` / ``expensereport`` (the posting command line), ``stream`` (one stream
pass over the inbox) or ``replay`` (release the timebill dead letters once there are some, then
post them). Prints one JSON line with what it did.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from psa_erp_sync.clients.erp import NetSuiteClient
from psa_erp_sync.clients.psa import HarvestClient
from psa_erp_sync.config import load_config
from psa_erp_sync.ods import connections
from psa_erp_sync.posting import __main__ as posting_cli
from psa_erp_sync.posting import replay
from psa_erp_sync.posting.engine import EngineSettings
from psa_erp_sync.posting.service import post_record_type
from psa_erp_sync.stream.time_expense import process_inbox


def _erp(args: dict[str, Any]) -> NetSuiteClient:
    return NetSuiteClient(
        base_url=args["erp_url"], account_id=args["account"], token="t", concurrency_limit=args["limit"]
    )


def _settings(args: dict[str, Any]) -> EngineSettings:
    return EngineSettings(batch_size=args["batch_size"], max_concurrency=args["limit"], progress_every_s=60.0)


def run(job: str, args: dict[str, Any]) -> dict[str, Any]:
    if job in ("timebill", "expensereport"):
        code = posting_cli.main(
            [
                "--dsn",
                args["dsn"],
                "--erp-url",
                args["erp_url"],
                "--erp-token",
                "t",
                "--account-id",
                args["account"],
                "--record-type",
                job,
                "--concurrency",
                str(args["limit"]),
                "--batch-size",
                str(args["batch_size"]),
                "--run-id",
                f"budget-{job}",
            ]
        )
        return {"exit": code}
    if job == "stream":
        with HarvestClient(base_url=args["psa_url"], token="t", account_id="1") as psa, _erp(args) as erp:
            result = process_inbox(
                dsn=args["dsn"],
                psa_client=psa,
                erp_client=erp,
                config=load_config(),
                run_id="budget-stream",
                run_key_prefix="time_expense_stream/budget-stream",
                as_of=datetime.fromisoformat(args["as_of"]),
                engine_settings=_settings(args),
            )
        return {"claimed": result.claimed, "posted": result.posted}
    if job == "replay":
        released = 0
        deadline = time.monotonic() + 90
        while not released and time.monotonic() < deadline:
            with connections.connect(args["dsn"]) as conn:
                released = replay.release(
                    conn,
                    replay.select(conn, replay.ReplayFilter("timebill")),
                    run_id="budget-replay",
                    actor="budget_worker",
                )
            time.sleep(0.05)
        with _erp(args) as erp:
            result = post_record_type(
                dsn=args["dsn"],
                client=erp,
                record_type="timebill",
                config=load_config(),
                settings=_settings(args),
                run_id="budget-replay",
            )
        return {"released": released, "outcome": result.outcome}
    raise SystemExit(f"unknown job {job}")


def main() -> int:
    job, args, go = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
    (go.parent / f"ready-{job}").touch()
    while not go.exists():
        time.sleep(0.01)
    print(json.dumps({"job": job, **run(job, args)}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
