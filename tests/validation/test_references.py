"""One malformed reference record (project, user, task assignment, expense category) never stops
a run (issue 13): it is quarantined ``REFERENCE_INVALID`` itself, the entries that depend on it
are quarantined ``REFERENCE_INVALID`` (they cannot be judged), every other entry is judged as
before. Real staging, real validation, real PostgreSQL."""

from __future__ import annotations

import copy
from typing import Any

import psycopg
import pytest

from psa_erp_sync.config import load_config
from psa_erp_sync.ods import exceptions as exception_queue
from psa_erp_sync.ods import staging
from psa_erp_sync.validation import time_expense as validation
from tests.validation.test_rules import AS_OF, ENTRY

REFERENCE_ENDPOINTS = ("/v2/projects", "/v2/users", "/v2/task_assignments", "/v2/expense_categories")


def project(pid: Any, **changes: Any) -> dict[str, Any]:
    data = {"id": pid, "name": f"p{pid}", "is_active": True, "legal_entity": "LE-US1", "currency": "USD"}
    data.update(changes)
    return data


def user(uid: Any, **changes: Any) -> dict[str, Any]:
    data = {"id": uid, "first_name": "x", "is_active": True}
    data.update(changes)
    return data


def assignment(aid: Any, project_id: Any, task_id: Any, **changes: Any) -> dict[str, Any]:
    data = {"id": aid, "project": {"id": project_id, "name": "p"}, "task": {"id": task_id, "name": "t"}}
    data.update(changes)
    return data


def entry(eid: int, *, project_id: int = 1, user_id: int = 7, task_id: int = 10) -> dict[str, Any]:
    data = copy.deepcopy(ENTRY)
    data.update(
        id=eid,
        notes=f"entry {eid}",
        project={"id": project_id, "name": "p"},
        user={"id": user_id, "name": "u"},
        task={"id": task_id, "name": "t"},
    )
    return data


GOOD_REFERENCE: dict[str, list[Any]] = {
    "/v2/projects": [project(1), project(5)],
    "/v2/users": [user(7)],
    "/v2/task_assignments": [assignment(100, 1, 10), assignment(101, 5, 10)],
    "/v2/expense_categories": [{"id": 3, "name": "Hotel"}],
}
BAD_REFERENCE: dict[str, list[Any]] = {
    "/v2/projects": [
        project(2, is_active="yes"),  # StrictBool refuses it
        project(6, name=None, currency=12),
        {"name": "no id at all", "is_active": True},
        "not an object",
    ],
    "/v2/users": [user(8, is_active=None), user("nine")],
    "/v2/task_assignments": [
        assignment(102, 5, 11, is_active="sure"),  # project 5 is fine, its task 11 assignment is not
        assignment("x", [5], None),
    ],
    "/v2/expense_categories": [{"id": "abc", "name": "?"}, {"name": "no id"}, None],
}


def stage_reference(conn: psycopg.Connection, prefix: str, reference: dict[str, list[Any]]) -> dict[str, str]:
    keys = {}
    for endpoint in REFERENCE_ENDPOINTS:
        keys[endpoint] = f"{prefix}{endpoint}"
        staging.stage_pages(
            conn, [reference[endpoint]], run_key=keys[endpoint], source_system="psa", endpoint=endpoint
        )
    return keys


def test_malformed_reference_records_are_quarantined_and_the_run_completes(clean_ods: str) -> None:
    reference = {e: GOOD_REFERENCE[e] + BAD_REFERENCE[e] for e in REFERENCE_ENDPOINTS}
    entries = [
        entry(1001),  # good
        entry(1002, project_id=5),  # good: project 5 and its task 10 assignment are fine
        entry(1003, project_id=2),  # its project is malformed
        entry(1004, project_id=6),  # its project is malformed
        entry(1005, user_id=8),  # its user is malformed
        entry(1006, project_id=5, task_id=11),  # its task assignment is malformed
        entry(1007, project_id=99),  # unknown project: judged as before
        entry(1008, task_id=12),  # task unknown on a project whose assignments are all fine
    ]
    with psycopg.connect(clean_ods) as conn:
        keys = stage_reference(conn, "run-ref", reference)
        staging.stage_pages(
            conn, [entries], run_key="run-ref/te", source_system="psa", endpoint="/v2/time_entries"
        )
        conn.commit()
        ref = validation.PsaReference.from_staging(conn, keys)
        with conn.transaction():
            result = validation.validate_run(
                conn,
                kind="time_entry",
                run_key="run-ref/te",
                ref=ref,
                config=load_config(),
                as_of=AS_OF,
                dag_run_id="run-ref",
            )
            result.check()
        items = {
            (record_type, source_id): (reason, detail, owner)
            for record_type, source_id, reason, detail, owner in conn.execute(
                "SELECT record_type, source_id, reason_code, detail, owner FROM exceptions.item WHERE status = 'open'"
            )
        }
        canonical = {r[0] for r in conn.execute("SELECT source_id FROM canonical.time_entry")}
    assert canonical == {"1001", "1002"}
    assert (result.valid, result.quarantined) == (2, 6)
    assert result.by_reason == {"REFERENCE_INVALID": 4, "PROJECT_UNKNOWN": 1, "TASK_UNKNOWN": 1}
    entry_reasons = {
        sid: items[("time_entry", sid)][0] for sid in ("1003", "1004", "1005", "1006", "1007", "1008")
    }
    assert entry_reasons == {
        "1003": "REFERENCE_INVALID",
        "1004": "REFERENCE_INVALID",
        "1005": "REFERENCE_INVALID",
        "1006": "REFERENCE_INVALID",
        "1007": "PROJECT_UNKNOWN",
        "1008": "TASK_UNKNOWN",
    }
    assert items[("time_entry", "1003")][1]["depends_on"] == {"record_type": "project", "source_id": "2"}
    assert items[("time_entry", "1005")][1]["depends_on"] == {"record_type": "user", "source_id": "8"}
    assert items[("time_entry", "1006")][1]["depends_on"]["record_type"] == "task_assignment"
    # the reference records themselves: one item each, its own reason, an owner, fields not values
    reference_items = {k: v for k, v in items.items() if k[0] != "time_entry"}
    assert {k for k, v in reference_items.items() if v[0] == "REFERENCE_INVALID"} == set(reference_items)
    counted = {rt: sum(1 for k in reference_items if k[0] == rt) for rt in {k[0] for k in reference_items}}
    assert counted == {"project": 4, "user": 2, "task_assignment": 2, "expense_category": 3}
    assert reference_items[("project", "2")][1]["fields"] == ["is_active"]
    assert all(owner for _, _, owner in reference_items.values())
    assert result.reference_invalid == 11


