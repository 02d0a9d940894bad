"""Batch posting passes back to back, for ``devtools.bench_stream --with-batch``.

One month of time entries posts in seconds here, while the stream benchmark needs minutes of a
batch pass working the posting lock (>= 500 webhooks at 2 per second). So this process runs real
batch passes (:func:`psa_erp_sync.posting.service.post_record_type`, the path of the posting task
and of ``python -m psa_erp_sync.posting``: the same lock, ledger, planner, engine and account
budget) one after the other until ``--stop-file`` appears. Before each pass after the first, the
canonical version of the month's records (those approved when this process started: the
stream's approvals come later and are left alone) is bumped, so each pass plans and sends an
adjustment per record, as a month of edits would. Each pass's start and end (wall clock) and
outcome are appended to ``--passes-to`` (JSON lines), so the benchmark can tell which webhooks
arrived while a batch pass was running.

    python -m devtools.bench_stream_batch --dsn $DSN --erp-url http://127.0.0.1:19603 \\
        --passes-to passes.jsonl --stop-file stop
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

log = logging.getLogger("bench-stream-batch")

RUN_ID = "bench_stream_batch_pass"

# A new version per pass: the planner then plans an adjustment per record (the payload itself is
# unchanged, so the ERP holds the same figures after every pass).
_BUMP = """
UPDATE canonical.time_entry SET version_hash = encode(sha256(convert_to(version_hash, 'UTF8')), 'hex')
WHERE source_system = 'psa' AND source_id = ANY(%s)
"""


def _month(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT source_id FROM canonical.time_entry WHERE approved AND NOT is_deleted"
            )
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--erp-url", required=True)
    parser.add_argument("--account-id", default="TSTDRV100001")
    parser.add_argument("--passes-to", type=Path, required=True)
    parser.add_argument("--stop-file", type=Path, required=True)
    parser.add_argument("--max-passes", type=int, default=1000)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="ERP requests in flight (default: the account's limit; lower it on a server short of connections)",
    )
    parser.add_argument(
        "--no-hand-off",
        action="store_true",
        help="keep the posting lock for each whole pass (the behaviour before the hand-off)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting.budget import account_limit
    from psa_erp_sync.posting.engine import EngineSettings
    from psa_erp_sync.posting.service import LockSettings, PostingLockBusy, PostingLockLost, post_record_type

    config = load_config()
    limit = args.concurrency or account_limit({"account_id": args.account_id})
    settings = EngineSettings.from_config(config, max_concurrency=limit)
    lock = LockSettings(wait_s=config.mappings.posting.lock_wait_seconds)
    if args.no_hand_off:
        lock = LockSettings(wait_s=lock.wait_s, hand_off=False)
    month = _month(args.dsn)
    log.info("%d records of the month; passes until %s exists", len(month), args.stop_file)
    with NetSuiteClient(
        base_url=args.erp_url, account_id=args.account_id, token="local-erp-token", concurrency_limit=limit
    ) as erp:
        for number in range(args.max_passes):
            if args.stop_file.exists():
                break
            started = datetime.now(UTC)
            cpu = time.process_time()
            try:
                if number:
                    with psycopg.connect(args.dsn) as conn:
                        conn.execute(_BUMP, (month,))
                result = post_record_type(
                    dsn=args.dsn,
                    client=erp,
                    record_type="timebill",
                    config=config,
                    settings=settings,
                    run_id=RUN_ID,
                    lock_settings=lock,
                )
            except (psycopg.OperationalError, PostingLockBusy, PostingLockLost) as exc:
                # A shared server short of connections: the task would be retried; so is the pass.
                log.warning("pass %d failed (%s); again in 2 s", number, type(exc).__name__)
                failed = {"pass": number, "started": started.isoformat(), "failed": type(exc).__name__}
                with args.passes_to.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps({**failed, "ended": datetime.now(UTC).isoformat()}) + "\n")
                time.sleep(2.0)
                continue
            line = {
                "pass": number,
                "started": started.isoformat(),
                "ended": datetime.now(UTC).isoformat(),
                "cpu_s": round(time.process_time() - cpu, 2),
                "posted": result.outcome.get("posted"),
                "total": result.outcome.get("total"),
                "still_pending": result.outcome.get("still_pending"),
                "hand_offs": result.outcome.get("hand_offs", 0),
            }
            log.info("pass %s", line)
            with args.passes_to.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
