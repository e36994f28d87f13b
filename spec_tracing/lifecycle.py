"""Switching tracing on and off: span output, metrics, recorder and materializer from Settings."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import settings as _settings

# The SDK reads OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT when imported and raises a bare ValueError on a
# bad value: checked first, so that the error names the variable and what is allowed
# (tests/test_settings.py::test_a_bad_limit_the_sdk_reads_at_import_is_a_config_error).
_settings.check_sdk_import_environment()

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from . import ledger
from .metrics.instruments import SpecMetrics
from .metrics.readers import PROMETHEUS_CLASHES, Meters, build_meters, check_prometheus_host
from .pipeline.build import Pipeline
from .pipeline.outputs import (
    InProcessOutput,
    ProcessOutput,
    ThreadOutput,
    application_provider,
    build_output,
    runs_in_exporter_process,
)
from .pipeline.signals import Signals
from .record import hotpath
from .record.compactor import Materializer
from .record.recorder import Recorder
from .record.request_trace import end_unfinished, forget_inherited
from .settings import Settings
from .version import __version__

logger = logging.getLogger(__name__)


@dataclass
class _Active:
    settings: Settings
    output: InProcessOutput | ProcessOutput | ThreadOutput
    materializer: Materializer
    recorder: Recorder
    meters: Meters
    signals: Signals | None = None  # metrics recorded here for spans assembled elsewhere


_active: _Active | None = None
_lock = threading.Lock()


def enable(
    *,
    tracer_provider: TracerProvider | None = None,
    span_exporter: SpanExporter | None = None,
    metric_readers: list | None = None,
    export_like: tuple[dict, dict] | None = None,
    **overrides: Any,
) -> Settings:
    """Switch tracing on and return the settings in force.

    Reads the environment (SPEC_TRACING_*, OTEL_*); keyword arguments naming Settings fields
    (level, exporter, file, queue_size, export_process, metrics, ...) override it. A bad value
    raises ConfigError before anything changes. Spans go to, in order of preference:
    `tracer_provider`; a `span_exporter` (on a provider of our own); the application's global SDK
    TracerProvider if it installed one; else the exporter SPEC_TRACING_EXPORTER names, run in a
    separate exporter process (SPEC_TRACING_EXPORT_PROCESS).
    Metrics (unless SPEC_TRACING_METRICS=false) go to `metric_readers`, to OTLP when spans do
    (SPEC_TRACING_EXPORTER=otlp and no provider or exporter given), to a Prometheus endpoint when
    SPEC_TRACING_PROMETHEUS_PORT is set, or to the application's SDK MeterProvider.
    `export_like=(resource_attributes, environment)`, for engine integrations: export from
    spec-tracing's exporter process as the engine's own OTLP exporter does (its resource
    attributes, OTEL_* values in `environment`), so spans join the engine's service without
    being built on the engine's threads.
    Calling enable() again reconfigures (the previous setup is shut down first); requests in
    flight stay open and end through the new setup.
    """
    global _active
    settings = Settings.from_env(**overrides)
    with _lock:
        if _active is not None:
            # Reconfigure: requests in flight stay open and end through the new setup.
            _shutdown_locked(settings.shutdown_timeout_ms, end_open=False)
        PROMETHEUS_CLASHES[0] = 0  # stats() counts from this enable()
        in_exporter = export_like is not None or runs_in_exporter_process(
            settings, tracer_provider, span_exporter
        )
        # The metric instruments live where the pipeline runs, the exporter process when that
        # is where spans go, unless their readers are this process's objects (given to
        # enable(), or the application's MeterProvider): then they are recorded here.
        remote = (
            in_exporter and settings.metrics and not metric_readers
            and not _application_meter_provider()
        )  # fmt: skip
        remote_metrics = None
        if remote:
            check_prometheus_host(settings)  # a ConfigError here, not a warning over there
            # OTLP metrics next to OTLP spans, unless an engine's own exporter is mirrored
            # (the engine has its own metrics).
            remote_metrics = {"otlp": export_like is None and settings.exporter == "otlp"}
            meters = Meters()
        else:
            own_exporter = (
                tracer_provider is None
                and span_exporter is None
                and export_like is None  # the engine has its own metrics
                and application_provider() is None
            )
            meters = build_meters(
                settings, metric_readers, own_exporter and settings.exporter == "otlp"
            )
        spec_metrics = None
        if meters.provider is not None:
            spec_metrics = SpecMetrics.for_provider(meters.provider, stats)
        try:
            output = build_output(
                settings, tracer_provider, span_exporter, __version__, export_like,
                metrics=spec_metrics, remote_metrics=remote_metrics,
            )  # fmt: skip
        except BaseException:
            meters.shutdown(0)
            raise
        hotpath.invalid = hotpath.dropped = hotpath.dropped_finishes = 0  # stats() from here
        deliver, signals = output.deliver, None
        if isinstance(output, ProcessOutput) and spec_metrics is not None:
            # Spans are assembled in the exporter process, metrics recorded here.
            signals = Signals(spec_metrics, settings.max_open_requests)
            deliver = _observing(signals, output.deliver)
        materializer = Materializer(
            deliver, metrics=remote or spec_metrics is not None, level=settings.level
        )
        if isinstance(output, ProcessOutput):
            output.engine_counts_source = lambda: _engine_counts(materializer)
        hotpath.SINK = output.sink
        recorder = Recorder(
            materializer, settings.queue_size, settings.level, settings.drain_interval_ms / 1000
        )
        _active = _Active(settings, output, materializer, recorder, meters, signals)
    _register_worker_exit()
    return settings


def _application_meter_provider() -> bool:
    from opentelemetry import metrics as metrics_api
    from opentelemetry.sdk.metrics import MeterProvider

    return isinstance(metrics_api.get_meter_provider(), MeterProvider)


def _observing(signals: Signals, deliver):
    return lambda events: deliver(signals.observe(events))


def _engine_counts(materializer: Materializer) -> dict:
    """This process's own counts, for the exporter process's metric counters."""
    return {
        "dropped_events": hotpath.dropped,
        "dropped_finishes": hotpath.dropped_finishes,
        "invalid_events": hotpath.invalid + materializer.invalid,
    }


def _timeout_s(timeout_ms: int | None) -> float:
    active = _active
    ms = timeout_ms if timeout_ms is not None else active.settings.shutdown_timeout_ms
    return ms / 1000


class _Deadline:
    """One time budget shared by every step of a flush or shutdown (each step gets what is
    left, not the whole budget again)."""

    def __init__(self, timeout_s: float):
        self.end = time.monotonic() + max(timeout_s, 0.0)

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def left_ms(self) -> int:
        return int(self.left() * 1000)


def _bounded(work, timeout_s: float, what: str) -> bool:
    """Run `work` on a daemon thread and wait for it at most timeout_s (+0.25 s): whatever an
    exporter, a collector or a stopped exporter process does, the caller gets its thread back in
    time. False if it did not finish (it goes on in the background while the process lives)."""
    done = threading.Event()

    def run() -> None:
        try:
            work()
        except Exception:
            logger.debug("spec-tracing: %s failed", what, exc_info=True)
        finally:
            done.set()

    try:
        threading.Thread(target=run, name=f"spec-tracing-{what}", daemon=True).start()
    except RuntimeError:  # no new threads this late in interpreter shutdown: do it here
        run()
    if not done.wait(timeout_s + 0.25 if timeout_s > 0 else 0.0):
        if timeout_s > 0:
            logger.warning(
                "spec-tracing: %s did not finish within %.0f ms; gave up waiting "
                "(what was not exported is counted in stats())",
                what,
                timeout_s * 1000,
            )
        return False
    return True


def flush(timeout_ms: int | None = None) -> bool:
    """Turn everything recorded so far into spans and push them through the exporters. Returns
    within `timeout_ms` (default SPEC_TRACING_SHUTDOWN_TIMEOUT_MS) + 0.25 s; False if that was
    not enough. A timeout of 0 starts the flush and does not wait for it."""
    active = _active
    if active is None:
        return True
    timeout = _timeout_s(timeout_ms)
    deadline = _Deadline(timeout)
    result = [False]

    def work() -> None:
        drained = active.recorder.flush(deadline.left())
        # Metrics and spans go out side by side, each within the one deadline: a collector
        # that holds each export to its timeout costs the flush one timeout, not two
        # (tests/export/test_fault_matrix.py, hang in-thread).
        metrics = threading.Thread(target=active.meters.flush, args=(deadline.left_ms(),),
                                   name="spec-tracing-flush-metrics", daemon=True)  # fmt: skip
        try:
            metrics.start()
        except RuntimeError:  # no new threads this late in interpreter shutdown: in turn
            metrics = None
        flushed = active.output.flush(deadline.left())
        if metrics is None:
            active.meters.flush(deadline.left_ms())
        else:
            metrics.join(deadline.left())
        result[0] = flushed and drained

    return _bounded(work, timeout, "flush") and result[0]


def drain_soon() -> None:
    """Ask the recorder to hand what is buffered to the exporter now; returns at once."""
    active = _active
    if active is not None:
        active.recorder.drain_soon()


def shutdown(timeout_ms: int | None = None) -> None:
    """Stop tracing: drain the buffer, flush and shut down what enable() started. Returns within
    `timeout_ms` (default SPEC_TRACING_SHUTDOWN_TIMEOUT_MS) + 0.25 s whatever the collector or
    the exporter process does; 0 means "don't wait"."""
    if not _lock.acquire(timeout=max(_timeout_s(timeout_ms) if _active else 0.0, 0.0) + 0.25):
        return  # another shutdown is under way, and holds the lock past our budget
    try:
        if _active is not None:
            _shutdown_locked(_timeout_s(timeout_ms) * 1000)
    finally:
        _lock.release()


def _shutdown_locked(timeout_ms: float, end_open: bool = True) -> None:
    global _active, _last_of
    if end_open:
        end_unfinished("tracing shut down before the request finished")
    active, _active = _active, None
    _last_of = active
    hotpath.SINK = None
    hotpath._deactivate()  # the engine stops recording now, whatever happens below
    active.meters.close_endpoint()
    timeout = timeout_ms / 1000
    deadline = _Deadline(timeout)

    def work() -> None:
        try:
            active.recorder.shutdown(deadline.left())
            active.output.shutdown(deadline.left())
        finally:
            active.meters.shutdown(deadline.left_ms())
            _settled(active)

    if not _bounded(work, timeout, "shutdown"):
        # Nothing waits on the collector past here: what is in flight is counted lost now, so
        # the snapshot below has every span offered in one counter.
        active.output.abandon()
        active.recorder.abandon(0.25)
    _settled(active)


_last_stats: dict[str, int] = {}
_last_of: _Active | None = None  # what last_stats() is of: the last one shut down


def _settled(active: _Active) -> None:
    """Take last_stats() from `active`: when shutdown returns, and again when the shutdown it
    stopped waiting for ends (what was still under way then is counted then), unless tracing
    was enabled or shut down again meanwhile."""
    global _last_stats
    with _settle_lock:
        if _last_of is active and _active is None:
            _last_stats = _stats_of(active)


_settle_lock = threading.Lock()


def last_stats() -> dict[str, int]:
    """stats() as they were when tracing was last shut down (what a finished run delivered)."""
    return dict(_last_stats)


def _after_fork_in_child() -> None:
    # The parent's open requests, buffered events and exporter process stay the parent's; this
    # process records its own from here (the recorder restarts itself, the exporter process is
    # started anew on first use, an SDK BatchSpanProcessor re-creates its worker).
    forget_inherited()
    global _lock
    _lock = threading.Lock()
    after_fork = getattr(_active.output, "after_fork_in_child", None) if _active else None
    if after_fork is not None:  # in-thread export: its threads did not come with the fork
        after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _ForkKey:
    pass


_FORK_KEY = _ForkKey()


def _flush_at_worker_exit(_key) -> None:
    # A multiprocessing fork worker ends with os._exit(): atexit never runs, and the last drain
    # interval's spans were lost uncounted. Its finalizers do run (util._exit_function), and
    # this hook registers one in each new worker (after multiprocessing cleared the parent's).
    import multiprocessing.util

    multiprocessing.util.Finalize(_FORK_KEY, _at_exit, exitpriority=0)


def _register_worker_exit() -> None:
    import multiprocessing.util

    multiprocessing.util.register_after_fork(_FORK_KEY, _flush_at_worker_exit)


def _at_exit() -> None:
    # Applications rarely call shutdown(): what is still buffered (the last steps, the root
    # spans of requests that just finished) is flushed at interpreter exit, bounded by
    # SPEC_TRACING_SHUTDOWN_TIMEOUT_MS, as the OpenTelemetry SDK does for its own providers.
    try:
        shutdown()
    except Exception:  # exit must go on whatever happens here
        pass


atexit.register(_at_exit)


def add_record_listener(listener) -> None:
    """Also hand the span records (wire.py) of everything recorded to `listener`, on the
    recorder's thread; how `spec-tracing demo` summarizes a run whatever the exporter."""
    if _active is not None:
        deliver = _active.materializer.deliver
        pipeline = Pipeline()  # spans only: the metrics are recorded once, by the output's

        def both(events, _deliver=deliver):
            listener(pipeline.feed(events))
            _deliver(events)

        _active.materializer.deliver = both


