"""docker-compose.yaml follows the official Airflow 3.3 compose file's shape (Docker does not run
here, so these assert on the parsed file; ``make e2e`` runs its environment as processes)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.topology import COMPOSE_PORTS, compose_airflow_env, compose_pools, interpolate, localize

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
VARIABLES = {
    name: f"value-of-{name.lower()}"
    for name in (
        "AIRFLOW_FERNET_KEY",
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_DB_PASSWORD",
        "ODS_PASSWORD",
        "ODS_INGRESS_PASSWORD",
        "SIMULATORS_DB_PASSWORD",
        "MARQUEZ_DB_PASSWORD",
        "AIRFLOW_ADMIN_PASSWORD",
        "PSA_WEBHOOK_SECRET",
        "ERP_WEBHOOK_SECRET",
    )
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    return loaded


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {k: interpolate(str(v), VARIABLES) for k, v in (service.get("environment") or {}).items()}


def test_every_airflow_service_and_backend_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in (*AIRFLOW_SERVICES, "postgres", "redis", "marquez"):
        check = services[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
    assert "/api/v2/version" in " ".join(services["airflow-apiserver"]["healthcheck"]["test"])
    assert "8974/health" in " ".join(services["airflow-scheduler"]["healthcheck"]["test"])
    assert env_of(services["airflow-scheduler"])["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"
    assert "DagProcessorJob" in " ".join(services["airflow-dag-processor"]["healthcheck"]["test"])
    assert "TriggererJob" in " ".join(services["airflow-triggerer"]["healthcheck"]["test"])
    assert "inspect ping" in " ".join(services["airflow-worker"]["healthcheck"]["test"])


def test_dependencies_wait_for_healthy_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on must name conditions, not a bare list"
        for target, spec in depends.items():
            expected = "service_completed_successfully" if target == "airflow-init" else "service_healthy"
            assert spec == {"condition": expected}, f"{name} -> {target}: {spec}"
            assert expected == "service_completed_successfully" or services[target].get("healthcheck"), target
    for name in AIRFLOW_SERVICES:
        depends = services[name]["depends_on"]
        assert {"postgres", "redis", "airflow-init"} <= set(depends), name
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"] == {"condition": "service_healthy"}


def test_init_migrates_and_creates_the_admin_user(compose: dict[str, Any]) -> None:
    init = compose["services"]["airflow-init"]
    script = " ".join(str(part) for part in init["command"])
    assert "airflow db migrate" in script
    assert "python -m psa_erp_sync.ods.migrate" in script
    users = env_of(init)["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    assert users.split(":")[0] == "admin"
    passwords_file = env_of(init)["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert passwords_file in script and "AIRFLOW_ADMIN_PASSWORD" in script
    assert init.get("restart") == "no"
    # The ERP account's pool the posting tasks run in (docs/posting.md): without it they never start.
    from psa_erp_sync.hooks.erp import account_pool

    assert [pool[0] for pool in compose_pools()] == [account_pool()]


def test_one_jwt_secret_and_fernet_key_everywhere_and_no_secret_defaults(compose: dict[str, Any]) -> None:
    services = compose["services"]
    seen = {
        (
            env_of(services[name])["AIRFLOW__API_AUTH__JWT_SECRET"],
            env_of(services[name])["AIRFLOW__CORE__FERNET_KEY"],
        )
        for name in (*AIRFLOW_SERVICES, "airflow-init")
    }
    assert seen == {(VARIABLES["AIRFLOW_JWT_SECRET"], VARIABLES["AIRFLOW_FERNET_KEY"])}
    text = (ROOT / "docker-compose.yaml").read_text()
    for match in re.finditer(r"(?<!\$)\$\{([A-Z_]+)([^}]*)\}", text):
        assert match.group(2).startswith(":?"), (
            f"${{{match.group(1)}}} must be required (:?), never defaulted"
        )
    with pytest.raises(KeyError, match="AIRFLOW_JWT_SECRET"):
        compose_airflow_env({k: v for k, v in VARIABLES.items() if k != "AIRFLOW_JWT_SECRET"})


def test_logs_volume_and_execution_api(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        mounts = [str(v) for v in services[name].get("volumes", [])]
        assert any(m.endswith(":/opt/airflow/logs") for m in mounts), f"{name}: no logs volume"
    assert "airflow-logs" in compose["volumes"]
    env = env_of(services["airflow-worker"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"


def test_marquez_receives_openlineage_over_http(compose: dict[str, Any]) -> None:
    env = env_of(compose["services"]["airflow-scheduler"])
    transport = json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert transport["type"] == "http"
    assert transport["url"] == "http://marquez:5000"
    assert "marquez" in compose["services"]


def test_ods_has_its_own_role_and_the_ingress_an_insert_only_one(compose: dict[str, Any]) -> None:
    services = compose["services"]
    superuser = env_of(services["postgres"])["POSTGRES_USER"]
    env = env_of(services["airflow-scheduler"])
    ods = json.loads(env["AIRFLOW_CONN_ODS_DEFAULT"])
    ingress = json.loads(env["AIRFLOW_CONN_ODS_INGRESS"])
    assert ods["login"] == "ods" and ods["login"] != superuser
    assert ods["password"] == VARIABLES["ODS_PASSWORD"]
    assert ingress["login"] == "ods_ingress" and ingress["password"] == VARIABLES["ODS_INGRESS_PASSWORD"]
    assert ods["schema"] == ingress["schema"] == "ods"
    assert "scram-sha-256" in env_of(services["postgres"])["POSTGRES_HOST_AUTH_METHOD"]
    init = (ROOT / "compose" / "postgres-init.sh").read_text()
    assert "CREATE ROLE ods LOGIN PASSWORD :'ods_password'" in init
    assert "CREATE DATABASE ods OWNER ods" in init
    assert (
        "CREATE ROLE ods_ingress LOGIN PASSWORD :'ingress_password' IN ROLE psa_erp_sync_inbox_writer" in init
    )
    mounts = [str(v) for v in services["postgres"]["volumes"]]
    assert "./compose/postgres-init.sh:/docker-entrypoint-initdb.d/10-roles-and-databases.sh:ro" in mounts
    # The ODS is migrated as its owner role, not as the Airflow superuser.
    assert "postgresql://ods:$ODS_PASSWORD@postgres:5432/ods" in " ".join(
        interpolate(str(part), VARIABLES) for part in services["airflow-init"]["command"]
    )


def test_the_e2e_environment_is_compose_s_with_hosts_replaced() -> None:
    ports = {service: 40000 + i for i, service in enumerate(COMPOSE_PORTS)}
    env = localize(compose_airflow_env(VARIABLES), ports, Path("/tmp/e2e-opt-airflow"))
    assert set(env) == set(compose_airflow_env(VARIABLES))
    blob = json.dumps(env)
    for key, value in env.items():
        for service in COMPOSE_PORTS:
            assert not re.search(rf"(//|@){re.escape(service)}:", value), (key, service)
        if key.startswith("AIRFLOW_CONN_") and "host" in json.loads(value):
            assert json.loads(value)["host"] not in COMPOSE_PORTS, key
    assert "/opt/airflow" not in blob
    assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://127.0.0.1:{ports['redis']}/0"
    ods = json.loads(env["AIRFLOW_CONN_ODS_DEFAULT"])
    assert (ods["host"], ods["port"], ods["login"]) == ("127.0.0.1", ports["postgres"], "ods")
    assert json.loads(env["AIRFLOW_CONN_ERP_DEFAULT"])["host"] == f"http://127.0.0.1:{ports['sim-erp']}"
