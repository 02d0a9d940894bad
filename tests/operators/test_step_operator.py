"""``DomainStepOperator`` (pure unit tests): what the step function receives by name (run facts,
pulled XComs, a per-account ERP client factory), a refused request failing at once before anything
is opened, and a flow mistake (an argument nobody provides) refused when the DAG is parsed."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from psa_erp_sync.operators import step
from psa_erp_sync.operators.step import DomainStepOperator

END = datetime(2026, 11, 30, tzinfo=UTC)


class FakeTi:
    def __init__(self, xcoms: dict[str, Any]) -> None:
        self.xcoms = xcoms

    def xcom_pull(self, *, task_ids: str) -> Any:
        return self.xcoms.get(task_ids)


def _context(params: dict[str, Any] | None = None, xcoms: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "dag": SimpleNamespace(dag_id="d"),
        "run_id": "r1",
        "data_interval_end": END,
        "params": params or {},
        "ti": FakeTi(xcoms or {}),
    }


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The steps whose OpenLineage run was recorded (no ODS here)."""
    steps: list[str] = []
    monkeypatch.setattr(
        DomainStepOperator, "record_lineage_run", lambda self, context, name: steps.append(name)
    )
    return steps


def test_the_function_gets_run_facts_pulled_xcoms_and_op_kwargs_by_name(recorded: list[str]) -> None:
    def call(
        *, dag_id: str, run_id: str, as_of: datetime, params: dict[str, Any], selected: Any, n: int
    ) -> Any:
        return {"ids": (dag_id, run_id), "as_of": as_of, "params": params, "selected": selected, "n": n}

    op = DomainStepOperator(task_id="t", call=call, pull={"selected": "up"}, op_kwargs={"n": 2})
    result = op.execute(_context({"dry_run": True}, {"up": {"matched": 3}}))  # type: ignore[arg-type]
    assert result == {
        "ids": ("d", "r1"),
        "as_of": END,
        "params": {"dry_run": True},
        "selected": {"matched": 3},
        "n": 2,
    }
    assert recorded == ["t"]


def test_a_refused_request_fails_at_once_before_anything_is_opened(recorded: list[str]) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    def check(params: dict[str, Any]) -> None:
        if not params.get("ok"):
            raise LookupError("not ok")

    def call(conn: Any) -> None:
        raise AssertionError("the step ran")

    op = DomainStepOperator(task_id="t", call=call, check_params=check, no_retry_on=[LookupError])
    with pytest.raises(AirflowFailException, match="not ok"):
        op.execute(_context({"ok": False}))  # type: ignore[arg-type]
    assert recorded == []  # not even the lineage run (which needs the ODS)

    def refusing(*, run_id: str) -> None:
        raise LookupError("refused by the step")

    with pytest.raises(AirflowFailException, match="refused by the step"):
        DomainStepOperator(task_id="t", call=refusing, no_retry_on=[LookupError]).execute(_context())  # type: ignore[arg-type]
    with pytest.raises(LookupError):  # other types: raised as they are (retried)
        DomainStepOperator(task_id="t", call=refusing).execute(_context())  # type: ignore[arg-type]


def test_erp_for_opens_each_account_once_and_closes_all(
    recorded: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []

    @contextmanager
    def client_of(system: str, conn_id: str) -> Any:
        events.append(f"open {system} {conn_id}")
        yield SimpleNamespace(conn_id=conn_id)
        events.append(f"close {conn_id}")

    monkeypatch.setattr(step, "_client_of", client_of)

    def call(erp_for: Any) -> list[str]:
        return [erp_for(c).conn_id for c in ("erp_uk", "erp_us", "erp_uk")]

    assert DomainStepOperator(task_id="t", call=call).execute(_context()) == ["erp_uk", "erp_us", "erp_uk"]  # type: ignore[arg-type]
    assert events == ["open erp erp_uk", "open erp erp_us", "close erp_us", "close erp_uk"]


def test_an_argument_nobody_provides_is_refused_when_the_dag_is_parsed() -> None:
    def call(conn: Any, *, selected: Any) -> None: ...

    with pytest.raises(TypeError, match="'selected'"):
        DomainStepOperator(task_id="t", call=call)
    DomainStepOperator(task_id="t", call=call, pull={"selected": "up"})
