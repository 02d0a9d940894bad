"""``make bench``: throughput of each stage of the posting path, printed as JSON.

Measured in one run, on one machine, against baselines measured in the same run (these machines
are shared and noisy): extract -> stage (COPY) vs pandas ``to_sql`` of the same rows into the same
PostgreSQL; post (planner + engine at the configured concurrency and batch size) vs a bare load
generator sending the same number of records straight to the ERP simulator's batch endpoint.

    python -m psa_erp_sync.devenv.bench                    # ~100k time entries (2,000 consultants)
    python -m psa_erp_sync.devenv.bench --consultants 10000  # the month-end peak (~600k entries)
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import psycopg

from psa_erp_sync.devenv.stack import Stack

log = logging.getLogger("bench")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_erp_capacity(erp_url: str, records: int, concurrency: int, batch: int) -> dict[str, Any]:
    """Synthetic timebills straight to the batch endpoint: the ERP simulator's raw capacity."""
    client = httpx.Client(base_url=erp_url, headers={"Authorization": "Bearer bench"}, timeout=60)
    lock = threading.Lock()
    sent = {"n": 0, "throttled": 0}

    def one(start: int) -> None:
        items = [
            {"externalId": f"bench-{i}", "tranDate": "2026-11-02", "employee": {"externalId": "psa-user-1"},
             "customer": {"externalId": "bench-job"}, "subsidiary": {"externalId": "LE-US1"}, "hours": "1.00",
             "rate": "100.00", "currency": {"refName": "USD"}, "isBillable": True, "memo": "bench"}
            for i in range(start, min(start + batch, records))
        ]  # fmt: skip
        for _ in range(50):
            response = client.post(
                "/services/rest/record/v1/timebill/batch", json={"items": items},
                headers={"X-NetSuite-idempotency-key": f"bench-{start}"},
            )  # fmt: skip
            if response.status_code != 429:
                break
            with lock:
                sent["throttled"] += 1
            time.sleep(0.05)
        with lock:
            sent["n"] += len(items)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(0, records, batch)))
    seconds = time.monotonic() - started
    client.close()
    return {
        "records": sent["n"],
        "seconds": round(seconds, 2),
        "rows_per_s": round(sent["n"] / seconds),
        "throttled": sent["throttled"],
    }


