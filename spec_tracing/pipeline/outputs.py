"""Where the pipeline runs: the exporter process, a thread of this process, or an SDK provider
in this process.

Each has the same shape: deliver(compact events), flush(timeout_s), shutdown(timeout_s), `spans`
(spans made so far), `export_counts` and `sink` (a SpanSink whose sampler decides per request).
"""

from __future__ import annotations

import logging
import os
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from ..export.child import make_writer
from ..export.exporters import check_span_exporter
from ..export.process import _BACKOFF_S, ExportProcess, span_count
from ..export.sdk_spans import SpanSink
from ..settings import Settings
from .build import Pipeline

logger = logging.getLogger(__name__)


class InProcessOutput:
    """Spans made on the recorder's thread and handed to `provider`'s processors."""

    def __init__(
        self, provider: TracerProvider, version: str, settings: Settings | None = None,
        metrics=None,
    ):  # fmt: skip
        self.provider = provider
        self.sink = SpanSink(provider, version)
        self.pipeline = Pipeline(settings, metrics)

    def deliver(self, events: list) -> None:
        self.sink.write(self.pipeline.feed(events))

    @property
    def spans(self) -> int:
        return self.sink.spans

    @property
    def export_counts(self) -> dict:
        return self.pipeline.counts()

    def flush(self, timeout_s: float) -> bool:
        self.sink.write(self.pipeline.flush())
        return self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self, timeout_s: float) -> None:
        # The provider is the application's: flush it, never shut it down.
        self.sink.write(self.pipeline.stop())
        self.provider.force_flush(int(timeout_s * 1000))

    def abandon(self) -> None:
        pass


class ThreadOutput:
    """Spans built and exported on a thread of this process (SPEC_TRACING_EXPORT_PROCESS=false,
    or an exporter given to enable()), through the same bounded Writer the exporter process
    uses, so stats() counts what it drops and what fails (the SDK's BatchSpanProcessor would
    drop past its 2,048-span queue without telling: 37% of a healthy run was lost that way)."""

    provider = None

    def __init__(self, settings: Settings, version: str, exporter=None, metrics=None):
        self.sink = SpanSink(
            TracerProvider(resource=Resource.get_empty(), shutdown_on_exit=False), version
        )
        self.settings, self.version, self.metrics = settings, version, metrics
        self.pipeline = Pipeline(settings, metrics)
        self.owns_exporter = exporter is None  # one given to enable() is the caller's to close
        self.writer = make_writer(settings, version, exporter=exporter)

    def deliver(self, events: list) -> None:
        self.writer.put(self.pipeline.feed(events))

    @property
    def spans(self) -> int:
        return self.writer.accepted

    @property
    def export_counts(self) -> dict:
        return {
            "export_dropped_spans": self.writer.dropped,
            "export_failed_spans": self.writer.failed,
            "export_rejected_spans": self.writer.rejected,
            # Queued or in flight when shutdown's time ran out: in no counter before.
            "export_lost_spans": self.writer.left_unexported,
            **self.pipeline.counts(),
        }

    def after_fork_in_child(self) -> None:
        # The parent's open requests and held steps stay the parent's: this process assembles
        # its own from a new pipeline (tests/export/test_resilience.py, fork with sampling).
        self.pipeline = Pipeline(self.settings, self.metrics)
        self.writer.after_fork_in_child()

    def flush(self, timeout_s: float) -> bool:
        self.writer.put(self.pipeline.flush())
        return self.writer.flush(timeout_s)

    def shutdown(self, timeout_s: float) -> None:
        self.writer.put(self.pipeline.stop())
        self.writer.stop(timeout_s)
        if self.writer.exporter is not None and self.owns_exporter:
            self.writer.exporter.shutdown()

    def abandon(self) -> None:
        """Shutdown ran out of time: what is queued or in flight, and what is delivered from
        here on, is counted lost."""
        self.writer.abandon()


