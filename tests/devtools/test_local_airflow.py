"""`make airflow` starts a living system (issue 18.7): against a real api-server on a metadata DB
holding the parsed DAGs, start-up unpauses every DAG, gives each a first run (the replay DAG a dry
run), creates the ERP account's pool, and a restart adds nothing; the local mailbox keeps what
it receives; the welcome block names the UI, the login and the mailbox."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from devtools.local_airflow import (
    LOGIN_USER,
    Mailbox,
    bring_to_life,
    dag_ids_in_repo,
    free_port,
    login_password,
    print_welcome,
)

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


@pytest.fixture
def fresh_airflow(tmp_path: Path) -> dict[str, str]:
    """A new metadata DB (SQLite) holding the repo's DAGs as the DAG processor would serialize
    them, and nothing else: the environment variables that point Airflow at it."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    env = {"AIRFLOW_HOME": str(home), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"}
    airflow = Path(sys.executable).parent / "airflow"
    for command in (["db", "migrate"], ["dags", "reserialize"]):
        done = subprocess.run(
            [str(airflow), *command], capture_output=True, text=True, env={**os.environ, **env}, check=False
        )
        assert done.returncode == 0, done.stderr[-3000:]
    return env


def test_start_up_unpauses_every_dag_and_gives_each_a_first_run(
    fresh_airflow: dict[str, str], tmp_path: Path
) -> None:
    from tests.conftest import airflow_api_server

    passwords, password = login_password(tmp_path)
    assert login_password(tmp_path) == (passwords, password)  # generated once, kept
    assert oct(passwords.stat().st_mode & 0o777) == "0o600"
    env = {
        **fresh_airflow,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{LOGIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": "local-airflow-test-secret-0123456789abcdef",
    }
    dag_ids = dag_ids_in_repo()
    assert dag_ids[:3] == ["master_data_sync", "project_setup", "time_expense_posting"]
    with airflow_api_server(env, tmp_path / "api-server.log") as base_url:
        token = httpx.post(
            f"{base_url}/auth/token", json={"username": LOGIN_USER, "password": password}
        ).json()
        api = httpx.Client(
            base_url=f"{base_url}/api/v2",
            headers={"Authorization": f"Bearer {token['access_token']}"},
            timeout=30,
        )

        def runs_of(dag_id: str) -> int:
            answer = api.get(f"/dags/{dag_id}/dagRuns")
            return int(answer.json()["total_entries"]) if answer.status_code == 200 else 0

        assert {d: runs_of(d) for d in dag_ids} == dict.fromkeys(dag_ids, 0)  # a new install: nothing ran
        done = bring_to_life(
            base_url,
            user=LOGIN_USER,
            password=password,
            dag_ids=dag_ids,
            pool=("erp_account__test", 2),
            timeout_s=300,
        )
        assert set(done) == set(dag_ids), done
        for dag_id in dag_ids:
            assert done[dag_id].startswith("triggered manual__"), (dag_id, done[dag_id])
            assert api.get(f"/dags/{dag_id}").json()["is_paused"] is False, dag_id
            assert runs_of(dag_id) == 1, dag_id
        replay_run = api.get("/dags/dead_letter_replay/dagRuns").json()["dag_runs"][0]
        assert replay_run["conf"] == {"dry_run": True}
        assert api.get("/pools/erp_account__test").json()["slots"] == 2
        # A restart finds everything in place and triggers nothing more.
        again = bring_to_life(
            base_url, user=LOGIN_USER, password=password, dag_ids=dag_ids, pool=("erp_account__test", 2)
        )
        assert set(again.values()) == {"has runs"}, again
        assert all(runs_of(d) == 1 for d in dag_ids)


def test_the_mailbox_keeps_each_message_and_the_welcome_names_ui_login_and_mailbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Mailbox(tmp_path / "mail", free_port()) as mailbox:
        message = EmailMessage()
        message["Subject"], message["From"], message["To"] = "digest", "a@example.com", "b@example.com"
        message.set_content("3 new exception items")
        with smtplib.SMTP("127.0.0.1", mailbox.port, timeout=10) as smtp:
            smtp.send_message(message)
    files = list((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 1 and b"3 new exception items" in files[0].read_bytes()
    print_welcome(8080, "pw-123", tmp_path / "mail", {"time_expense_posting": "triggered manual__x"})
    out = capsys.readouterr().out
    assert (
        "http://localhost:8080" in out and f"{LOGIN_USER} / pw-123" in out and str(tmp_path / "mail") in out
    )