# Engine integrations' own counters (e.g. vLLM's rounds timed by the scheduler): callables
# returning {name: int}, merged into stats().
_stats_sources: list = []


def add_stats_source(source) -> None:
    if source not in _stats_sources:
        _stats_sources.append(source)


def stats() -> dict[str, int]:
    """Counters of the plugin itself (see _stats_of); after shutdown(), the run's final ones
    (what it delivered and lost), until tracing is enabled again."""
    active = _active
    if active is None and _last_stats:
        return dict(_last_stats)
    return _stats_of(active)


def _stats_of(active: _Active | None) -> dict[str, int]:
    """Counters of the plugin itself, as ledger.py declares them (with the exporter process,
    its counts as of its last report)."""
    out = ledger.zeros()
    out.update(
        prometheus_endpoints_not_served=PROMETHEUS_CLASHES[0],
        dropped_events=hotpath.dropped,
        dropped_finishes=hotpath.dropped_finishes,
        invalid_events=hotpath.invalid,
    )
    if active is not None:
        out.update(
            spans=active.output.spans,
            invalid_events=hotpath.invalid + active.materializer.invalid,
            dropped_events=hotpath.dropped + active.recorder.undrained,
            consumer_errors=active.recorder.consumer_errors,
        )
        counts = active.output.export_counts
        out.update(counts)
        out["prometheus_endpoints_not_served"] = PROMETHEUS_CLASHES[0] + counts.get(
            "prometheus_endpoints_not_served", 0
        )
        if active.signals is not None:  # metrics recorded here, spans assembled elsewhere
            for key, value in active.signals.counts().items():
                out[key] += value
    for source in _stats_sources:
        try:
            out.update(source())
        except Exception:  # a counter is not worth an exception in the caller
            pass
    return out


def current_settings() -> Settings | None:
    return None if _active is None else _active.settings


def current_provider() -> TracerProvider | None:
    """The in-process TracerProvider spans go to (None when the exporter process has it)."""
    return None if _active is None else _active.output.provider


def current_meter_provider():
    return None if _active is None else _active.meters.provider