class ProcessOutput:
    """Spans made and exported by a child process, which this object supervises (restarted when
    it dies; fork-aware); sampling decided here with the same sampler configuration
    (OTEL_TRACES_SAMPLER*) the child's provider has."""

    provider = None

    def __init__(
        self, settings: Settings, version: str, resource_attributes=None, environment=None,
        metrics: dict | None = None,
    ):  # fmt: skip
        check_span_exporter(settings)
        # What the exporter process's own meters export ({"otlp": bool}); None: metrics are
        # recorded in this process (readers given to enable(), or the application's provider).
        self.metrics = metrics
        self.engine_counts_source = None  # () -> this process's own counts (lifecycle.py)
        self.resource_attributes, self.environment = resource_attributes, environment
        self.settings, self.version = settings, version
        self.sink = SpanSink(
            TracerProvider(resource=Resource.get_empty(), shutdown_on_exit=False), version
        )
        self._past = dict.fromkeys(_COUNTS, 0)  # totals of exporter processes gone before
        self.restarts = 0
        self._backoff = _BACKOFF_S[0]
        self._next_start = 0.0
        self.process: ExportProcess | None = None
        self.pid = os.getpid()
        self._start()

    def _start(self) -> None:
        self.process = ExportProcess(
            self.settings,
            self.version,
            self.settings.export_queue_spans,
            self.resource_attributes,
            self.environment,
            self.metrics,
        )

    def _retire(self) -> None:
        """Fold a dead process's counts into the totals; what it never reported is lost."""
        old, self.process = self.process, None
        counts = self._counts_of(old)
        counts["export_lost_spans"] += old.unaccounted()
        for key in _COUNTS:
            self._past[key] += counts[key]
        logger.warning(
            "spec-tracing: the exporter process exited (code %s); %d spans it held are counted "
            "as lost; starting a new one",
            old.returncode,
            old.unaccounted(),
        )

    def _ensure_process(self) -> bool:
        if os.getpid() != self.pid:  # forked: the pipe and the process are the parent's
            self.process.abandon()
            self.pid = os.getpid()
            self._past = dict.fromkeys(_COUNTS, 0)
            self._start()
            return True
        if self.process is not None and self.process.alive():
            return True
        if self._abandoned:  # shutdown gave up on it: no replacement
            return False
        if self.process is not None:
            if time.monotonic() - self.process.started > 60:
                self._backoff = _BACKOFF_S[0]  # it had been healthy: no penalty
            self._retire()
        now = time.monotonic()
        if now < self._next_start:
            return False
        self._next_start = now + self._backoff
        self._backoff = min(self._backoff * 2, _BACKOFF_S[1])
        self.restarts += 1  # replacements only: the first start is not one
        self._start()
        if self._abandoned:  # abandon() ran while it started (its kill may have missed it)
            self.process.kill()
            return False
        return True

    _abandoned = False

    def deliver(self, events: list) -> None:
        if not self._abandoned and self._ensure_process():
            self.process.deliver(events, self._engine_part() if self.metrics else None)
        else:  # waiting out the backoff, or abandoned: nothing runs to take them
            self._past["export_lost_spans"] += span_count(events)

    def _engine_part(self) -> dict:
        """What stats() counts in this process (and of exporter processes gone before): the
        exporter process adds its own to it for its metric counters (pipeline/serve.py)."""
        out = {k: self._past[k] for k in _EXPORT_LOSSES}
        out["export_dropped_spans"] += self.process.dropped_spans
        out["export_lost_spans"] += self.process.unsent_spans
        if self.engine_counts_source is not None:
            out.update(self.engine_counts_source())
        return out

    @staticmethod
    def _counts_of(process: ExportProcess | None) -> dict:
        if process is None:
            return dict.fromkeys(_COUNTS, 0)
        c = process.counts
        never_reported = process.unaccounted() if process.finished else 0
        return {
            "export_dropped_spans": c.get("dropped_spans", 0) + process.dropped_spans,
            "export_failed_spans": c.get("failed_spans", 0),
            "export_rejected_spans": c.get("rejected_spans", 0),
            "export_lost_spans": process.unsent_spans + never_reported,
            **{k: c.get(k, 0) for k in _SAMPLING_AND_INPUT},
            "spans": c.get("exported_spans", 0),
        }

    @property
    def spans(self) -> int:
        return self._past["spans"] + self._counts_of(self.process)["spans"]

    @property
    def export_counts(self) -> dict:
        now = self._counts_of(self.process)
        out = {k: self._past[k] + now[k] for k in _COUNTS if k != "spans"}
        out["exporter_restarts"] = self.restarts
        return out

    def flush(self, timeout_s: float) -> bool:
        if self.process is None or os.getpid() != self.pid:
            return False
        return self.process.flush(timeout_s)

    def shutdown(self, timeout_s: float) -> None:
        if self.process is None:
            return
        if os.getpid() != self.pid:  # a forked child never stops its parent's exporter
            self.process.abandon()
            return
        self.process.shutdown(timeout_s)
        lost = self.process.unaccounted()
        if lost:
            logger.warning(
                "spec-tracing: shutdown's time ran out before %d spans were exported (the "
                "collector did not take them in time); counted in stats()['export_lost_spans']",
                lost,
            )

    def abandon(self) -> None:
        """Shutdown ran out of time: stop the exporter process now (it may be stopped or hung);
        what it held, what waits to be sent and what is delivered from here on is counted lost,
        and no replacement is started."""
        self._abandoned = True
        if self.process is not None and os.getpid() == self.pid:
            self.process.kill()


