"""The validation step of the time & expense run: a run's staged versions of one kind into
canonical records or quarantine, against the run's own reference extract.

Arguments are explicit (the DAG and run ids the run keys derive from, the run's as-of, the
config); the operator reads them from its Airflow context
(:class:`psa_erp_sync.operators.time_expense.StagedRecordValidationOperator`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import psycopg

from psa_erp_sync.config import Config
from psa_erp_sync.contracts.kinds import REFERENCE_ENDPOINTS
from psa_erp_sync.extract.psa import run_key_for
from psa_erp_sync.validation import time_expense as validation

log = logging.getLogger(__name__)


def validate_staged(
    conn: psycopg.Connection,
    *,
    kind: str,
    dag_id: str,
    run_id: str,
    as_of: datetime,
    config: Config,
) -> dict[str, Any]:
    """Validate the run's staged ``kind`` versions in one transaction; assert staged = valid +
    quarantined; the result as a small dict (XCom-sized)."""
    if kind not in validation.ENDPOINTS:
        raise ValueError(f"kind must be one of {sorted(validation.ENDPOINTS)}, not {kind!r}")
    ref_keys = {endpoint: run_key_for(dag_id, run_id, endpoint) for endpoint in REFERENCE_ENDPOINTS}
    with conn.transaction():
        result = validation.validate_run(
            conn,
            kind=kind,
            run_key=run_key_for(dag_id, run_id, validation.ENDPOINTS[kind]),
            # built once the reader's sort has started: the two overlap (validate_run)
            ref=lambda: validation.PsaReference.from_staging(conn, ref_keys),
            config=config,
            as_of=as_of,
            dag_run_id=run_id,
        )
        result.check()
    log.info(
        "validated %s: %d staged versions -> %d valid (%d unchanged), %d quarantined %s",
        kind,
        result.staged_versions,
        result.valid,
        result.unchanged,
        result.quarantined,
        dict(result.by_reason),
    )
    return result.as_dict()
