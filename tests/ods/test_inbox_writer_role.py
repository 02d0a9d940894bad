"""Migration 0015: the ingress's role may insert into the inbox and do nothing else."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from psa_erp_sync.api.ingress import InboxWriter

pytestmark = pytest.mark.integration


@pytest.fixture
def ingress_dsn(clean_ods: str) -> Iterator[str]:
    """A login role of the group ``psa_erp_sync_inbox_writer`` (as compose's ``ods_ingress``)."""
    role = f"pes_ingress_{os.getpid()}"
    password = secrets.token_hex(8)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE psa_erp_sync_inbox_writer").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    yield psycopg.conninfo.make_conninfo(clean_ods, user=role, password=password)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_the_ingress_writes_with_the_insert_only_role(ingress_dsn: str, clean_ods: str) -> None:
    writer = InboxWriter(ingress_dsn)
    try:
        kwargs = {
            "delivery_id": "role-test-0001",
            "source_system": "psa",
            "event_type": "time_entry.approved",
            "source_id": "42",
            "occurred_at": datetime(2026, 12, 1, tzinfo=UTC),
            "body": b'{"data": {"id": 42}}',
        }
        assert writer.accept(**kwargs) is True
        assert writer.accept(**kwargs) is False  # the replay: ON CONFLICT DO NOTHING, still allowed
        for _ in range(2):  # a retried malformed delivery updates the quarantine's counters
            writer.quarantine(
                delivery_id="role-test-0002",
                source_system="psa",
                event_type="time_entry.approved",
                reason_code="SCHEMA",
                detail={"errors": []},
                body=b"{}",
                content_type="application/json",
            )
    finally:
        writer.close()
    with psycopg.connect(clean_ods) as conn:
        assert conn.execute(
            "SELECT count(*) FROM inbox.event WHERE delivery_id = 'role-test-0001'"
        ).fetchone() == (1,)
        assert conn.execute(
            "SELECT occurrences FROM inbox.quarantine WHERE delivery_id = 'role-test-0002'"
        ).fetchone() == (2,)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE inbox.event SET status = 'processed'",
        "DELETE FROM inbox.event",
        "SELECT payload FROM inbox.event",
        "DELETE FROM inbox.quarantine",
        "UPDATE inbox.quarantine SET status = 'ignored'",
        "SELECT * FROM ledger.posting",
        "SELECT * FROM canonical.time_entry",
        "UPDATE canonical.time_entry SET approved = false",
        "DELETE FROM staging.raw_record",
        "UPDATE exceptions.item SET domain = 'x'",
        "DELETE FROM exceptions.item",
        "SELECT * FROM exceptions.item",
    ],
)
def test_everything_else_is_refused(ingress_dsn: str, statement: str) -> None:
    with psycopg.connect(ingress_dsn) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


def test_the_ingress_uses_its_own_connection_when_the_deployment_defines_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from psa_erp_sync.api.ingress import ingress_conn_id

    monkeypatch.delenv("AIRFLOW_CONN_ODS_INGRESS", raising=False)
    assert ingress_conn_id() == "ods_default"
    monkeypatch.setenv(
        "AIRFLOW_CONN_ODS_INGRESS",
        '{"conn_type": "postgres", "host": "127.0.0.1", "login": "ods_ingress", "password": "x", "schema": "ods"}',
    )
    assert ingress_conn_id() == "ods_ingress"
