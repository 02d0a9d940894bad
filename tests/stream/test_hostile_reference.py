"""The stream's own steps with hostile input (issue 13): a malformed reference record read by the
targeted reference, and a re-read record without a usable id. Neither stops the step: the bad
record is quarantined, the good one beside it is canonical. Real staging and validation."""

from __future__ import annotations

import copy
from typing import Any

import psycopg
import pytest

from psa_erp_sync.config import load_config
from psa_erp_sync.stream import time_expense as stream
from psa_erp_sync.validation import time_expense as validation
from tests.validation.test_references import GOOD_REFERENCE, assignment, entry, project, stage_reference, user
from tests.validation.test_rules import AS_OF

pytestmark = pytest.mark.integration


def _validate(conn: psycopg.Connection, run_key: str, ref: Any) -> validation.ValidationResult:
    with conn.transaction():
        result = validation.validate_run(
            conn,
            kind="time_entry",
            run_key=run_key,
            ref=ref,
            config=load_config(),
            as_of=AS_OF,
            dag_run_id="stream-hostile",
        )
        result.check()
    return result


def _open_items(conn: psycopg.Connection) -> dict[tuple[str, str], str]:
    return {
        (r[0], r[1]): r[2]
        for r in conn.execute(
            "SELECT record_type, source_id, reason_code FROM exceptions.item WHERE status = 'open'"
        )
    }


def test_a_malformed_reference_record_in_the_stream_reference(clean_ods: str) -> None:
    reference = {e: list(rows) for e, rows in GOOD_REFERENCE.items()}
    reference["/v2/projects"] += [project(2, is_active="yes")]
    reference["/v2/users"] += [user(8, is_active=None)]
    reference["/v2/task_assignments"] += [assignment(102, 5, 11, is_active="sure")]
    reference["/v2/expense_categories"] += [{"id": "abc", "name": "?"}]
    records = [
        entry(2001),
        entry(2002, project_id=2),
        entry(2003, user_id=8),
        entry(2004, project_id=5, task_id=11),
        entry(2005, project_id=5),
    ]
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        with conn.transaction():
            keys = stage_reference(conn, "ref", reference)
        ref = stream.reference_for(conn, keys, records)
        # a malformed reference record is known (as invalid): no reference refresh for it
        assert stream._covers(ref, records)
        run_key = "stream/v2/time_entries"
        with conn.transaction():
            stream.stage_new_versions(conn, records, run_key=run_key, endpoint="/v2/time_entries")
        result = _validate(conn, run_key, ref)
        items = _open_items(conn)
        canonical = {r[0] for r in conn.execute("SELECT source_id FROM canonical.time_entry")}
    assert canonical == {"2001", "2005"}
    assert result.by_reason == {"REFERENCE_INVALID": 3}
    assert items == {
        ("time_entry", "2002"): "REFERENCE_INVALID",
        ("time_entry", "2003"): "REFERENCE_INVALID",
        ("time_entry", "2004"): "REFERENCE_INVALID",
        ("project", "2"): "REFERENCE_INVALID",
        ("user", "8"): "REFERENCE_INVALID",
        ("task_assignment", "102"): "REFERENCE_INVALID",
        ("expense_category", "abc"): "REFERENCE_INVALID",
    }


def test_the_targeted_reference_flags_what_the_full_reference_flags(clean_ods: str) -> None:
    reference = {e: list(rows) for e, rows in GOOD_REFERENCE.items()}
    reference["/v2/projects"] += [project(2, is_active="yes"), project(3, name=None)]
    reference["/v2/users"] += [user(8, is_active=None)]
    records = [entry(1, project_id=2, user_id=8)]
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        with conn.transaction():
            keys = stage_reference(conn, "ref", reference)
        full = validation.PsaReference.from_staging(conn, keys)
        targeted = stream.reference_for(conn, keys, records)
    assert full.invalid_projects == {2, 3}
    assert targeted.invalid_projects == {2}
    assert targeted.invalid_users == full.invalid_users == {8}


def _without_id() -> dict[str, Any]:
    data = entry(3002)
    del data["id"]
    return data


@pytest.mark.parametrize(
    "bad",
    [
        _without_id(),
        dict(entry(3002), id=None),
        dict(entry(3002), id="a\x00b"),  # text cannot hold U+0000
        dict(entry(3002), id=True),
        "not an object",
        None,
        [1, 2],
    ],
    ids=["no-id", "id-null", "id-nul-text", "id-bool", "text", "null", "list"],
)
def test_a_reread_record_without_a_usable_id_is_quarantined(clean_ods: str, bad: Any) -> None:
    good = entry(3001)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        with conn.transaction():
            keys = stage_reference(conn, "ref", GOOD_REFERENCE)
        records = [good, copy.deepcopy(bad)]
        ref = stream.reference_for(conn, keys, records)
        run_key = "stream/v2/time_entries"
        with conn.transaction():
            new, known = stream.stage_new_versions(
                conn, records, run_key=run_key, endpoint="/v2/time_entries"
            )
        result = _validate(conn, run_key, ref)
        canonical = {r[0] for r in conn.execute("SELECT source_id FROM canonical.time_entry")}
        items = _open_items(conn)
    assert (new, known) == (2, 0)
    assert (result.valid, result.quarantined) == (1, 1)
    assert canonical == {"3001"}
    assert list(items.values()) == ["SCHEMA_INVALID"]


@pytest.mark.parametrize("bad", [_without_id(), dict(entry(3003), id="a\x00b\\"), "text", [1]])
def test_the_stream_keys_a_record_as_the_batch_staging_does(clean_ods: str, bad: Any) -> None:
    """The same record staged by the batch and by the stream has one source id: its versions and
    quarantine items stay one record's."""
    from psa_erp_sync.ods import staging

    with psycopg.connect(clean_ods, autocommit=True) as conn:
        with conn.transaction():
            staging.stage_pages(
                conn, [[bad]], run_key="batch", source_system="psa", endpoint="/v2/time_entries"
            )
        with conn.transaction():
            new, known = stream.stage_new_versions(conn, [bad], run_key="stream", endpoint="/v2/time_entries")
        ids = {r[0] for r in conn.execute("SELECT source_id FROM staging.raw_record")}
    assert (new, known) == (0, 1)
    assert len(ids) == 1
