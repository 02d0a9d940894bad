"""The time & expense DAG end to end through real Airflow (``dag.test()``), real PostgreSQL and the
PSA and ERP simulators over loopback: extract -> stage -> validate -> post -> reconcile, then again
with corrections (edits, unapprovals, deletions) and once more with nothing to do."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator, SmtpSink, connect_airflow

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

TODAY = date(2026, 11, 9)
AS_OF = datetime(2026, 11, 9, 12, tzinfo=UTC)  # the runs' logical dates are pinned: no wall clock


@pytest.fixture
def wired(
    airflow_db: str,
    clean_ods: str,
    psa_sim: RunningSimulator,
    erp_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    firm = generate_firm(
        FirmSpec(seed=7, consultants=12, customers=10, projects=16, opportunities=5, today=TODAY)
    )
    load_firm(firm, psa_url=psa_sim.base_url, erp_url=erp_sim.base_url, crm_url=None)
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    connect_airflow(monkeypatch, clean_ods, psa=psa_sim, erp=erp_sim)
    return {"firm": firm, "dsn": clean_ods, "psa": psa_sim, "erp": erp_sim}


def _dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import DAGS

    bag = DagBag(dag_folder=str(DAGS / "time_expense_posting.py"), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("time_expense_posting")
    for task in dag.tasks:  # a failure should fail the test now, not after minutes of backoff
        task.retries = 0
    return dag


def _erp_timebills(dsn: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        return {
            ext: body
            for ext, body in conn.execute(
                "SELECT external_id, body FROM sim_erp.record WHERE type = 'timebill'"
            )
        }


def _approved_psa(dsn: str) -> dict[str, tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return {
            str(i): (str(h), str(d))
            for i, h, d in conn.execute(
                "SELECT id, hours, spent_date FROM sim_psa.time_entries WHERE is_closed"
            )
        }


def _announced_once(dsn: str) -> dict[str, int]:
    """Owner digests sent so far (the DAG's on_success_callback): every open item was announced,
    and no item was announced twice (the digests' item counts add up to the announced items)."""
    with psycopg.connect(dsn) as conn:
        assert conn.execute(
            "SELECT count(*) FROM exceptions.item WHERE status = 'open' AND notified_at IS NULL"
        ).fetchone() == (0,)
        announced = conn.execute(
            "SELECT count(*) FROM exceptions.item WHERE notified_at IS NOT NULL"
        ).fetchone()
        digests = conn.execute("SELECT coalesce(sum(items), 0) FROM exceptions.notification").fetchone()
        assert announced == digests, (announced, digests)
        return dict(
            conn.execute("SELECT owner, sum(items) FROM exceptions.notification GROUP BY owner").fetchall()
        )


def test_time_expense_dag_posts_exactly_the_approved_set(wired: dict[str, Any], smtp_sink: SmtpSink) -> None:
    from simulators.firm.generator import dirt_ids
    from simulators.firm.load import apply_mutations

    dag = _dag()
    run = dag.test(logical_date=AS_OF)
    assert run.state == "success", run.state
    dsn = wired["dsn"]
    with psycopg.connect(dsn) as conn:
        open_quarantine = {
            r[0]
            for r in conn.execute(
                "SELECT source_id FROM exceptions.item WHERE kind='quarantine' AND record_type='time_entry' AND status='open'"
            )
        }
        counts = dict(
            conn.execute(
                "SELECT stage, record_count FROM audit.control_total WHERE record_type='time_entry' AND run_id=%s",
                (run.run_id,),
            ).fetchall()
        )
    assert counts["extracted"] == counts["staged"] > 0
    assert counts["valid"] + counts["quarantined"] == counts["staged"]
    # Every dirty entry the generator injected is quarantined (duplicates: one of each pair).
    ids = dirt_ids(wired["firm"])
    expected_dirt = {
        str(i)
        for kind in ("inactive_project", "unknown_task", "missing_rate", "future_date", "duplicate")
        for i in ids.get(f"time_entries.{kind}", [])
    }
    assert expected_dirt, "the small firm should still carry dirt"
    assert expected_dirt <= open_quarantine, sorted(expected_dirt - open_quarantine)[:10]
    erp = _erp_timebills(dsn)
    assert erp, "nothing reached the ERP"
    assert all(ext.startswith("psa-te-") for ext in erp)
    posted_ids = {ext.removeprefix("psa-te-") for ext in erp}
    assert posted_ids.isdisjoint(open_quarantine)
    # The pre-check named every blocked project the run uses (inactive ERP job or customer), with an
    # owner, and only those; every ERP rejection of an entry is for one of those projects.
    with psycopg.connect(dsn) as conn:
        flagged = {
            r[0].split("|", 1)[0]: r[1]
            for r in conn.execute(
                "SELECT source_id, owner FROM exceptions.item WHERE kind='validation' AND record_type='project'"
                " AND status='open'"
            )
        }
        used = {
            r[0] for r in conn.execute("SELECT DISTINCT project_ref FROM canonical.time_entry WHERE approved")
        }
        rejected_projects = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT c.project_ref FROM ledger.posting p JOIN canonical.time_entry c"
                " ON c.source_id = p.source_id WHERE p.record_type='timebill' AND p.state='rejected'"
            )
        }
    blocked = {str(p) for p in wired["firm"].erp_blocked_projects} & used
    assert blocked and set(flagged) == blocked
    assert all(owner.startswith("finance-ops-") for owner in flagged.values())
    assert rejected_projects <= blocked
    # Each owner of the items the run left got one e-mail digest, parsed as the SMTP server got it.
    per_owner = _announced_once(dsn)
    assert per_owner and len(smtp_sink.messages) == len(per_owner)
    for message in smtp_sink.messages:
        owner = message["X-PSA-ERP-Sync-Owner"]
        assert message["Subject"].startswith(f"[psa-erp-sync] {per_owner[owner]} new exception item")
        assert message["X-PSA-ERP-Sync-Run"] == f"time_expense_posting/{run.run_id}"

    # Corrections: edits, unapprovals, deletions after posting; then the net ERP effect must follow.
    apply_mutations(wired["firm"], wired["psa"].base_url)
    second = dag.test(logical_date=AS_OF + timedelta(hours=1), run_conf={"mode": "sweep"})
    assert second.state == "success"
    _announced_once(dsn)  # the second run's digests hold only items the first did not announce
    erp_after = _erp_timebills(dsn)
    approved = _approved_psa(dsn)
    with psycopg.connect(dsn) as conn:
        parked_or_rejected = {
            r[0]
            for r in conn.execute(
                "SELECT source_id FROM ledger.posting WHERE record_type='timebill' AND state IN ('parked','rejected')"
            )
        }
        quarantined = {
            r[0]
            for r in conn.execute(
                "SELECT source_id FROM exceptions.item WHERE kind='quarantine' AND record_type='time_entry' AND status='open'"
            )
        }
    expected = set(approved) - quarantined - parked_or_rejected
    posted = {e.removeprefix("psa-te-") for e in erp_after}
    if posted != expected:
        with psycopg.connect(dsn) as conn:
            for sid in sorted(posted ^ expected)[:6]:
                print("DIFF", sid, "in ERP" if sid in posted else "missing", approved.get(sid))
                print(
                    "  psa:",
                    conn.execute(
                        "SELECT is_closed, hours, updated_at FROM sim_psa.time_entries WHERE id=%s",
                        (int(sid),),
                    ).fetchone(),
                )
                print(
                    "  canonical:",
                    conn.execute(
                        "SELECT approved, is_deleted, hours, version_hash FROM canonical.time_entry WHERE source_id=%s",
                        (sid,),
                    ).fetchone(),
                )
                print(
                    "  ledger:",
                    conn.execute(
                        "SELECT action, state, source_version FROM ledger.posting WHERE source_id=%s ORDER BY seq",
                        (sid,),
                    ).fetchall(),
                )
                print(
                    "  staging:",
                    conn.execute(
                        "SELECT last_run_key, payload::jsonb->>'is_closed', payload::jsonb->>'updated_at' FROM staging.raw_record WHERE source_id=%s AND endpoint='/v2/time_entries'",
                        (sid,),
                    ).fetchall(),
                )
    assert posted == expected
    for sid in expected:
        assert f"{float(erp_after['psa-te-' + sid]['hours']):.2f}" == f"{float(approved[sid][0]):.2f}"

    # Every adjustment and reversal of a record the ERP already held is audited with before/after.
    with psycopg.connect(dsn) as conn:
        audited = dict(
            conn.execute(
                "SELECT action, count(*) FROM audit.change WHERE action IN ('erp_adjust', 'erp_reverse')"
                " AND before IS NOT NULL GROUP BY 1"
            ).fetchall()
        )
        planned = dict(
            conn.execute(
                "SELECT 'erp_' || action, count(*) FROM ledger.posting WHERE action IN ('adjust', 'reverse') GROUP BY 1"
            ).fetchall()
        )
    assert planned, "the corrections should have produced adjustments or reversals"
    assert audited == planned

    # The control totals balance: PSA approved = ODS approved + quarantined; ODS - parked - rejected = ERP.
    from devtools.demo import reconciliation

    with psycopg.connect(dsn) as conn:
        for kind in ("time_entry", "expense_entry"):
            rec = reconciliation(conn, kind)
            assert rec["psa_balances"], (kind, rec)
            assert rec["erp_balances"], (kind, rec)

    # Nothing changed: a third run posts nothing and the ERP is byte-for-byte the same.
    with psycopg.connect(dsn) as conn:
        before = conn.execute("SELECT count(*) FROM ledger.posting").fetchone()
    third = dag.test(logical_date=AS_OF + timedelta(hours=2))
    assert third.state == "success"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM ledger.posting").fetchone() == before
    assert _erp_timebills(dsn) == erp_after


