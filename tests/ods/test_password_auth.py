"""Every second ODS connection works for a role that must give its password (scram-sha-256).

psycopg leaves the password out of ``conn.info.dsn``; a connection rebuilt from it fails with "no
password supplied". These tests run the paths that open a second connection (planner, validation,
forecast store, ingress pool) as a password-only role, after proving the server refuses that role
without its password, so they cannot pass under trust authentication.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from psa_erp_sync.config import load_config
from psa_erp_sync.ods import connections, migrate

pytestmark = pytest.mark.integration


def _without_password(conninfo: str) -> str:
    parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    parts.pop("password", None)
    parts["passfile"] = "/nonexistent/pgpass"  # no ~/.pgpass either
    return psycopg.conninfo.make_conninfo("", **parts)


def _requires_password(server: str, role: str, password: str) -> bool:
    conninfo = psycopg.conninfo.make_conninfo(server, user=role, password=password, dbname="postgres")
    try:
        psycopg.connect(_without_password(conninfo)).close()
    except psycopg.OperationalError:
        return True
    return False


def _make_role(server: str) -> tuple[str, str]:
    role, password = f"pes_scram_{os.getpid()}", secrets.token_urlsafe(16)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )
    return role, password


@pytest.fixture(scope="module")
def scram_ods(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated ODS owned by a password-only role; its conninfo carries the password.

    The test server is used when it demands passwords; a trust-only one (e.g. a local service
    behind ``PSA_ERP_SYNC_TEST_DSN``) is replaced by a scram embedded server for this module.
    """
    from tests.conftest import _server_dsn, server_dir

    monkeypatch_module.delenv("PGPASSWORD", raising=False)
    server = _server_dsn()
    role, password = _make_role(server)
    started: Path | None = None
    scratch = contextlib.ExitStack()
    if not _requires_password(server, role, password):
        from devtools import pgserver

        started = scratch.enter_context(server_dir()) / "pg"  # outside pytest's temporary root
        server = pgserver.start(started, port=None)
        role, password = _make_role(server)
    assert _requires_password(server, role, password), "the server lets the role in without its password"
    database = f"pes_scram_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role))
        )
        # Roles are per server: a deployment creates the ingress's group role before migrating as
        # a role that may not create roles (migration 0015; compose/postgres-init.sh does the same).
        conn.execute(
            "DO $$ BEGIN CREATE ROLE psa_erp_sync_inbox_writer NOLOGIN;"
            " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
    conninfo = psycopg.conninfo.make_conninfo(server, user=role, password=password, dbname=database)
    migrate.apply(conninfo)
    yield conninfo
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    if started is not None:
        from devtools import pgserver

        pgserver.destroy(started)
    scratch.close()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_the_helper_carries_the_password_psycopg_leaves_out(scram_ods: str) -> None:
    with psycopg.connect(scram_ods) as conn:
        assert "password" not in psycopg.conninfo.conninfo_to_dict(conn.info.dsn)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(_without_password(conn.info.dsn)).close()
        with connections.connect_like(conn) as second:
            assert second.execute("SELECT current_user").fetchone() == (conn.info.user,)


def test_planner_opens_its_reader_with_the_password(scram_ods: str) -> None:
    from psa_erp_sync.posting import planner
    from psa_erp_sync.posting.periods import PeriodBook

    with psycopg.connect(scram_ods) as conn:
        result = planner.plan(
            conn, record_type="timebill", config=load_config(), periods=PeriodBook([]), dag_run_id="scram-run"
        )
    assert sum(result.planned.values()) == 0


def test_validation_opens_its_reader_with_the_password(scram_ods: str) -> None:
    from tests.validation.helpers import stage_and_validate_time_entries
    from tests.validation.test_rules import ENTRY

    with psycopg.connect(scram_ods) as conn:
        result = stage_and_validate_time_entries(conn, [ENTRY], run_key="scram", dag_run_id="scram-run")
    assert (result.staged_versions, result.valid) == (1, 1)


def test_forecast_store_writes_in_parallel_with_the_password(scram_ods: str) -> None:
    from psa_erp_sync.forecast import store
    from tests.forecast.test_line_series import AS_OF, HAND_LINES, _result

    versions = {"t": "scram"}
    results = [_result(HAND_LINES, scenario) for scenario in ("base", "best")]
    ids = {r.scenario: store.snapshot_id(r.scenario, AS_OF, versions) for r in results}
    with psycopg.connect(scram_ods) as conn:
        written = store.write_snapshots(
            conn,
            results,
            snap_ids=ids,
            run_id="scram-run",
            data_versions=versions,
            reporting_currency="USD",
            parallel=True,
        )
    assert written == {"base": True, "best": True}


def test_ingress_pool_connects_from_the_airflow_connection(
    scram_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from devtools.airflow_env import psycopg_parts
    from psa_erp_sync.api import ingress
    from psa_erp_sync.hooks.ods import OdsHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_ODS_DEFAULT", json.dumps({"conn_type": "postgres", **psycopg_parts(scram_ods)})
    )
    writer = ingress.InboxWriter(lambda: OdsHook().dsn())
    try:
        delivery = f"scram-{secrets.token_hex(4)}"
        fresh = writer.accept(
            delivery_id=delivery,
            source_system="psa",
            event_type="time_entry.approved",
            source_id="1",
            occurred_at=datetime.now(UTC),
            body=b'{"data": {"id": 1}}',
        )
    finally:
        writer.close()
    assert fresh
    with psycopg.connect(scram_ods) as conn:
        assert conn.execute(
            "SELECT count(*) FROM inbox.event WHERE delivery_id = %s", (delivery,)
        ).fetchone() == (1,)


def test_no_connection_is_rebuilt_from_a_dsn_without_its_password() -> None:
    """``conn.info.dsn`` lacks the password: only the connections helper may read it (and adds it back)."""
    package = Path(__file__).resolve().parents[2] / "include" / "psa_erp_sync"
    helper = package / "ods" / "connections.py"
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path != helper and "info.dsn" in path.read_text()
    ]
    assert offenders == []
