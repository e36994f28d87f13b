"""The exporter process: builds SDK spans and exports them away from the engine's GIL.

Creating SDK spans and encoding OTLP costs ~25-30 us per span; done on a thread of the engine's
process it steals the engine's interpreter lock. So when spec-tracing builds the exporter itself
(SPEC_TRACING_EXPORT_PROCESS=auto, the default), the recorder's thread only turns events into
compact span records and pickles each drained batch down a pipe to this process, which owns the
TracerProvider, its BatchSpanProcessor and the exporter.

The child is started with `python -m spec_tracing.exporter_child` (not multiprocessing), so the
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
                "spec_tracing.exporter_child",
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
        self.spans = 0  # as last reported by the child
        self.lost_batches = 0
        self._send(("settings", settings, version))

    def _send(self, message) -> bool:
        try:
            with self._lock:
                self._out.send(message)
            return True
        except (OSError, EOFError, ValueError):
            self.lost_batches += 1
            return False

    def deliver(self, records: list) -> None:
        # May block while the pipe is full: only the recorder's thread waits, the engine's
        # thread keeps appending to the bounded buffer (which drops and counts when full).
        self._send(records)

    def _request(self, message, timeout_s: float) -> tuple | None:
        if not self._send(message):
            return None
        try:
            if self._in.poll(max(timeout_s, 0.0)):
                reply = self._in.recv()
                self.spans = reply[1]
                return reply
        except (OSError, EOFError):
            pass
        return None

    def flush(self, timeout_s: float) -> bool:
        reply = self._request(("flush", int(timeout_s * 1000)), timeout_s)
        return bool(reply and reply[2])

    def shutdown(self, timeout_s: float) -> None:
        self._request(("stop", int(timeout_s * 1000)), timeout_s)
        for conn in (self._out, self._in):
            conn.close()
        try:
            self._proc.wait(timeout=max(timeout_s, 0.1))
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    @property
    def pid(self) -> int:
        return self._proc.pid


def serve(conn_in: Connection, conn_out: Connection) -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from .exporters import build_span_exporter
    from .spans import SpanSink

    _, settings, version = conn_in.recv()
    provider = TracerProvider(resource=Resource.create())
    exporter = build_span_exporter(settings)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    sink = SpanSink(provider, version)
    try:
        while True:
            try:
                message = conn_in.recv()
            except EOFError:  # the engine's process is gone
                break
            if isinstance(message, list):
                try:
                    sink.write(message)
                except Exception:
                    logger.warning("spec-tracing exporter: bad span records", exc_info=True)
            elif message[0] == "flush":
                ok = provider.force_flush(message[1])
                conn_out.send(("flushed", sink.spans, ok))
            elif message[0] == "stop":
                ok = provider.force_flush(message[1])
                conn_out.send(("stopped", sink.spans, ok))
                break
    finally:
        provider.shutdown()
