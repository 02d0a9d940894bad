"""flows/ is wiring (issue 17, deliverable 1): each flow declares its tasks as operators of the
package (which read what they need from their own ``execute(context)``) or as ``@task`` steps; no
flow reads the Airflow context itself, and every ``build`` lays out a graph without touching a
system (nothing at parse time)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG

import psa_erp_sync.flows

FLOWS = Path(psa_erp_sync.flows.__file__).parent
MODULES = sorted(info.name for info in pkgutil.iter_modules(psa_erp_sync.flows.__path__))
# Task classes from outside the package a flow may declare: Airflow's own control-flow pieces.
AIRFLOW_TASKS = {
    "airflow.providers.standard.operators.empty.EmptyOperator",
    "airflow.providers.standard.operators.hitl.ApprovalOperator",
    "airflow.providers.standard.operators.trigger_dagrun.TriggerDagRunOperator",
}
CONTEXT_READERS = {"get_current_context"}


def _builders() -> list[tuple[str, Callable[[], Any]]]:
    """Every function of flows/ that declares tasks: ``build*`` and ``close_report``."""
    found = []
    for name in MODULES:
        module = importlib.import_module(f"psa_erp_sync.flows.{name}")
        for attr in sorted(vars(module)):
            fn = getattr(module, attr)
            ours = callable(fn) and getattr(fn, "__module__", None) == module.__name__
            if ours and (attr.startswith("build") or attr == "close_report"):
                found.append((f"{name}.{attr}", fn))
    return found


BUILDERS = _builders()


def test_every_flow_module_has_a_builder() -> None:
    built = {qualified.split(".")[0] for qualified, _ in BUILDERS}
    assert set(MODULES) - built == set(), "a flow module without a build function"


@pytest.mark.parametrize("path", sorted(FLOWS.glob("*.py")), ids=lambda p: p.name)
def test_no_flow_reads_the_airflow_context(path: Path) -> None:
    """The operators read ids, as-of and parameters from ``execute(context)``; a flow never does."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    offending = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name | ast.Attribute | ast.alias):
            name = (
                node.id
                if isinstance(node, ast.Name)
                else node.attr
                if isinstance(node, ast.Attribute)
                else node.name
            )
            if name in CONTEXT_READERS:
                offending.append(f"line {node.lineno}: {name}")  # type: ignore[union-attr]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
            a.arg == "context" for a in [*node.args.args, *node.args.kwonlyargs]
        ):
            offending.append(f"line {node.lineno}: {node.name}(context)")
    assert not offending, f"{path.name} reads the Airflow context: {offending}"


@pytest.mark.parametrize(("qualified", "build"), BUILDERS, ids=[q for q, _ in BUILDERS])
def test_a_flow_declares_house_operators_or_tasks_only(qualified: str, build: Callable[[], Any]) -> None:
    with DAG(
        f"flow_{qualified.replace('.', '_')}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC)
    ) as dag:
        build()
    assert dag.tasks, f"{qualified} declared no task"
    for task in dag.tasks:
        cls = type(task)
        name = f"{cls.__module__}.{cls.__qualname__}"
        house = cls.__module__.startswith(("psa_erp_sync.operators.", "psa_erp_sync.sensors."))
        decorated = cls.__module__.startswith("airflow.") and "Decorated" in cls.__qualname__
        assert house or decorated or name in AIRFLOW_TASKS, f"{qualified}: {task.task_id} is a {name}"


def test_the_trigger_form_parameters_are_built_afresh_for_each_dag() -> None:
    """Airflow writes a run's conf into the Param objects it is given: two DAGs never share one."""
    for name in MODULES:
        module = importlib.import_module(f"psa_erp_sync.flows.{name}")
        params = getattr(module, "params", None)
        if params is None:
            continue
        first, second = params(), params()
        assert first.keys() == second.keys() and first, name
        assert all(first[key] is not second[key] for key in first), name
