"""House policy every DAG must meet: owner, tags, retries with backoff, docs, explicit schedule/catchup."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest


def _dags(parse_times: dict[str, tuple[float, list[str], dict[str, Any]]]) -> list[tuple[str, Any]]:
    return [(name, dag) for name, (_, _, dags) in parse_times.items() for dag in dags.values()]


def test_owner_tags_docs(parse_times: dict[str, tuple[float, list[str], dict[str, Any]]]) -> None:
    for name, dag in _dags(parse_times):
        assert dag.tags, f"{name}: tags are required"
        assert any(t.startswith("domain:") for t in dag.tags), f"{name}: needs a domain:<name> tag"
        assert dag.doc_md and len(dag.doc_md.strip()) > 80, f"{name}: doc_md must explain the DAG"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{name}.{task.task_id}: set a real owner"


def test_retries_with_exponential_backoff(
    parse_times: dict[str, tuple[float, list[str], dict[str, Any]]],
) -> None:
    for name, dag in _dags(parse_times):
        for task in dag.tasks:
            assert task.retries >= 2, f"{name}.{task.task_id}: retries >= 2"
            assert task.retry_exponential_backoff, f"{name}.{task.task_id}: exponential backoff"


@pytest.mark.parametrize("keyword", ["schedule", "catchup", "start_date"])
def test_schedule_and_catchup_are_explicit(dag_files: list[Path], keyword: str) -> None:
    for path in dag_files:
        tree = ast.parse(path.read_text())
        keywords = {kw.arg for node in ast.walk(tree) if isinstance(node, ast.Call) for kw in node.keywords}
        assert keyword in keywords, f"{path.name}: `{keyword}=` must be set explicitly"


def test_max_active_runs_bounded(parse_times: dict[str, tuple[float, list[str], dict[str, Any]]]) -> None:
    for name, dag in _dags(parse_times):
        assert dag.max_active_runs <= 3, f"{name}: unbounded concurrent runs of a financial DAG"


# DAGs that never open exception items (so there is nothing to tell an owner about).
NO_EXCEPTION_ITEMS = {"ods_retention"}


def test_owners_are_notified_when_a_run_ends(
    parse_times: dict[str, tuple[float, list[str], dict[str, Any]]],
) -> None:
    """Every DAG that can open exception items sends owner digests whether the run succeeds or fails."""
    from psa_erp_sync.notifications.owner_digest import OwnerDigestNotifier

    for name, dag in _dags(parse_times):
        if dag.dag_id in NO_EXCEPTION_ITEMS:
            continue
        for callback in ("on_success_callback", "on_failure_callback"):
            callbacks = getattr(dag, callback) or []
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(isinstance(c, OwnerDigestNotifier) for c in callbacks), (
                f"{name}: {callback} lacks the owner digest"
            )


def test_trigger_params_are_not_shared_between_dag_objects(dag_files: list[Path]) -> None:
    """Airflow writes a run's conf into the ``Param`` objects of the DAG (``ParamsDict.__setitem__``):
    a module-level dict of Params shared by every parse of a DAG file would carry one run's values
    (``dry_run: false``, a replay filter, ``mode: sweep``) into the next run in the same process."""
    from airflow.dag_processing.dagbag import DagBag

    for path in dag_files:
        first, second = (DagBag(dag_folder=str(path), safe_mode=False) for _ in range(2))
        for dag_id, dag in first.dags.items():
            other = second.dags[dag_id]
            shared = [k for k in dag.params if dag.params.get_param(k) is other.params.get_param(k)]
            assert not shared, f"{path.name}: Param objects shared between parses: {shared}"
