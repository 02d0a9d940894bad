"""Canonical rows, exception items, audit rows and queues are the same whichever way validation
writes them (issue 16, deliverable 2; migration 0049).

Since migration 0049 a month's new keys are copied straight into canonical (in a savepoint, a
budget of them per run) instead of through the temporary table, and the canonical ``record``
jsonb is built on read (``canonical.record_v1``) instead of stored. A month of the simulated firm
is validated, then a second run changes it (new hours, a billed mark only, stale older reads, new
records and a duplicate of an existing one beside existing keys in the same chunks), three ways:
no direct insert (the temporary-table upsert for every row, as before 0049), the default budget,
and a budget of one savepoint; everything validation writes must be equal. A key committed by
someone else after the probe makes the direct insert fall back to the upsert, with the same result.
The record built on read is, as a v1 contract value, the record validation stored before 0049.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from psa_erp_sync.config import load_config
from psa_erp_sync.contracts import records, v1
from psa_erp_sync.ods import arrays, staging
from psa_erp_sync.validation import time_expense as validation
from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration

TODAY = date(2026, 10, 7)
AS_OF = datetime(2026, 10, 7, 12, tzinfo=UTC)
REFERENCE = ("/v2/projects", "/v2/users", "/v2/task_assignments", "/v2/expense_categories")
KINDS = {"/v2/time_entries": "time_entry", "/v2/expenses": "expense_entry"}
CHUNK = 25


@pytest.fixture
def month(clean_ods: str, psa_sim: RunningSimulator) -> str:
    """A month of the simulated firm staged (run ``m1``), and a second run ``m2`` of time entries
    staged after it: updates, billed marks only, stale reads, new records and a duplicate."""
    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.extract import psa as psa_extract
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    firm = generate_firm(
        FirmSpec(seed=11, consultants=5, customers=10, projects=15, opportunities=2, today=TODAY)
    )
    load_firm(firm, psa_url=psa_sim.base_url, erp_url=None, crm_url=None, include_schedule=False)
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    window = psa_extract.plan_window(
        None, mode="full", as_of=AS_OF, overlap=timedelta(hours=1), sweep_days=45
    )
    with (
        HarvestClient(base_url=psa_sim.base_url, token="t", account_id="1") as psa,
        psycopg.connect(clean_ods, autocommit=True) as conn,
    ):
        for endpoint in (*REFERENCE, *KINDS):
            psa_extract.extract_endpoint(
                conn, psa, endpoint=endpoint, run_key=f"m1{endpoint}", window=window, per_page=500
            )
        staged = [
            json.loads(text)
            for (text,) in conn.execute(
                "SELECT payload FROM staging.raw_record WHERE endpoint = '/v2/time_entries'"
                " ORDER BY length(source_id), source_id"
            )
        ]
        assert len(staged) > 6 * CHUNK, len(staged)
        # Every seventh of the first entries is left out of m1: new keys between existing ones in m2.
        held = [str(e["id"]) for i, e in enumerate(staged[: 4 * CHUNK]) if i % 7 == 3]
        conn.execute(
            "UPDATE staging.raw_record SET last_run_key = 'held' WHERE endpoint = '/v2/time_entries'"
            " AND source_id = ANY(%s)",
            (held,),
        )
    with psycopg.connect(clean_ods) as conn:
        staging.stage_pages(
            conn, [_second_run(staged)], run_key="m2", source_system="psa", endpoint="/v2/time_entries"
        )
    return clean_ods


def _later(stamp: str, seconds: int) -> str:
    moved = datetime.fromisoformat(stamp.replace("Z", "+00:00")) + timedelta(seconds=seconds)
    return moved.strftime("%Y-%m-%dT%H:%M:%SZ")


def _second_run(staged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of the first entries: the held ones as they were (new keys), the others in turn changed
    (hours), billed only (same content), or read older with other hours (stale); and a new id
    doing an existing entry's work (a duplicate)."""
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(staged[: 4 * CHUNK]):
        if i % 7 == 3:
            out.append(entry)
        elif i % 3 == 0:
            out.append(
                {
                    **entry,
                    "hours": float(entry["hours"]) + 0.25,
                    "updated_at": _later(entry["updated_at"], 60),
                }
            )
        elif i % 3 == 1:
            out.append(
                {**entry, "is_billed": not entry["is_billed"], "updated_at": _later(entry["updated_at"], 60)}
            )
        else:
            out.append(
                {
                    **entry,
                    "hours": float(entry["hours"]) + 1,
                    "updated_at": _later(entry["updated_at"], -3600),
                }
            )
    out.append({**staged[-1], "id": int(staged[-1]["id"]) * 1000 + 9})  # the same work as an existing entry
    return out


