"""Extract windows: overlap on the watermark, sweeps of whole months, first run reads everything."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from psa_erp_sync.extract.psa import plan_window

AS_OF = datetime(2026, 11, 26, 12, tzinfo=UTC)


def test_first_run_reads_everything_and_treats_absence_as_deletion() -> None:
    window = plan_window(None, mode="incremental", as_of=AS_OF, overlap=timedelta(hours=1), sweep_days=45)
    assert window.mode == "full"
    assert window.queries(2000) == [{"per_page": 2000}]
    assert window.deletion_horizon == date.min


def test_incremental_overlaps_the_watermark_and_never_filters_by_date() -> None:
    mark = datetime(2026, 11, 26, 11, 0, 0, tzinfo=UTC)
    window = plan_window(mark, mode="incremental", as_of=AS_OF, overlap=timedelta(hours=1), sweep_days=45)
    assert window.queries(500) == [{"per_page": 500, "updated_since": "2026-11-26T10:00:00Z"}]
    assert window.deletion_horizon is None


def test_sweep_is_incremental_plus_whole_months_of_spent_dates() -> None:
    mark = datetime(2026, 11, 26, 11, tzinfo=UTC)
    window = plan_window(mark, mode="sweep", as_of=AS_OF, overlap=timedelta(hours=1), sweep_days=45)
    queries = window.queries(2000)
    assert queries[0]["updated_since"] == "2026-11-26T10:00:00Z"
    assert queries[1] == {"per_page": 2000, "from": "2026-10-01"}
    assert window.deletion_horizon == date(2026, 10, 1)
