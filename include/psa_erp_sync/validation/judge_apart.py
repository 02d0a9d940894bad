"""A large validation run read and judged by a process beside the task's own (docs/performance.md,
"perf-validation8").

The task's process keeps everything that depends on more than one version, in order: superseded
versions, the first of a fingerprint, the duplicate lookup against canonical and every write, on
its own connection in the caller's transaction. The judge process does what is a pure function of
one version and the run's reference data, config and as-of: it reads the run's versions on a
connection of its own (the same sorted read as in-process, in a snapshot of its own as the
in-process reader has), judges them, builds each valid row's ``COPY`` tuple and sends the verdicts
back in order, packed by the judge (``Judge.packed``/``Judge.unpacked``) so that they load fast.

How it starts: a fork of the task's process when no other thread runs in it (:func:`_alone`;
validation's own reader and writer threads have not started): the rules and reference data are
already in memory. Otherwise a new interpreter (``python -m psa_erp_sync.validation.judge_apart``):
a fork would copy whatever lock another thread holds (a logging handler's, an SSL library's; an
Airflow task process may run OpenLineage's listener in a thread), and ``multiprocessing``'s
``spawn``/``forkserver`` would import the task's ``__main__`` (Airflow's CLI) into the judge. Either
starts at the run's start, beside the task's setup.

A judge that raises, or whose process dies, fails the run (:class:`JudgeProcessFailed`): the
caller's transaction rolls back, nothing of the run is written.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

import psycopg

from psa_erp_sync.ods import connections
from psa_erp_sync.validation import staged_read

log = logging.getLogger(__name__)

#: Whether a large run is judged by a second process (False: every run in the task's process).
ENABLED = True
#: A run of at least this many staged versions is judged apart; below it (the stream's
#: micro-batches, a run of expenses) the process's start and the pipe cost more than they save.
FROM_VERSIONS = 20_000
#: The judge starts only when some task waited for a CPU in at most this share of the last 10 s
#: (:func:`cpu_pressure`); None: whatever the machine's load.
MAX_CPU_PRESSURE: float | None = 0.10
#: Fork the judge when this process runs no other thread (nothing is copied mid-use: fast, the
#: rules and reference data are already in memory); else a new interpreter (``python -m``).
FORK_WHEN_ALONE = True
#: Staged versions judged per message to the task's process.
BATCH = 500
#: The pipe's buffer (Linux ``F_SETPIPE_SZ``; capped by ``/proc/sys/fs/pipe-max-size``): how far
#: the judge may run ahead of the task's process without waiting for it.
PIPE_BYTES = 1 << 20


class JudgeProcessFailed(RuntimeError):
    """The judge process raised (its traceback is the message) or ended before its last verdict."""


class Judge(Protocol):
    """What the judge process runs (:class:`psa_erp_sync.validation.time_expense._Judge`); it is
    pickled to the process."""

    def packed(self, versions: list[Any]) -> Any: ...

    def unpacked(self, sent: Any) -> Iterator[Any]: ...


@dataclass(frozen=True)
class _Done:
    """Sent by a judge process after its last verdict: its CPU seconds (logged by the task's process)."""

    cpu_seconds: float


@dataclass(frozen=True)
class _Failed:
    """Sent by a judge process that raised."""

    text: str


def wanted(conn: psycopg.Connection, source_system: str, endpoint: str, run_key: str) -> bool:
    """Judge this run apart: enabled, a core free for the judge (:func:`cpu_pressure`), and a run
    of at least :data:`FROM_VERSIONS` versions."""
    if not ENABLED:
        return False
    pressure = cpu_pressure()
    if pressure is not None and MAX_CPU_PRESSURE is not None and pressure > MAX_CPU_PRESSURE:
        log.info(
            "validation judged in the task's process: CPU pressure %.0f %% over the last 10 s", pressure * 100
        )
        return False
    row = conn.execute(
        "SELECT count(*) FROM (SELECT FROM staging.raw_record"
        " WHERE source_system = %s AND endpoint = %s AND last_run_key = %s LIMIT %s) s",
        (source_system, endpoint, run_key, FROM_VERSIONS),
    ).fetchone()
    return row is not None and row[0] >= FROM_VERSIONS


def cpu_pressure() -> float | None:
    """The share of the last 10 s in which some task of this machine (or container) waited for a
    CPU (Linux PSI, ``/proc/pressure/cpu``, ``some avg10``); None where the kernel has none.

    Why this and not the load average: the judge only pays on a core nobody waits for (with none,
    the run's wall follows its total CPU, which the split raises by ~9 us a version), and the
    1-minute load says what the last minute ran (in ``make bench`` its own seeding and extract),
    not whether a task is waiting now."""
    try:
        with open("/proc/pressure/cpu") as pressure:
            fields = dict(f.split("=") for f in pressure.readline().split()[1:])
    except (OSError, ValueError):
        return None
    return float(fields["avg10"]) / 100 if "avg10" in fields else None


@contextlib.contextmanager
def judged(conninfo: str, keys: tuple[str, str, str], judge: Judge) -> Iterator[Iterator[Any]]:
    """The verdicts of the run ``keys`` (source system, endpoint, run key: ``judge.unpacked`` of
    what the judge process sent), in source order.
    The process starts on entry (its read starts at once, beside the caller's setup) and is gone
    on exit: killed if the caller stopped early (an error: it may be waiting on a full pipe)."""
    to_here, from_judge = os.pipe()
    _widen(from_judge)
    try:
        process = (_forked if FORK_WHEN_ALONE and _alone() else _interpreter)(
            from_judge, conninfo, keys, judge
        )
    finally:
        os.close(from_judge)
    receiver = Connection(to_here, writable=False)
    finished = False
    try:
        yield _received(receiver, judge, process)
        finished = True
    finally:
        receiver.close()
        _ended(process, finished)


def _alone() -> bool:
    """This process runs no other (Python) thread, and may fork."""
    return hasattr(os, "fork") and threading.active_count() == 1


class _Process(Protocol):
    """The judge process as :func:`judged` waits for it (a :class:`subprocess.Popen` or :class:`_Fork`)."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


def _interpreter(from_judge: int, conninfo: str, keys: tuple[str, str, str], judge: Judge) -> _Process:
    """The judge as a new interpreter running :func:`main`; what it needs is sent down a pipe."""
    to_judge, from_here = os.pipe()
    _widen(from_here)  # the run's reference data is sent while the judge still imports
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(to_judge), str(from_judge)],
            pass_fds=(to_judge, from_judge),
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
    finally:
        os.close(to_judge)
    with Connection(from_here, readable=False) as sender:
        sender.send_bytes(pickle.dumps((conninfo, keys, BATCH)))
        sender.send_bytes(pickle.dumps(judge, pickle.HIGHEST_PROTOCOL))
    return process


def _forked(from_judge: int, conninfo: str, keys: tuple[str, str, str], judge: Judge) -> _Process:
    """The judge as a fork of this process (only this thread runs: no lock is copied mid-use).

    The fork never returns into the caller's code (``os._exit``: no ``atexit``, no flush of
    inherited buffers) and never uses an inherited connection; the collector is frozen across
    the fork so that the fork never finalizes (closes) an object of the parent's, such as a
    connection that was dropped but not yet collected."""
    gc.freeze()
    pid = os.fork()
    if pid == 0:  # the judge
        code = 1
        try:
            with Connection(from_judge, readable=False) as sender:
                _judge_run(sender, conninfo, keys, lambda: judge, BATCH)
            code = 0
        finally:
            os._exit(code)
    gc.unfreeze()
    return _Fork(pid)


class _Fork:
    """A forked judge process, waited for as :class:`subprocess.Popen` waits."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by another handler of SIGCHLD: it ended, code unknown
                pid, status = self.pid, -1
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status) if status >= 0 else status
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"judge {self.pid}", timeout or 0)
            time.sleep(0.005)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


