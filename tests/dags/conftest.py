"""One DagBag for the DAG tests, parsed with network, database, Variables and Connections blocked."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


class ParseTimeAccess(AssertionError):
    """A DAG file touched the outside world while being parsed."""


@contextmanager
def blocked_io() -> Iterator[None]:
    """Make any network, database, Variable or Connection access at parse time fail loudly."""
    mp = pytest.MonkeyPatch()

    def refuse(what: str) -> Any:
        def _refuse(*args: Any, **kwargs: Any) -> Any:
            raise ParseTimeAccess(f"{what} at parse time")

        return _refuse

    mp.setattr(socket.socket, "connect", refuse("socket connect"))
    mp.setattr(socket, "create_connection", refuse("socket connect"))
    import psycopg

    mp.setattr(psycopg, "connect", refuse("psycopg.connect"))
    from airflow.sdk import BaseHook, Variable

    mp.setattr(Variable, "get", refuse("Variable.get"))
    mp.setattr(BaseHook, "get_connection", refuse("BaseHook.get_connection"))
    try:
        yield
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def dag_files() -> list[Path]:
    return sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="session")
def parse_times(dag_files: list[Path]) -> dict[str, tuple[float, list[str], dict[str, Any]]]:
    """Per file: seconds to parse, import errors, DAGs found (each file parsed in its own DagBag)."""
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    from airflow.dag_processing.dagbag import DagBag

    results = {}
    with blocked_io():
        for path in dag_files:
            started = time.perf_counter()
            bag = DagBag(dag_folder=str(path), safe_mode=False)
            seconds = time.perf_counter() - started
            results[path.name] = (seconds, [str(e) for e in bag.import_errors.values()], dict(bag.dags))
    return results
