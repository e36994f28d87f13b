"""Trace and span ids from a generator of our own.

Engines seed the global `random` for reproducible sampling (`random.seed(0)` in two processes gave
both the same traceparents), so ids never come from it. The generator is seeded from the OS and
seeded again in a forked child, which would otherwise repeat its parent's ids."""

from __future__ import annotations

import os
import random

_rng = random.Random()  # seeded from os.urandom
os.register_at_fork(after_in_child=_rng.seed)

getrandbits = _rng.getrandbits
randbytes = _rng.randbytes


def random_id(bits: int) -> int:
    """A non-zero id of `bits` bits (0 is OpenTelemetry's invalid id)."""
    value = 0
    while value == 0:
        value = _rng.getrandbits(bits)
    return value
