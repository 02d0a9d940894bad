"""A confirmed replay from the console, carried to a posted result, in a real browser.

Real Airflow as processes (``tests/console/airflow_stack.py``: PostgreSQL metadata DB, scheduler
with the LocalExecutor, api-server with the plugin), the ERP simulator over loopback and this
worker's ODS. The ERP rejects three time entries of a job that is inactive there
(``INACTIVE_RECORD``, LE-US1) and one UK entry whose employee it does not know
(``INVALID_KEY_OR_REF``); finance reactivates the job (the fix). In the browser an operator logs in,
opens ``Browse -> Replay dead letters``, chooses owner and reason, sees the dry run (count and
amount, under the approval limits of ``config/mappings.yaml``), confirms, follows the run on the
page to its end and sees the outcome: posted count, the ERP ids, the ledger state. Then the ERP
and the ledger are checked: exactly those three records are confirmed, each once; nothing else
moved. Screenshots go to ``.local/artifacts/console/`` (``replay-*.png``)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.conftest import ROOT, RunningSimulator
from tests.console.airflow_stack import RunningAirflow, airflow_with_scheduler, wait_for
from tests.console.conftest import assert_no_personal_data, shot

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

US, UK = "LE-US1", "LE-UK1"
US_OWNER = "finance-ops-us-east"  # config/ownership.yaml: time_expense, LE-US1
ACTIVE_JOB, INACTIVE_JOB, UK_JOB = 10, 30, 20
# source id -> (project, user, LE, currency, date, hours, rate): 201-202 post at once; 203-205 hit the
# inactive job (the replay's records); 206's employee is unknown to the ERP (not fixed, not replayed).
ENTRIES = {
    "201": (ACTIVE_JOB, 1, US, "USD", date(2026, 10, 5), "1.00", 15_000),
    "202": (ACTIVE_JOB, 1, US, "USD", date(2026, 10, 6), "2.00", 15_000),
    "203": (INACTIVE_JOB, 1, US, "USD", date(2026, 10, 7), "2.00", 15_000),
    "204": (INACTIVE_JOB, 1, US, "USD", date(2026, 10, 8), "1.50", 15_000),
    "205": (INACTIVE_JOB, 1, US, "USD", date(2026, 11, 2), "4.00", 15_000),
    "206": (UK_JOB, 9, UK, "GBP", date(2026, 10, 9), "3.00", 12_000),
}
REPLAYED = ["203", "204", "205"]
USERS = {"ops-user": ("user", "ops-user-pass"), "platform-admin": ("admin", "platform-admin-pass")}


def _erp_seed(*, job_30_inactive: bool) -> dict[str, Any]:
    from tests.posting.test_stateful import ERP_SEED, _job

    seed = json.loads(json.dumps(ERP_SEED))
    seed["jobs"].append(dict(_job(INACTIVE_JOB), is_inactive=job_30_inactive))
    return seed


def _seed_canonical(dsn: str) -> None:
    """Approved, validated time entries (the canonical rows the planner posts); the record itself
    carries personal data a careless page could show."""
    with psycopg.connect(dsn) as conn:
        for sid, (project, user, le, currency, spent, hours, rate) in ENTRIES.items():
            amount = int(Decimal(hours) * rate)
            conn.execute(
                """
                INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref,
                    project_ref, task_ref, legal_entity, hours, billable, bill_rate_minor, amount_minor, currency,
                    approved, fingerprint, source_updated_at, record)
                VALUES ('psa', %s, %s, %s, %s, %s, '1', %s, %s, true, %s, %s, %s, true, %s, now(), %s)
                """,
                (
                    sid,
                    f"v1-{sid}",
                    spent,
                    str(user),
                    str(project),
                    le,
                    Decimal(hours),
                    rate,
                    amount,
                    currency,
                    f"fp-{sid}",
                    Jsonb({"notes": "dentist appointment, left early", "user": "Ingrid Vandersloot"}),
                ),
            )


def _first_pass(dsn: str, erp: RunningSimulator) -> dict[str, Any]:
    """The scheduled posting's pass, in process: the ERP rejects 203-206 (dead letters)."""
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting.engine import EngineSettings
    from psa_erp_sync.posting.service import post_record_type

    with NetSuiteClient(base_url=erp.base_url, account_id="A1", token="t", timeout=10) as client:
        result = post_record_type(
            dsn=dsn,
            client=client,
            record_type="timebill",
            config=load_config(),
            settings=EngineSettings(batch_size=10, max_concurrency=2, progress_every_s=3600),
            run_id="scheduled-1",
        )
    return result.outcome


def _ledger(dsn: str) -> dict[str, list[str]]:
    with psycopg.connect(dsn) as conn:
        return {
            sid: states
            for sid, states in conn.execute(
                "SELECT source_id, array_agg(state ORDER BY seq) FROM ledger.posting"
                " WHERE record_type = 'timebill' GROUP BY 1 ORDER BY 1"
            )
        }


