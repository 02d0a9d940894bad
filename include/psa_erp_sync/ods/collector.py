"""The cyclic garbage collector relaxed while a long pass over the ODS runs in the process.

A posting pass and a validation run each allocate millions of short-lived containers (rows,
payloads, verdicts, tuples), nearly all freed by reference counting. At CPython's thresholds
(700, 10, 10) the collector runs thousands of times in such a pass, some of them over the whole
heap (every module, model and config object of the process). :func:`relaxed` freezes what the
process held before (``gc.freeze``: the collector no longer traverses it) and raises the
thresholds; cycles are still collected, less often.

One state for the process: posting's passes and validation's runs may overlap in threads of one
process, so the first to enter sets the thresholds and freezes, and the last to leave restores the
thresholds it found and unfreezes, on every exit path (docs/performance.md, perf-post6 and
perf-validation13).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_passes = 0
_saved: tuple[int, int, int] | None = None


@contextmanager
def relaxed(thresholds: tuple[int, int, int]) -> Iterator[None]:
    """While the block runs: the heap held before it frozen and the collector's thresholds
    ``thresholds`` (those of the first block to enter, when blocks in several threads overlap);
    both as before when the last block running in the process ends, whether it failed or not."""
    global _passes, _saved
    with _lock:
        _passes += 1
        if _passes == 1:
            _saved = gc.get_threshold()
            # Garbage is not frozen: cycles a block before this one left (its relaxed thresholds
            # let them wait) would otherwise stay in the permanent generation, uncollectable,
            # for the whole of this block (measured: the month-end peak's posting pass held
            # ~140 MB more after a validation run with this collector; docs/performance.md).
            gc.collect()
            gc.freeze()
            gc.set_threshold(*thresholds)
    try:
        yield
    finally:
        with _lock:
            _passes -= 1
            if _passes == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                gc.unfreeze()
                _saved = None
