"""Worker processes released at one instant, for tests of limits that hold across processes.

Each worker writes its ready file once imported and connected, then waits for the ``go`` file;
:func:`release` waits for every ready file, touches ``go`` and collects each worker's last stdout
line as JSON (its result). :func:`overlap` says how much two timed passes ran at the same time.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def release(
    procs: Sequence[subprocess.Popen[str]],
    ready: Sequence[Path],
    go: Path,
    *,
    start_timeout: float,
    timeout: float,
) -> list[dict[str, Any]]:
    """Wait for every ``ready`` file (every worker alive), touch ``go``, and return each worker's
    result (its last stdout line), in ``procs`` order. Kills what is left on the way out; fails the
    test naming a worker that did not start or exited non-zero."""
    try:
        deadline = time.monotonic() + start_timeout
        while not all(path.exists() for path in ready):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), (
                "a worker did not start"
            )
            time.sleep(0.05)
        go.touch()
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for path, p, (_, err) in zip(ready, procs, outputs, strict=True):
        assert p.returncode == 0, f"{path.name} failed:\n{err[-4000:]}"
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


def overlap(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The share of the shorter pass (``started``/``ended``) that ran while the other one ran too."""
    both = min(a["ended"], b["ended"]) - max(a["started"], b["started"])
    return max(both, 0.0) / min(a["ended"] - a["started"], b["ended"] - b["started"])