def _erp_timebills(dsn: str) -> dict[str, tuple[str, str]]:
    """ERP external id -> (internal id, memo) of every time bill the ERP simulator holds."""
    with psycopg.connect(dsn) as conn:
        return {
            ext: (str(internal), body.get("memo", ""))
            for ext, internal, body in conn.execute(
                "SELECT external_id, id, body FROM sim_erp.record WHERE type = 'timebill'"
            )
        }


def _prepare_world(clean_ods: str, erp_sim: RunningSimulator) -> dict[str, Any]:
    """Seed the ERP and the ODS, run the first posting pass (four dead letters), then the fix."""
    erp_sim.admin("POST", "/seed", json=_erp_seed(job_30_inactive=True))
    _seed_canonical(clean_ods)
    outcome = _first_pass(clean_ods, erp_sim)
    assert (outcome["posted"], outcome["rejected"]) == (2, 4), outcome
    with psycopg.connect(clean_ods) as conn:
        items = conn.execute(
            "SELECT source_id, kind, reason_code, owner FROM exceptions.item WHERE status = 'open' ORDER BY 1"
        ).fetchall()
    assert items == [
        *((sid, "dead_letter", "INACTIVE_RECORD", US_OWNER) for sid in REPLAYED),
        ("206", "dead_letter", "INVALID_KEY_OR_REF", "finance-ops-uk"),
    ], items
    # The fix: finance reactivates the job in the ERP.
    erp_sim.admin("POST", "/seed", json={"jobs": _erp_seed(job_30_inactive=False)["jobs"]})
    return {
        "dsn": clean_ods,
        "erp": erp_sim,
        "ledger": _ledger(clean_ods),
        "erp_before": _erp_timebills(clean_ods),
    }


@pytest.fixture
def replay_stack(
    clean_ods: str, erp_sim: RunningSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dict[str, Any], RunningAirflow]]:
    """The world of ``_prepare_world`` and Airflow (scheduler + api-server on a fresh metadata DB,
    the replay DAG only, its connections to the ODS and the ERP simulator as environment
    variables, the ERP account's pool). The world is prepared in a thread while Airflow starts."""
    from psa_erp_sync.hooks.erp import account_pool
    from tests.conftest import connect_airflow

    connect_airflow(monkeypatch, clean_ods, erp=erp_sim)
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({name: password for name, (_, password) in USERS.items()}))
    env = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{n}:{role}" for n, (role, _) in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": "console-replay-e2e-secret-0123456789abcdef",
    }
    prepared: dict[str, Any] = {}

    def prepare() -> None:
        try:
            prepared["world"] = _prepare_world(clean_ods, erp_sim)
        except BaseException as exc:  # raised in the test's thread below
            prepared["error"] = exc

    preparing = threading.Thread(target=prepare, name="prepare-world", daemon=True)
    preparing.start()
    try:
        with airflow_with_scheduler([ROOT / "dags" / "dead_letter_replay.py"], env, tmp_path) as airflow:
            preparing.join(timeout=120)
            if "error" in prepared:
                raise prepared["error"]
            assert "world" in prepared, "preparing the ODS and the ERP did not finish"
            admin = _token(airflow.base_url, "platform-admin")
            with httpx.Client(base_url=f"{airflow.base_url}/api/v2", headers=admin, timeout=30) as api:
                made = api.post("/pools", json={"name": account_pool(), "slots": 2})
                assert made.status_code == 201, made.text
                wait_for(
                    "the replay DAG in the API",
                    lambda: api.get("/dags/dead_letter_replay").status_code == 200,
                    60,
                    airflow,
                )
            yield prepared["world"], airflow
    finally:
        preparing.join(timeout=120)


