"""Close windows in business days, with public holidays, per country."""

from __future__ import annotations

from datetime import UTC, date, datetime

from psa_erp_sync.calendar import close
from psa_erp_sync.config import PostingCadence, load_config


def _calendar(name: str):  # type: ignore[no-untyped-def]
    return load_config().close_calendars.calendars[name]


def test_us_november_2026_window_skips_thanksgiving_and_weekends() -> None:
    # Nov 2026: last business days are Fri 27 and Mon 30 (Thu 26 is Thanksgiving);
    # December's first three business days are Tue 1, Wed 2, Thu 3.
    assert close.close_window(2026, 11, _calendar("US")) == (date(2026, 11, 27), date(2026, 12, 3))


def test_gb_december_window_skips_christmas_and_new_year() -> None:
    # Dec 2026: 25 (Fri) and 28 (Mon, Boxing Day substitute) are holidays -> last business days 30, 31;
    # Jan 2027: 1 (Fri) is a holiday -> business days 4, 5, 6.
    assert close.close_window(2026, 12, _calendar("GB")) == (date(2026, 12, 30), date(2027, 1, 6))


CADENCE = PostingCadence(normal=60, close=15)


def test_cadence_switches_inside_the_window() -> None:
    us = _calendar("US")
    assert (
        close.posting_interval_minutes(
            datetime(2026, 11, 27, 15, tzinfo=UTC), us, "America/New_York", CADENCE
        )
        == 15
    )
    assert (
        close.posting_interval_minutes(datetime(2026, 12, 3, 15, tzinfo=UTC), us, "America/New_York", CADENCE)
        == 15
    )
    assert (
        close.posting_interval_minutes(datetime(2026, 12, 4, 15, tzinfo=UTC), us, "America/New_York", CADENCE)
        == 60
    )
    assert (
        close.posting_interval_minutes(
            datetime(2026, 11, 18, 15, tzinfo=UTC), us, "America/New_York", CADENCE
        )
        == 60
    )


def test_window_end_is_local_midnight_after_the_last_day() -> None:
    end = close.window_end(datetime(2026, 12, 1, 12, tzinfo=UTC), _calendar("GB"), "Europe/London")
    assert end is not None
    assert end.isoformat() == "2026-12-04T00:00:00+00:00"
    assert close.window_end(datetime(2026, 11, 18, tzinfo=UTC), _calendar("GB"), "Europe/London") is None
