"""The wheel built from pyproject holds the deployable package only: no simulators, no development
tooling, but every migration and schema the package reads at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEV_TOOLING = ("devenv/", "lineage/graph.py", "forecast/backtest.py", "contracts/export.py")


@pytest.mark.slow
def test_the_wheel_ships_only_the_runtime_package(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("psa_erp_sync-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"psa_erp_sync", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    shipped_tools = [n for n in names if any(n.startswith(f"psa_erp_sync/{tool}") for tool in DEV_TOOLING)]
    assert not shipped_tools, shipped_tools
    assert not [n for n in names if "simulators" in n or "devtools" in n or "tests/" in n]
    migrations = {p.name for p in (ROOT / "include/psa_erp_sync/ods/migrations").glob("*.sql")}
    assert {Path(n).name for n in names if "/ods/migrations/" in n} == migrations
    assert any(n.startswith("psa_erp_sync/contracts/schemas/") for n in names)
    assert any(n.startswith("psa_erp_sync/lineage/schemas/") for n in names)
    assert "psa_erp_sync/py.typed" in names
