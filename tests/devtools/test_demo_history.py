"""The demo's plausibility check of the forecast's last closed month (a pure function)."""

from __future__ import annotations

from devtools.demo_history import (
    PLAUSIBLE_MONTH_RATIO,
    dag_timeout,
    first_run_conf,
    plausibility,
    trend_lines,
)


def test_a_steady_month_is_plausible() -> None:
    out = plausibility({"2026-08-01": 100, "2026-09-01": 110, "2026-10-01": 90, "2026-11-01": 95})
    assert out["ratio"] == 0.95 and out["plausible"] is True and out["reason"] is None
    assert out["prior_mean"] == 100 and out["last_month"] == "2026-11-01"
    assert list(out["months"]) == ["2026-08-01", "2026-09-01", "2026-10-01", "2026-11-01"]


def test_the_jump_without_history_fails() -> None:
    # no posted history: the months before hold only retainers and milestones
    out = plausibility({"2026-08-01": 100, "2026-09-01": 100, "2026-10-01": 100, "2026-11-01": 365})
    assert out["ratio"] == 3.65 and out["plausible"] is False
    assert out["reason"] == "2026-11-01 is 3.65x the mean of the 3 months before"


def test_bounds_are_inclusive_and_a_collapse_fails() -> None:
    low, high = PLAUSIBLE_MONTH_RATIO
    assert plausibility({"2026-10-01": 100, "2026-11-01": int(100 * high)}, prior_months=1)["plausible"]
    assert plausibility({"2026-10-01": 100, "2026-11-01": int(100 * low)}, prior_months=1)["plausible"]
    assert not plausibility({"2026-10-01": 100, "2026-11-01": 49}, prior_months=1)["plausible"]


def test_missing_months_count_as_zero_and_nothing_before_fails() -> None:
    out = plausibility({"2026-09-01": 300, "2026-11-01": 100})  # August and October missing
    assert out["months"] == {"2026-08-01": 0, "2026-09-01": 300, "2026-10-01": 0, "2026-11-01": 100}
    assert out["ratio"] == 1.0 and out["plausible"] is True
    nothing = plausibility({"2026-11-01": 100})
    assert nothing["plausible"] is False and nothing["ratio"] is None
    assert plausibility({})["plausible"] is False


def test_lines_and_conf() -> None:
    out = plausibility({"2026-09-01": 100, "2026-10-01": 100, "2026-11-01": 400}, prior_months=2)
    text = "\n".join(trend_lines(out))
    assert "  2026-10: 100" in text and "4.0x the mean" in text and "NOT plausible" in text
    assert first_run_conf("revenue_recognition") == {"periods_back": 3}
    assert first_run_conf("billing") is None
    assert dag_timeout("billing_status") > dag_timeout("billing") == 600.0