def pandas_to_sql(dsn: str, rows: int) -> dict[str, Any]:
    """The same staged payloads loaded by pandas ``to_sql`` (the common DIY baseline)."""
    import pandas as pd
    import sqlalchemy

    with psycopg.connect(dsn) as conn:
        frame = pd.DataFrame(
            conn.execute(
                "SELECT source_id, payload_hash, payload::text AS payload FROM staging.raw_record"
                " WHERE endpoint = '/v2/time_entries' LIMIT %s",
                (rows,),
            ).fetchall(),
            columns=["source_id", "payload_hash", "payload"],
        )
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    url = sqlalchemy.engine.URL.create(
        "postgresql+psycopg", username=str(info.get("user") or "postgres"), password=info.get("password") or None,  # type: ignore[arg-type]
        host=str(info.get("host") or "127.0.0.1"), port=int(info.get("port") or 5432), database=str(info.get("dbname")),
    )  # fmt: skip
    engine = sqlalchemy.create_engine(url)
    started = time.monotonic()
    frame.to_sql(
        "bench_pandas",
        engine,
        schema="staging",
        if_exists="replace",
        index=False,
        chunksize=10_000,
        method="multi",
    )
    seconds = time.monotonic() - started
    engine.dispose()
    return {"records": len(frame), "seconds": round(seconds, 2), "rows_per_s": round(len(frame) / seconds)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--consultants", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=15)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.extract import psa as psa_extract
    from psa_erp_sync.posting.engine import EngineSettings
    from psa_erp_sync.posting.service import post_record_type
    from psa_erp_sync.validation import time_expense as validation
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    today = date(2026, 11, 9)
    as_of = datetime(2026, 11, 9, 12, tzinfo=UTC)
    result: dict[str, Any] = {
        "machine": {
            "cpus": __import__("os").cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "scale": {"consultants": args.consultants, "concurrency": args.concurrency, "batch": args.batch},
    }
    with Stack(database="psa_erp_sync_bench") as stack:
        dsn = stack.start_postgres()
        stack.start_simulators()
        log.info("seeding %d consultants", args.consultants)
        firm = generate_firm(
            FirmSpec(
                seed=5,
                consultants=args.consultants,
                customers=200,
                projects=600,
                opportunities=5,
                today=today,
            )
        )
        started = time.monotonic()
        load_firm(
            firm, psa_url=stack.url("psa"), erp_url=stack.url("erp"), crm_url=None, include_schedule=False
        )
        result["seed_seconds"] = round(time.monotonic() - started, 1)
        httpx.put(f"{stack.url('psa')}/admin/config", json={"rate_limit_requests": 0}).raise_for_status()
        httpx.put(
            f"{stack.url('erp')}/admin/config", json={"concurrency_limit": args.concurrency}
        ).raise_for_status()
        config = load_config()
        psa = HarvestClient(base_url=stack.url("psa"), token="bench", account_id="1")
        window = psa_extract.plan_window(
            None, mode="full", as_of=as_of, overlap=timedelta(hours=1), sweep_days=45
        )
        keys = {}
        with psycopg.connect(dsn) as conn:
            for endpoint in ("/v2/projects", "/v2/users", "/v2/task_assignments"):
                keys[endpoint] = f"bench/{endpoint}"
                psa_extract.extract_endpoint(
                    conn, psa, endpoint=endpoint, run_key=keys[endpoint], window=window, per_page=2000
                )
            keys["/v2/time_entries"] = "bench//v2/time_entries"
            started = time.monotonic()
            staged = psa_extract.extract_endpoint(
                conn,
                psa,
                endpoint="/v2/time_entries",
                run_key=keys["/v2/time_entries"],
                window=window,
                per_page=2000,
            )
            extract_seconds = time.monotonic() - started
            result["extract_and_stage"] = {
                "records": staged.staged, "seconds": round(extract_seconds, 2),
                "rows_per_s_end_to_end": round(staged.staged / extract_seconds),
                "note": "includes reading the PSA simulator's HTTP API; staging alone is measured below",
            }  # fmt: skip
            # Staging alone: the same rows through COPY again, from memory, into a fresh run key.
            payloads = [
                r[0]
                for r in conn.execute(
                    "SELECT payload FROM staging.raw_record WHERE endpoint = '/v2/time_entries'"
                )
            ]
            # measure inserting new versions, as at month end
            conn.execute("DELETE FROM staging.raw_record WHERE endpoint = %s", ("/v2/time_entries",))
            conn.commit()
            pages = [payloads[i : i + 2000] for i in range(0, len(payloads), 2000)]
            from psa_erp_sync.ods import staging

            started = time.monotonic()
            with conn.transaction():
                again = staging.stage_pages(
                    conn,
                    pages,
                    run_key=keys["/v2/time_entries"],
                    source_system="psa",
                    endpoint="/v2/time_entries",
                )
            seconds = time.monotonic() - started
            result["stage_copy"] = {
                "records": again.staged,
                "seconds": round(seconds, 2),
                "rows_per_s": round(again.staged / seconds),
            }
            del payloads, pages
            started = time.monotonic()
            ref = validation.PsaReference.from_staging(conn, keys)
            with conn.transaction():
                checked = validation.validate_run(
                    conn,
                    kind="time_entry",
                    run_key=keys["/v2/time_entries"],
                    ref=ref,
                    config=config,
                    as_of=as_of,
                    dag_run_id="bench",
                )
            seconds = time.monotonic() - started
            result["validate"] = {"records": checked.staged_versions, "seconds": round(seconds, 2),
                                  "rows_per_s": round(checked.staged_versions / seconds), "quarantined": checked.quarantined}  # fmt: skip
        result["pandas_to_sql_same_rows"] = pandas_to_sql(dsn, result["stage_copy"]["records"])
        from psa_erp_sync.devenv.bench_peers import dlt_merge
        from psa_erp_sync.devenv.stack import LOCAL

        # dlt is slow enough that a sample of at most 50k rows gives its rate.
        sample = min(result["stage_copy"]["records"], 50_000)
        result["dlt_merge_same_rows"] = dlt_merge(dsn, sample, LOCAL / "dlt")
        result["stage_vs_dlt"] = round(
            result["stage_copy"]["rows_per_s"] / result["dlt_merge_same_rows"]["rows_per_s"], 1
        )
        result["stage_vs_pandas"] = round(
            result["stage_copy"]["rows_per_s"] / result["pandas_to_sql_same_rows"]["rows_per_s"], 1
        )
        with NetSuiteClient(base_url=stack.url("erp"), account_id="bench", token="bench") as erp:
            started = time.monotonic()
            posted = post_record_type(
                dsn=dsn, client=erp, record_type="timebill", config=config,
                settings=EngineSettings(batch_size=args.batch, max_concurrency=args.concurrency), run_id="bench",
            )  # fmt: skip
            seconds = time.monotonic() - started
            requests = erp.requests_made
        outcome = posted.outcome
        sent = outcome["posted"] + outcome["rejected"]
        result["post"] = {"records_sent": sent, "seconds": round(seconds, 2), "rows_per_s": round(sent / seconds),
                          "engine_seconds": round(outcome["seconds"], 2),
                          "engine_rows_per_s": round(sent / max(outcome["seconds"], 1e-9)),
                          "erp_requests": requests, "outcome": {k: outcome[k] for k in ("posted", "rejected", "parked", "still_pending")}}  # fmt: skip
        # Same record count straight at the ERP: the simulator's raw capacity at this concurrency.
        httpx.post(f"{stack.url('erp')}/admin/seed", json={"jobs": [{"external_id": "bench-job", "name": "bench", "customer": "psa-client-1",
                   "subsidiary": "LE-US1", "currency": "USD", "billing_type": "time_and_materials", "contract_value": "1.00", "is_inactive": False}]})  # fmt: skip
        result["erp_raw_capacity"] = bare_erp_capacity(stack.url("erp"), sent, args.concurrency, args.batch)
        result["post_vs_raw_capacity"] = round(
            result["post"]["rows_per_s"] / max(result["erp_raw_capacity"]["rows_per_s"], 1), 2
        )
        # The engine alone (without reading periods and planning), against the same capacity.
        result["engine_vs_raw_capacity"] = round(
            result["post"]["engine_rows_per_s"] / max(result["erp_raw_capacity"]["rows_per_s"], 1), 2
        )
    result["peak_rss_mb"] = round(_rss_mb(), 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
