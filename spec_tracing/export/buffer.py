"""The bounded buffer every span queue after the engine's thread uses: the engine's process's
sender (export/process.py) and the exporter's Writer (export/child.py).

A FIFO of items, each standing for a number of spans (a pickled drain, a chunk of span records).
Its capacity is in spans; an item that does not fit is dropped and counted here, never waited for.
One consumer thread or more `take()` items (blocking) and say when they are `done()` with them;
`wait_empty()` is a drain with a deadline; `close()` wakes every consumer, and from then on what
was queued or is put is counted `lost` and freed. After a fork the owner calls `after_fork()`:
the child starts with an empty, open buffer and a fresh lock (the parent's may have been held by
a thread the child does not have). Tested on its own in tests/export/test_buffer.py.

The hot-path deque (record/recorder.py) is not one of these: its producer is the engine's
thread, which appends without a lock or a notify (the hot-path contract), and its bound is in
events, not spans.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


class SpanBuffer:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.after_fork()

    def after_fork(self) -> None:
        """Empty and open, with new locks, and counts from zero (also the initial state)."""
        self.cond = threading.Condition()
        self.items: deque = deque()  # (item, spans)
        self.queued = 0  # spans waiting
        self.in_flight = 0  # spans taken and not yet done
        self.dropped = 0  # spans refused: they did not fit
        self.lost = 0  # spans put after close(), or still queued when it ran
        self.closed = False

    def room(self) -> int:
        """Spans that fit now (read without the lock: only a hint for the producer)."""
        return self.capacity - self.queued

    def put(self, item: Any, spans: int, bounded: bool = True) -> bool:
        """Queue `item`; False (and counted) when it does not fit or the buffer is closed.
        `bounded=False` for control messages, which stand for no span and are never dropped."""
        with self.cond:
            if self.closed:
                self.lost += spans
                return False
            if bounded and self.queued + spans > self.capacity:
                self.dropped += spans
                return False
            self.items.append((item, spans))
            self.queued += spans
            self.cond.notify()
            return True

    def take(self, max_spans: int = 0) -> list:
        """Wait for items; the oldest one, and the next ones while their spans add up to at most
        `max_spans`, as [(item, spans)], now in flight. [] once the buffer is closed."""
        with self.cond:
            while not self.items and not self.closed:
                self.cond.wait()
            if self.closed:
                return []
            taken, count = [], 0
            items = self.items
            while items and (not taken or count + items[0][1] <= max_spans):
                item = items.popleft()
                taken.append(item)
                count += item[1]
            self.queued -= count
            self.in_flight += count
            return taken

    def done(self, spans: int) -> None:
        """The consumer is through with `spans` it took (whatever became of them)."""
        with self.cond:
            self.in_flight -= spans
            self.cond.notify_all()

    def wait_empty(self, timeout_s: float) -> bool:
        """True once nothing is queued or in flight; False if that took past `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while self.items or self.in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def close(self) -> None:
        """Wake every consumer and stop taking: what is queued is counted lost and freed (what is
        in flight is its consumer's to finish)."""
        with self.cond:
            self.closed = True
            self.lost += self.queued
            self.items.clear()
            self.queued = 0
            self.cond.notify_all()
