"""When a run of a close-path DAG must have finished, per legal entity (``config/close_deadlines.yaml``).

A rule reads "every entry approved by ``approved_by`` (local time) on business day D is in the ERP
by ``in_erp_by`` (local time) on business day D + ``business_days_after``". For a run that starts
at ``moment`` (its ``run_after``), D is the first business day of the legal entity's country whose
``approved_by`` instant is at or after ``moment``: a run at 10:00 on a Monday carries Monday's
approvals, a run at 19:00 on Friday or on a Saturday carries Monday's. Local times follow the
legal entity's time zone, DST included; business days are those of its close calendar (weekends and
public holidays are not), across month and year ends.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from psa_erp_sync.calendar.close import in_close, is_business_day
from psa_erp_sync.config import CloseCalendar, CloseDeadlineRule


def _at(day: date, clock: str, tz: ZoneInfo) -> datetime:
    hour, minute = (int(part) for part in clock.split(":"))
    return datetime.combine(day, time(hour, minute), tzinfo=tz)


def next_business_day(day: date, country: str) -> date:
    day += timedelta(days=1)
    while not is_business_day(day, country):
        day += timedelta(days=1)
    return day


def approval_day(moment: datetime, rule: CloseDeadlineRule, *, timezone: str, country: str) -> date:
    """Business day D whose approvals a run at ``moment`` carries (see the module docstring)."""
    tz = ZoneInfo(timezone)
    day = moment.astimezone(tz).date()
    while not (is_business_day(day, country) and _at(day, rule.approved_by, tz) >= moment):
        day += timedelta(days=1)
    return day


def deadline_for(
    moment: datetime, rule: CloseDeadlineRule, *, timezone: str, calendar: CloseCalendar
) -> datetime | None:
    """When a run starting at ``moment`` must have finished (UTC), or None when the rule does not
    apply (``close_window_only`` and ``moment`` is outside the close window)."""
    if moment.tzinfo is None:
        raise ValueError("moment must be timezone-aware")
    if rule.close_window_only and not in_close(moment, calendar, timezone):
        return None
    country = calendar.holidays_country
    due = approval_day(moment, rule, timezone=timezone, country=country)
    for _ in range(rule.business_days_after):
        due = next_business_day(due, country)
    return _at(due, rule.in_erp_by, ZoneInfo(timezone)).astimezone(UTC)
