"""Dead-letter replay from the UI trigger form: a dry run lists and changes nothing; after finance
fixes the master data in the ERP, a real replay posts the dead letters through the same operator,
once."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.dags.test_time_expense_dag import AS_OF, _dag, _erp_timebills, wired  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def _replay_dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import DAGS

    bag = DagBag(dag_folder=str(DAGS / "dead_letter_replay.py"), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("dead_letter_replay")
    for task in dag.tasks:
        task.retries = 0
    return dag


def reactivate_erp_master_data(stack: dict[str, Any]) -> None:
    """Finance's fix for INACTIVE_RECORD dead letters: every customer and job active in the ERP."""
    firm = stack["firm"]
    stack["erp"].admin(
        "POST",
        "/seed",
        json={
            "customers": [dict(c, is_inactive=False) for c in firm.erp["customers"]],
            "jobs": [dict(j, is_inactive=False) for j in firm.erp["jobs"]],
        },
    )


def _dead_letters(dsn: str, status: str = "open") -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {
            r[0]
            for r in conn.execute(
                "SELECT source_id FROM exceptions.item WHERE kind = 'dead_letter' AND record_type = 'time_entry'"
                " AND reason_code = 'INACTIVE_RECORD' AND status = %s",
                (status,),
            )
        }


def _approval_limits(monkeypatch: pytest.MonkeyPatch, count: int, amount: str) -> None:
    """Set the replay approval limits of the loaded config (``config/mappings.yaml`` replay) for
    this test: every legal entity's currency gets ``amount``."""
    from psa_erp_sync.config import load_config

    config = load_config()
    currencies = {le.currency for le in config.legal_entities.legal_entities.values()}
    replay_settings = config.mappings.replay
    monkeypatch.setitem(replay_settings.__dict__, "approval_above_count", count)
    monkeypatch.setitem(
        replay_settings.__dict__, "approval_above_amount", dict.fromkeys(currencies, Decimal(amount))
    )


