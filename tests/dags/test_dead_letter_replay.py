"""Dead-letter replay from the UI trigger form: a dry run lists and changes nothing; after finance
fixes the master data in the ERP, a real replay posts the dead letters through the same operator,
once."""

from __future__ import annotations

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


def test_dry_run_then_replay_after_the_fix(wired: dict[str, Any]) -> None:  # noqa: F811
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
