"""Every DAG file imports cleanly, touches nothing external at parse time, and parses fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

PARSE_BUDGET_SECONDS = 2.0


def test_there_are_dags(dag_files: list[Path]) -> None:
    assert dag_files, "dags/ holds no DAG files"


def test_every_file_imports_without_errors(
    parse_times: dict[str, tuple[float, list[str], dict[str, Any]]],
) -> None:
    errors = {name: errs for name, (_, errs, _) in parse_times.items() if errs}
    assert not errors, errors


def test_one_domain_per_file(parse_times: dict[str, tuple[float, list[str], dict[str, Any]]]) -> None:
    for name, (_, _, dags) in parse_times.items():
        assert len(dags) == 1, f"{name} defines {sorted(dags)}: one DAG (one data domain) per file"


def test_parse_time_per_file(
    parse_times: dict[str, tuple[float, list[str], dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Measured figures are printed (``-s`` shows them); the budget catches heavy top-level work."""
    figures = {name: round(seconds, 3) for name, (seconds, _, _) in parse_times.items()}
    with capsys.disabled():
        print("\nDAG parse times (s):", json.dumps(figures))
    slow = {name: s for name, s in figures.items() if s > PARSE_BUDGET_SECONDS}
    assert not slow, f"over {PARSE_BUDGET_SECONDS}s to parse: {slow}"


def test_no_heavy_imports_at_module_top(dag_files: list[Path]) -> None:
    import ast

    heavy = {"pandas", "numpy", "matplotlib", "httpx", "psycopg"}
    for path in dag_files:
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                )
                assert not any(n.split(".")[0] in heavy for n in names), (
                    f"{path.name} imports {names} at top level"
                )
