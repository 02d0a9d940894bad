"""Cost in the forecast uses HR's cost rate effective on the entry date (the week start for planned
work), and the PSA user's rate where HR has none; a new HR rate is a new input version."""

from __future__ import annotations

from datetime import date

import psycopg
import pytest

pytestmark = pytest.mark.integration

AS_OF = date(2026, 11, 20)


def test_cost_uses_the_hr_rate_on_the_entry_date(clean_ods: str) -> None:
    from psa_erp_sync.forecast import inputs
    from psa_erp_sync.forecast.settings import load_forecast_settings

    settings = load_forecast_settings()
    with psycopg.connect(clean_ods) as conn:
        conn.execute("TRUNCATE hr.worker_version, hr.worker, hr.cost_rate")
        conn.execute(
            "INSERT INTO forecast.src_project (project_ref, practice, legal_entity, currency, billing_type,"
            " is_active) VALUES ('p1', 'Data', 'LE-US1', 'USD', 'time_and_materials', true)"
        )
        conn.execute(
            "INSERT INTO forecast.src_person VALUES ('7', 'LE-US1', 'USD', true, 144000, 5000),"
            " ('8', 'LE-US1', 'USD', true, 144000, 6000)"
        )
        for sid, day, user in (("a", "2026-10-15", "7"), ("b", "2026-11-05", "7"), ("c", "2026-11-05", "8")):
            conn.execute(
                "INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref,"
                " project_ref, task_ref, legal_entity, hours, billable, bill_rate_minor, amount_minor, currency,"
                " approved, fingerprint, source_updated_at, record) VALUES ('psa', %s, 'v1', %s, %s, 'p1', 't',"
                " 'LE-US1', 2, true, 10000, 20000, 'USD', true, %s, now(), '{}'::jsonb)",
                (sid, day, user, f"fp{sid}"),
            )
        conn.execute(
            "INSERT INTO forecast.src_schedule VALUES ('s1', '7', 'p1', '2026-11-23', 10),"
            " ('s2', '7', 'p1', '2026-12-07', 10)"
        )
        before = inputs.data_versions(conn, settings)["hr.cost_rate"]
        # HR knows user 7 (E7): 80.00 from Nov 1, 120.00 from Dec 1. User 8 is not in HR.
        conn.execute(
            "INSERT INTO hr.worker (employee_id, worker_wid, first_name, last_name, legal_entity, hire_date,"
            " version_hash, psa_user_id) VALUES ('E7', 'w7', 'A', 'B', 'LE-US1', '2026-01-01', 'h', 7)"
        )
        conn.execute(
            "INSERT INTO hr.cost_rate (employee_id, effective_from, rate_minor, currency)"
            " VALUES ('E7', '2026-11-01', 8000, 'USD'), ('E7', '2026-12-01', 12000, 'USD')"
        )
        assert inputs.data_versions(conn, settings)["hr.cost_rate"] != before
        loaded = inputs.load_inputs(conn, as_of=AS_OF, settings=settings, prior_snapshot_id=None)
    cost = {int(r.month) % 12 + 1: int(r.cost_minor) for r in loaded.actuals.itertuples()}
    # October: before E7's first HR rate -> the PSA rate (2 h x 50.00); November: 2 h x 80.00 (HR)
    # for user 7 plus 2 h x 60.00 (PSA: user 8 has no HR worker).
    assert cost == {10: 10000, 11: 16000 + 12000}
    # Planned work of user 7: the HR rate on each week start (Nov 23: 80.00, Dec 7: 120.00).
    assert sorted(loaded.schedule["cost_rate_minor"].tolist()) == [8000, 12000]
