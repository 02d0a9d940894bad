"""The demo's close-report and forecast-trend lines: each legal entity's headline figures, the ERP's
invoices and credit memos, the HTML report, and the forecast's actuals per month with their verdict."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from devtools.demo import close_lines


def _report(reconciled: bool, ratio: float | None, plausible: bool) -> dict[str, Any]:
    headline = {
        "legal_entity": "LE-US1",
        "period": "2026-11",
        "reconciled": reconciled,
        "currencies": {
            "USD": {
                "revenue_recognized": "USD 1,200.00",
                "billed": "USD 1,000.00",
                "invoiced": "USD 1,100.00",
                "credited": "USD 100.00",
                "wip": "USD 200.00",
                "wip_movement": "USD 200.00",
                "deferred": "USD 0.00",
                "deferred_movement": "USD 0.00",
                "leakage": "USD 0.00",
            }
        },
        "postings": {"confirmed": 10},
        "mismatched_areas": [] if reconciled else ["invoices USD"],
        "open_exceptions": 2,
        "documents": {"invoice": 3, "creditmemo": 1},
    }
    return {
        "close": {
            "period": "2026-11",
            "headlines": [headline],
            "html": {"LE-US1": "/x/close_LE-US1_2026-11.html"},
        },
        "forecast_trend": {
            "months": {"2026-08-01": 90, "2026-09-01": 100, "2026-10-01": 110, "2026-11-01": 120},
            "last_month": "2026-11-01",
            "prior_mean": 100,
            "bounds": [0.5, 2.0],
            "ratio": ratio,
            "plausible": plausible,
            "reason": None if plausible else f"2026-11-01 is {ratio}x the mean of the 3 months before",
        },
    }


def test_close_lines_name_each_entitys_figures_documents_and_report() -> None:
    text = "\n".join(close_lines(_report(True, 1.2, True)))
    assert "LE-US1: reconciled yes" in text
    assert (
        "recognized USD 1,200.00 vs billed USD 1,000.00 (invoiced USD 1,100.00, credited USD 100.00)" in text
    )
    assert "WIP USD 200.00" in text and "deferred USD 0.00" in text
    assert "{'invoice': 3, 'creditmemo': 1}" in text
    assert "report: /x/close_LE-US1_2026-11.html" in text
    assert "  2026-08: 90" in text and "  2026-11: 120" in text
    assert "last closed month 2026-11: 1.2x the mean of the months before (100); plausible" in text


def test_close_lines_say_what_differs_and_an_implausible_jump() -> None:
    text = "\n".join(close_lines(_report(False, 3.7, False)))
    assert "reconciled NO (differs: invoices USD)" in text
    assert "3.7x the mean of the months before (100); NOT plausible: 2026-11-01 is 3.7x" in text


def test_close_lines_without_a_stored_report() -> None:
    report = _report(True, None, False)
    report["close"]["headlines"] = []
    assert "  no close report stored" in close_lines(report)


def _snapshot(conn: Any, snapshot_id: str, as_of: str, first_month: str, amounts: list[int]) -> None:
    conn.execute(
        "INSERT INTO forecast.snapshot (snapshot_id, scenario, as_of, run_id, data_versions, reporting_currency)"
        " VALUES (%s, 'base', %s, 'test', '{}', 'USD')",
        (snapshot_id, as_of),
    )
    conn.execute(
        "INSERT INTO forecast.line_series (snapshot_id, project_ref, layer, practice, legal_entity, currency,"
        " first_month, amount_minor) VALUES (%s, 'P1', 'actual', 'strategy', 'LE-US1', 'USD', %s, %s)",
        (snapshot_id, first_month, amounts),
    )


def test_forecast_trend_reads_the_latest_base_snapshots_closed_months(clean_ods: str) -> None:
    import psycopg

    from devtools.demo_history import forecast_trend

    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _snapshot(conn, "old", "2026-11-05", "2026-09-01", [1, 1])
        # The current month (December) is open: left out.
        _snapshot(conn, "new", "2026-12-06", "2026-08-01", [100_00, 100_00, 100_00, 370_00, 5])
    trend = forecast_trend(clean_ods, datetime(2026, 12, 6, tzinfo=UTC))
    assert trend["months"] == {
        "2026-08-01": 100_00,
        "2026-09-01": 100_00,
        "2026-10-01": 100_00,
        "2026-11-01": 370_00,
    }
    assert trend["ratio"] == 3.7 and trend["plausible"] is False
    assert trend["all_months"] == trend["months"]
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _snapshot(conn, "newer", "2026-12-07", "2026-08-01", [100_00, 90_00, 110_00, 120_00])
    assert forecast_trend(clean_ods, datetime(2026, 12, 7, tzinfo=UTC))["plausible"] is True
