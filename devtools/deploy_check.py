"""``make deploy-check``: what a deployment pipeline runs before it ships the image.

1. a venv built from the runtime lock alone (``requirements.txt``, ``--require-hashes``) with the
   package installed from its wheel (non-editable), as the ``Dockerfile`` does; it must hold no
   development-only package (one in ``requirements-dev.txt`` but not in the runtime lock);
2. ``airflow dags list-import-errors --local`` in that venv: every DAG (and the plugin) imports
   with the runtime dependencies only;
3. ``airflow dags reserialize`` in that venv (after ``airflow db migrate`` of a throw-away SQLite DB);
4. the DAG policy and integrity tests, the Dockerfile / lock checks and the check that every
   connection id the DAGs use is documented in ``config/connections.example.json`` (pytest, in
   the development venv).

Exits non-zero at the first failing step, naming it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".local" / "deploy-check"
RUNTIME_VENV = WORK / "runtime-venv"
POLICY_TESTS = [
    "tests/dags/test_dag_policy.py",
    "tests/dags/test_dag_integrity.py",
    "tests/dags/test_connections_documented.py",
    "tests/test_deploy.py",
    "tests/test_wheel.py",
]


def lock_names(path: Path) -> set[str]:
    """Normalized package names pinned in a lock file (``name==version`` lines)."""
    names = set()
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==", line)
        if match:
            names.add(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    return names


def development_only() -> set[str]:
    """Packages the development lock adds on top of the runtime lock."""
    return lock_names(ROOT / "requirements-dev.txt") - lock_names(ROOT / "requirements.txt")


def _step(title: str) -> None:
    print(f"\n=== deploy-check: {title}", flush=True)


def _run(
    argv: list[str], *, env: dict[str, str] | None = None, capture: bool = False, check: bool = True
) -> str:
    proc = subprocess.run(
        argv,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        check=False,
        text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
    )
    if check and proc.returncode != 0:
        if capture:
            print(proc.stdout[-5000:])
        raise SystemExit(f"deploy-check failed: {' '.join(argv[:4])} ... exited {proc.returncode}")
    return proc.stdout or ""


def build_runtime_venv(uv: str) -> Path:
    """The runtime lock alone, hashes required, plus the package from its wheel."""
    shutil.rmtree(RUNTIME_VENV, ignore_errors=True)
    _run([uv, "venv", "--quiet", "--python", sys.executable, str(RUNTIME_VENV)])
    python = str(RUNTIME_VENV / "bin" / "python")
    _run([uv, "pip", "install", "--quiet", "--python", python, "--require-hashes", "-r", "requirements.txt"])
    _run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            python,
            "--no-deps",
            "--reinstall-package",
            "psa-erp-sync",
            ".",
        ]
    )
    return RUNTIME_VENV


def installed_names(uv: str, venv: Path) -> set[str]:
    out = _run([uv, "pip", "freeze", "--python", str(venv / "bin" / "python")], capture=True)
    return {
        re.sub(r"[-_.]+", "-", line.split("==")[0].split(" @ ")[0]).lower()
        for line in out.split("\n")
        if line
    }


def airflow_env(home: Path) -> dict[str, str]:
    """A throw-away Airflow home reading this checkout's DAGs and plugin, nothing else on the path."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PSA_ERP_SYNC_CONFIG_DIR": str(ROOT / "config"),
        "PSA_ERP_SYNC_ENV": os.environ.get("PSA_ERP_SYNC_ENV", "prod"),
        # Only the runtime venv: no checkout on the path, so nothing from simulators/ or devtools/.
        "PYTHONPATH": "",
        "PATH": f"{RUNTIME_VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def main() -> int:
    started = time.monotonic()
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    _step("runtime venv from requirements.txt (--require-hashes) + the package's wheel")
    venv = build_runtime_venv(uv)
    leaked = installed_names(uv, venv) & development_only()
    if leaked:
        raise SystemExit(
            f"deploy-check failed: development-only packages in the runtime venv: {sorted(leaked)}"
        )
    print(f"no development-only package among {len(installed_names(uv, venv))} installed")

    home = WORK / "airflow-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = airflow_env(home)
    airflow = str(venv / "bin" / "airflow")
    _step("airflow db migrate (a throw-away SQLite metadata DB)")
    _run([airflow, "db", "migrate"], env=env, capture=True)
    _step("airflow dags list-import-errors (runtime dependencies only)")
    # Exits 1 when there are import errors; the JSON list says which.
    out = _run(
        [airflow, "dags", "list-import-errors", "--local", "-o", "json"], env=env, capture=True, check=False
    )
    errors = _json_tail(out)
    if errors:
        for error in errors:
            print(f"{error.get('filepath')}: {error.get('error')}")
        raise SystemExit(f"deploy-check failed: {len(errors)} DAG import error(s) with the runtime lock")
    print("no import errors")
    _step("airflow dags reserialize")
    _run([airflow, "dags", "reserialize"], env=env, capture=True)
    print("reserialized")
    _step("DAG policy tests, lock and Dockerfile checks, documented connection ids")
    _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *POLICY_TESTS])
    print(f"\ndeploy-check passed in {time.monotonic() - started:.0f} s")
    return 0


def _json_tail(out: str) -> list[dict[str, str]]:
    """The JSON list Airflow prints after its log lines."""
    start = out.rfind("\n[")
    text = out[start + 1 :] if start >= 0 else out[out.find("[") :]
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SystemExit(
            f"deploy-check failed: cannot read list-import-errors output:\n{out[-3000:]}"
        ) from exc
    return list(value)


if __name__ == "__main__":
    raise SystemExit(main())
