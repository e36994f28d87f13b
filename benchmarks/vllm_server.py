"""The vLLM OpenAI server with spec-tracing on vs off, and vs vLLM's own tracing alone.

    .venv-vllm/bin/python -m benchmarks.vllm_server [--cycles N]   (after scripts/test-vllm.sh)

Three servers run side by side on the tiny model of the vLLM tier (n-gram drafts, 3 per step):
`off` (no tracing), `vllm` (vLLM's tracing to a receiver), `vllm+spec` (the same, plus
SPEC_TRACING_ENABLED=1). Only one is under load at a time; each cycle loads them in ABBA order
(off, vllm, vllm+spec, vllm+spec, vllm, off) with the same requests: 8 streaming completions, 4 at
a time, 64 tokens each. Figures: tokens/s and median time to first token per load, as ratios
against the same cycle's baseline, median and quartiles over the cycles.
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

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "instrumentation"))

from vllm_server import Server, build_model  # noqa: E402

from .common import ReceiverProcess  # noqa: E402

REQUESTS, CONCURRENCY, TOKENS = 8, 4, 64


def _load(server: Server) -> tuple[float, float]:
    """(tokens/s, median TTFT in ms) for one batch of streaming requests."""
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
    return REQUESTS * TOKENS / elapsed, statistics.median(ttfts)


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return q[0], statistics.median(values), q[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=6)
    args = parser.parse_args()
    model_dir = tempfile.mkdtemp(prefix="spec-bench-vllm-")
    build_model(model_dir)
    with ReceiverProcess("grpc") as receiver:
        endpoint = "grpc://" + receiver.endpoint.removeprefix("http://")
        traced = ["--otlp-traces-endpoint", endpoint]
        servers = {
            "off": Server(model_dir, {"SPEC_TRACING_ENABLED": "0"}),
            "vllm": Server(model_dir, {"SPEC_TRACING_ENABLED": "0"}, traced),
            "vllm+spec": Server(model_dir, {"SPEC_TRACING_ENABLED": "1"}, traced),
        }
        try:
            for server in servers.values():  # warm-up, not measured
                _load(server)
            runs: dict[str, list[tuple[float, float]]] = {k: [] for k in servers}
            order = ["off", "vllm", "vllm+spec", "vllm+spec", "vllm", "off"]
            for _ in range(args.cycles):
                cycle = {k: [] for k in servers}
                for name in order:
                    cycle[name].append(_load(servers[name]))
                for name, loads in cycle.items():
                    runs[name].append(
                        (statistics.mean(t for t, _ in loads), statistics.mean(f for _, f in loads))
                    )
        finally:
            for server in servers.values():
                server.interrupt()
    results = {}
    for name, base in (("vllm+spec", "vllm"), ("vllm+spec", "off"), ("vllm", "off")):
        tps = [a[0] / b[0] for a, b in zip(runs[name], runs[base], strict=True)]
        ttft = [b[1] / a[1] for a, b in zip(runs[name], runs[base], strict=True)]
        results[f"{name} / {base}"] = {
            "tokens_per_s_ratio": _quartiles(tps),
            "ttft_ratio_inverse": _quartiles(ttft),
        }
    results["tokens_per_s"] = {k: statistics.median(t for t, _ in v) for k, v in runs.items()}
    results["ttft_ms"] = {k: statistics.median(f for _, f in v) for k, v in runs.items()}
    print(f"vLLM OpenAI server, {args.cycles} ABBA cycles, {REQUESTS} x {TOKENS} tokens, "
          f"{CONCURRENCY} concurrent")  # fmt: skip
    for key in ("vllm+spec / vllm", "vllm+spec / off", "vllm / off"):
        lo, mid, hi = results[key]["tokens_per_s_ratio"]
        flo, fmid, fhi = results[key]["ttft_ratio_inverse"]
        print(f"  {key:<18} tokens/s {mid:.3f}x ({lo:.3f}-{hi:.3f})   "
              f"TTFT base/this {fmid:.3f}x ({flo:.3f}-{fhi:.3f})")  # fmt: skip
    print("  medians: tokens/s", {k: round(v) for k, v in results["tokens_per_s"].items()},
          "TTFT ms", {k: round(v, 1) for k, v in results["ttft_ms"].items()})  # fmt: skip
    out = os.path.join(os.path.dirname(__file__), "results", "vllm_server.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
