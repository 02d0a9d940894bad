"""Watermarks against the PSA simulator over loopback (issue 13 items 1 and 4): an empty first run
never poisons the watermark, one record stamped in the future never pins it, and migration 0009
repairs what earlier versions stored."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from psa_erp_sync.config import load_config
from psa_erp_sync.extract import psa as psa_extract
from psa_erp_sync.ods import migrate, staging
from psa_erp_sync.validation import time_expense as validation
from tests.conftest import RunningSimulator, _server_dsn, _with_database

pytestmark = pytest.mark.integration

TODAY = date(2026, 11, 9)
REFERENCE = ("/v2/projects", "/v2/users", "/v2/task_assignments", "/v2/expense_categories")
TRANSACTIONAL = ("/v2/time_entries", "/v2/expenses")


def _run(dsn: str, client: Any, run: str, mode: psa_extract.Mode) -> dict[str, staging.StageResult]:
    """Every endpoint the time & expense DAG extracts, planned from the stored watermarks as its
    extract task plans them."""
    results = {}
    with psycopg.connect(dsn) as conn:
        for endpoint in REFERENCE + TRANSACTIONAL:
            window = psa_extract.plan_window(
                staging.get_watermark(conn, "psa", endpoint),
                mode="full" if endpoint in REFERENCE else mode,
                as_of=datetime.now(UTC),
                overlap=timedelta(minutes=60),
                sweep_days=45,
            )
            results[endpoint] = psa_extract.extract_endpoint(
                conn, client, endpoint=endpoint, run_key=f"{run}{endpoint}", window=window, per_page=100
            )
    return results


def _watermarks(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        return dict(
            conn.execute(
                "SELECT endpoint, high_watermark::text FROM staging.watermark WHERE source_system = 'psa'"
            ).fetchall()
        )


def _firm(psa_sim: RunningSimulator) -> Any:
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    firm = generate_firm(
        FirmSpec(seed=3, consultants=4, customers=3, projects=4, opportunities=1, today=TODAY)
    )
    load_firm(firm, psa_url=psa_sim.base_url, erp_url=None, crm_url=None, include_schedule=False)
    return firm


def _staged_ids(dsn: str, run_key: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {
            r[0]
            for r in conn.execute(
                "SELECT source_id FROM staging.raw_record WHERE last_run_key = %s", (run_key,)
            )
        }


def test_an_empty_first_run_then_a_run_with_records(
    clean_ods: str, psa_sim: RunningSimulator, psa_client: Any
) -> None:
    first = _run(clean_ods, psa_client, "run-1", mode="sweep")  # what "auto" picks on a first run
    assert all(r.extracted == 0 for r in first.values()), {e: r.extracted for e, r in first.items()}
    assert "-infinity" not in _watermarks(clean_ods).values()

    _firm(psa_sim)
    second = _run(clean_ods, psa_client, "run-2", mode="incremental")
    for endpoint in REFERENCE + TRANSACTIONAL:
        assert second[endpoint].extracted > 0, endpoint  # a first read of everything
    marks = _watermarks(clean_ods)
    assert set(marks) == set(TRANSACTIONAL)
    with psycopg.connect(clean_ods) as conn:
        for endpoint in TRANSACTIONAL:
            mark = staging.get_watermark(conn, "psa", endpoint)
            assert mark is not None and mark <= datetime.now(UTC)

    # An edit after that is read by the next incremental run (and only what changed, plus overlap).
    entry_id = sorted(_staged_ids(clean_ods, "run-2/v2/time_entries"), key=int)[0]
    psa_sim.admin("PATCH", f"/time_entries/{entry_id}", json={"notes": "edited after the first post"})
    third = _run(clean_ods, psa_client, "run-3", mode="incremental")
    assert entry_id in _staged_ids(clean_ods, "run-3/v2/time_entries")
    assert third["/v2/time_entries"].new_versions == 1


def test_a_record_stamped_in_the_future_cannot_pin_the_watermark(
    clean_ods: str, psa_sim: RunningSimulator, psa_client: Any
) -> None:
    from simulators.firm.load import iter_time_entries

    firm = _firm(psa_sim)
    row = dict(next(iter(iter_time_entries(firm, 10)))[0])
    row.update(id=9_000_001, updated_at="2099-01-01T00:00:00Z", notes="stamped in 2099")
    psa_sim.admin("POST", "/seed", json={"time_entries": [row]})

    _run(clean_ods, psa_client, "run-1", mode="incremental")
    with psycopg.connect(clean_ods) as conn:
        mark = staging.get_watermark(conn, "psa", "/v2/time_entries")
        assert mark is not None and mark <= datetime.now(UTC), mark
        # the future-dated record is quarantined, not made canonical
        ref = validation.PsaReference.from_staging(conn, {e: f"run-1{e}" for e in REFERENCE})
        with conn.transaction():
            result = validation.validate_run(
                conn,
                kind="time_entry",
                run_key="run-1/v2/time_entries",
                ref=ref,
                config=load_config(),
                as_of=datetime.now(UTC),
                dag_run_id="run-1",
            )
        item = conn.execute(
            "SELECT reason_code FROM exceptions.item WHERE source_id = '9000001' AND status = 'open'"
        ).fetchone()
    assert item == ("UPDATED_AT_IN_FUTURE",)
    assert result.by_reason["UPDATED_AT_IN_FUTURE"] == 1

    edited = next(
        i for i in sorted(_staged_ids(clean_ods, "run-1/v2/time_entries"), key=int) if i != "9000001"
    )
    psa_sim.admin("PATCH", f"/time_entries/{edited}", json={"notes": "edited later"})
    _run(clean_ods, psa_client, "run-2", mode="incremental")
    assert edited in _staged_ids(clean_ods, "run-2/v2/time_entries")


@pytest.fixture
def old_ods() -> Iterator[str]:
    """A database with the ODS migrations before 0009 only (an installation about to upgrade)."""
    server = os.environ.get("PSA_ERP_SYNC_TEST_DSN") or _server_dsn()
    name = f"pes_test_upgrade_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = _with_database(server, name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE SCHEMA ods_meta; CREATE TABLE ods_meta.schema_migration (version integer PRIMARY KEY,"
            " name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for m in migrate.discover():
            if m.version < 9:
                conn.execute(m.sql.encode())
                conn.execute(
                    "INSERT INTO ods_meta.schema_migration (version, name, checksum) VALUES (%s, %s, %s)",
                    (m.version, m.name, m.checksum),
                )
    yield dsn
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_upgrade_repairs_poisoned_watermarks(old_ods: str) -> None:
    healthy_start = datetime(2026, 11, 20, 8, tzinfo=UTC)
    with psycopg.connect(old_ods, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO staging.watermark (source_system, endpoint, high_watermark, last_sweep_at, updated_at) VALUES"
            " ('psa', '/v2/expenses', '-infinity', now(), now()),"
            " ('psa', '/v2/time_entries', '2099-01-01T00:00:00Z', now(), '2026-11-25T08:00:00Z'),"
            " ('psa', '/v2/x/milestones', '2099-01-01T00:00:00Z', now(), '2026-11-25T08:00:00Z'),"
            " ('erp', 'customer', '2026-11-24T00:00:00Z', NULL, '2026-11-25T08:00:00Z')"
        )
        # the run that saw the 2099 record (a healthy window), then runs whose window was in the future
        conn.execute(
            "INSERT INTO staging.extract_run (run_key, source_system, endpoint, window_from, window_to, mode, started_at)"
            " VALUES ('a', 'psa', '/v2/time_entries', '2026-11-19T00:00:00Z', now(), 'incremental', %s),"
            " ('b', 'psa', '/v2/time_entries', '2098-12-31T23:00:00Z', now(), 'incremental', '2026-11-21T08:00:00Z'),"
            " ('c', 'psa', '/v2/time_entries', '2098-12-31T23:00:00Z', now(), 'incremental', '2026-11-22T08:00:00Z')",
            (healthy_start,),
        )
        # the read no longer fails on what is stored, before and after the upgrade
        assert staging.get_watermark(conn, "psa", "/v2/expenses") is None

    assert "0009_bad_input.sql" in migrate.apply(old_ods)

    with psycopg.connect(old_ods) as conn:
        assert staging.get_watermark(conn, "psa", "/v2/expenses") is None  # read everything again
        assert staging.get_watermark(conn, "psa", "/v2/time_entries") == healthy_start
        assert staging.get_watermark(conn, "psa", "/v2/x/milestones") is None  # no run to restart from
        assert staging.get_watermark(conn, "erp", "customer") == datetime(2026, 11, 24, tzinfo=UTC)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO staging.watermark (source_system, endpoint, high_watermark) VALUES ('psa', 'x', '-infinity')"
            )
