"""Where span records go: an SDK provider in this process, or the exporter process.

Both have the same shape: deliver(compact events), flush(timeout_s), shutdown(timeout_s), `spans`
(spans made so far) and `sink` (a SpanSink whose sampler decides per request).
"""

from __future__ import annotations

import os

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from ..settings import Settings
from .assembler import SpanAssembler
from .exporters import build_span_exporter, check_span_exporter
from .process import ExportProcess
from .sdk_spans import SpanSink


class InProcessOutput:
    """Spans made on the recorder's thread and handed to `provider`'s processors."""

    def __init__(self, provider: TracerProvider, owned: bool, version: str):
        self.provider = provider
        self.owned = owned
        self.sink = SpanSink(provider, version)
        self.assembler = SpanAssembler()

    def deliver(self, events: list) -> None:
        self.sink.write(self.assembler.feed(events))

    @property
    def spans(self) -> int:
        return self.sink.spans

    @property
    def export_counts(self) -> dict:
        return {"unmatched_ends": self.assembler.unmatched}

    def flush(self, timeout_s: float) -> bool:
        return self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self, timeout_s: float) -> None:
        self.provider.force_flush(int(timeout_s * 1000))
        if self.owned:
            self.provider.shutdown()


class ProcessOutput:
    """Spans made and exported by a child process; sampling decided here with the same
    sampler configuration (OTEL_TRACES_SAMPLER*) the child's provider has."""

    provider = None

    def __init__(self, settings: Settings, version: str):
        check_span_exporter(settings)
        self.settings, self.version = settings, version
        self.sink = SpanSink(TracerProvider(resource=Resource.get_empty()), version)
        self.process = ExportProcess(settings, version)
        self.pid = os.getpid()

    def deliver(self, events: list) -> None:
        if os.getpid() != self.pid:  # forked: the pipe and the process are the parent's
            self.process.abandon()
            self.process = ExportProcess(self.settings, self.version)
            self.pid = os.getpid()
        self.process.deliver(events)

    @property
    def spans(self) -> int:
        return self.process.spans

    @property
    def export_counts(self) -> dict:
        counts = self.process.counts
        return {
            "export_dropped_spans": counts.get("dropped_spans", 0),
            "export_failed_spans": counts.get("failed_spans", 0),
            "unmatched_ends": counts.get("unmatched_ends", 0),
        }

    def flush(self, timeout_s: float) -> bool:
        return self.process.flush(timeout_s)

    def shutdown(self, timeout_s: float) -> None:
        self.process.shutdown(timeout_s)


def build_output(settings: Settings, tracer_provider, span_exporter, version: str):
    """The output enable() asked for, in order of preference: `tracer_provider`; a
    `span_exporter` on a provider of our own; the application's global SDK TracerProvider;
    else the exporter SPEC_TRACING_EXPORTER names, in the exporter process unless
    SPEC_TRACING_EXPORT_PROCESS=off."""
    from opentelemetry import trace

    if tracer_provider is not None:
        return InProcessOutput(tracer_provider, False, version)
    if span_exporter is None:
        existing = trace.get_tracer_provider()
        if isinstance(existing, TracerProvider):
            return InProcessOutput(existing, False, version)
        if settings.export_process and settings.exporter != "none":
            return ProcessOutput(settings, version)
        span_exporter = build_span_exporter(settings)
    provider = TracerProvider(resource=Resource.create())
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    return InProcessOutput(provider, True, version)
