"""Steps the validation tests share: time entries staged and validated against the hand-written
reference of ``test_rules``."""

from __future__ import annotations

from typing import Any

import psycopg

from psa_erp_sync.config import load_config
from psa_erp_sync.ods import staging
from psa_erp_sync.validation import time_expense as validation
from tests.validation.test_rules import AS_OF, REF


def validate_time_entries(
    conn: psycopg.Connection, *, run_key: str, dag_run_id: str
) -> validation.ValidationResult:
    """Validate the time entries staged under ``run_key``, in a transaction of its own."""
    with conn.transaction():
        return validation.validate_run(
            conn,
            kind="time_entry",
            run_key=run_key,
            ref=REF,
            config=load_config(),
            as_of=AS_OF,
            dag_run_id=dag_run_id,
        )


def stage_and_validate_time_entries(
    conn: psycopg.Connection, payloads: list[Any], *, run_key: str, dag_run_id: str
) -> validation.ValidationResult:
    """Stage ``payloads`` as one page of ``/v2/time_entries``, commit, and validate them."""
    staging.stage_pages(conn, [payloads], run_key=run_key, source_system="psa", endpoint="/v2/time_entries")
    conn.commit()
    return validate_time_entries(conn, run_key=run_key, dag_run_id=dag_run_id)
