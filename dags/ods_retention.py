"""
### ODS retention: personal data kept no longer than configured

**Owner:** finance-integration · **Domain:** data protection

Applies `config/retention.yaml` to the ODS: staged versions of PSA people records (names, e-mail)
that no extract has re-read for the configured days are dropped; webhook events older than
`event_days` keep only their envelope (delivery id, event, time, record id); quarantined webhook
bodies not seen again for `quarantine_days` are dropped (hash, reason and the exception item
stay). Idempotent: a re-run the same day changes nothing. See `docs/retention.md`.

**Schedule:** daily at 03:15 UTC, a quiet hour before the month-end sensors (05:00) start.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from psa_erp_sync.flows import DEFAULT_ARGS, retention


@dag(
    dag_id="ods_retention",
    schedule="15 3 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["domain:data-protection", "ods"],
)
def ods_retention() -> None:
    retention.build()


ods_retention()
