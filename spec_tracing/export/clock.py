"""perf_counter seconds -> epoch nanoseconds.

Engines stamp stages with time.perf_counter() (monotonic, cheap, high resolution); OTLP wants
Unix epoch nanoseconds. The offset is measured once per process, taking the tightest of a few
samples; on Linux perf_counter is CLOCK_MONOTONIC, shared by all processes, so stamps taken in one
process convert correctly in another.
"""

from __future__ import annotations

import os
import time


def _measure_offset_ns() -> int:
    best = None
    for _ in range(5):
        a = time.perf_counter_ns()
        wall = time.time_ns()
        b = time.perf_counter_ns()
        if best is None or b - a < best[0]:
            best = (b - a, wall - (a + b) // 2)
    return best[1]


_offset_ns = _measure_offset_ns()


def to_epoch_ns(ts: float) -> int:
    """A time.perf_counter() reading as Unix epoch nanoseconds."""
    return int(ts * 1e9) + _offset_ns


def clock_offset_ns() -> int:
    """to_epoch_ns(ts) == int(ts * 1e9) + clock_offset_ns(), for loops that inline it."""
    return _offset_ns


def _remeasure() -> None:
    global _offset_ns
    _offset_ns = _measure_offset_ns()


os.register_at_fork(after_in_child=_remeasure)
