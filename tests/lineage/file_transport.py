"""Run one DAG file with ``airflow dags test`` and the OpenLineage file transport; its events.

For tests that assert on what a real Airflow run emits (not on what an operator declares): the DAG
file is written to its own dags folder, the run goes through the ``airflow`` command of this
environment, and the events are read back from the JSON-lines file the transport appended to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def dags_test(dag_id: str, logical_date: str, events_path: Path, **env: str) -> str:
    """``airflow dags test dag_id logical_date`` with the OpenLineage file transport appending to
    ``events_path`` (``env``: more environment, e.g. the dags folder); the run's output. Fails the
    test with that output when the run fails."""
    full_env = {
        **os.environ,
        **env,
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "psa-erp-sync-ci",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_path), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
        "AIRFLOW__OPENLINEAGE__DISABLED": "False",
    }
    airflow = Path(sys.executable).parent / "airflow"
    proc = subprocess.run(
        [str(airflow), "dags", "test", dag_id, logical_date],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def dags_test_events(tmp_path: Path, dag_id: str, dag_file: str, logical_date: str) -> list[dict[str, Any]]:
    """``airflow dags test dag_id logical_date`` of ``dag_file``; the OpenLineage events it emitted.
    Fails the test with the command's output when the run fails."""
    from devtools.lineage_graph import load_events

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{dag_id}.py").write_text(dag_file)
    events_path = tmp_path / "events.jsonl"
    dags_test(dag_id, logical_date, events_path, AIRFLOW__CORE__DAGS_FOLDER=str(dags))
    return list(load_events(events_path))
