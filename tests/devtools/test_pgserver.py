"""The embedded server demands a password (scram-sha-256) and keeps it across restarts."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devtools import pgserver
from tests.conftest import server_dir

pytestmark = pytest.mark.integration


@pytest.fixture
def data(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A data dir for the embedded server (destroyed afterwards), outside pytest's temporary root
    (:func:`tests.conftest.server_dir`); no password from the environment."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with server_dir() as base:
        data = base / "pg"
        try:
            yield data
        finally:
            pgserver.destroy(data)


def _assert_refused_without_password(dsn: str) -> None:
    parts = psycopg.conninfo.conninfo_to_dict(dsn)
    parts.pop("password")
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(psycopg.conninfo.make_conninfo("", **parts, passfile="/nonexistent/pgpass")).close()


def test_embedded_server_uses_scram_and_a_kept_password(data: Path) -> None:
    dsn = pgserver.start(data, port=None)
    secret = pgserver.password_file(data)
    assert secret.parent == data.parent
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    password = secret.read_text().strip()
    assert len(password) >= 24
    assert psycopg.conninfo.conninfo_to_dict(dsn)["password"] == password

    with psycopg.connect(dsn) as conn:
        assert conn.execute("SHOW password_encryption").fetchone() == ("scram-sha-256",)
        rules = conn.execute("SELECT type, auth_method FROM pg_hba_file_rules").fetchall()
    assert rules and {method for _, method in rules} == {"scram-sha-256"}
    assert {kind for kind, _ in rules} >= {"local", "host"}

    _assert_refused_without_password(dsn)

    pgserver.stop(data)
    assert pgserver.start(data, port=None) == dsn  # the same data dir keeps its password
    pgserver.destroy(data)
    assert not pgserver.password_file(data).exists()


def test_a_data_dir_made_with_trust_auth_is_converted_on_start(data: Path) -> None:
    dsn = pgserver.start(data, port=None)
    with psycopg.connect(dsn, autocommit=True) as conn:  # as a cluster from before passwords
        conn.execute("ALTER ROLE postgres PASSWORD NULL")
    pgserver.stop(data)
    trust = "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
    pgserver._write_private(data / "pg_hba.conf", trust, owner=pgserver._run_as())
    pgserver.password_file(data).unlink()

    converted = pgserver.start(data, port=None)
    password = pgserver.password_file(data).read_text().strip()
    assert psycopg.conninfo.conninfo_to_dict(converted)["password"] == password
    with psycopg.connect(converted) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    _assert_refused_without_password(converted)