def _token(base_url: str, user: str) -> dict[str, str]:
    answer = httpx.post(
        f"{base_url}/auth/token", json={"username": user, "password": USERS[user][1]}, timeout=30
    )
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_a_confirmed_replay_posts_the_fixed_dead_letters(
    browser_page: Any,  # first: without a browser the test skips before Airflow starts
    replay_stack: tuple[dict[str, Any], RunningAirflow],
) -> None:
    from playwright.sync_api import expect

    from psa_erp_sync.money import format_minor

    replay_world, airflow_stack = replay_stack
    page, base, dsn = browser_page, airflow_stack.base_url, replay_world["dsn"]

    page.goto(f"{base}/")
    page.wait_for_url("**/login**")
    page.get_by_label("Username").fill("ops-user")
    page.get_by_label("Password").fill(USERS["ops-user"][1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "login" not in url)
    page.get_by_role("button", name="Browse").click()
    page.get_by_text("Replay dead letters", exact=True).click()
    page.wait_for_url("**/plugin/psa-erp-sync-replay")
    frame = page.frame_locator("iframe")

    # Choose the filter; the dry run lists the three, in USD, with no approval needed.
    frame.get_by_label("Owner", exact=True).select_option(US_OWNER)
    frame.get_by_label("Reason", exact=True).select_option("INACTIVE_RECORD")
    frame.get_by_role("button", name="Dry run: list what would be replayed").click()
    status = frame.get_by_role("status")
    expect(status).to_contain_text("3 postings would be released")
    expect(status).to_contain_text("USD 1125.00")
    expect(frame.locator("p.note")).to_have_count(0)  # under mappings.yaml replay.approval_above_*
    for sid in REPLAYED:
        expect(frame.get_by_role("link", name=sid, exact=True)).to_be_visible()
    expect(frame.get_by_role("link", name="206", exact=True)).to_have_count(0)
    assert_no_personal_data(frame.locator("body").inner_text())
    shot(page, "replay-01-dry-run")

    # Confirm with the keyboard (the button is a tab stop with an accessible name).
    confirm = frame.get_by_role("button", name="Confirm: replay these through Airflow")
    confirm.focus()
    page.keyboard.press("Enter")
    expect(frame.get_by_role("heading", name="Replay run")).to_be_visible()
    shot(page, "replay-02-run-started")

    # The page follows the run (it refreshes itself) until the scheduler has run it to its end.
    run_state = frame.locator("#run-state")
    try:
        expect(run_state).to_have_text(re.compile(r"^(success|failed)$"), timeout=180_000)
    except AssertionError as exc:
        shot(page, "replay-03-run-not-finished")
        pytest.fail(f"the replay run did not end within 180 s: {exc}\n{airflow_stack.tails()}")
    if run_state.inner_text() != "success":
        shot(page, "replay-03-run-failed")
        pytest.fail(f"the replay run failed\n{frame.locator('body').inner_text()}\n{airflow_stack.tails()}")
    run_id = frame.locator("code").first.inner_text()
    expect(frame.locator("#released")).to_have_text("3 postings released for posting.")
    expect(frame.locator("#posted")).to_contain_text("3 posted, 0 already in the ERP")
    expect(frame.locator("#posted")).to_contain_text("0 rejected again, 0 parked, 0 still pending")
    erp_after = _erp_timebills(dsn)
    ids = frame.get_by_role("table", name=re.compile("Replayed records and their ERP ids"))
    for sid in REPLAYED:
        row = ids.get_by_role("row").filter(has=frame.get_by_role("link", name=sid, exact=True))
        _, _, _, _, _, hours, rate = ENTRIES[sid]
        expect(row.get_by_role("cell")).to_have_text(
            [
                sid,
                "INACTIVE_RECORD",
                "confirmed",
                f"psa-te-{sid}",
                erp_after[f"psa-te-{sid}"][0],
                format_minor(int(Decimal(hours) * rate), "USD"),
            ]
        )
    expect(ids.get_by_role("row")).to_have_count(1 + len(REPLAYED))
    assert_no_personal_data(frame.locator("body").inner_text())
    ids.scroll_into_view_if_needed()
    shot(page, "replay-03-run-posted")

    _assert_posted_exactly_once(replay_world, erp_after, run_id)


def _assert_posted_exactly_once(
    world: dict[str, Any], erp_after: dict[str, tuple[str, str]], run_id: str
) -> None:
    """The ERP holds each replayed record once, from its new posting; nothing else moved."""
    dsn = world["dsn"]
    assert set(erp_after) - set(world["erp_before"]) == {f"psa-te-{sid}" for sid in REPLAYED}
    assert {k: v for k, v in erp_after.items() if k in world["erp_before"]} == world["erp_before"]
    stats = world["erp"].admin("GET", "/stats")
    assert stats["records"]["timebill"] == 5, stats  # 201, 202 and the three replayed: no duplicate
    assert stats["batch_items"] == len(ENTRIES) + len(REPLAYED), stats  # each replayed record sent once
    ledger = _ledger(dsn)
    assert {sid: ledger[sid] for sid in REPLAYED} == {key: ["superseded", "confirmed"] for key in REPLAYED}
    assert {sid: s for sid, s in ledger.items() if sid not in REPLAYED} == {
        sid: s for sid, s in world["ledger"].items() if sid not in REPLAYED
    }
    with psycopg.connect(dsn) as conn:
        keys = dict(
            conn.execute(
                "SELECT source_id, idempotency_key FROM ledger.posting WHERE state = 'confirmed' AND source_id = ANY(%s)",
                (REPLAYED,),
            ).fetchall()
        )
        items = conn.execute(
            "SELECT source_id, status, last_run_id FROM exceptions.item ORDER BY source_id"
        ).fetchall()
        audit = conn.execute(
            "SELECT action, actor, count(*) FROM audit.change WHERE action LIKE 'replay%%' GROUP BY 1, 2"
        ).fetchall()
    for sid in REPLAYED:  # the ERP's record carries the key of the replay's posting
        assert f"key:{keys[sid][:16]}" in erp_after[f"psa-te-{sid}"][1]
    assert items == [*((sid, "replayed", run_id) for sid in REPLAYED), ("206", "open", "scheduled-1")], items
    assert audit == [("replay", "dead_letter_replay.release_for_posting", 3)]  # no approval was needed
