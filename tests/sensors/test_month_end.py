"""MonthEndWindowSensor defers to the triggerer (PeriodOpenTrigger: tests/triggers/test_periods.py)."""

from __future__ import annotations

import pytest
from airflow.exceptions import TaskDeferred

from psa_erp_sync.sensors.month_end import MonthEndWindowSensor
from psa_erp_sync.triggers.periods import PeriodOpenTrigger


def test_sensor_defers_instead_of_holding_a_worker_slot() -> None:
    sensor = MonthEndWindowSensor(
        task_id="wait", wait_for="period_open", legal_entity="LE-US1", day="2026-12-01"
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context={})  # type: ignore[arg-type]
    assert isinstance(deferred.value.trigger, PeriodOpenTrigger)
    assert deferred.value.method_name == "execute_complete"


def test_sensor_waits_for_the_end_of_a_close_window() -> None:
    from airflow.providers.standard.triggers.temporal import DateTimeTrigger

    sensor = MonthEndWindowSensor(
        task_id="w", wait_for="close_window_end", legal_entity="LE-UK1", day="2099-12-31"
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context={})  # type: ignore[arg-type]
    assert isinstance(deferred.value.trigger, DateTimeTrigger)
    assert (
        sensor.waited_for["close_window_end"] == "2100-01-07T00:00:00+00:00"
    )  # after Thu 6 Jan, the 3rd business day
