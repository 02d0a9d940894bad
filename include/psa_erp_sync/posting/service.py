"""One posting pass for one ERP record type: read periods, plan, work the ledger.

Shared by :class:`~psa_erp_sync.operators.posting.IdempotentPostingOperator` and the command
line (``python -m psa_erp_sync.posting``), so both take exactly the same path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg

from psa_erp_sync.config import Config
from psa_erp_sync.posting import planner
from psa_erp_sync.posting.engine import EngineSettings, PostingEngine
from psa_erp_sync.posting.periods import PeriodBook

log = logging.getLogger(__name__)

PERIOD_QUERY = (
    "SELECT externalid, subsidiary, startdate, enddate, closed, alllocked, arlocked, aplocked "
    "FROM accountingperiod ORDER BY startdate"
)


@dataclass(frozen=True)
class PostingResult:
    plan: dict[str, Any]
    outcome: dict[str, Any]


def post_record_type(
    *,
    dsn: str,
    client: Any,
    record_type: str,
    config: Config,
    settings: EngineSettings,
    run_id: str,
    task_try: int | None = None,
) -> PostingResult:
    periods = PeriodBook.from_rows(client.suiteql(PERIOD_QUERY))
    with psycopg.connect(dsn) as conn, conn.transaction():
        plan = planner.plan(conn, record_type=record_type, config=config, periods=periods, dag_run_id=run_id)
    log.info("planned %s", plan.as_dict())
    engine = PostingEngine(
        dsn=dsn,
        client=client,
        record_type=record_type,
        config=config,
        settings=settings,
        dag_run_id=run_id,
        task_try=task_try,
    )
    return PostingResult(plan.as_dict(), engine.run().as_dict())
