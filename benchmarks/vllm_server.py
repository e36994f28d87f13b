"""The vLLM OpenAI server with spec-tracing on vs off, and vs vLLM's own tracing alone.

    .venv-vllm/bin/python -m benchmarks.vllm_server [--cycles N] [--generations G]
    (after scripts/test-vllm.sh)

Three servers run side by side on the tiny model of the vLLM tier (n-gram drafts, 3 per step):
`off` (no tracing), `vllm` (vLLM's tracing to a receiver), `vllm+spec` (the same, plus
SPEC_TRACING_ENABLED=1). Only one is under load at a time; each cycle loads them in ABBA order
(off, vllm, vllm+spec, vllm+spec, vllm, off) with the same requests: 32 streaming completions, 4 at
a time, 128 tokens each, then 16 requests one after the other on the idle server (2 tokens each).
Figures: tokens/s and median time to first token (TTFT) under load, and median TTFT on the idle
server, as ratios against the same cycle's baseline, median and quartiles over the cycles; and
CPU seconds per load of each server's process tree, of spec-tracing's exporter and of the
receiver. TTFT under load is mostly where in the engine's current step a request lands (a step
is ~20 ms here); the idle figure is the request's own path: arrival, prefill, first token out.
With --generations G the three servers are started afresh G times, each running N cycles: two
runs of one generation each differed by more than the goal (0.920x and 0.974x), as if which
processes the OS favours were settled at start-up, so the servers are restarted within a run
and each generation's median is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from functools import partial

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "instrumentation"))

from vllm_server import Server, build_model  # noqa: E402

from .common import ReceiverProcess, cpu_s, exporters_cpu_s, spread, tree_cpu_s  # noqa: E402

REQUESTS, CONCURRENCY, TOKENS = 32, 4, 128
IDLE_REQUESTS, IDLE_TOKENS = 16, 2


def _idle_ttft(server: Server) -> float:
    """Median TTFT in ms of requests sent one after the other."""
    ttfts = []
    for _ in range(IDLE_REQUESTS):
        first: list[float] = []
        t0 = time.perf_counter()
        server.complete(stream=True, max_tokens=IDLE_TOKENS, timing=first)
        ttfts.append((first[0] - t0) * 1000)
    return statistics.median(ttfts)


def _load(server: Server) -> tuple[float, float, float]:
    """(tokens/s, median TTFT in ms) for one batch of streaming requests, and the idle TTFT."""
    ttfts: list[float] = []
    lock = threading.Lock()
    todo = list(range(REQUESTS))

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            first: list[float] = []
            t0 = time.perf_counter()
            server.complete(stream=True, max_tokens=TOKENS, timing=first)
            with lock:
                ttfts.append((first[0] - t0) * 1000)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return REQUESTS * TOKENS / elapsed, statistics.median(ttfts), _idle_ttft(server)


def _generation(model_dir: str, traced: list[str], receiver, cycles: int, runs, cpu) -> None:
    """Start the three servers, warm them up, run `cycles` ABBA cycles, stop them."""
    servers = {
        "off": Server(model_dir, {"SPEC_TRACING_ENABLED": "0"}),
        "vllm": Server(model_dir, {"SPEC_TRACING_ENABLED": "0"}, traced),
        "vllm+spec": Server(model_dir, {"SPEC_TRACING_ENABLED": "1"}, traced),
    }
    try:
        for server in servers.values():  # warm-up, not measured
            _load(server)
        order = ["off", "vllm", "vllm+spec", "vllm+spec", "vllm", "off"]
        for _ in range(cycles):
            cycle = {k: [] for k in servers}
            for name in order:
                pid = servers[name].proc.pid
                gauges = {"server": partial(tree_cpu_s, pid), "exporter": exporters_cpu_s,
                          "receiver": partial(cpu_s, receiver.proc.pid)}  # fmt: skip
                before = {part: gauge() for part, gauge in gauges.items()}
                cycle[name].append(_load(servers[name]))
                for part, gauge in gauges.items():
                    cpu[name][part].append(gauge() - before[part])
            for name, loads in cycle.items():
                runs[name].append(tuple(map(statistics.mean, zip(*loads, strict=True))))
    finally:
        for server in servers.values():
            server.interrupt()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=6, help="ABBA cycles per generation")
    parser.add_argument(
        "--generations", type=int, default=1,
        help="times the three servers are started afresh, each running --cycles cycles",
    )  # fmt: skip
    args = parser.parse_args()
    model_dir = tempfile.mkdtemp(prefix="spec-bench-vllm-")
    build_model(model_dir)
    names = ("off", "vllm", "vllm+spec")
    runs: dict[str, list[tuple[float, ...]]] = {k: [] for k in names}
    # CPU seconds per load: the server's process tree (API server, EngineCore, worker),
    # spec-tracing's exporter (detached: only vllm+spec has one) and the receiver (a
    # collector's work, not the server's).
    cpu: dict[str, dict[str, list[float]]] = {
        k: {"server": [], "exporter": [], "receiver": []} for k in names
    }
    with ReceiverProcess("grpc") as receiver:
        endpoint = "grpc://" + receiver.endpoint.removeprefix("http://")
        traced = ["--otlp-traces-endpoint", endpoint]
        for _ in range(args.generations):
            _generation(model_dir, traced, receiver, args.cycles, runs, cpu)
    results = {}
    for name, base in (("vllm+spec", "vllm"), ("vllm+spec", "off"), ("vllm", "off")):
        pairs = list(zip(runs[name], runs[base], strict=True))
        results[f"{name} / {base}"] = {
            "tokens_per_s_ratio": spread([a[0] / b[0] for a, b in pairs]),
            "ttft_ratio_inverse": spread([b[1] / a[1] for a, b in pairs]),
            "idle_ttft_ratio_inverse": spread([b[2] / a[2] for a, b in pairs]),
        }
    # Each generation's own median: how much a fresh set of processes moves the figure.
    per_gen = [
        statistics.median(a[0] / b[0] for a, b in zip(
            runs["vllm+spec"][g * args.cycles:(g + 1) * args.cycles],
            runs["vllm"][g * args.cycles:(g + 1) * args.cycles], strict=True))
        for g in range(args.generations)
    ]  # fmt: skip
    results["vllm+spec / vllm"]["tokens_per_s_ratio_per_generation"] = per_gen
    for i, figure in enumerate(("tokens_per_s", "ttft_ms", "idle_ttft_ms")):
        results[figure] = {k: statistics.median(r[i] for r in v) for k, v in runs.items()}
    results["cpu_s_per_load"] = {
        k: {part: statistics.median(v) for part, v in parts.items()} for k, parts in cpu.items()
    }
    print(f"vLLM OpenAI server, {args.generations} x {args.cycles} ABBA cycles, {REQUESTS} x "
          f"{TOKENS} tokens, {CONCURRENCY} concurrent; {IDLE_REQUESTS} idle requests")  # fmt: skip
    for key in ("vllm+spec / vllm", "vllm+spec / off", "vllm / off"):
        row = "  ".join(
            f"{label} {mid:.3f}x ({lo:.3f}-{hi:.3f})"
            for label, (lo, mid, hi) in zip(
                ("tokens/s", "TTFT base/this", "idle TTFT base/this"),
                list(results[key].values())[:3],
                strict=True,
            )
        )
        print(f"  {key:<18} {row}")
    per_gen = results["vllm+spec / vllm"]["tokens_per_s_ratio_per_generation"]
    print("  tokens/s vllm+spec / vllm, each generation's median:",
          ", ".join(f"{r:.3f}x" for r in per_gen))  # fmt: skip
    for figure in ("tokens_per_s", "ttft_ms", "idle_ttft_ms"):
        print(f"  medians, {figure}:", {k: round(v, 1) for k, v in results[figure].items()})
    for name, parts in results["cpu_s_per_load"].items():
        print(f"  CPU s per load, {name:<9}: server {parts['server']:.2f}, exporter "
              f"{parts['exporter']:.2f}, receiver {parts['receiver']:.2f}")  # fmt: skip
    out = os.path.join(os.path.dirname(__file__), "results", "vllm_server.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
