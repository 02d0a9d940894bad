"""The two posting tasks of ``time_expense_posting`` run at the same time and share the account.

One after the other, each pass's start (periods, planning before the first batch) and its last wave
left most of the ERP account's slots idle (docs/performance.md, perf-remote5). The two record types
have posting locks and ledger rows of their own, and the account's request budget bounds their
requests together (tests/posting/test_account_budget.py: both passes at once, in processes of their
own, never over the limit, each record posted once), so nothing orders them but the
precheck before and the reconciliations after.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.dags.conftest import DAGS, blocked_io


@pytest.fixture(scope="module")
def dag() -> Any:
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    from airflow.dag_processing.dagbag import DagBag

    with blocked_io():
        bag = DagBag(dag_folder=str(DAGS / "time_expense_posting.py"), safe_mode=False)
    assert not bag.import_errors
    return bag.dags["time_expense_posting"]


def test_the_two_posting_tasks_are_not_ordered(dag: Any) -> None:
    time_task, expense_task = dag.get_task("post_timebills"), dag.get_task("post_expense_reports")
    assert "post_expense_reports" not in time_task.get_flat_relative_ids(upstream=False)
    assert "post_timebills" not in expense_task.get_flat_relative_ids(upstream=False)
    for task in (time_task, expense_task):
        assert task.upstream_task_ids == {"precheck_projects"}
        assert {"reconcile_erp", "reconcile_parallel_run"} <= task.downstream_task_ids
        assert task.pool == "erp_account__erp_default"


def test_the_reconciliations_wait_for_both_passes(dag: Any) -> None:
    for task_id in ("reconcile_erp", "reconcile_parallel_run"):
        assert {"post_timebills", "post_expense_reports"} <= dag.get_task(task_id).upstream_task_ids
