"""Post one ERP record type from the command line, outside Airflow (break-glass, tests, benchmarks).

    python -m psa_erp_sync.posting --dsn $DSN --erp-url http://127.0.0.1:18103 --record-type timebill

Same path as the operator: periods, planner, ledger, engine. Prints the outcome as JSON. When
``config/erp_routing.yaml`` sends anything to SAP (a transition), every routed ERP gets its pass, as
in the posting task: give SAP's system with ``--sap-url`` (user ``--sap-user``, password
``--sap-password`` or ``SAP_PASSWORD``) and its company codes (``--sap-company-code LE-UK1=2010``,
once per legal entity).
The batch size defaults to ``posting.batch_size`` in ``config/mappings.yaml``, the ERP concurrency to
the account's limit in ``config/environments/<env>.yaml``.

Exit codes: 0 done; 3 postings still pending after every round (run again); 4 the ODS is
unreachable; 5 the ERP is unreachable or failed; 75 the posting lock is busy or was lost (another
pass runs), or the ERP account's request budget had no free slot: run again later. Failures print
one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from contextlib import ExitStack
from typing import Any

import psycopg

from psa_erp_sync.config import load_config
from psa_erp_sync.contracts.kinds import BY_RECORD_TYPE, TIME_ENTRY
from psa_erp_sync.posting.engine import EngineSettings
from psa_erp_sync.posting.service import (
    LockSettings,
    PostingLockBusy,
    PostingLockLost,
    post_record_type,
    post_routed,
)

EXIT_STILL_PENDING = 3
EXIT_ODS = 4
EXIT_ERP = 5
EXIT_LOCK = 75  # EX_TEMPFAIL: try again later


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default=os.environ.get("PSA_ERP_SYNC_DSN"), help="ODS DSN")
    parser.add_argument("--erp-url", required=True)
    parser.add_argument("--erp-token", default=os.environ.get("ERP_TOKEN", "local-erp-token"))
    parser.add_argument("--account-id", default="TSTDRV100001")
    parser.add_argument("--record-type", default=TIME_ENTRY.record_type, choices=list(BY_RECORD_TYPE))
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="the ERP account's limit of requests in flight, shared with every other process posting to it"
        " (default: the ERP account's limit in config/environments/<env>.yaml, erp.concurrency)",
    )
    parser.add_argument("--batch-size", type=int, help="records per batch (default: posting.batch_size)")
    parser.add_argument("--run-id", default="cli")
    parser.add_argument("--sap-url", help="SAP S/4HANA API URL (required when the routing names SAP)")
    parser.add_argument("--sap-user", default=os.environ.get("SAP_USER", "PSA_COMM"))
    parser.add_argument("--sap-password", default=os.environ.get("SAP_PASSWORD", ""))
    parser.add_argument(
        "--sap-company-code",
        action="append",
        default=[],
        metavar="LE=CODE",
        help="legal entity -> SAP company code (repeat per legal entity)",
    )
    parser.add_argument("--sap-activity-type", default="")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument(
        "--lock-wait",
        type=float,
        help="seconds to wait for the posting lock (default: posting.lock_wait_seconds)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("give --dsn or set PSA_ERP_SYNC_DSN")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from psa_erp_sync.clients.erp import ErpError, NetSuiteClient
    from psa_erp_sync.posting.budget import BudgetExhausted, account_limit

    config = load_config()
    limit = args.concurrency or account_limit({"account_id": args.account_id})
    try:
        settings = EngineSettings.from_config(config, batch_size=args.batch_size, max_concurrency=limit)
    except ValueError as exc:
        parser.error(str(exc))
    what = f"posting {args.record_type} failed"
    from psa_erp_sync.routing.route import router

    erps = router().erps_in_force()
    if "sap" in erps and not args.sap_url:
        parser.error("config/erp_routing.yaml routes to SAP: give --sap-url and --sap-company-code")
    try:
        with ExitStack() as stack:
            netsuite = stack.enter_context(
                NetSuiteClient(
                    base_url=args.erp_url,
                    account_id=args.account_id,
                    token=args.erp_token,
                    timeout=args.timeout,
                    concurrency_limit=limit,
                )
            )
            lock = LockSettings(wait_s=args.lock_wait) if args.lock_wait else None
            if erps == ["netsuite"]:
                result = post_record_type(
                    dsn=args.dsn,
                    client=netsuite,
                    record_type=args.record_type,
                    config=config,
                    settings=settings,
                    run_id=args.run_id,
                    lock_settings=lock,
                )
                plan, outcome = result.plan, result.outcome
            else:
                adapters = _adapters(stack, args, erps, netsuite)
                plan, outcome = post_routed(
                    dsn=args.dsn,
                    adapters=adapters,
                    record_type=args.record_type,
                    config=config,
                    settings_for=lambda _erp: settings,
                    run_id=args.run_id,
                    lock_settings=lock,
                )
    except (PostingLockBusy, PostingLockLost, BudgetExhausted) as exc:
        return _fail(f"{what}: {exc}", EXIT_LOCK)
    except psycopg.OperationalError as exc:
        return _fail(
            f"{what}: the ODS is unreachable or dropped the connection ({_first_line(exc)})", EXIT_ODS
        )
    except ErpError as exc:
        return _fail(
            f"{what}: the ERP at {args.erp_url} did not answer usefully ({_first_line(exc)})", EXIT_ERP
        )
    print(json.dumps({"plan": plan, "outcome": outcome}))
    return 0 if not outcome["still_pending"] else EXIT_STILL_PENDING


def _adapters(stack: ExitStack, args: argparse.Namespace, erps: list[str], netsuite: Any) -> dict[str, Any]:
    """The adapter of each routed ERP: NetSuite's client, and SAP's from the ``--sap-*`` options."""
    from psa_erp_sync.clients.sap import S4HanaClient
    from psa_erp_sync.posting.adapter import SapMapping, adapter_for

    codes = dict(pair.split("=", 1) for pair in args.sap_company_code if "=" in pair)
    adapters: dict[str, Any] = {}
    for erp in erps:
        if erp == "sap":
            client = stack.enter_context(
                S4HanaClient(
                    base_url=args.sap_url,
                    user=args.sap_user,
                    password=args.sap_password,
                    timeout=args.timeout,
                )
            )
            mapping = SapMapping(company_codes=codes, activity_type=args.sap_activity_type)
            adapters[erp] = adapter_for("sap", client, sap_mapping=mapping)
        else:
            adapters[erp] = adapter_for("netsuite", netsuite)
    return adapters


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no detail'}"


def _fail(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
