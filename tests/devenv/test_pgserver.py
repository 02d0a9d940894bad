"""The embedded server demands a password (scram-sha-256) and keeps it across restarts."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psycopg
import pytest

from psa_erp_sync.devenv import pgserver

pytestmark = pytest.mark.integration


def test_embedded_server_uses_scram_and_a_kept_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    data = tmp_path / "pg"
    try:
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

        parts = psycopg.conninfo.conninfo_to_dict(dsn)
        parts.pop("password")
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(psycopg.conninfo.make_conninfo("", **parts, passfile=os.devnull)).close()

        pgserver.stop(data)
        assert pgserver.start(data, port=None) == dsn  # the same data dir keeps its password
    finally:
        pgserver.destroy(data)
    assert not pgserver.password_file(data).exists()