def _validate(conn: psycopg.Connection, run: str) -> list[dict[str, Any]]:
    ref = validation.PsaReference.from_staging(conn, {e: f"m1{e}" for e in REFERENCE})
    results = []
    for endpoint, kind in KINDS.items():
        run_key = "m2" if run == "m2" else f"m1{endpoint}"
        if run == "m2" and kind != "time_entry":
            continue
        with conn.transaction():
            result = validation.validate_run(
                conn,
                kind=kind,  # type: ignore[arg-type]
                run_key=run_key,
                ref=ref,
                config=load_config(),
                as_of=AS_OF,
                dag_run_id=run,
                chunk=CHUNK,
            )
        results.append({k: v for k, v in result.as_dict().items() if k != "seconds"})
    return results


def _state(conn: psycopg.Connection) -> dict[str, Any]:
    """Everything validation writes, without the moments it was written."""
    stamps = "- 'validated_at'"
    return {
        table: conn.execute(
            f"SELECT to_jsonb(c) {stamps} - 'record', canonical.record_v1(c) FROM {table} c ORDER BY source_id"
        ).fetchall()
        for table in ("canonical.time_entry", "canonical.expense_entry")
    } | {
        "items": conn.execute(
            "SELECT to_jsonb(e) - 'id' - 'first_seen' - 'last_seen' FROM exceptions.item e"
            " ORDER BY record_type, source_id, reason_code"
        ).fetchall(),
        "audit": conn.execute(
            f"SELECT actor, action, entity, entity_key, before {stamps}, after {stamps}, run_id FROM audit.change"
            " ORDER BY entity, entity_key, id"
        ).fetchall(),
        "plan_queue": conn.execute(
            "SELECT record_type, source_id, count(*) FROM ledger.plan_queue GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall(),
        "forecast_queue": conn.execute(
            "SELECT kind, source_id, count(*) > 0 FROM forecast.actual_change GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall(),
    }


def _run_month(dsn: str, runs: tuple[str, ...] = ("m1", "m2")) -> tuple[list[Any], dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "TRUNCATE canonical.time_entry, canonical.expense_entry, exceptions.item, audit.change,"
            " ledger.plan_queue, forecast.actual_change"
        )
        conn.commit()
        results, states = [], {}
        for run in runs:
            results += _validate(conn, run)
            states[run] = _state(conn)
        return results, states


class _Spy:
    """Counts the direct inserts that wrote."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.wrote = 0
        inner = validation._insert_new

        def counted(*args: Any) -> bool:
            wrote = inner(*args)
            self.wrote += wrote
            return wrote

        monkeypatch.setattr(validation, "_insert_new", counted)


def test_direct_inserts_write_what_the_upsert_writes(month: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _Spy(monkeypatch)
    monkeypatch.setattr(validation, "DIRECT_INSERT_SAVEPOINTS", 0)
    through_temp = _run_month(month)
    assert spy.wrote == 0
    monkeypatch.setattr(validation, "DIRECT_INSERT_SAVEPOINTS", 1)
    one_savepoint = _run_month(month)
    assert spy.wrote == 3  # one per validate_run with new keys: m1's two kinds, m2's new ids
    monkeypatch.setattr(validation, "DIRECT_INSERT_SAVEPOINTS", 48)
    default = _run_month(month)
    assert spy.wrote - 3 > 6  # every chunk with new keys: m1's (~10), m2's
    assert one_savepoint == through_temp
    assert default == through_temp

    results, state = default
    m2 = results[-1]
    # The second run did what it was built to: updates audited, billed marks kept as they were,
    # older reads refused, new records inserted, the duplicate of existing work held.
    assert m2["stale"] > 0 and m2["unchanged"] > 0 and m2["by_reason"].get("DUPLICATE_SUSPECTED", 0) >= 1
    assert len(state["m2"]["audit"]) > len(state["m1"]["audit"])
    assert len(state["m2"]["canonical.time_entry"]) > len(state["m1"]["canonical.time_entry"])
    assert state["m1"]["canonical.expense_entry"] and state["m1"]["items"]


def test_a_key_committed_after_the_probe_falls_back_to_the_upsert(
    month: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe misses every key (as if another run committed them all since): each chunk's
    ``COPY`` meets a unique violation, rolls back to its savepoint, and is upserted."""
    monkeypatch.setattr(validation, "DIRECT_INSERT_SAVEPOINTS", 0)
    expected = _run_month(month)
    monkeypatch.setattr(validation, "DIRECT_INSERT_SAVEPOINTS", 48)
    monkeypatch.setattr(validation, "_present", lambda *_: set())
    spy = _Spy(monkeypatch)
    assert _run_month(month) == expected
    assert spy.wrote > 0  # m1's chunks still copy straight (nothing there): m2's fall back


def test_the_record_built_on_read_is_the_record_validation_stored(month: str) -> None:
    """What validation stored in ``record`` before migration 0049 (the twin of the judge's row,
    encoded) equals ``canonical.record_v1`` of the row written now, as a v1 contract value."""
    _run_month(month, ("m1",))
    config, stored = load_config(), {}
    with psycopg.connect(month) as conn:
        ref = validation.PsaReference.from_staging(conn, {e: f"m1{e}" for e in REFERENCE})
        for endpoint, kind in KINDS.items():
            for text, version_hash, read_at in conn.execute(
                "SELECT payload, payload_hash, fetched_at FROM staging.raw_record WHERE last_run_key = %s",
                (f"m1{endpoint}",),
            ):
                verdict = validation.judge_staged(
                    kind,
                    text,
                    version_hash,
                    ref=ref,
                    config=config,
                    as_of=AS_OF,
                    fetched_at=read_at,  # type: ignore[arg-type]
                )
                if verdict.valid:
                    assert verdict.row is not None
                    built = records.build(kind, {k: verdict.row[k] for k in records.FIELDS[kind]})
                    stored[kind, verdict.source_id] = records.encode(built)
        rows = {
            (kind, source_id): (record, deleted)
            for kind in KINDS.values()
            for source_id, record, deleted in conn.execute(
                f"SELECT source_id, canonical.record_v1(c), record IS NULL FROM canonical.{kind} c"
            )
        }
    models = {"time_entry": v1.TimeEntry, "expense_entry": v1.ExpenseEntry}
    assert stored and rows.keys() <= stored.keys()
    for (kind, source_id), (record, not_stored) in rows.items():
        assert not_stored
        assert set(record) == {"contract_version", *records.FIELDS[kind]}
        model = models[kind]
        assert model.model_validate(record) == model.model_validate_json(stored[kind, source_id]), source_id
        assert records.from_row(kind, record) == records.from_row(kind, json.loads(stored[kind, source_id]))


def test_a_run_on_a_connection_whose_plans_were_made_on_a_fuller_table_plans_each_statement_anew(
    month: str,
) -> None:
    """A connection that validated a month before keeps the writer's statements prepared, with the
    generic plan PostgreSQL chose for them. Emptied (TRUNCATE) and validated again, a generic plan
    is made anew at each statement's first execution, on the empty table, and kept while the run
    fills it: the fingerprint lookup then scanned the table for every row of every chunk,
    quadratic in the month (a run of 108,728 versions sat for minutes on it). Every execution
    of a run is planned for the table as it is (a custom plan), however prepared it was before."""

    def plans(conn: psycopg.Connection) -> dict[str, tuple[int, int]]:
        return {
            statement: (generic, custom)
            for statement, generic, custom in conn.execute(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
            )
        }

    with psycopg.connect(month) as conn:
        _validate(conn, "m1")
        conn.commit()
        # Used as any session uses it (the default plan cache): prepared, then a generic plan.
        fingerprints = [f for (f,) in conn.execute("SELECT fingerprint FROM canonical.time_entry LIMIT 50")]
        for _ in range(12):  # the parameter as the run sends it (the prepared statement's types)
            conn.execute(
                validation._first_with_fingerprints("canonical.time_entry"),
                (arrays.text_array(fingerprints),),
            )
        conn.commit()
        before = plans(conn)
        lookup = [s for s in before if "f.first IS NOT NULL" in s and "canonical.time_entry" in s]
        assert lookup and before[lookup[0]][0] > 0  # prepared, with a generic plan in use
        conn.execute(
            "TRUNCATE canonical.time_entry, canonical.expense_entry, exceptions.item, audit.change,"
            " ledger.plan_queue, forecast.actual_change"
        )
        conn.commit()
        again = _validate(conn, "m1")
        after = plans(conn)
    assert [r["valid"] for r in again] == [r["valid"] for r in _validate_fresh(month)]
    assert after[lookup[0]][1] > before[lookup[0]][1]  # executed again, custom plans
    generic_used = {s: after[s][0] - g for s, (g, _) in before.items() if s in after and after[s][0] > g}
    assert not generic_used, generic_used


def _validate_fresh(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "TRUNCATE canonical.time_entry, canonical.expense_entry, exceptions.item, audit.change,"
            " ledger.plan_queue, forecast.actual_change"
        )
        conn.commit()
        return _validate(conn, "m1")
