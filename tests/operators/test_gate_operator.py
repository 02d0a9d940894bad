"""``DomainGateOperator`` (unit tests): the domain function decides from explicit arguments (as-of,
whether the schedule started the run) and a falsy answer skips every task downstream of the gate;
the posting DAG's cadence gate is this operator calling ``calendar.cadence.gate``."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import DownstreamTasksSkipped
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

from psa_erp_sync.calendar import cadence
from psa_erp_sync.operators.gate import DomainGateOperator
from psa_erp_sync.operators.step import DomainStepOperator

MID_MONTH_QUARTER_PAST = datetime(2026, 11, 18, 15, 15, tzinfo=UTC)


class FakeTi:
    map_index = -1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@pytest.fixture(autouse=True)
def no_lineage_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ODS here: the try's OpenLineage run is not recorded."""
    monkeypatch.setattr(DomainStepOperator, "record_lineage_run", lambda self, context, name: None)


def _gated(call: Any) -> tuple[DomainGateOperator, dict[str, Any]]:
    with DAG("gate_test", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC)):
        gate = DomainGateOperator(task_id="gate", call=call)
        first = EmptyOperator(task_id="first")
        second = EmptyOperator(task_id="second")
        gate >> first >> second
    context = {
        "dag": SimpleNamespace(dag_id="gate_test"),
        "run_id": "scheduled__1",
        "data_interval_end": MID_MONTH_QUARTER_PAST,
        "dag_run": SimpleNamespace(run_type="scheduled"),
        "params": {},
        "task": gate,
        "ti": FakeTi(),
    }
    return gate, context


def test_a_true_answer_lets_the_run_go_on() -> None:
    gate, context = _gated(lambda *, as_of, scheduled: scheduled and as_of == MID_MONTH_QUARTER_PAST)
    assert gate.execute(context) is True  # type: ignore[arg-type]
    assert context["ti"].pushed == {}


def test_a_false_answer_skips_everything_downstream() -> None:
    gate, context = _gated(lambda *, scheduled: not scheduled)
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        gate.execute(context)  # type: ignore[arg-type]
    assert sorted(skipped.value.tasks) == ["first", "second"]


def test_the_cadence_gate_skips_a_scheduled_run_at_quarter_past_mid_month() -> None:
    gate, context = _gated(cadence.gate)
    with pytest.raises(DownstreamTasksSkipped):
        gate.execute(context)  # type: ignore[arg-type]
    context["dag_run"] = SimpleNamespace(run_type="manual")  # manual runs always post
    assert gate.execute(context) is True  # type: ignore[arg-type]


def test_the_posting_dag_gates_on_the_cadence_domain_function() -> None:
    from psa_erp_sync.flows import time_expense

    with DAG("gate_wiring_test", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC)) as dag:
        time_expense.build()
    gate = dag.get_task("cadence_gate")
    assert isinstance(gate, DomainGateOperator)
    assert gate.call is cadence.gate
    assert {"extract_reference", "extract_time_entries", "extract_expenses"} <= gate.downstream_task_ids
