"""``python -m psa_erp_sync.posting`` answers an unreachable ODS or ERP, and a busy posting lock,
with one clear line and a non-zero exit, never a traceback (a real subprocess each time)."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from tests.conftest import ROOT, RunningSimulator, free_port

pytestmark = [pytest.mark.integration]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "psa_erp_sync.posting", "--record-type", "timebill", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _last_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


def test_an_unreachable_ods_is_one_line_and_exit_4(erp_sim: RunningSimulator) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere?connect_timeout=2"
    done = _cli("--dsn", dsn, "--erp-url", erp_sim.base_url)
    assert done.returncode == 4, done.stderr
    line = _last_line(done.stderr)
    assert line.startswith("posting timebill failed: the ODS is unreachable"), line
    assert done.stdout == ""


@pytest.mark.slow  # the client retries a refused connection with backoff (up to ~15 s)
def test_an_unreachable_erp_is_one_line_and_exit_5(clean_ods: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = _cli("--dsn", clean_ods, "--erp-url", url, "--timeout", "2")
    assert done.returncode == 5, done.stderr
    line = _last_line(done.stderr)
    assert line.startswith(f"posting timebill failed: the ERP at {url} did not answer usefully"), line
    assert "ErpUnavailable" in line


def test_a_busy_posting_lock_is_one_line_and_exit_75(clean_ods: str, erp_sim: RunningSimulator) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as holder:
        holder.execute(
            "SELECT pg_advisory_lock(hashtext('psa_erp_sync.posting.netsuite.TSTDRV100001.timebill'))"
        )
        done = _cli("--dsn", clean_ods, "--erp-url", erp_sim.base_url, "--lock-wait", "0.5")
    assert done.returncode == 75, done.stderr
    assert "posting lock busy" in _last_line(done.stderr)


def test_a_bad_batch_size_is_a_usage_error() -> None:
    done = _cli(
        "--dsn", "postgresql://x@127.0.0.1:1/x", "--erp-url", "http://127.0.0.1:1", "--batch-size", "101"
    )
    assert done.returncode == 2
    assert "batch_size must be between 1 and 100" in _last_line(done.stderr)
