"""A validation run refreshes the statistics of the month the extract just staged before it plans
its reads and its sweep (ods/table_stats.py): a bulk-loaded, never-analysed staging table planned
from a guess made the sweep a nested loop over the whole table per quarantined record."""

from __future__ import annotations

import time

import psycopg

from psa_erp_sync.ods import staging, table_stats
from tests.validation.helpers import validate_time_entries
from tests.validation.test_streaming import _entry

RAW = "staging.raw_record"


def test_validation_analyses_a_freshly_staged_month_first(clean_ods: str) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as admin:
        admin.execute(f"ALTER TABLE {RAW} SET (autovacuum_enabled = off)")
        try:
            with psycopg.connect(clean_ods) as loader:  # the extract: staged, committed, gone
                staging.stage_pages(
                    loader,
                    [[_entry(i) for i in range(1, 401)]],
                    run_key="r1",
                    source_system="psa",
                    endpoint="/v2/time_entries",
                )
                loader.commit()
            deadline = time.monotonic() + 15
            while RAW not in table_stats.stale(admin, [RAW]) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert table_stats.stale(admin, [RAW]) == [RAW]  # what the run starts from
            with psycopg.connect(clean_ods) as conn:
                result = validate_time_entries(conn, run_key="r1", dag_run_id="run-1")
            assert result.staged_versions == 400 and result.valid >= 1
            assert table_stats.stale(admin, [RAW]) == []
            reltuples = admin.execute(
                "SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (RAW,)
            ).fetchone()[0]
            assert reltuples == 400
        finally:
            admin.execute(f"ALTER TABLE {RAW} RESET (autovacuum_enabled)")
