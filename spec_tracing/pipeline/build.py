"""The pipeline from compact events to span records, built from Settings in one place: signals
(figures and metrics), span assembly with the OTel attribute limits, step sampling. The exporter
process, the in-thread output and the in-process output each run one of these."""

from __future__ import annotations

import threading

from ..export.assembler import SpanAssembler
from ..export.limits import AttributeLimits
from ..export.sampling import StepSampler
from .signals import Signals


class Pipeline:
    def __init__(self, settings=None, metrics=None):
        # feed() runs on the recorder's (or the pipe reader's) thread; flush() and stop() on the
        # caller's.
        self._lock = threading.Lock()
        max_open = settings.max_open_requests if settings is not None else None
        self.signals = Signals(metrics, max_open)
        otel = settings.otel if settings is not None else {}
        self.assembler = SpanAssembler(
            max_open=max_open,
            limits=AttributeLimits.from_otel(otel),
            sampler=StepSampler.from_settings(settings),
        )

    def feed(self, events: list) -> list:
        """Span records (wire.py) for a batch of compact events."""
        with self._lock:
            return self.assembler.feed(self.signals.feed(events))

    def flush(self) -> list:
        """Span records of ended requests that wait on a keep rule's window (sampling.py),
        judged now: a flush exports every request that ended before it."""
        with self._lock:
            return self.assembler.flush()

    def counts(self) -> dict:
        out = self.assembler.counts()
        for key, value in self.signals.counts().items():
            out[key] = out.get(key, 0) + value
        return out

    def stop(self) -> list:
        """The last span records (requests still waiting on a keep rule's window)."""
        with self._lock:
            return self.assembler.stop()
