"""Steps the stream tests share: the PSA's reference extracted in full, and one stream run as an
inbox-triggered DAG run makes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from tests.conftest import RunningSimulator
from tests.dags.test_time_expense_dag import AS_OF


def extract_sample_reference(
    psa_sim: RunningSimulator, conn: psycopg.Connection, client: Any
) -> dict[str, str]:
    """Seed the PSA simulator with the sample firm (no rate limit) and extract every reference
    endpoint in full into staging (``conn`` in autocommit); the run key of each endpoint."""
    from psa_erp_sync.extract import psa as psa_extract
    from psa_erp_sync.stream import time_expense as stream
    from simulators.psa import sample

    psa_sim.admin("POST", "/seed", json=sample.build())
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    window = psa_extract.plan_window(
        None, mode="full", as_of=datetime.now(UTC), overlap=timedelta(0), sweep_days=0
    )
    keys = {endpoint: f"test/ref{endpoint}" for endpoint in stream.REFERENCE_ENDPOINTS}
    for endpoint, key in keys.items():
        psa_extract.extract_endpoint(
            conn, client, endpoint=endpoint, run_key=key, window=window, per_page=100
        )
    return keys


def process_as_triggered(dsn: str, psa: Any, erp: Any, name: str) -> Any:
    """One run of the stream's processing, with the ids an inbox-triggered run ``name`` has."""
    from psa_erp_sync.config import load_config
    from psa_erp_sync.stream.time_expense import process_inbox

    run_id = f"asset_triggered__{name}"
    return process_inbox(
        dsn=dsn,
        psa_client=psa,
        erp_client=erp,
        config=load_config(),
        run_id=run_id,
        run_key_prefix=f"time_expense_stream/{run_id}",
        as_of=AS_OF + timedelta(minutes=30),
    )
