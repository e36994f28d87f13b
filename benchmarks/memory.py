"""Benchmark 5: memory stays bounded while the collector is down. Spans are offered at a
sustained rate to an OTLP endpoint where nothing listens; the exporter process's buffer fills to
SPEC_TRACING_EXPORT_QUEUE_SPANS and then drops and counts. Resident memory of the exporter
process and of the engine's process is sampled throughout, and compared with the same run into a
live receiver."""

from __future__ import annotations

import socket

import spec_tracing
from spec_tracing import ReqTimeStats

from .common import ReceiverProcess, otlp_env
from .export import BATCH, _offer

RATE = 100_000
QUEUE_SPANS = 262_144  # the default bound


def _rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(endpoint: str, seconds: float) -> dict:
    otlp_env(endpoint)
    spec_tracing.enable(exporter="otlp", level=3, metrics=False, export_queue_spans=QUEUE_SPANS)
    spec_tracing.flush()
    child = spec_tracing.lifecycle._active.output.process.pid
    reqs = [ReqTimeStats(rid=i) for i in range(BATCH)]
    accepted = [i % 4 for i in range(BATCH)]
    engine0, child0 = _rss_mb(), _rss_mb(child)
    samples = []  # (offered so far, exporter RSS, engine RSS)
    offered, slice_s = 0, seconds / 20
    for _ in range(20):
        offered += _offer(RATE, slice_s, reqs, accepted)
        spec_tracing.flush(timeout_ms=0)  # hand what is buffered to the exporter process
        samples.append((offered, _rss_mb(child), _rss_mb()))
    stats = spec_tracing.stats()
    for req in reqs:
        req._disown()  # no root spans: only the stage spans are counted here
    spec_tracing.shutdown(timeout_ms=2000)
    half = samples[len(samples) // 2 :]
    return {
        "offered_spans": offered,
        "exporter_rss_start_mb": child0,
        "exporter_rss_peak_mb": max(s[1] for s in samples),
        # Once the buffer is full, memory must stop growing: the last sample over the one
        # half-way through (1.0 = flat).
        "exporter_rss_last_over_half": samples[-1][1] / half[0][1],
        "engine_rss_start_mb": engine0,
        "engine_rss_growth_mb": max(s[2] for s in samples) - engine0,
        "export_dropped_spans": stats["export_dropped_spans"],
        "dropped_events": stats["dropped_events"],
        "samples": samples,
    }


def bench_memory(quick: bool) -> dict:
    seconds = 5.0 if quick else 12.0
    with ReceiverProcess() as receiver:
        up = _run(receiver.endpoint, seconds)
    down = _run(f"http://127.0.0.1:{_free_port()}", seconds)
    return {
        "rate_spans_per_s": RATE,
        "export_queue_spans": QUEUE_SPANS,
        "collector_up": up,
        "collector_down": down,
        "down_over_up_exporter_peak": down["exporter_rss_peak_mb"] / up["exporter_rss_peak_mb"],
        # The full buffer's cost: what the exporter holds beyond the collector-up run, per span
        # it holds.
        "bytes_per_buffered_span": (down["exporter_rss_peak_mb"] - up["exporter_rss_peak_mb"])
        * 2**20
        / min(QUEUE_SPANS, down["offered_spans"]),
        "goal": "bounded: exporter RSS flat once its buffer is full; engine RSS unchanged",
    }
