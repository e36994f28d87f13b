"""The bounded buffer between the engine's thread and the span materializer.

Shape taken from the SDK's BatchSpanProcessor: producers append to a bounded deque (hotpath.py
does that inline), a daemon thread drains it every interval or once DRAIN_AT_EVENTS wait (the
SDK's max_export_batch_size plays that part there), a full buffer drops and counts, flush and
shutdown take timeouts, and a forked child starts with an empty buffer and a new thread. The
producer takes no lock and notifies only at the mark: waking a thread per append would cost
more than the append itself.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable

from ..threadname import name_this_thread
from . import hotpath

logger = logging.getLogger(__name__)

# When the thread drains: every interval (SPEC_TRACING_DRAIN_INTERVAL_MS), on drain_soon(), or
# when the hot path's append makes DRAIN_AT_EVENTS wait, whichever comes first, and never twice
# within MIN_DRAIN_GAP_S. Each wake of the thread has a fixed cost in the engine's process
# (benchmark 3b: waking every 50 ms to look cost as much as draining every 250 ms), so a quiet
# engine's drains are rare; a busy one's are bounded in events, so one drain never outgrows the
# exporter's queue (benchmark 4). An engine that ends a request in nearly every step asks for a
# drain every step (tests/record/test_recorder.py::test_drain_soon_is_rate_limited,
# ::test_a_filling_buffer_is_drained_before_the_interval).
MIN_DRAIN_GAP_S = 0.05
DRAIN_AT_EVENTS = 512


class Recorder:
    """Owns the hot-path deque and the thread that hands its events, a drained batch at a
    time, to `consume`."""

    def __init__(
        self, consume: Callable[[list], None], capacity: int, level: int, interval_s: float
    ):
        self._consume = consume
        self.interval_s = interval_s
        self.capacity = capacity
        self.level = level
        self.consumer_errors = 0
        self.undrained = 0  # events still buffered when shutdown() ran out of time
        self._lock = threading.Lock()  # one drainer at a time: the thread or a flush()
        self._wake = threading.Event()
        self._stopped = False
        self._start()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (r := ref()) and r._after_fork())

    def _start(self) -> None:
        self.queue: deque = deque()
        hotpath._activate(self.queue, self.capacity, self.level, DRAIN_AT_EVENTS, self._wake.set)
        self._thread = threading.Thread(target=self._run, name="spec-tracing-recorder", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        # The parent's events are the parent's to export; the lock may be held by a thread
        # that does not exist here.
        if self._stopped:
            return
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._start()

    def _run(self) -> None:
        name_this_thread()
        while not self._stopped:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            with self._lock:
                self._drain()
            if not self._stopped:
                time.sleep(min(MIN_DRAIN_GAP_S, self.interval_s))

    def _drain(self) -> None:
        queue = self.queue
        while queue:
            events = [queue.popleft() for _ in range(len(queue))]
            try:
                self._consume(events)
            except Exception:  # never let one bad batch stop the thread
                self.consumer_errors += 1
                if self.consumer_errors == 1:
                    logger.warning(
                        "spec-tracing: events could not be turned into spans; "
                        "further failures are counted, not logged",
                        exc_info=True,
                    )

    def drain_soon(self) -> None:
        """Drain now rather than at the next interval, without waiting for it (an Event.set:
        safe on the engine's thread). For engines whose processes can be killed right after a
        request ends: its root leaves this process within MIN_DRAIN_GAP_S, not at the next
        interval."""
        self._wake.set()

    def flush(self, timeout_s: float) -> bool:
        """Materialize everything recorded so far; False if the consumer was busy past timeout."""
        if not self._lock.acquire(timeout=max(timeout_s, 0.0)):
            return False
        try:
            self._drain()
        finally:
            self._lock.release()
        return True

    def abandon(self, wait_s: float) -> None:
        """Shutdown ran out of time: the events still buffered are materialized on the caller's
        thread if the drain lock comes within `wait_s` (their spans then reach the output, which
        counts them), else counted in `undrained`; either way stats() has them when this
        returns (tests/test_ledger.py::test_shutdown_without_waiting_accounts_every_span)."""
        hotpath._deactivate()
        self._stopped = True
        if not self.flush(wait_s):
            self.undrained = len(self.queue)
            self.queue.clear()

    def shutdown(self, timeout_s: float) -> bool:
        """Stop recording, drain what is buffered, stop the thread. What the consumer could not
        take in time is counted in `undrained`: it becomes no span."""
        hotpath._deactivate()
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout_s)
        drained = self.flush(timeout_s)
        if not drained:
            self.undrained = len(self.queue)
        return drained
