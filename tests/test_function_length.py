"""No function in the package is over 80 lines (issue 17, deliverable 6).

A function's length runs from its ``def`` line to its last line (decorators left out); nested
functions and methods are measured on their own, under their qualified name (``Class.method``,
``outer.inner``). ``ALLOWED`` names the ones not split yet, each with the reason; an entry fails
once its function is gone or short, so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "include" / "psa_erp_sync"
MAX_LINES = 80

# "path relative to the package:qualified name" -> reason; empty: every function is split.
ALLOWED: dict[str, str] = {}


def function_lengths(source: str) -> dict[str, int]:
    """Qualified name -> lines from ``def`` to the last line, for every function in ``source``."""
    lengths: dict[str, int] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                assert child.end_lineno is not None
                lengths[name] = child.end_lineno - child.lineno + 1
                walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
            else:
                walk(child, prefix)

    walk(ast.parse(source), "")
    return lengths


def package_lengths() -> dict[str, int]:
    lengths: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for name, n in function_lengths(path.read_text(encoding="utf-8")).items():
            lengths[f"{rel}:{name}"] = n
    return lengths


def test_the_measure_counts_def_to_last_line_and_names_nested_functions() -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(80))
    source = f"class A:\n    @staticmethod\n    def m():\n{body}\n\n\ndef f():\n    def g():\n        pass\n    return g\n"
    assert function_lengths(source) == {"A.m": 81, "f": 4, "f.g": 2}


def test_no_function_over_80_lines() -> None:
    long = {name: n for name, n in package_lengths().items() if n > MAX_LINES and name not in ALLOWED}
    assert not long, "functions over 80 lines (split them): " + ", ".join(
        f"{name} ({n})" for name, n in sorted(long.items(), key=lambda kv: -kv[1])
    )


def test_the_allow_list_only_shrinks() -> None:
    lengths = package_lengths()
    stale = {name: lengths.get(name) for name in ALLOWED if lengths.get(name, 0) <= MAX_LINES}
    assert not stale, (
        "allow-listed functions that are gone or short now (remove them from ALLOWED): "
        + ", ".join(f"{name} ({'gone' if n is None else n})" for name, n in sorted(stale.items()))
    )
