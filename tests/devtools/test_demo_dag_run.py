"""The demo's DAG-run helper stops at a task's first failure and reports that task's error, instead
of waiting through retries while ``airflow dags test`` prints "No tasks to run"."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

FAILING_DAG = """
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task


@dag(dag_id="demo_failing_task", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     default_args={"retries": 3, "retry_delay": timedelta(minutes=10)})
def demo_failing_task():
    @task
    def fine() -> int:
        return 1

    @task
    def post(x: int) -> None:
        raise RuntimeError("ERP answered 400: accounting period 2026-11 is closed for LE-US1")

    post(fine())


demo_failing_task()
"""

PASSING_DAG = """
from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="demo_passing", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def demo_passing():
    @task
    def fine() -> int:
        return 1

    fine()


demo_passing()
"""


def _env(tmp_path: Path) -> dict[str, str]:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "demo_failing_task.py").write_text(FAILING_DAG)
    (dags / "demo_passing.py").write_text(PASSING_DAG)
    return {
        "AIRFLOW_HOME": os.environ["AIRFLOW_HOME"],
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }


@pytest.mark.airflow
@pytest.mark.slow
def test_a_failing_task_stops_the_run_at_once_with_its_error(airflow_db: str, tmp_path: Path) -> None:
    from devtools.demo import run_dag_test

    started = time.monotonic()
    result = run_dag_test("demo_failing_task", _env(tmp_path), tmp_path / "run.log", timeout=500)
    elapsed = time.monotonic() - started
    # The retry delay is 10 minutes: returning before it proves the helper did not wait for a retry
    # (on a quiet machine this is ~15 s, most of it Airflow starting).
    assert elapsed < 240, f"took {elapsed:.0f} s"
    assert result.state == "failed"
    assert result.failed_task == "post"
    assert result.error is not None
    assert "RuntimeError: ERP answered 400: accounting period 2026-11 is closed for LE-US1" in result.error
    assert "No tasks to run" not in result.error
    # The full output stays in the log for the details.
    assert "Task failed with exception" in (tmp_path / "run.log").read_text()


@pytest.mark.airflow
@pytest.mark.slow
def test_a_passing_run_reports_success(airflow_db: str, tmp_path: Path) -> None:
    from devtools.demo import run_dag_test

    result = run_dag_test("demo_passing", _env(tmp_path), tmp_path / "run.log", timeout=500)
    assert result.state == "success", (tmp_path / "run.log").read_text()[-3000:]
    assert result.failed_task is None and result.error is None
