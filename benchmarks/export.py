"""Benchmark 4: spans per second delivered into a real OTLP receiver (another process), and
how many were dropped, at a sustained offered load."""

from __future__ import annotations

import time

import spec_tracing
from spec_tracing import ReqTimeStats, RequestStage, record_batch_stage

from .common import ReceiverProcess, otlp_env

BATCH = 256
STAGES = (RequestStage.SPEC_DRAFT, RequestStage.SPEC_VERIFY, RequestStage.SPEC_DRAFT_EXTEND)


def _offer(rate: float, seconds: float, reqs, accepted) -> int:
    """Record batch events paced to `rate` spans/s for `seconds`; returns spans offered."""
    per_event = len(reqs)
    start = time.perf_counter()
    offered = 0
    while True:
        now = time.perf_counter()
        if now - start >= seconds:
            return offered
        if offered > rate * (now - start):
            time.sleep(0.0005)
            continue
        for stage in STAGES:
            acc = accepted if stage is RequestStage.SPEC_VERIFY else None
            record_batch_stage(reqs, stage, now - 0.001, now, acc, 3 if acc else None)
            offered += per_event


def bench_export(quick: bool) -> dict:
    seconds = 3.0 if quick else 8.0
    out = {}
    with ReceiverProcess() as receiver:
        otlp_env(receiver.endpoint)
        for rate in (25_000, 50_000, 100_000, 200_000):
            before = receiver.span_count()
            spec_tracing.enable(exporter="otlp", level=3, metrics=False)
            reqs = [ReqTimeStats(rid=i) for i in range(BATCH)]
            accepted = [i % 4 for i in range(BATCH)]
            dropped_before = spec_tracing.record.hotpath.dropped
            start = time.perf_counter()
            offered = _offer(rate, seconds, reqs, accepted)
            for req in reqs:  # their root spans are delivered too
                req.finish()
            offered += BATCH
            dropped = (spec_tracing.record.hotpath.dropped - dropped_before) * BATCH
            spec_tracing.flush(timeout_ms=120_000)
            dropped += spec_tracing.stats().get("export_dropped_spans", 0)
            spec_tracing.shutdown(timeout_ms=120_000)
            got, _ = receiver.wait_for(before + offered - dropped, 60)
            elapsed = time.perf_counter() - start
            delivered = got - before
            out[rate] = {
                "offered_spans": offered,
                "delivered_spans": delivered,
                "dropped_spans": dropped,
                "lost_spans": offered - dropped - delivered,
                "delivered_per_s": delivered / elapsed,
            }
    out["goal"] = ">= 100,000 spans/s delivered, none dropped below the queue bound"
    return out
