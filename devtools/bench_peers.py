"""Peers for ``make bench``: the same staged rows loaded by tools people commonly use instead.

- dlt (a widely used Python ELT library) with ``write_disposition="merge"`` on the same key we
  deduplicate on, into the same PostgreSQL;
- pandas ``to_sql`` (in ``bench.py``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg

from psa_erp_sync.ods import staging


def _rows(dsn: str, limit: int) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        return [
            {"source_id": sid, "payload_hash": h, "payload": staging.decode_payload(payload)}
            for sid, h, payload in conn.execute(
                "SELECT source_id, payload_hash, payload FROM staging.raw_record"
                " WHERE endpoint = '/v2/time_entries' LIMIT %s",
                (limit,),
            )
        ]


def dlt_merge(dsn: str, limit: int, workdir: Path) -> dict[str, Any]:
    """Load the staged time entries with dlt (merge on source id + content hash); rows/s."""
    import dlt

    rows = _rows(dsn, limit)
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    credentials = (
        f"postgresql://{info.get('user') or 'postgres'}:{info.get('password') or ''}@"
        f"{info.get('host') or '127.0.0.1'}:{info.get('port') or 5432}/{info.get('dbname')}"
    )

    @dlt.resource(
        name="time_entries",
        write_disposition="merge",
        primary_key=("source_id", "payload_hash"),
        columns={"payload": {"data_type": "json"}},
    )
    def time_entries() -> Any:
        yield rows

    pipeline = dlt.pipeline(
        pipeline_name="bench_dlt",
        destination=dlt.destinations.postgres(credentials),
        dataset_name="bench_dlt",
        pipelines_dir=str(workdir),
    )
    started = time.monotonic()
    pipeline.run(time_entries())
    seconds = time.monotonic() - started
    return {"records": len(rows), "seconds": round(seconds, 2), "rows_per_s": round(len(rows) / seconds)}
