"""The exporter process, parent half: start it, feed it, supervise it.

Creating SDK spans and encoding OTLP costs ~25-30 us per span; done on a thread of the engine's
process it steals the engine's interpreter lock. So when spec-tracing builds the exporter itself
(SPEC_TRACING_EXPORT_PROCESS, on by default), the recorder's thread only turns events into
compact events and pickles each drained batch; a sender thread writes it down a pipe to this
process (`python -m spec_tracing.pipeline`, pipeline/serve.py), which computes the per-request
signals and metrics, builds, encodes and exports the spans.

- Never blocks the recorder: the sender thread alone waits on the pipe, and batches waiting for
  it are bounded (SPEC_TRACING_EXPORT_QUEUE_SPANS); past that they are dropped and counted. So a
  stalled exporter process cannot pin the engine's request objects (they leave the engine's
  buffer at every drain) nor grow the engine's memory without bound.
- Accounts for every span handed to it: offered = exported + dropped + failed + lost, where
  lost is what a dead exporter process had not reported on, and what was refused while none ran.
- Supervised: a dead exporter process (OOM killer, SIGKILL) is replaced at the next drain, with a
  backoff (0.5 s doubling to 30 s) so a process that dies at start cannot spin.

The child is started with `python -m` (not multiprocessing), so the application's main module is
never re-imported and needs no `__main__` guard. It is started detached (__main__.py forks
once): its own session, so a terminal's Ctrl-C does not kill it before the engine flushed, and
not a descendant, so an engine that kills its process tree at shutdown (SGLang) does not kill it
with the last spans. It exits when the pipe closes.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection

from ..ledger import REPORTED_BY_EXPORTER
from ..threadname import name_this_thread
from ..wire import (
    END,
    ENGINE_COUNTS,
    FINISH,
    FLUSH,
    FLUSHED,
    SETTINGS,
    SLICE,
    STOP,
    STOPPED,
    compact_span_count,
)  # fmt: skip
from .buffer import SpanBuffer

logger = logging.getLogger(__name__)

_BACKOFF_S = (0.5, 30.0)
# The child's names for what it reports on each span it was sent (ledger.py's outcomes).
_REPORTED = tuple(
    "exported_spans" if k == "spans" else k.removeprefix("export_") for k in REPORTED_BY_EXPORTER
)
_PIPE_ENDED = select.POLLHUP | select.POLLERR | select.POLLNVAL


def span_count(events: list) -> int:
    """Spans a list of compact events will make."""
    return sum(map(compact_span_count, events))


def fit(events: list, room: int) -> tuple[list, int]:
    """The events to send when their spans exceed `room`, and the spans left out: roots first,
    then steps in order while they fit. A step that does not fit is still sent, made to make
    no span: its requests' acceptance and times still count (on their roots and in the metrics)
    (tests/export/test_resilience.py::test_a_drain_larger_than_the_queue_keeps_roots_first)."""
    roots_room = room
    room -= min(room, sum(event[4][0] for event in events if event[0] == FINISH))
    keep, dropped = [], 0
    for event in events:
        kind = event[0]
        if kind == FINISH and event[4][0]:
            if not roots_room:
                dropped += 1
                continue
            roots_room -= 1
        elif kind == END or kind == SLICE:
            n = compact_span_count(event)
            if n > room:
                dropped += n
                event = _without_spans(event)
            else:
                room -= n
        keep.append(event)
    return keep, dropped


def _without_spans(event: tuple) -> tuple:
    """A stage event whose requests all count as not sampled (no span; its counts kept)."""
    at = 5 if event[0] == SLICE else 4
    flags = event[at]
    flags = (
        tuple([(False, base) for _, base in flags]) if flags else ((False, 1),) * len(event[at - 1])
    )
    return event[:at] + (flags,) + event[at + 1 :]


class ExportProcess:
    """One exporter process: `deliver(events)`, `flush(timeout)`, `shutdown(timeout)`, and the
    counts it reported."""

    def __init__(
        self, settings, version: str, queue_spans: int, resource_attributes=None, environment=None,
        metrics: dict | None = None,
    ):  # fmt: skip
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = {**os.environ, **(environment or {})}
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, *env.get("PYTHONPATH", "").split(os.pathsep))
            if p and not _auto_instrumentation(p)
        )  # fmt: skip
        try:
            engine_stdout = [os.dup(1)]  # the exporter's stdout (console, /dev/stdout)
        except OSError:  # the engine has no stdout: the exporter gets /dev/null
            engine_stdout = []
        launcher = subprocess.Popen(
            [sys.executable, "-m", "spec_tracing.pipeline", str(to_child_r), str(from_child_w),
             *map(str, engine_stdout)],
            pass_fds=(to_child_r, from_child_w, *engine_stdout),
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        for fd in (to_child_r, from_child_w, *engine_stdout):
            os.close(fd)
        try:
            pid = int(launcher.stdout.readline() or 0)
        finally:
            launcher.stdout.close()
            launcher.wait()
        self._proc = _Detached(pid)
        _LIVE.add(self)
        self.started = time.monotonic()
        self._out = Connection(to_child_w, readable=False)
        self._in = Connection(from_child_r, writable=False)
        # Connection.poll builds a selector per call (~80 us on the recorder's thread at every
        # drain); one poll object registered once answers the same question in one syscall.
        self._poller = select.poll()
        self._poller.register(from_child_r, select.POLLIN)
        self._pipe_ended = False  # the child's end closed: it exited, or is exiting
        self._next_liveness_check = 0.0
        self._read_lock = threading.Lock()
        self.counts: dict = {}  # exported/dropped/failed spans, as last reported by the child
        self.sent_spans = 0  # spans in batches written to the pipe
        self._refused_spans = 0  # left out of a drain here: did not fit, or not picklable
        self._send_failed_spans = 0  # in the batch whose write failed (the child is gone)
        # Set once shutdown or kill has ended the child: from then on, spans it never reported
        # on (unaccounted) were not exported, and are counted as lost.
        self.finished = False
        # Pickled drains waiting for the sender thread, bounded in spans.
        self._buffer = SpanBuffer(queue_spans)
        self._sender = threading.Thread(
            target=self._send_loop, name="spec-tracing-send", daemon=True
        )
        self._sender.start()
        attrs = dict(resource_attributes or {})
        self._sent_counts: dict | None = None
        self._request_id = 0  # flush and stop carry one; their reply names it (wire.py)
        message = (SETTINGS, settings, version, attrs, metrics)
        self._buffer.put(pickle.dumps(message), 0, bounded=False)

    # --- the sender thread: the only one that may block on the pipe ---------------------------

    def _send_loop(self) -> None:
        name_this_thread()
        while True:
            taken = self._buffer.take()  # a drain, and the control messages right behind it
            if not taken:  # closed
                return
            sent = 0
            failed = False
            for payload, spans in taken:
                try:
                    self._out.send_bytes(payload)
                except Exception:  # the pipe is gone or was closed under us (shutdown, kill)
                    failed = True
                    break
                sent += spans
            total = sum([spans for _, spans in taken])
            with self._buffer.cond:  # counted before done(): a drained sender has counted all
                self.sent_spans += sent
                if failed:
                    self._send_failed_spans += total - sent
                    self._buffer.close()  # what waits is counted lost (unsent) there
                self._buffer.done(total)

    @property
    def dropped_spans(self) -> int:
        """Spans refused in this process: past the bound of what waits for the pipe."""
        return self._refused_spans + self._buffer.dropped

    @property
    def unsent_spans(self) -> int:
        """Spans in batches the pipe refused or that waited when it closed (the child is gone
        or was shut down)."""
        return self._send_failed_spans + self._buffer.lost

    # --- the recorder's side ------------------------------------------------------------------

    def deliver(self, events: list, engine_counts: dict | None = None) -> None:
        if engine_counts and engine_counts != self._sent_counts:
            # This process's part of the ledger, for the exporter process's metric counters.
            self._sent_counts = dict(engine_counts)
            self._buffer.put(pickle.dumps((ENGINE_COUNTS, self._sent_counts)), 0, bounded=False)
        spans = span_count(events)
        room = self._buffer.room()  # only this thread adds spans to it
        if spans > room:  # keep what fits, roots first, rather than nothing
            events, dropped = fit(events, max(room, 0))
            self._refused_spans += dropped
            spans -= dropped
        try:
            payload = pickle.dumps(events, pickle.HIGHEST_PROTOCOL)
        except Exception:  # one unpicklable value must not cost the whole drain
            keep = []
            for event in events:
                try:
                    pickle.dumps(event)
                    keep.append(event)
                except Exception:
                    self._refused_spans += compact_span_count(event)
            spans, payload = span_count(keep), pickle.dumps(keep, pickle.HIGHEST_PROTOCOL)
        self._buffer.put(payload, spans)
        self._read_updates(0.0)

    def _read_updates(self, timeout_s: float, until: tuple | None = None) -> tuple | None:
        """Take the child's messages: count updates it sends on its own, and (with `until`,
        (reply kind, request id)) the reply to that request, waiting up to `timeout_s` for it.
        A late reply to an earlier request is read and ignored."""
        deadline = time.monotonic() + timeout_s
        if not self._read_lock.acquire(timeout=max(timeout_s, 0.0)):
            return None
        try:
            while self._readable(max(0.0, deadline - time.monotonic())):
                message = self._in.recv()
                self.counts = message[1]
                if until is not None and (message[0], message[3]) == until:
                    return message
                if until is None and not self._readable(0.0):
                    return None
        except (OSError, EOFError, ValueError):
            self._pipe_ended = True
        finally:
            self._read_lock.release()
        return None

    def _readable(self, timeout_s: float) -> bool:
        # POLLHUP (the child's end closed) is reported too: recv then raises EOFError.
        return bool(self._poller.poll(math.ceil(timeout_s * 1000)))

    def _next_id(self) -> int:
        self._request_id += 1
        return self._request_id

    def flush(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        ms, request = int(timeout_s * 1000), self._next_id()
        if not self._buffer.put(pickle.dumps((FLUSH, ms, request)), 0, bounded=False):
            return False
        left = max(0.0, deadline - time.monotonic())
        reply = self._read_updates(left, until=(FLUSHED, request))
        return bool(reply and reply[2])

    def shutdown(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        request = self._next_id()
        stop = pickle.dumps((STOP, int(timeout_s * 1000), request))
        if self._buffer.put(stop, 0, bounded=False):
            left = max(0.0, deadline - time.monotonic())
            self._read_updates(left, until=(STOPPED, request))
        self._close()
        try:
            self._proc.wait(timeout=max(deadline - time.monotonic(), 0.05))
        except subprocess.TimeoutExpired:
            self.kill()
        self.finished = True

    def _close(self) -> None:
        self._buffer.close()  # what waited to be sent is counted unsent
        for conn in (self._out, self._in):
            try:
                conn.close()
            except OSError:
                pass

    def _after_fork_in_child(self) -> None:
        # Right after fork, in the child: its copies of the pipe ends are closed at once. A
        # forked worker that never traces otherwise held the write end open, and a detached
        # exporter whose engine was SIGKILLed never saw the pipe end and never exited. The
        # buffer is new too: the parent's sender thread may have held its lock at the fork.
        self._buffer.after_fork()
        self._buffer.close()
        for conn in (self._out, self._in):
            try:
                conn.close()
            except OSError:
                pass

    def abandon(self) -> None:
        """In a forked child: let go of the parent's pipe ends without a word to its process
        (the counts go with this object, which the child replaces)."""
        self._close()

    def kill(self) -> None:
        self._proc.kill()
        self._close()  # what waited to be sent is counted unsent now
        self.finished = True

    def alive(self) -> bool:
        """Asked at every drain. The process table is read (~20-200 us for /proc) at most once
        a second while the pipe is whole; a child that dies closes its end of the pipe, which
        one poll() shows at once (POLLHUP)."""
        if not self._pipe_ended:
            for _, mask in self._poller.poll(0):
                if mask & _PIPE_ENDED:
                    self._pipe_ended = True
        now = time.monotonic()
        if not (self._buffer.closed or self._pipe_ended) and now < self._next_liveness_check:
            return True
        self._next_liveness_check = now + 1.0
        return self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def unaccounted(self) -> int:
        """Spans sent that the child never reported on (lost if it is gone)."""
        reported = sum(self.counts.get(key, 0) for key in _REPORTED)
        return max(0, self.sent_spans - reported)

    @property
    def spans(self) -> int:
        return self.counts.get("exported_spans", 0)

    @property
    def pid(self) -> int:
        return self._proc.pid


class _Detached:
    """The exporter process, which is not our child (see __main__.py): liveness from /proc,
    not from wait()."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None if pid else -1

    def poll(self) -> int | None:
        if self.returncode is None and not _running(self.pid):
            self.returncode = -1  # not ours to reap: the code is unknown
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired("spec_tracing.pipeline", timeout)
            time.sleep(0.01)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")  # a zombie waiting for init to reap it is gone
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def _auto_instrumentation(path: str) -> bool:
    """opentelemetry-instrument's sitecustomize folder: on the exporter's PYTHONPATH it ran
    every installed instrumentor in the exporter process (spec-tracing's among them: a second
    exporter process, 6.1 s to start instead of 0.3 s)."""
    return os.path.normpath(path).endswith(
        os.path.join("opentelemetry", "instrumentation", "auto_instrumentation")
    )


_LIVE: weakref.WeakSet = weakref.WeakSet()  # this process's ExportProcess objects


def _close_inherited() -> None:
    for process in list(_LIVE):
        process._after_fork_in_child()
    _LIVE.clear()


os.register_at_fork(after_in_child=_close_inherited)
