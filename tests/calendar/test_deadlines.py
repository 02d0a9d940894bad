"""Close deadlines per legal entity (config/close_deadlines.yaml): business day +N in the legal
entity's local time, across weekends, public holidays, DST changes and month / year ends."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from psa_erp_sync.calendar.deadlines import approval_day, deadline_for
from psa_erp_sync.config import CloseDeadlineRule, load_close_deadlines, load_config, load_notifications
from psa_erp_sync.notifications.deadlines import close_deadline

ROOT = Path(__file__).resolve().parents[2]
RULE = CloseDeadlineRule(approved_by="18:00", business_days_after=1, in_erp_by="20:00", owner="x")


def _deadline(moment: datetime, legal_entity: str, rule: CloseDeadlineRule = RULE) -> datetime | None:
    config = load_config()
    entity = config.legal_entities.legal_entities[legal_entity]
    calendar = config.close_calendars.calendars[entity.close_calendar]
    return deadline_for(moment, rule, timezone=entity.timezone, calendar=calendar)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "legal_entity", "expected"),
    [
        # Monday 10:00 New York (EST): Monday's approvals, in the ERP by Tuesday 20:00 EST.
        (utc(2026, 3, 2, 15, 0), "LE-US1", utc(2026, 3, 4, 1, 0)),
        # Exactly 18:00 local still counts for that day.
        (utc(2026, 3, 2, 23, 0), "LE-US1", utc(2026, 3, 4, 1, 0)),
        # Friday 19:00 New York: after the cut-off, so Monday's approvals, due Tuesday.
        (utc(2026, 3, 7, 0, 0), "LE-US1", utc(2026, 3, 11, 0, 0)),
        # Same UTC instant, Los Angeles: still Friday 16:00 there, so due Monday 20:00 PDT.
        (utc(2026, 3, 7, 0, 0), "LE-US2", utc(2026, 3, 10, 3, 0)),
        # Friday 12:00 EST before the US DST change (Sunday 8 March): due Monday 20:00 EDT.
        (utc(2026, 3, 6, 17, 0), "LE-US1", utc(2026, 3, 10, 0, 0)),
        # Friday 12:00 GMT before the UK change (Sunday 29 March): due Monday 20:00 BST.
        (utc(2026, 3, 27, 12, 0), "LE-UK1", utc(2026, 3, 30, 19, 0)),
        # Month end: Thursday 30 April London, due Friday 1 May 20:00 BST.
        (utc(2026, 4, 30, 12, 0), "LE-UK1", utc(2026, 5, 1, 19, 0)),
        # Friday 1 May 19:00 BST: Monday 4 May is a bank holiday, so Tuesday's approvals, due Wednesday.
        (utc(2026, 5, 1, 18, 0), "LE-UK1", utc(2026, 5, 6, 19, 0)),
        # Year end: Thursday 31 Dec New York; 1 Jan is a holiday, then a weekend: due Monday 4 Jan.
        (utc(2026, 12, 31, 17, 0), "LE-US1", utc(2027, 1, 5, 1, 0)),
        # A Saturday run carries Monday's approvals.
        (utc(2026, 12, 5, 12, 0), "LE-UK1", utc(2026, 12, 8, 20, 0)),
    ],
)
def test_business_day_plus_one_in_local_time(moment: datetime, legal_entity: str, expected: datetime) -> None:
    assert _deadline(moment, legal_entity) == expected


def test_the_approval_day_is_local() -> None:
    # 02:00 UTC on Tuesday is still Monday 21:00 in New York (after the cut-off) -> Tuesday.
    config = load_config()
    assert (
        str(approval_day(utc(2026, 3, 3, 2, 0), RULE, timezone="America/New_York", country="US"))
        == "2026-03-03"
    )
    assert config.legal_entities.legal_entities["LE-US1"].timezone == "America/New_York"


def test_close_window_only_rules_apply_inside_the_window_only() -> None:
    rule = RULE.model_copy(update={"close_window_only": True})
    # Mid-month: no deadline. Close window of May 2026 (US) starts on its second-to-last business day.
    assert _deadline(utc(2026, 5, 13, 15, 0), "LE-US1", rule) is None
    assert _deadline(utc(2026, 5, 28, 15, 0), "LE-US1", rule) == utc(2026, 5, 30, 0, 0)


def test_naive_moments_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _deadline(datetime(2026, 3, 2, 15, 0), "LE-US1")


@pytest.mark.parametrize(
    "bad",
    [
        {"approved_by": "25:00", "business_days_after": 1, "in_erp_by": "20:00", "owner": "x"},
        {"approved_by": "18:00", "business_days_after": 0, "in_erp_by": "17:00", "owner": "x"},
        {"approved_by": "18:00", "business_days_after": -1, "in_erp_by": "20:00", "owner": "x"},
        {"approved_by": "18:00", "business_days_after": 1, "in_erp_by": "20:00", "owner": ""},
        {"approved_by": "18:00", "business_days_after": 1, "in_erp_by": "20:00", "owner": "x", "extra": 1},
    ],
)
def test_bad_rules_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CloseDeadlineRule.model_validate(bad)


def test_unknown_legal_entities_are_refused(tmp_path: Path) -> None:
    (tmp_path / "legal_entities.yaml").write_text((ROOT / "config" / "legal_entities.yaml").read_text())
    rule = {"approved_by": "18:00", "business_days_after": 1, "in_erp_by": "20:00", "owner": "x"}
    (tmp_path / "close_deadlines.yaml").write_text(
        yaml.safe_dump({"version": 1, "dags": {"time_expense_posting": {"LE-XX9": rule}}})
    )
    with pytest.raises(ValueError, match="LE-XX9"):
        load_close_deadlines(tmp_path)


def test_the_repository_config_covers_the_close_path_with_known_owners() -> None:
    deadlines = load_close_deadlines()
    notifications = load_notifications()
    entities = set(load_config().legal_entities.legal_entities)
    assert set(deadlines.dags) == {
        "time_expense_posting",
        "billing",
        "month_end_close",
        "revenue_recognition",
    }
    for dag in deadlines.dags.values():
        assert set(dag.legal_entities) == entities
        for rule in dag.legal_entities.values():
            assert rule.owner in notifications.recipients.owners, rule.owner
    # The example: approved by 18:00, in the ERP by 20:00 on business day +1.
    assert close_deadline("time_expense_posting", "LE-US1", utc(2026, 3, 2, 15, 0)) == utc(2026, 3, 4, 1, 0)
    # month_end_close runs at 05:00 UTC: London (GMT) is due 18:00 the same business day.
    assert close_deadline("month_end_close", "LE-UK1", utc(2026, 12, 7, 5, 0)) == utc(2026, 12, 7, 18, 0)
    assert close_deadline("no_such_dag", "LE-UK1", utc(2026, 12, 7, 5, 0)) is None
