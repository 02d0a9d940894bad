"""The layering of docs/architecture.md is a check, not a hope.

The import-linter contracts in pyproject.toml (``[tool.importlinter]``) hold for the package,
simulators/ and devtools/; dags/ and plugins/ are not packages, so their imports are read here.
A broken contract fails with import-linter's report, which names each offending import and line.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# The bottom of the package: what everything else stands on. It imports only itself.
BOTTOM = ("ods", "clients", "contracts", "config", "money")
# What a DAG file may import from the package: its flow, and the assets it is scheduled on.
DAG_IMPORTS = ("psa_erp_sync.flows", "psa_erp_sync.assets")
# The plugin registers Airflow extension points only: the HTTP apps (api) and the deadline
# reference the scheduler must know (notifications.deadlines).
PLUGIN_IMPORTS = ("psa_erp_sync.api", "psa_erp_sync.notifications")
DEV_TOOLING = ("simulators", "devtools")


def _lint_imports(pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), str(ROOT)])
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=pythonpath or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_import_contracts_hold() -> None:
    result = _lint_imports()
    report = result.stdout + result.stderr
    start = report.find("Broken contracts")
    assert result.returncode == 0, "the layering is broken:\n" + report[max(start, 0) :]
    assert "0 broken" in report, report


def test_a_new_domain_package_is_covered_without_naming_it(tmp_path: Path) -> None:
    """revenue/ or hr/ (or any package not named as glue or bottom) may not import Airflow or the
    glue, and the bottom may not import it: the contracts name the glue, not the domain."""
    package = tmp_path / "psa_erp_sync"
    shutil.copytree(ROOT / "include" / "psa_erp_sync", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "payroll").mkdir()
    (package / "payroll" / "__init__.py").write_text(
        "from __future__ import annotations\n\nimport airflow\n\nfrom psa_erp_sync.hooks import ods\n"
    )
    result = _lint_imports(pythonpath=tmp_path)
    report = result.stdout
    assert result.returncode != 0, report
    assert "psa_erp_sync.payroll -> airflow (l.3)" in report, report
    assert "psa_erp_sync.payroll -> psa_erp_sync.hooks.ods (l.5)" in report, report


def test_the_bottom_imports_only_the_bottom() -> None:
    """ods, clients, contracts, config and money never import a domain package or the glue, whatever
    packages exist (grimp's graph, not a list of today's packages)."""
    import grimp

    graph = grimp.build_graph("psa_erp_sync")

    def in_bottom(module: str) -> bool:
        parts = module.split(".")
        return len(parts) > 1 and parts[1] in BOTTOM

    offending = []
    for module in sorted(filter(in_bottom, graph.modules)):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported != "psa_erp_sync" and not in_bottom(imported):
                details = graph.get_import_details(importer=module, imported=imported)
                lines = ", ".join(f"l.{d['line_number']}" for d in details)
                offending.append(f"{module} -> {imported} ({lines})")
    assert not offending, "the bottom layer imports above itself:\n" + "\n".join(offending)


def _imports(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, node.lineno))
    return found


@pytest.mark.parametrize(("folder", "allowed"), [("dags", DAG_IMPORTS), ("plugins", PLUGIN_IMPORTS)])
def test_dags_and_plugins_import_only_their_entry_points(folder: str, allowed: tuple[str, ...]) -> None:
    offending = []
    files = sorted((ROOT / folder).glob("*.py"))
    assert files, folder
    for path in files:
        for module, line in _imports(path):
            top = module.split(".")[0]
            if top in DEV_TOOLING or (top == "psa_erp_sync" and not module.startswith(allowed)):
                offending.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not offending, f"{folder}/ may import only {allowed} of ours:\n" + "\n".join(offending)


PACKAGE = ROOT / "include" / "psa_erp_sync"
SQL_START = ("SELECT ", "INSERT ", "UPDATE ", "DELETE ", "WITH ", "CREATE ", "ALTER ")


def test_operators_sensors_and_triggers_read_only_their_own_context() -> None:
    """Every operator takes what it needs from its own ``execute(context)`` and passes it on as
    arguments: none fetches the Airflow context again (what the operators calling a flow's private
    functions used to do)."""
    offending = []
    for folder in ("operators", "sensors", "triggers"):
        for path in sorted((PACKAGE / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Name | ast.Attribute) and "get_current_context" in ast.unparse(node):
                    offending.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offending, "get_current_context in an operator, sensor or trigger:\n" + "\n".join(offending)


def test_flows_hold_no_sql() -> None:
    """flows/ is wiring: SQL lives in the domain packages and ods/."""
    offending = []
    for path in sorted((PACKAGE / "flows").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
            if text.lstrip().upper().startswith(SQL_START):
                offending.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text.strip()[:60]}")
    assert not offending, "SQL in flows/:\n" + "\n".join(offending)