def test_dry_run_then_replay_after_the_fix(wired: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    _approval_limits(monkeypatch, 10**6, "1000000000.00")  # small enough to need no approval
    dsn = wired["dsn"]
    assert _dag().test(logical_date=AS_OF).state == "success"
    stuck = _dead_letters(dsn)
    assert stuck, "the seeded firm has inactive ERP customers/jobs, so some postings must be dead letters"
    erp_before = _erp_timebills(dsn)

    replay = _replay_dag()
    dry = replay.test(run_conf={"dry_run": True, "reason_code": "INACTIVE_RECORD"})
    assert dry.state == "success"
    assert _erp_timebills(dsn) == erp_before
    assert _dead_letters(dsn) == stuck

    # Finance reactivates the customers and jobs in the ERP (the fix), then replays for real.
    reactivate_erp_master_data(wired)
    real = replay.test(run_conf={"dry_run": False, "reason_code": "INACTIVE_RECORD"})
    assert real.state == "success"
    erp_after = _erp_timebills(dsn)
    replayed = {e.removeprefix("psa-te-") for e in erp_after} - {
        e.removeprefix("psa-te-") for e in erp_before
    }
    assert replayed == stuck
    assert _dead_letters(dsn) == set()
    assert _dead_letters(dsn, "replayed") == stuck
    with psycopg.connect(dsn) as conn:
        # Each replayed record: its rejected row superseded, one new confirmed posting.
        rows = conn.execute(
            "SELECT source_id, array_agg(state ORDER BY seq) FROM ledger.posting WHERE source_id = ANY(%s) GROUP BY 1",
            (list(stuck),),
        ).fetchall()
        assert all(states == ["superseded", "confirmed"] for _, states in rows), rows[:3]
    # Replaying again finds nothing and changes nothing.
    assert replay.test(run_conf={"dry_run": False, "reason_code": "INACTIVE_RECORD"}).state == "success"
    assert _erp_timebills(dsn) == erp_after


def test_a_large_replay_waits_for_a_finance_approval_in_the_ui(
    wired: dict[str, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Over the limits, nothing is released until a finance user approves in the UI (the real
    HITL REST API of a real api-server on the same metadata DB); the approver is audited."""
    import httpx

    from tests.conftest import airflow_api_server

    dsn = wired["dsn"]
    assert _dag().test(logical_date=AS_OF).state == "success"
    stuck = _dead_letters(dsn)
    assert stuck
    reactivate_erp_master_data(wired)
    erp_before = _erp_timebills(dsn)
    _approval_limits(monkeypatch, 0, "0.00")  # any replay needs an approval

    passwords = tmp_path / "passwords.json"
    passwords.write_text('{"finance-approver": "approve-me"}')
    env = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "finance-approver:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": "replay-approval-test-secret-0123456789abcdef",
    }
    with airflow_api_server(env, tmp_path / "api-server.log") as base_url:
        seen: dict[str, Any] = {}

        def finance_approves() -> None:
            """In the UI's place: wait for the approval request, look at it, approve it."""
            try:
                token = httpx.post(
                    f"{base_url}/auth/token",
                    json={"username": "finance-approver", "password": "approve-me"},
                    timeout=30,
                ).json()["access_token"]
                api = httpx.Client(
                    base_url=f"{base_url}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=30
                )
                deadline = time.monotonic() + 300
                waiting: list[dict[str, Any]] = []
                while not waiting and time.monotonic() < deadline:
                    listed = api.get("/dags/dead_letter_replay/dagRuns/~/hitlDetails")
                    waiting = [
                        d for d in listed.json().get("hitl_details", []) if not d.get("response_received")
                    ]
                    time.sleep(1)
                detail = waiting[0]
                seen["subject"] = detail["subject"]
                # Waiting for finance: nothing was released or sent yet.
                seen["stuck_while_waiting"] = _dead_letters(dsn)
                seen["erp_while_waiting"] = _erp_timebills(dsn)
                ti = detail["task_instance"]
                answered = api.patch(
                    f"/dags/dead_letter_replay/dagRuns/{ti['dag_run_id']}/taskInstances/finance_approval/-1/hitlDetails",
                    json={"chosen_options": ["Approve"], "params_input": {}},
                )
                seen["answer"] = (answered.status_code, answered.text)
            except BaseException as exc:  # surfaced by the assertions below
                seen["error"] = repr(exc)

        approver = threading.Thread(target=finance_approves, daemon=True)
        approver.start()
        # dag.test() runs in this (main) thread: task timeouts need signals. It parks the approval
        # task in AWAITING_INPUT until the API's answer flips it back.
        run = _replay_dag().test(run_conf={"dry_run": False, "reason_code": "INACTIVE_RECORD"})
        approver.join(timeout=30)
    assert "error" not in seen, seen
    assert seen["subject"].startswith(f"Approve a dead-letter replay of {len(stuck)} timebill records"), seen
    assert seen["stuck_while_waiting"] == stuck and seen["erp_while_waiting"] == erp_before
    assert seen["answer"][0] == 200, seen["answer"]
    assert run.state == "success"
    replayed = {e.removeprefix("psa-te-") for e in _erp_timebills(dsn)} - {
        e.removeprefix("psa-te-") for e in erp_before
    }
    assert replayed == stuck
    with psycopg.connect(dsn) as conn:
        approvals = conn.execute(
            "SELECT actor, after->'matched' FROM audit.change WHERE action = 'replay_approved'"
        ).fetchall()
        release_actors = {
            r[0] for r in conn.execute("SELECT DISTINCT actor FROM audit.change WHERE action = 'replay'")
        }
    assert approvals == [("finance-approver", len(stuck))]
    assert release_actors == {"dead_letter_replay.release_for_posting approved by finance-approver"}


@pytest.mark.parametrize(
    ("conf", "refusal"),
    [
        ({"dry_run": False, "date_from": "2026-11-30", "date_to": "2026-11-01"}, "is after date_to"),
        ({"dry_run": False}, "tick replay_everything"),
    ],
)
def test_requests_that_make_no_sense_are_refused_before_anything_is_read(
    airflow_db: str, conf: dict[str, Any], refusal: str
) -> None:
    from psa_erp_sync.posting.replay_steps import ReplayRequestRefused, check_request

    with pytest.raises(ReplayRequestRefused, match=refusal):
        check_request(conf)
    run = _replay_dag().test(run_conf=conf)  # no ODS connection here: the refusal comes first
    assert run.state == "failed"
    states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert states["select_dead_letters"] == ("failed", 1)  # failed at once, not retried
    assert states["release_for_posting"][0] in ("upstream_failed", None)


def test_the_trigger_form_offers_owners_and_reason_codes_as_dropdowns(airflow_db: str) -> None:
    from airflow.sdk.definitions.param import ParamsDict

    from psa_erp_sync.flows import dead_letters

    owners = dead_letters.params()["owner"].schema["enum"]
    reasons = dead_letters.params()["reason_code"].schema["enum"]
    assert owners[0] is None and {"finance-ops-uk", "finance-integration", "sales-operations"} <= set(owners)
    assert {None, "INACTIVE_RECORD", "PERIOD_CLOSED", "PROJECT_INACTIVE", "HOURS_INVALID"} <= set(reasons)
    params = ParamsDict(dead_letters.params())
    with pytest.raises(Exception, match="INACTIVE_RECROD"):  # a typo no longer silently matches nothing
        params.update({"reason_code": "INACTIVE_RECROD"})
    with pytest.raises(Exception, match="unknown-owner"):
        _replay_dag().test(run_conf={"owner": "unknown-owner"})


def test_check_request_allows_an_unfiltered_dry_run_and_an_explicit_replay_everything() -> None:
    from psa_erp_sync.posting.replay_steps import ReplayRequestRefused, check_request

    assert check_request({"dry_run": True}).owner is None
    assert check_request({"dry_run": False, "replay_everything": True}).record_type == "timebill"
    assert check_request({"dry_run": False, "owner": "finance-ops-uk"}).owner == "finance-ops-uk"
    with pytest.raises(ReplayRequestRefused):
        check_request({"dry_run": False, "replay_everything": False})


def test_the_approval_limits_and_the_release_guard() -> None:
    from psa_erp_sync.config import ReplaySettings
    from psa_erp_sync.posting.replay import SelectionGrew, approver_of, check_within

    limits = ReplaySettings(approval_above_count=10, approval_above_amount={"USD": Decimal("100.00")})
    assert limits.needs_approval(10, {"USD": 10_000}) == []
    assert limits.needs_approval(11, {"USD": 10_001}) == ["11 records > 10", "USD amount over 100.00"]
    assert limits.needs_approval(1, {"JPY": 5}) == ["JPY: no approval limit configured"]
    approved = {"matched": 3, "amounts_minor": {"USD": 500}}
    check_within({"matched": 2, "amounts_minor": {"USD": 400}}, approved)
    with pytest.raises(SelectionGrew):
        check_within({"matched": 4, "amounts_minor": {"USD": 400}}, approved)
    with pytest.raises(SelectionGrew):
        check_within({"matched": 3, "amounts_minor": {"USD": 400, "EUR": 1}}, approved)
    assert (
        approver_of({"chosen_options": ["Approve"], "responded_by_user": {"id": "u7", "name": "x"}}) == "u7"
    )
    assert approver_of({"chosen_options": ["Reject"], "responded_by_user": {"id": "u7"}}) is None
    assert approver_of(None) is None


def test_a_rejected_invoice_is_replayed_by_the_dag(
    airflow_db: str, clean_ods: str, erp_sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A billing dead letter (inactive customer) replayed with the same form: released, then the
    ``post_replayed`` task runs the invoicing pass, which sends the same document once."""
    from datetime import date

    from tests.billing.invoicing import Firm, clean_billing, erp_documents, insert_events, run_pass
    from tests.conftest import connect_airflow

    _approval_limits(monkeypatch, 10**6, "1000000000.00")
    clean_billing(clean_ods)
    firm = Firm(customers=2, projects=2)
    firm.seed_erp(erp_sim)
    customer = {
        "external_id": "psa-client-1",
        "company_name": "Customer 1",
        "subsidiary": "LE-US1",
        "currency": "USD",
        "is_inactive": True,
    }
    erp_sim.admin("POST", "/seed", json={"customers": [customer]})
    insert_events(clean_ods, [firm.event("1", "101", date(2026, 10, 5), amount=5000)])
    assert run_pass(clean_ods, erp_sim, "refused").documents == {"rejected": 1}
    erp_sim.admin("POST", "/seed", json={"customers": [customer | {"is_inactive": False}]})
    connect_airflow(monkeypatch, clean_ods, erp=erp_sim)
    conf = {"dry_run": False, "record_type": "invoice", "reason_code": "INACTIVE_RECORD"}
    assert _replay_dag().test(run_conf=conf).state == "success"
    assert _replay_dag().test(run_conf=conf).state == "success"  # nothing left to replay
    assert len(erp_documents(clean_ods, "invoice")) == 1
    with psycopg.connect(clean_ods) as conn:
        states = conn.execute("SELECT state FROM ledger.posting ORDER BY seq").fetchall()
        status = conn.execute("SELECT status FROM exceptions.item WHERE kind = 'dead_letter'").fetchall()
    assert states == [("superseded",), ("confirmed",)] and status == [("replayed",)]
