"""Seed a migrated ODS with the forecast benchmark's synthetic inputs, so the benchmark times the
refresh's input reads (``forecast.inputs.load_inputs``) on tables of that size.

What the reads see, from ``devtools.bench_forecast.synthetic_inputs``: the projects
(``forecast.src_project``), their people (``forecast.src_person``; two in three mapped to an HR
worker with a cost rate, ``hr.worker`` / ``hr.cost_rate``), the schedule (``forecast.src_schedule``,
one row per project, person and month), milestones and open opportunities, and a year of actuals
as one approved time entry per project and month (``canonical.time_entry``) with its confirmed
posting (``ledger.posting``). Billing read-back and revenue journals stay empty (their reads run,
on empty tables). Bulk ``COPY`` in CSV; not timed. Then what the previous refresh would have left:
the forecast's actuals built (``forecast.actuals``), and a delta of adjustments since for the
timed refresh to catch up.
"""

from __future__ import annotations

import io
from datetime import date, timedelta
from typing import Any


def _copy(conn: Any, table: str, frame: Any) -> None:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, header=False)
    with conn.cursor().copy(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(buf.getvalue())


def _day(months: Any, offset_days: int = 0) -> Any:
    """The date ``offset_days`` after the first day of each month index, as ISO strings."""
    import numpy as np

    years = months // 12
    first = np.array(
        [f"{y:04d}-{m:02d}-01" for y, m in zip(years, months % 12 + 1, strict=True)], dtype="datetime64[D]"
    )
    return (first + np.timedelta64(offset_days, "D")).astype(str)


def _people(conn: Any, inputs: Any, as_of: date) -> dict[str, str]:
    """src_person and HR: numeric PSA user ids (HR maps by ``psa_user_id``); returns ref -> new ref."""
    import numpy as np
    import pandas as pd

    refs = np.unique(inputs.schedule["user_ref"].to_numpy().astype(str))
    ids = np.char.lstrip(refs, "u")
    rate = inputs.schedule.groupby("user_ref")["cost_rate_minor"].first().reindex(refs).to_numpy()
    _copy(
        conn,
        "forecast.src_person",
        pd.DataFrame(
            {
                "user_ref": ids,
                "legal_entity": "LE-US1",
                "currency": "USD",
                "is_active": True,
                "weekly_capacity_seconds": 144_000,
                "cost_rate_minor": rate,
            }
        ),
    )
    mapped = ids[np.arange(len(ids)) % 3 != 2]
    _copy(
        conn,
        "hr.worker",
        pd.DataFrame(
            {
                "employee_id": np.char.add("E", mapped),
                "worker_wid": np.char.add("W", mapped),
                "first_name": "Bench",
                "last_name": mapped,
                "legal_entity": "LE-US1",
                "hire_date": "2020-01-01",
                "version_hash": "bench",
                "psa_user_id": mapped.astype(np.int64),
            }
        ),
    )
    hr_rate = rate[np.arange(len(ids)) % 3 != 2]
    rates = pd.DataFrame(
        {
            "employee_id": np.tile(np.char.add("E", mapped), 2),
            "effective_from": np.repeat(
                [(as_of - timedelta(days=400)).isoformat(), (as_of - timedelta(days=90)).isoformat()],
                len(mapped),
            ),
            "rate_minor": np.concatenate([hr_rate, hr_rate * 105 // 100]),
            "currency": "USD",
        }
    )
    _copy(conn, "hr.cost_rate", rates)
    return dict(zip(refs, ids, strict=True))


def seed_ods(dsn: str, inputs: Any) -> dict[str, Any]:
    """Write ``inputs`` (a ``model.ForecastInputs``) into the ODS at ``dsn``; returns rows per table."""
    import numpy as np
    import pandas as pd
    import psycopg

    from psa_erp_sync.forecast import model

    as_of = inputs.as_of
    p = inputs.projects
    with psycopg.connect(dsn) as conn:
        foreign = conn.execute(
            "SELECT (SELECT count(*) FROM ledger.posting WHERE idempotency_key NOT LIKE 'bench-k-%%')"
            " + (SELECT count(*) FROM canonical.time_entry WHERE source_id NOT LIKE 'bench-te-%%')"
            " + (SELECT count(*) FROM forecast.src_project WHERE project_ref !~ '^p[0-9]+$')"
        ).fetchone()
        if foreign and foreign[0]:
            raise RuntimeError(
                f"{dsn}: the ODS holds data the benchmark did not seed; use a scratch database"
            )
        for table in (
            "ledger.posting",
            "forecast.src_schedule",
            "forecast.src_milestone",
            "forecast.src_opportunity",
            "forecast.src_project",
            "forecast.src_person",
            "hr.cost_rate",
            "hr.worker",
            "canonical.time_entry",
        ):
            conn.execute(f"TRUNCATE {table} CASCADE")
        fee = np.where(p["billing_type"] == "time_and_materials", None, p["price_minor"])
        _copy(
            conn,
            "forecast.src_project",
            pd.DataFrame(
                {
                    "project_ref": p["project_ref"],
                    "practice": p["practice"],
                    "legal_entity": p["legal_entity"],
                    "currency": p["currency"],
                    "billing_type": p["billing_type"],
                    "is_active": True,
                    "starts_on": _day(p["start_month"].to_numpy()),
                    "ends_on": _day(p["end_month"].to_numpy(), 27),
                    "hourly_rate_minor": p["bill_rate_minor"],
                    "fee_minor": pd.array(fee, dtype="Int64"),
                    "budget_minor": p["price_minor"],
                }
            ),
        )
        user_of = _people(conn, inputs, as_of)
        s = inputs.schedule
        m0 = model.month_index(as_of)
        month = s["month"].to_numpy()
        week = np.where(month == m0, as_of.isoformat(), _day(month, 7))
        _copy(
            conn,
            "forecast.src_schedule",
            pd.DataFrame(
                {
                    "schedule_id": np.char.add("s", np.arange(len(s)).astype(str)),
                    "user_ref": s["user_ref"].map(user_of),
                    "project_ref": s["project_ref"],
                    "week_start": week,
                    "hours": s["hours_centi"].to_numpy() / 100,
                }
            ),
        )
        ms = inputs.milestones
        _copy(
            conn,
            "forecast.src_milestone",
            pd.DataFrame(
                {
                    "milestone_id": np.char.add("m", np.arange(len(ms)).astype(str)),
                    "project_ref": ms["project_ref"],
                    "due_date": _day(ms["due_month"].to_numpy(), 14),
                    "amount_minor": ms["amount_minor"],
                    "status": ms["status"],
                    "completed_on": np.where(
                        ms["done_month"] < 0, "", _day(np.maximum(ms["done_month"].to_numpy(), 0), 14)
                    ),
                }
            ),
        )
        o = inputs.opportunities
        _copy(
            conn,
            "forecast.src_opportunity",
            pd.DataFrame(
                {
                    "opportunity_id": np.arange(len(o)).astype(str),
                    "stage": o["stage"],
                    "amount_minor": o["amount_minor"],
                    "currency": o["currency"],
                    "expected_start": _day(o["start_month"].to_numpy()),
                    "duration_months": o["duration_months"],
                    "legal_entity": o["legal_entity"],
                    "practice": o["practice"],
                    "is_closed": False,
                    "is_won": False,
                }
            ),
        )
        _actuals(conn, inputs, user_of)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM (ANALYZE)")
        counts: dict[str, Any] = _keep_actuals(conn, len(inputs.actuals))
        for table in ("forecast.src_schedule", "canonical.time_entry", "ledger.posting", "hr.cost_rate"):
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[table] = int(row[0]) if row else 0
    return counts


#: Source records changed since the previous refresh, per refresh: corrections re-posted as
#: adjustments (a working day of a 600k-entries month is ~30k entries; a refresh every hour or so
#: sees a few thousand).
DELTA_RECORDS = 5_000


def _keep_actuals(conn: Any, entries: int) -> dict[str, Any]:
    """What the previous refresh left (not timed): the forecast's actuals built from the seeded
    ledger (``forecast.actuals.catch_up``), then :data:`DELTA_RECORDS` adjustments posted since,
    which the timed refresh catches up (the build's dead rows vacuumed first, as autovacuum would
    between two refreshes). Returns the build's figures."""
    import time

    from psa_erp_sync.forecast import actuals

    t0 = time.perf_counter()
    built = actuals.catch_up(conn)
    build_s = time.perf_counter() - t0
    # The build deleted the queue it took (1.2 M dead rows) and rewrote the sums. A real ODS's
    # autovacuum clears them within the hour between refreshes; this machine's PostgreSQL may run
    # without it (autovacuum off), which would leave the timed catch-up scanning them.
    conn.execute("VACUUM (ANALYZE) forecast.actual_change, forecast.actual_source, forecast.actual_month")
    step = max(1, entries // DELTA_RECORDS)
    conn.execute(
        "INSERT INTO ledger.posting (idempotency_key, record_type, source_system, source_id, source_version,"
        " external_id, action, state, amount_minor, currency)"
        " SELECT 'bench-k-adj-' || source_id, record_type, source_system, source_id, 'v2', external_id, 'adjust',"
        " 'confirmed', amount_minor + 100, currency FROM ledger.posting"
        " WHERE idempotency_key LIKE 'bench-k-%%' AND substr(source_id, 10)::bigint %% %s = 0",
        (step,),
    )
    conn.execute("ANALYZE ledger.posting")
    return {"actuals_build_s": round(build_s, 2), "actuals_build": built}


def _actuals(conn: Any, inputs: Any, user_of: dict[str, str]) -> None:
    """A year of actuals: one approved time entry per project and month and its confirmed posting."""
    import numpy as np
    import pandas as pd

    a = inputs.actuals
    p = inputs.projects.set_index("project_ref")
    first_user = inputs.schedule.groupby("project_ref")["user_ref"].first().map(user_of)
    n = len(a)
    ids = np.char.add("bench-te-", np.arange(n).astype(str))
    rate = p["bill_rate_minor"].reindex(a["project_ref"]).to_numpy()
    hours = np.maximum(a["revenue_minor"].to_numpy() // np.maximum(rate, 1), 1)
    _copy(
        conn,
        "canonical.time_entry",
        pd.DataFrame(
            {
                "source_system": "psa",
                "source_id": ids,
                "version_hash": "v1",
                "spent_date": _day(a["month"].to_numpy(), 9),
                "user_ref": first_user.reindex(a["project_ref"]).to_numpy(),
                "project_ref": a["project_ref"],
                "legal_entity": p["legal_entity"].reindex(a["project_ref"]).to_numpy(),
                "hours": hours,
                "billable": True,
                "bill_rate_minor": rate,
                "amount_minor": a["revenue_minor"],
                "currency": p["currency"].reindex(a["project_ref"]).to_numpy(),
                "approved": True,
                "fingerprint": ids,
                "source_updated_at": "2026-01-01T00:00:00Z",
                "record": "{}",
            }
        ),
    )
    _copy(
        conn,
        "ledger.posting",
        pd.DataFrame(
            {
                "idempotency_key": np.char.add("bench-k-", np.arange(n).astype(str)),
                "record_type": "timebill",
                "source_system": "psa",
                "source_id": ids,
                "source_version": "v1",
                "external_id": ids,
                "action": "post",
                "state": "confirmed",
                "amount_minor": a["revenue_minor"],
                "currency": p["currency"].reindex(a["project_ref"]).to_numpy(),
            }
        ),
    )
