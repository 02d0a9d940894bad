"""A small ODS for the console tests: open exception items (dead letters with their rejected
ledger row, a quarantine item, a parked posting) in two legal entities and currencies, with
personal data planted where a careless page could leak it (the canonical record, the ledger
payload, the exception detail)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from psa_erp_sync.ods import exceptions
from psa_erp_sync.ods.exceptions import Item

# Never on a page or in an endpoint's answer (a name, an email, a note).
PERSONAL = ("Ingrid Vandersloot", "ingrid.vandersloot@example.com", "dentist appointment, left early")


def _entry(
    conn: psycopg.Connection, source_id: str, spent: date, amount_minor: int, currency: str, le: str
) -> None:
    personal = {"user": {"name": PERSONAL[0], "email": PERSONAL[1]}, "notes": PERSONAL[2]}
    conn.execute(
        """
        INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref,
            project_ref, task_ref, legal_entity, hours, billable, bill_rate_minor, amount_minor, currency,
            approved, fingerprint, source_updated_at, source_read_at, record)
        VALUES ('psa', %s, 'v1', %s, '7', '70', '1', %s, 1, true, %s, %s, %s, true, %s, now(), now(), %s)
        """,
        (source_id, spent, le, amount_minor, amount_minor, currency, f"fp-{source_id}", Jsonb(personal)),
    )


def _posting(
    conn: psycopg.Connection, source_id: str, state: str, amount_minor: int, currency: str, le: str
) -> None:
    conn.execute(
        """
        WITH p AS (
            INSERT INTO ledger.posting (idempotency_key, record_type, source_system, source_id, source_version,
                external_id, state, legal_entity, amount_minor, currency, attempts, last_error)
            VALUES (%s, 'timebill', 'psa', %s, 'v1', %s, %s, %s, %s, %s, 1, %s)
            RETURNING idempotency_key
        )
        INSERT INTO ledger.posting_payload (idempotency_key, payload) SELECT idempotency_key, %s FROM p
        """,
        (
            f"key-{source_id}",
            source_id,
            f"psa-te-{source_id}",
            state,
            le,
            amount_minor,
            currency,
            Jsonb({"code": "INACTIVE_RECORD"}),
            Jsonb({"memo": PERSONAL[2], "employee": PERSONAL[0]}),
        ),
    )


def _item(source_id: str, kind: str, reason: str, owner: str, le: str) -> Item:
    return Item(
        kind=kind,
        domain="time_expense",
        source_system="psa",
        record_type="time_entry",
        source_id=source_id,
        reason_code=reason,
        owner=owner,
        legal_entity=le,
        detail={"note": PERSONAL[2], "user_name": PERSONAL[0], "email": PERSONAL[1]},
    )


def seed(dsn: str) -> dict[str, Any]:
    """Dead letters 101-103 (US, USD; INACTIVE_RECORD, finance-ops-us-east), 104 (UK, GBP, same
    reason, finance-ops-uk), a parked posting 105 (UK, PERIOD_CLOSED) and a quarantined 106 (UK,
    RATE_MISSING, no ledger row)."""
    us, uk = "finance-ops-us-east", "finance-ops-uk"
    rows = [
        (
            "101",
            date(2026, 11, 2),
            125_050,
            "USD",
            "LE-US1",
            "dead_letter",
            "INACTIVE_RECORD",
            us,
            "rejected",
        ),
        ("102", date(2026, 11, 3), 10_000, "USD", "LE-US1", "dead_letter", "INACTIVE_RECORD", us, "rejected"),
        ("103", date(2026, 11, 20), 5_000, "USD", "LE-US1", "dead_letter", "INACTIVE_RECORD", us, "rejected"),
        ("104", date(2026, 11, 4), 40_000, "GBP", "LE-UK1", "dead_letter", "INACTIVE_RECORD", uk, "rejected"),
        ("105", date(2026, 10, 30), 7_500, "GBP", "LE-UK1", "parked", "PERIOD_CLOSED", uk, "parked"),
        ("106", date(2026, 11, 5), 2_500, "GBP", "LE-UK1", "quarantine", "RATE_MISSING", uk, None),
    ]
    with psycopg.connect(dsn) as conn:
        for source_id, spent, minor, currency, le, kind, reason, owner, state in rows:
            _entry(conn, source_id, spent, minor, currency, le)
            if state:
                _posting(conn, source_id, state, minor, currency, le)
            exceptions.quarantine_many(conn, [_item(source_id, kind, reason, owner, le)], run_id="seed")
        # 106 has been open for ten days
        conn.execute(
            "UPDATE exceptions.item SET first_seen = now() - interval '10 days' WHERE source_id = '106'"
        )
    return {"dsn": dsn, "us": us, "uk": uk}


@pytest.fixture
def seeded(clean_ods: str) -> dict[str, Any]:
    return seed(clean_ods)


def assert_no_personal_data(text: str) -> None:
    for value in (*PERSONAL, "vandersloot", "dentist"):
        assert value.lower() not in text.lower(), f"personal data on a page: {value!r}"


USERS = {"ops-user": ("user", "ops-user-pass"), "ops-viewer": ("viewer", "ops-viewer-pass")}


def replay_dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import DAGS

    bag = DagBag(dag_folder=str(DAGS / "dead_letter_replay.py"), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("dead_letter_replay")
    for task in dag.tasks:
        task.retries = 0
    return dag


@pytest.fixture(scope="session")
def console_server(
    airflow_db: str, pg_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A real ``airflow api-server`` with the plugin (SimpleAuthManager users ``ops-user``, role
    user, and ``ops-viewer``, role viewer), its ODS connection on this worker's test database,
    and ``dead_letter_replay`` in the metadata DB (one dry run through ``dag.test()``, which
    syncs the DAG bundle), so the REST API can trigger it."""
    import json

    from devtools.airflow_env import psycopg_parts
    from tests.conftest import airflow_api_server

    tmp = tmp_path_factory.mktemp("console-server")
    passwords = tmp / "passwords.json"
    passwords.write_text(json.dumps({name: password for name, (_, password) in USERS.items()}))
    ods = json.dumps({"conn_type": "postgres", **psycopg_parts(pg_dsn)})
    env = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{n}:{role}" for n, (role, _) in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": "console-test-secret-0123456789abcdef0123",
        "AIRFLOW_CONN_ODS_DEFAULT": ods,
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_ODS_DEFAULT", ods)
        assert replay_dag().test(run_conf={"dry_run": True}).state == "success"
        with airflow_api_server(env, tmp / "api-server.log") as base_url:
            yield {"base_url": base_url, "log": tmp / "api-server.log"}


def token(base_url: str, user: str) -> str:
    import httpx

    answer = httpx.post(
        f"{base_url}/auth/token", json={"username": user, "password": USERS[user][1]}, timeout=30
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["access_token"])


# Screenshots of the browser tests (test artifacts; .local/ is not committed).
ARTIFACTS = Path(__file__).resolve().parents[2] / ".local" / "artifacts" / "console"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser_page(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A page of headless Chromium (Debian's ``chromium``) driven by Playwright; on teardown,
    pass or fail, a full-page screenshot ``last-<test>.png`` is saved with the others."""
    if CHROMIUM is None:
        why = "no chromium on PATH: `apt-get install -y chromium` (Debian's package) to run the browser tests"
        if os.environ.get("CI") == "true":  # .ci/run installs it: in CI a missing browser is a failure
            pytest.fail(why)
        pytest.skip(why)
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        # Assertions wait as long as actions: a page behind an Airflow API call (a triggered run)
        # takes more than expect's default 5 s on a loaded two-core machine.
        sync_api.expect.set_options(timeout=30_000)
        try:
            yield page
        finally:
            page.screenshot(path=str(ARTIFACTS / f"last-{request.node.name}.png"), full_page=True)
            browser.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
