"""Switching tracing on and off: provider, exporter, recorder and materializer from Settings."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from . import hotpath
from .exporters import build_span_exporter
from .materializer import Materializer, SpanSink
from .meters import Meters, build_meters
from .metrics import SpecMetrics
from .recorder import Recorder
from .settings import Settings
from .version import __version__

logger = logging.getLogger(__name__)


@dataclass
class _Active:
    settings: Settings
    provider: TracerProvider
    owns_provider: bool
    materializer: Materializer
    recorder: Recorder
    meters: Meters


_active: _Active | None = None
_lock = threading.Lock()


def enable(
    *,
    tracer_provider: TracerProvider | None = None,
    span_exporter: SpanExporter | None = None,
    metric_readers: list | None = None,
    **overrides: Any,
) -> Settings:
    """Switch tracing on and return the settings in force.

    Reads the environment (SPEC_TRACING_*, OTEL_*); keyword arguments naming Settings fields
    (level, exporter, file, queue_size, shutdown_timeout_ms) override it. A bad value raises
    ConfigError before anything changes. Spans go to, in order of preference: `tracer_provider`;
    a `span_exporter` (on a provider of our own); the application's global SDK TracerProvider if
    it installed one; else a provider of our own with the exporter SPEC_TRACING_EXPORTER names.
    Metrics (unless SPEC_TRACING_METRICS=false) go to `metric_readers`, to OTLP when spans do
    (a provider built here from SPEC_TRACING_EXPORTER=otlp), to a Prometheus endpoint when
    SPEC_TRACING_PROMETHEUS_PORT is set, or to the application's SDK MeterProvider.
    Calling enable() again reconfigures (the previous setup is shut down first).
    """
    global _active
    settings = Settings.from_env(**overrides)
    with _lock:
        if _active is not None:
            _shutdown_locked(settings.shutdown_timeout_ms)
        provider, owns = _choose_provider(settings, tracer_provider, span_exporter)
        otlp_metrics = owns and span_exporter is None and settings.exporter == "otlp"
        try:
            meters = build_meters(settings, metric_readers, otlp_metrics)
        except BaseException:
            if owns:
                provider.shutdown()
            raise
        sink = SpanSink(provider, __version__)
        materializer = Materializer(sink)
        if meters.provider is not None:
            materializer.metrics = SpecMetrics(meters.provider, stats)
        hotpath.SINK = sink
        recorder = Recorder(materializer, settings.queue_size, settings.level)
        _active = _Active(settings, provider, owns, materializer, recorder, meters)
    return settings


def _choose_provider(settings, tracer_provider, span_exporter) -> tuple[TracerProvider, bool]:
    if tracer_provider is not None:
        return tracer_provider, False
    if span_exporter is None:
        existing = trace.get_tracer_provider()
        if isinstance(existing, TracerProvider):
            logger.info("spec-tracing: using the application's TracerProvider and its exporters")
            return existing, False
        span_exporter = build_span_exporter(settings)
    provider = TracerProvider(resource=Resource.create())
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    return provider, True


def flush(timeout_ms: int | None = None) -> bool:
    """Turn everything recorded so far into spans and push them through the exporters."""
    active = _active
    if active is None:
        return True
    timeout = active.settings.shutdown_timeout_ms if timeout_ms is None else timeout_ms
    drained = active.recorder.flush(timeout / 1000)
    flushed = active.provider.force_flush(timeout)
    active.meters.flush(timeout)
    return flushed and drained


def shutdown(timeout_ms: int | None = None) -> None:
    """Stop tracing: drain the buffer, flush and (if it is ours) shut down the provider."""
    with _lock:
        if _active is not None:
            _shutdown_locked(
                timeout_ms if timeout_ms is not None else _active.settings.shutdown_timeout_ms
            )


def _shutdown_locked(timeout_ms: int) -> None:
    global _active
    active, _active = _active, None
    hotpath.SINK = None
    active.recorder.shutdown(timeout_ms / 1000)
    active.provider.force_flush(timeout_ms)
    if active.owns_provider:
        active.provider.shutdown()
    active.meters.shutdown(timeout_ms)


def stats() -> dict[str, int]:
    """Counters of the plugin itself: spans made, events dropped (buffer full), invalid events
    (bad input), unmatched stage ends, consumer errors."""
    active = _active
    out = {
        "dropped_events": hotpath.dropped,
        "spans": 0,
        "invalid_events": 0,
        "unmatched_ends": 0,
        "consumer_errors": 0,
    }
    if active is not None:
        m = active.materializer
        out.update(
            spans=m.spans,
            invalid_events=m.invalid,
            unmatched_ends=m.unmatched,
            consumer_errors=active.recorder.consumer_errors,
        )
    return out


def current_settings() -> Settings | None:
    return None if _active is None else _active.settings


def current_provider() -> TracerProvider | None:
    return None if _active is None else _active.provider


def current_meter_provider():
    return None if _active is None else _active.meters.provider
