"""Benchmark 4: spans per second delivered into a real OTLP receiver (another process), and
how many were dropped, at a sustained offered load."""

from __future__ import annotations

import time

import spec_tracing
from spec_tracing import ReqTimeStats, RequestStage, record_batch_stage

from .common import ReceiverProcess, cpu_s, otlp_env

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


RATES = (100_000, 200_000, 300_000, 400_000, 600_000)


def bench_export(quick: bool) -> dict:
    """Offered rate raised until drops begin; per rate, the exporter process's CPU, so that
    spans/s per exporter-core says what one core sustains."""
    seconds = 3.0 if quick else 8.0
    out = {}
    with ReceiverProcess() as receiver:
        otlp_env(receiver.endpoint)
        for rate in RATES:
            before = receiver.span_count()
            spec_tracing.enable(exporter="otlp", level=3, metrics=False)
            spec_tracing.flush()
            exporter = spec_tracing.lifecycle._active.output.process.pid
            cpu = {"exporter": cpu_s(exporter), "engine": cpu_s("self"),
                   "receiver": cpu_s(receiver.proc.pid)}  # fmt: skip
            reqs = [ReqTimeStats(rid=i) for i in range(BATCH)]
            accepted = [i % 4 for i in range(BATCH)]
            dropped_before = spec_tracing.record.hotpath.dropped
            start = time.perf_counter()
            offered = _offer(rate, seconds, reqs, accepted)
            offering_s = time.perf_counter() - start
            for req in reqs:  # their root spans are delivered too
                req.finish()
            offered += BATCH
            dropped = (spec_tracing.record.hotpath.dropped - dropped_before) * BATCH
            spec_tracing.flush(timeout_ms=120_000)
            dropped += spec_tracing.stats().get("export_dropped_spans", 0)
            got, _ = receiver.wait_for(before + offered - dropped, 60)
            elapsed = time.perf_counter() - start
            pids = {"exporter": exporter, "engine": "self", "receiver": receiver.proc.pid}
            cpu = {k: cpu_s(pid) - cpu[k] for k, pid in pids.items()}
            spec_tracing.shutdown(timeout_ms=120_000)
            delivered = got - before
            out[rate] = {
                "offered_spans": offered,
                "delivered_spans": delivered,
                "dropped_spans": dropped,
                "lost_spans": offered - dropped - delivered,
                "delivered_per_s": delivered / elapsed,
                # Delivery's lag: from the last span offered to the last one received. With
                # nothing dropped, a short tail says the exporter kept up with the offered rate
                # (delivered_per_s is diluted by the tail and the pacing's start).
                "tail_s": elapsed - offering_s,
                "cpu_s": cpu,
                "spans_per_exporter_cpu_s": delivered / max(cpu["exporter"], 1e-9),
            }
    out["goal"] = ">= 300,000 spans/s delivered, none dropped"
    return out
