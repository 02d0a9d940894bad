"""What the exactly-once fault suites (NetSuite and SAP) share: a firm in the PSA simulator brought
through extract and validation, the count of confirmed postings, and the settled ledger they end on."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg

from tests.conftest import RunningSimulator

ENDPOINTS = ("/v2/projects", "/v2/users", "/v2/task_assignments", "/v2/time_entries")


def extract_and_validate(dsn: str, psa_url: str, *, prefix: str, as_of: datetime) -> None:
    """Full-extract ``ENDPOINTS`` from the PSA at ``psa_url`` under run keys ``<prefix>/<endpoint>``
    and validate the time entries as the run ``prefix`` (each step commits on its own, as tasks do)."""
    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.extract import psa as psa_extract
    from psa_erp_sync.validation import time_expense as validation

    client = HarvestClient(base_url=psa_url, token="t", account_id="1")
    keys = {endpoint: f"{prefix}/{endpoint}" for endpoint in ENDPOINTS}
    with psycopg.connect(dsn) as conn:
        window = psa_extract.plan_window(
            None, mode="full", as_of=as_of, overlap=timedelta(hours=1), sweep_days=45
        )
        for endpoint, key in keys.items():
            psa_extract.extract_endpoint(
                conn, client, endpoint=endpoint, run_key=key, window=window, per_page=2000
            )
        ref = validation.PsaReference.from_staging(conn, keys)
        with conn.transaction():
            result = validation.validate_run(
                conn,
                kind="time_entry",
                run_key=keys["/v2/time_entries"],
                ref=ref,
                config=load_config(),
                as_of=as_of,
                dag_run_id=prefix,
            )
        result.check()


def stage_firm(
    dsn: str, psa: RunningSimulator, spec: Any, *, erp_url: str | None, prefix: str, as_of: datetime
) -> int:
    """Generate the firm of ``spec`` (a ``FirmSpec``), load it into the PSA (and the ERP at
    ``erp_url``), lift the PSA's rate limit, then :func:`extract_and_validate` it; the number of
    approved time entries (what the posting must confirm)."""
    from simulators.firm.generator import generate_firm
    from simulators.firm.load import load_firm

    load_firm(
        generate_firm(spec), psa_url=psa.base_url, erp_url=erp_url, crm_url=None, include_schedule=False
    )
    psa.admin("PUT", "/config", json={"rate_limit_requests": 0})
    extract_and_validate(dsn, psa.base_url, prefix=prefix, as_of=as_of)
    with psycopg.connect(dsn) as conn:
        approved = conn.execute(
            "SELECT count(*) FROM canonical.time_entry WHERE approved AND NOT is_deleted"
        ).fetchone()
    assert approved is not None
    return int(approved[0])


def confirmed(dsn: str) -> int:
    """Ledger rows the ERP has confirmed (or a read-back resolved)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger.posting WHERE state IN ('confirmed', 'resolved')"
        ).fetchone()
    return int(row[0]) if row else 0


def assert_settled(conn: psycopg.Connection) -> None:
    """Nothing left in flight in the ledger, and every parked or rejected record (its latest
    posting) has an open exception with a reason."""
    states = dict(conn.execute("SELECT state, count(*) FROM ledger.posting GROUP BY 1").fetchall())
    assert not {"pending", "sent", "ambiguous"} & set(states), states
    stuck = conn.execute(
        "SELECT count(*) FROM ledger.posting p WHERE p.state IN ('parked', 'rejected') AND NOT EXISTS ("
        " SELECT 1 FROM exceptions.item e WHERE e.source_id = p.source_id AND e.status = 'open'"
        " AND e.kind IN ('parked', 'dead_letter') AND e.reason_code <> '')"
        " AND p.seq = (SELECT max(seq) FROM ledger.posting m WHERE m.source_id = p.source_id)"
    ).fetchone()
    assert stuck == (0,)