def _airflow_cli(*args: str) -> subprocess.CompletedProcess[str]:
    airflow = Path(sys.executable).parent / "airflow"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(airflow), *args], capture_output=True, text=True, env=env, check=False, timeout=300
    )


def test_clearing_and_rerunning_the_posting_task_has_no_duplicate_effect(wired: dict[str, Any]) -> None:
    """What an operator does from the UI: clear a finished posting task and let it run again.

    The clear goes through the Airflow CLI against the same metadata DB; the task then runs again
    in its own process for the same DAG run (``airflow tasks test``), as a worker would.
    """
    dag = _dag()
    run = dag.test(logical_date=AS_OF)
    assert run.state == "success"
    dsn = wired["dsn"]
    with psycopg.connect(dsn) as conn:
        ledger_before = conn.execute(
            "SELECT idempotency_key, state FROM ledger.posting ORDER BY 1"
        ).fetchall()
        attempts_before = conn.execute("SELECT count(*) FROM ledger.attempt").fetchone()
    erp_before = _erp_timebills(dsn)

    cleared = _airflow_cli("tasks", "clear", "time_expense_posting", "-t", "^post_timebills$", "-y")
    assert cleared.returncode == 0, cleared.stderr[-2000:]
    rerun = _airflow_cli("tasks", "test", "time_expense_posting", "post_timebills", run.run_id)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    assert "posted 0, already posted 0" in rerun.stdout + rerun.stderr

    with psycopg.connect(dsn) as conn:
        assert (
            conn.execute("SELECT idempotency_key, state FROM ledger.posting ORDER BY 1").fetchall()
            == ledger_before
        )
        assert conn.execute("SELECT count(*) FROM ledger.attempt").fetchone() == attempts_before
    assert _erp_timebills(dsn) == erp_before
