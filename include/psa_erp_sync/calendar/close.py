"""Month-end close windows in business days of a country's calendar.

A business day is a weekday that is not a public holiday of the country (the ``holidays``
package). With the defaults in ``config/close_calendars.yaml`` the close window of a month runs
from its second-to-last business day (-2) through the third business day of the next month (+3),
and posting runs every 15 minutes inside it instead of hourly.
"""

from __future__ import annotations

import functools
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from psa_erp_sync.config import CloseCalendar, PostingCadence


@functools.cache
def _holidays(country: str, year: int) -> frozenset[date]:
    import holidays

    return frozenset(holidays.country_holidays(country, years=year).keys())


def is_business_day(day: date, country: str) -> bool:
    return day.weekday() < 5 and day not in _holidays(country, day.year)


def business_days(year: int, month: int, country: str) -> list[date]:
    first = date(year, month, 1)
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    return [
        first + timedelta(days=i)
        for i in range((nxt - first).days)
        if is_business_day(first + timedelta(days=i), country)
    ]


def close_window(year: int, month: int, calendar: CloseCalendar) -> tuple[date, date]:
    """First and last day (inclusive) of the close window of ``year-month``."""
    country = calendar.holidays_country
    this_month = business_days(year, month, country)
    nxt_year, nxt_month = year + (month == 12), month % 12 + 1
    next_month = business_days(nxt_year, nxt_month, country)
    start = this_month[calendar.close_window.start_business_day]  # -2: second-to-last
    end = next_month[calendar.close_window.end_business_day - 1]  # +3: third
    return start, end


def window_containing(day: date, calendar: CloseCalendar) -> tuple[date, date] | None:
    """The close window ``day`` falls in (this month's or last month's), if any."""
    previous = day.replace(day=1) - timedelta(days=1)
    for year, month in ((day.year, day.month), (previous.year, previous.month)):
        start, end = close_window(year, month, calendar)
        if start <= day <= end:
            return start, end
    return None


def in_close(moment: datetime, calendar: CloseCalendar, timezone: str) -> bool:
    return window_containing(moment.astimezone(ZoneInfo(timezone)).date(), calendar) is not None


def posting_interval_minutes(
    moment: datetime, calendar: CloseCalendar, timezone: str, cadence_minutes: PostingCadence
) -> int:
    """How often to post at ``moment``: the environment's close cadence inside a close window, else
    its normal cadence."""
    return cadence_minutes.close if in_close(moment, calendar, timezone) else cadence_minutes.normal


def window_end(moment: datetime, calendar: CloseCalendar, timezone: str) -> datetime | None:
    """When the close window around ``moment`` ends (end of its last day, local time), if in one."""
    tz = ZoneInfo(timezone)
    window = window_containing(moment.astimezone(tz).date(), calendar)
    if window is None:
        return None
    return datetime.combine(window[1] + timedelta(days=1), datetime.min.time(), tzinfo=tz)
