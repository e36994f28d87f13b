"""Benchmark 3b: what the plugin costs the engine's process, thread by thread, A/B against
another checkout in the same run (`python -m benchmarks.engine_process --baseline DIR`, DIR a
`git worktree add DIR REV` of the revision to compare with).

Each run is a fresh process: the reference engine (EAGLE, batch 64, 512 requests x 64 tokens by
default, one intra-op thread) traced at level 3, every span exported over OTLP into a real
receiver in another process. Reported per run: each spec-tracing thread's CPU per engine-thread
CPU (thread clocks; the final flush() runs on the engine's thread and is counted apart from it),
the exporter process's CPU, and the plugin's CPU per span, both processes together.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from .common import ReceiverProcess

RUN = r"""
import json, os, threading, time, torch
torch.set_num_threads(1)
import spec_tracing
from spec_tracing import lifecycle
from spec_tracing.reference.engine import Engine, demo_prompts
from benchmarks.common import exporters_cpu_s

def clocks():
    out = {}
    for t in threading.enumerate():
        try:
            s = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
        except (OSError, TypeError):
            continue
        name = "engine" if t is threading.main_thread() else (
            t.name if t.name.startswith("spec-tracing") else "other")
        out[name] = out.get(name, 0.0) + s
    return out

REQUESTS = int(os.environ["BENCH_REQUESTS"])

def run(traced):
    if traced:
        spec_tracing.enable(exporter="otlp", level=3)
        spec_tracing.flush()
    engine = Engine("eagle", batch_size=64, num_steps=3)
    for p in demo_prompts(REQUESTS):
        engine.add_request(p, 64)
    c0, e0 = clocks(), exporters_cpu_s()
    engine.run()
    out = {}
    if traced:
        # The last drain runs on this thread: counted as the plugin's, not the engine's.
        t = time.thread_time()
        spec_tracing.flush()
        flush_s = time.thread_time() - t
        c1 = clocks()
        c1["engine"] -= flush_s
        c1["spec-tracing-flush (engine thread)"] = flush_s
        out["exporter_process_s"] = exporters_cpu_s() - e0  # before it exits
        spec_tracing.shutdown()
        out["spans"] = lifecycle.last_stats()["spans"]
    else:
        c1 = clocks()
    out["threads_s"] = {k: c1.get(k, 0.0) - c0.get(k, 0.0) for k in c1}
    return out

run(False)  # warm-up
print(json.dumps(run(True)))
"""


def _one(tree: Path, endpoint: str, here: Path, requests: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(here)])}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_INSECURE="true")
    env["BENCH_REQUESTS"] = str(requests)
    env.pop("OTEL_EXPORTER_OTLP_PROTOCOL", None)
    out = subprocess.run([sys.executable, "-c", RUN], env=env, capture_output=True, text=True,
                         timeout=600, check=True, cwd=tree)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _summary(runs: list[dict]) -> dict:
    per_thread: dict[str, list] = {}
    per_span = []
    for r in runs:
        engine = r["threads_s"]["engine"]
        plugin = 0.0
        for name, seconds in r["threads_s"].items():
            if name.startswith("spec-tracing"):
                per_thread.setdefault(name, []).append(100 * seconds / engine)
                plugin += seconds
        per_span.append(1e6 * (plugin + r["exporter_process_s"]) / max(1, r["spans"]))
    return {
        "thread_cpu_pct_of_engine_thread": {
            k: round(statistics.median(v), 3) for k, v in per_thread.items()
        },
        "plugin_threads_pct_of_engine_thread": round(
            statistics.median(
                sum(
                    100 * s / r["threads_s"]["engine"]
                    for n, s in r["threads_s"].items()
                    if n.startswith("spec-tracing")
                )  # fmt: skip
                for r in runs
            ),
            3,
        ),
        "plugin_cpu_us_per_span_both_processes": round(statistics.median(per_span), 2),
        "spans_per_run": statistics.median(r["spans"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="a checkout of the revision to compare")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--requests", type=int, default=512, help="64 tokens each, batch 64")
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    trees = {"this": here}
    if args.baseline:
        trees["baseline"] = args.baseline.resolve()
    runs: dict[str, list] = {k: [] for k in trees}
    with ReceiverProcess() as receiver:
        for i in range(args.pairs):
            order = list(trees) if i % 2 == 0 else list(reversed(trees))
            for name in order:
                runs[name].append(_one(trees[name], receiver.endpoint, here, args.requests))
    print(json.dumps({name: _summary(r) for name, r in runs.items()}, indent=2))


if __name__ == "__main__":
    main()