def _ended(process: _Process, finished: bool) -> None:
    """Wait for the judge process to exit (after its end mark), or kill it (the run failed)."""
    if finished:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
    if process.poll() is None:
        process.kill()
        process.wait()


def _widen(fd: int) -> None:
    """:data:`PIPE_BYTES` of buffer for the pipe ``fd`` where the platform allows it (Linux)."""
    import fcntl

    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setsize, PIPE_BYTES)


def _received(receiver: Connection, judge: Judge, process: _Process) -> Iterator[Any]:
    """The verdicts, message by message, until the judge's end mark."""
    while True:
        try:
            sent = pickle.loads(receiver.recv_bytes())  # noqa: S301 (our own child wrote it)
        except EOFError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(1)
            raise JudgeProcessFailed(
                f"the judge process ended before its last verdict (exit code {process.returncode})"
            ) from None
        if isinstance(sent, _Done):
            log.info("judge process %s: %.2f s CPU", process.pid, sent.cpu_seconds)
            return
        if isinstance(sent, _Failed):
            raise JudgeProcessFailed(sent.text)
        yield from judge.unpacked(sent)


def _judge_and_send(sender: Connection, judge: Judge, versions: Iterator[Any], size: int) -> None:
    """In the judge process: judge the run's ``versions`` and send the verdicts, ``size``
    (:data:`BATCH` in the task's process) versions a message, then the end mark."""
    batch: list[Any] = []
    for version in versions:
        batch.append(version)
        if len(batch) >= size:
            sender.send_bytes(pickle.dumps(judge.packed(batch), pickle.HIGHEST_PROTOCOL))
            batch = []
    sender.send_bytes(pickle.dumps(judge.packed(batch), pickle.HIGHEST_PROTOCOL))
    sender.send_bytes(pickle.dumps(_Done(time.process_time())))


def _judge_run(
    sender: Connection, conninfo: str, keys: tuple[str, str, str], judge_of: Callable[[], Judge], size: int
) -> None:
    """In the judge process: read the run ``keys`` on a connection of its own and judge it with
    ``judge_of()`` (called once the read has started); a failure is sent as its traceback."""
    try:
        with connections.connect(conninfo) as reader, staged_read.reading(reader, *keys) as versions:
            _judge_and_send(sender, judge_of(), versions, size)
    except BaseException:
        with contextlib.suppress(OSError):  # the task's process may be gone
            sender.send_bytes(pickle.dumps(_Failed(traceback.format_exc())))
        raise


def main(argv: list[str]) -> None:
    """The judge process as a new interpreter: its pipes' file descriptors (from the task's
    process, to it). The run's read (its sort first) starts before the rules are imported (the
    judge's unpickling imports :mod:`~psa_erp_sync.validation.time_expense`): they overlap."""
    with (
        Connection(int(argv[0]), writable=False) as receiver,
        Connection(int(argv[1]), readable=False) as sender,
    ):
        conninfo, keys, size = pickle.loads(receiver.recv_bytes())  # noqa: S301 (our own parent wrote it)
        _judge_run(sender, conninfo, keys, lambda: pickle.loads(receiver.recv_bytes()), size)  # noqa: S301


if __name__ == "__main__":  # the module's own names (what it pickles is found by them)
    from psa_erp_sync.validation import judge_apart

    judge_apart.main(sys.argv[1:])
