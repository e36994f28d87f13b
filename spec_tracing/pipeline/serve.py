"""The exporter process's main loop (`python -m spec_tracing.pipeline`): compact events in from
the engine's process, the pipeline (signals and metrics, assembly, sampling) and the Writer's
export threads here; replies to flush and stop name the request they answer (wire.py).

When the engine's process asks for it (SETTINGS' metrics), the metric instruments, their OTLP
exporter and the Prometheus endpoint live here too: a collector's answer to a metrics export and
a scrape are this process's work, never the engine's. A restart of this process starts its
counters anew (a counter reset, as Prometheus expects); what the engine's process counts
(dropped events, spans lost with a dead exporter process) arrives in ENGINE_COUNTS messages and
is added to this process's own counts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from multiprocessing.connection import Connection

from ..export.child import make_writer
from ..wire import COUNTS, ENGINE_COUNTS, FLUSH, FLUSHED, STOP, STOPPED
from .build import Pipeline

# The engine's process's part of these counters; the rest is counted here.
_ADDED_HERE = {
    "export_dropped_spans": lambda w: w.dropped,
    "export_failed_spans": lambda w: w.failed,
    "export_rejected_spans": lambda w: w.rejected,
}


def _meters(settings, metrics: dict | None, stats_source):
    """(Meters, SpecMetrics | None) for what the engine's process asked this one to serve."""
    from ..metrics.instruments import SpecMetrics
    from ..metrics.readers import Meters, build_meters

    if not metrics or not settings.metrics:
        return Meters(), None
    try:
        meters = build_meters(settings, None, metrics.get("otlp", False))
    except Exception:  # checked in the engine's process before this one started
        logging.getLogger(__name__).warning(
            "spec-tracing exporter: metrics could not be set up", exc_info=True
        )
        return Meters(), None
    if meters.provider is None:
        return meters, None
    return meters, SpecMetrics.for_provider(meters.provider, stats_source)


def serve(conn_in: Connection, conn_out: Connection) -> None:
    """Records in, exports out, replies to flush/stop."""
    from ..metrics.readers import PROMETHEUS_CLASHES

    _, settings, version, resource_attributes, metrics = conn_in.recv()
    if settings.export_nice:
        os.nice(settings.export_nice)
    # The SDK's OTLP exporters log every retry and every failed batch; while a collector is down
    # that is a line per batch for as long as the outage lasts. The Writer warns once per outage
    # and counts what was lost instead.
    logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)
    send_lock = threading.Lock()
    last_update = [0.0]
    engine_counts: dict = {}

    def counts() -> dict:
        return {
            **writer.counts(),
            **pipeline.counts(),
            "prometheus_endpoints_not_served": PROMETHEUS_CLASHES[0],
        }

    def stats() -> dict:
        """The run's ledger as the engine's stats() has it: its part plus this process's."""
        out = {**engine_counts, **pipeline.counts()}
        for key, read in _ADDED_HERE.items():
            out[key] = out.get(key, 0) + read(writer)
        return out

    meters, spec_metrics = _meters(settings, metrics, stats)
    pipeline = Pipeline(settings, spec_metrics)

    def reply(message) -> bool:
        """False when the engine's process stopped listening (it gave up waiting, or exited)."""
        try:
            with send_lock:
                conn_out.send(message)
            return True
        except OSError:
            return False

    def on_loss() -> None:
        # Losses reach the engine's process (stats(), metrics) within a second, unasked.
        now = time.monotonic()
        if now - last_update[0] >= 1.0:
            last_update[0] = now
            reply((COUNTS, counts(), None, None))

    def stop(timeout_s: float) -> None:
        deadline = time.monotonic() + max(0.0, timeout_s)
        meters.close_endpoint()  # the port is free for the engine's next enable() at once
        writer.put(pipeline.stop())
        writer.stop(timeout_s)
        try:  # the metrics' last export gets what is left of the budget
            meters.shutdown(max(1, int(1000 * (deadline - time.monotonic()))))
        except Exception:  # a collector that did not take them: the counters said so
            pass

    writer = make_writer(settings, version, on_loss, resource_attributes=resource_attributes)
    try:
        while True:
            try:
                message = conn_in.recv()
            except EOFError:  # the engine's process is gone: export what is left, then exit
                stop(settings.shutdown_timeout_ms / 1000)
                break
            if isinstance(message, list):
                writer.put(pipeline.feed(message))
            elif message[0] == ENGINE_COUNTS:
                engine_counts = message[1]
            elif message[0] == FLUSH:
                _, timeout_ms, request = message
                deadline = time.monotonic() + timeout_ms / 1000
                writer.put(pipeline.flush())
                ok = writer.flush(timeout_ms / 1000)
                try:
                    meters.flush(max(1, int(1000 * (deadline - time.monotonic()))))
                except Exception:
                    ok = False
                if not reply((FLUSHED, counts(), ok, request)):
                    stop(settings.shutdown_timeout_ms / 1000)
                    break
            elif message[0] == STOP:
                # The engine's process stops waiting after its timeout; if this took longer,
                # the reply has nowhere to go, and that is no error.
                _, timeout_ms, request = message
                budget = timeout_ms / 1000
                stop(budget - min(0.25, budget / 5))  # time left to reply
                reply((STOPPED, counts(), not writer.left_unexported, request))
                break
    finally:
        if writer.exporter is not None:
            writer.exporter.shutdown()