_EXPORT_LOSSES = ("export_dropped_spans", "export_failed_spans", "export_rejected_spans",
                  "export_lost_spans")  # fmt: skip
# Counted by the pipeline, wherever it runs (reported by the exporter process as they are).
_SAMPLING_AND_INPUT = ("unmatched_ends", "limited_attributes", "sampled_out_spans",
                       "steps_kept_requests", "steps_dropped_requests", "steps_refused_requests",
                       "step_sampling_early_decisions", "evicted_requests", "metric_errors",
                       "capped_metric_labels", "prometheus_endpoints_not_served")  # fmt: skip
_COUNTS = ("export_dropped_spans", "export_failed_spans", "export_rejected_spans",
           "export_lost_spans", *_SAMPLING_AND_INPUT, "spans")  # fmt: skip


def build_output(
    settings: Settings, tracer_provider, span_exporter, version: str, like=None,
    metrics=None, remote_metrics: dict | None = None,
):  # fmt: skip
    """The output enable() asked for, in order of preference: `tracer_provider`; a
    `span_exporter` (on a thread here); the application's global SDK TracerProvider;
    else the exporter SPEC_TRACING_EXPORTER names, in the exporter process unless
    SPEC_TRACING_EXPORT_PROCESS=off. `metrics` (SpecMetrics) for a pipeline run here;
    `remote_metrics` for the meters the exporter process builds itself."""
    if like is not None:  # an engine's own exporter, mirrored from our process
        attrs, environment = like
        return ProcessOutput(settings, version, attrs, environment, remote_metrics)
    if tracer_provider is not None:
        return InProcessOutput(tracer_provider, version, settings, metrics)
    if span_exporter is None:
        existing = application_provider()
        if existing is not None:
            return InProcessOutput(existing, version, settings, metrics)
        if runs_in_exporter_process(settings, None, None):
            return ProcessOutput(settings, version, metrics=remote_metrics)
    return ThreadOutput(settings, version, span_exporter, metrics)


def runs_in_exporter_process(settings: Settings, tracer_provider, span_exporter) -> bool:
    """Whether build_output picks the exporter process (an engine's `like` aside)."""
    return (
        tracer_provider is None
        and span_exporter is None
        and application_provider() is None
        and settings.export_process
        and settings.exporter != "none"
    )


def application_provider() -> TracerProvider | None:
    """The SDK TracerProvider the application installed globally, if any."""
    from opentelemetry import trace

    existing = trace.get_tracer_provider()
    return existing if isinstance(existing, TracerProvider) else None