def test_a_fixed_reference_record_resolves_its_item(clean_ods: str) -> None:
    with psycopg.connect(clean_ods) as conn:
        bad = {e: list(GOOD_REFERENCE[e]) for e in REFERENCE_ENDPOINTS}
        bad["/v2/projects"] = [*bad["/v2/projects"], project(2, is_active="yes")]
        keys = stage_reference(conn, "r1", bad)
        staging.stage_pages(
            conn, [[entry(1)]], run_key="r1/te", source_system="psa", endpoint="/v2/time_entries"
        )
        conn.commit()
        with conn.transaction():
            validation.validate_run(
                conn,
                kind="time_entry",
                run_key="r1/te",
                ref=validation.PsaReference.from_staging(conn, keys),
                config=load_config(),
                as_of=AS_OF,
                dag_run_id="r1",
            )
        # an item of another rule on the same project stays open: it is not this rule's to close
        exception_queue.quarantine_many(
            conn,
            [
                exception_queue.Item(
                    kind="quarantine",
                    domain="time_expense",
                    source_system="psa",
                    record_type="project",
                    source_id="1",
                    reason_code="LEGAL_ENTITY_UNKNOWN",
                    owner="someone",
                )
            ],
            run_id="other",
        )
        fixed = {e: list(GOOD_REFERENCE[e]) for e in REFERENCE_ENDPOINTS}
        fixed["/v2/projects"] = [*fixed["/v2/projects"], project(2)]
        keys = stage_reference(conn, "r2", fixed)
        staging.stage_pages(
            conn, [[entry(1)]], run_key="r2/te", source_system="psa", endpoint="/v2/time_entries"
        )
        conn.commit()
        with conn.transaction():
            validation.validate_run(
                conn,
                kind="time_entry",
                run_key="r2/te",
                ref=validation.PsaReference.from_staging(conn, keys),
                config=load_config(),
                as_of=AS_OF,
                dag_run_id="r2",
            )
        status = dict(
            conn.execute(
                "SELECT source_id, status FROM exceptions.item WHERE record_type = 'project'"
            ).fetchall()
        )
    assert status == {"2": "resolved", "1": "open"}


@pytest.mark.parametrize(
    ("hours", "valid"),
    [(0, False), (0.004, False), (0.0049, False), (0.005, True), (0.01, True), (24, True)],
)
def test_hours_that_round_to_zero_are_quarantined_as_the_erp_refuses_them(hours: float, valid: bool) -> None:
    """The ERP accepts 0 < hours <= 24 of what it receives (simulators/erp/validation.py): the
    hours rounded to two places."""
    from tests.validation.test_rules import REF

    verdict = validation.judge_time_entry(
        dict(copy.deepcopy(ENTRY), hours=hours), "h", ref=REF, config=load_config(), as_of=AS_OF
    )
    assert verdict.valid is valid, verdict
    if not valid:
        assert verdict.reason_code == "HOURS_INVALID"


def test_the_hours_rule_is_the_erps() -> None:
    """Validation passes exactly the hours the ERP simulator's field check accepts, judged on what
    the ERP receives: the hours rounded to two places."""
    from decimal import Decimal

    from simulators.erp.validation import shape_errors
    from tests.validation.test_rules import REF

    def erp_accepts(hours: Decimal) -> bool:
        return not [e for e in shape_errors("timebill", {"hours": str(hours)}) if e.path == "hours"]

    refused = []
    for text in ("0", "0.001", "0.004", "0.0049", "0.005", "0.01", "1", "23.994", "24"):
        verdict = validation.judge_time_entry(
            dict(copy.deepcopy(ENTRY), hours=float(text)), "h", ref=REF, config=load_config(), as_of=AS_OF
        )
        sent = verdict.row["hours"] if verdict.valid else validation.round_hours(Decimal(text))
        assert verdict.valid == erp_accepts(sent), (text, verdict)
        if not verdict.valid:
            refused.append(text)
    assert refused == ["0", "0.001", "0.004", "0.0049"]
