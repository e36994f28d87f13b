"""`python -m benchmarks.step_sampling`: what step-detail sampling saves downstream and what it
costs, per request: spans exported, the exporter process's CPU, and the engine's process CPU
(hooks and recorder), at SPEC_TRACING_STEP_SAMPLE_RATIO 1, 0.1 and 0.01 with
SPEC_TRACING_STEP_KEEP=error,slowest:0.01,lowest_accept:0.01, each against ratio 1 measured in
the same run (configurations alternate; medians of repeats).

Workload: 2,048 requests in batches of 64, 50 decode steps each (draft, verify, draft_extend per
step: 151 spans a request with its root), each request with its own acceptance probability and
duration (log-normal), one request in 64 aborted; exported over OTLP/gRPC to a receiver in
another process.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import spec_tracing
from spec_tracing import ReqTimeStats, RequestStage, lifecycle, record_batch_stage

from .common import ReceiverProcess, cpu_s, otlp_env

RULES = "error,slowest:0.01,lowest_accept:0.01"
STAGES = (RequestStage.SPEC_DRAFT, RequestStage.SPEC_VERIFY, RequestStage.SPEC_DRAFT_EXTEND)
CONFIGS = (("ratio 1", "1"), ("ratio 0.1", "0.1"), ("ratio 0.01", "0.01"))


def _run(ratio: str, requests: int, batch: int, steps: int) -> dict:
    rng = random.Random(len(ratio))
    spec_tracing.enable(exporter="otlp", level=3, metrics=False, step_sample_ratio=ratio,
                        step_keep=RULES)  # fmt: skip
    spec_tracing.flush()
    exporter = lifecycle._active.output.process.pid
    engine0, exporter0 = cpu_s("self"), cpu_s(exporter)
    for first in range(0, requests, batch):
        now = time.perf_counter()
        reqs = [ReqTimeStats(rid=first + i, ts=now - rng.lognormvariate(0, 0.5))
                for i in range(batch)]  # fmt: skip
        p = [rng.random() for _ in range(batch)]
        accepted = [[sum(rng.random() < p[i] for _ in range(3)) for i in range(batch)]
                    for _ in range(steps)]  # fmt: skip
        for step in range(steps):
            for stage in STAGES:
                t = time.perf_counter()
                acc = accepted[step] if stage is RequestStage.SPEC_VERIFY else None
                record_batch_stage(reqs, stage, t - 0.0001, t, acc, 3 if acc else None)
        for i, req in enumerate(reqs):
            req.abort("gone") if i == 7 else req.finish()
        spec_tracing.flush()
    spec_tracing.flush(timeout_ms=60_000)
    engine1, exporter1 = cpu_s("self"), cpu_s(exporter)
    spec_tracing.shutdown(timeout_ms=60_000)
    stats = lifecycle.last_stats()
    return {
        "spans_per_request": stats["spans"] / requests,
        "exporter_us_per_request": (exporter1 - exporter0) / requests * 1e6,
        "engine_us_per_request": (engine1 - engine0) / requests * 1e6,
        "steps_kept_requests": stats["steps_kept_requests"] or requests,
        "sampled_out_spans": stats["sampled_out_spans"],
        "lost": stats["export_dropped_spans"] + stats["export_lost_spans"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_sampling", description=__doc__)
    parser.add_argument("--requests", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="benchmarks/results/step_sampling.json")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {name: [] for name, _ in CONFIGS}
    with ReceiverProcess() as receiver:
        otlp_env(receiver.endpoint)
        for i in range(args.repeats):
            for name, ratio in CONFIGS if i % 2 == 0 else CONFIGS[::-1]:
                runs[name].append(_run(ratio, args.requests, 64, 50))
    out = {}
    for name, results in runs.items():
        out[name] = {k: statistics.median(r[k] for r in results) for k in results[0]}
    base = out["ratio 1"]
    print(f"{'':<12}{'spans/req':>10}{'exporter us/req':>17}{'engine us/req':>15}"
          f"{'steps kept':>12}")  # fmt: skip
    for name, row in out.items():
        row["exporter_vs_ratio_1"] = (
            row["exporter_us_per_request"] / base["exporter_us_per_request"]
        )
        row["engine_vs_ratio_1"] = row["engine_us_per_request"] / base["engine_us_per_request"]
        print(f"{name:<12}{row['spans_per_request']:>10.1f}"
              f"{row['exporter_us_per_request']:>11.0f} ({row['exporter_vs_ratio_1']:.2f}x)"
              f"{row['engine_us_per_request']:>9.0f} ({row['engine_vs_ratio_1']:.2f}x)"
              f"{row['steps_kept_requests'] / args.requests:>11.1%}")  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
