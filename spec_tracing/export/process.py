"""The exporter process: builds SDK spans and exports them away from the engine's GIL.

Creating SDK spans and encoding OTLP costs ~25-30 us per span; done on a thread of the engine's
process it steals the engine's interpreter lock. So when spec-tracing builds the exporter itself
(SPEC_TRACING_EXPORT_PROCESS=auto, the default), the recorder's thread only turns events into
compact events and pickles each drained batch down a pipe to this process, which owns the
TracerProvider, its BatchSpanProcessor and the exporter.

The child is started with `python -m spec_tracing.export` (not multiprocessing), so the
application's main module is never re-imported and needs no `__main__` guard. It runs in its own
session (a terminal's Ctrl-C does not kill it before the parent flushed) and exits when the pipe
closes, so it never outlives the engine.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection

logger = logging.getLogger(__name__)


class ExportProcess:
    """Parent side: `deliver(records)`, `flush(timeout)`, `shutdown(timeout)`."""

    def __init__(self, settings, version: str):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spec_tracing.export",
                str(to_child_r),
                str(from_child_w),
            ],
            pass_fds=(to_child_r, from_child_w),
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._out = Connection(to_child_w, readable=False)
        self._in = Connection(from_child_r, writable=False)
        self._lock = threading.Lock()
        self.counts: dict = {}  # exported/dropped/failed spans, as last reported by the child
        self.lost_batches = 0  # record batches the pipe refused (the child is gone)
        self._send(("settings", settings, version))

    def _send(self, message) -> bool:
        try:
            with self._lock:
                self._out.send(message)
            return True
        except (OSError, EOFError, ValueError):
            self.lost_batches += 1
            return False

    def deliver(self, events: list) -> None:
        # May block while the pipe is full: only the recorder's thread waits, the engine's
        # thread keeps appending to the bounded buffer (which drops and counts when full).
        self._send(events)
        self._read_updates(0.0)

    def _read_updates(self, timeout_s: float, until: str | None = None) -> tuple | None:
        """Take the child's messages: count updates it sends on its own, and (with `until`)
        the reply to a request, waiting up to `timeout_s` for it."""
        deadline = time.monotonic() + timeout_s
        try:
            while self._in.poll(max(0.0, deadline - time.monotonic())):
                message = self._in.recv()
                self.counts = message[1]
                if until is not None and message[0] == until:
                    return message
                if until is None and not self._in.poll(0):
                    return None
        except (OSError, EOFError):
            pass
        return None

    def flush(self, timeout_s: float) -> bool:
        if not self._send(("flush", int(timeout_s * 1000))):
            return False
        reply = self._read_updates(timeout_s + 0.5, until="flushed")
        return bool(reply and reply[2])

    def shutdown(self, timeout_s: float) -> None:
        if self._send(("stop", int(timeout_s * 1000))):
            self._read_updates(timeout_s + 0.5, until="stopped")
        for conn in (self._out, self._in):
            conn.close()
        try:
            self._proc.wait(timeout=max(timeout_s, 0.1))
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def abandon(self) -> None:
        """In a forked child: let go of the parent's pipe ends without a word to its process."""
        for conn in (self._out, self._in):
            try:
                conn.close()
            except OSError:
                pass

    @property
    def spans(self) -> int:
        return self.counts.get("exported_spans", 0)

    @property
    def pid(self) -> int:
        return self._proc.pid
