"""The bench's CPU meter counts the server it measures, not every ``postgres*`` process on the machine
(docs/performance.md, perf-post7: other sessions' servers inflated ``cores_busy.postgres``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from devtools.bench import CpuMeter, postmaster_pid

pytestmark = pytest.mark.integration

# Waits for a line on stdin, burns 1 s of CPU, says so, then waits to be killed.
BURN = (
    "import sys, time\nsys.stdin.readline()\nend = time.process_time() + 1.0\n"
    "while time.process_time() < end:\n    pass\nprint('done', flush=True)\ntime.sleep(60)\n"
)


@pytest.fixture
def decoy(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process named ``postgres-decoy`` (a link to this Python) that burns 1 s of CPU: no server's."""
    link = tmp_path / "postgres-decoy"
    link.symlink_to(sys.executable)
    proc = subprocess.Popen([str(link), "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    yield proc
    proc.kill()
    proc.wait()


def test_postmaster_pid_is_the_parent_of_a_backend(pg_dsn: str) -> None:
    pid = postmaster_pid(pg_dsn)
    assert pid is not None
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        assert psutil.Process(int(row[0])).ppid() == pid


def test_a_remote_or_unreachable_server_falls_back_to_every_postgres_process() -> None:
    assert postmaster_pid("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1") is None
    assert CpuMeter(None, "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1").postmaster_pid is None


def test_the_meter_counts_its_server_and_not_another_postgres_process(
    pg_dsn: str, decoy: subprocess.Popen[bytes]
) -> None:
    assert psutil.Process(decoy.pid).name().startswith("postgres")
    mine, everyone = CpuMeter(None, pg_dsn), CpuMeter(None)
    assert mine.postmaster_pid is not None and everyone.postmaster_pid is None
    mine_0, everyone_0 = mine._postgres(), everyone._postgres()
    assert decoy.stdin is not None and decoy.stdout is not None
    decoy.stdin.write(b"go\n")
    decoy.stdin.flush()
    with psycopg.connect(pg_dsn) as conn:  # this server's CPU, in a backend that exits before the end
        conn.execute("SELECT count(*) FROM generate_series(1, 3000000)").fetchone()
    assert decoy.stdout.readline().strip() == b"done"  # the decoy's 1 s of CPU is spent, and it lives
    mine_1, everyone_1 = mine._postgres(), everyone._postgres()
    assert mine_1 - mine_0 > 0.05  # the exited backend's query, through the postmaster's reaped children
    # Every postgres* process counts the decoy's second (and the same server), the server's tree does not.
    assert (everyone_1 - everyone_0) - (mine_1 - mine_0) > 0.8
