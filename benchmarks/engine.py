"""Benchmark 3: the reference engine end to end, tracing on (every span exported over OTLP into
a real receiver in another process) vs off, at batch 64."""

from __future__ import annotations

import statistics
import time

import torch

import spec_tracing
from spec_tracing.reference.engine import Engine, demo_prompts

from .common import ReceiverProcess, otlp_env


def _run(traced: bool, requests: int, new_tokens: int, **settings) -> tuple[float, float]:
    """(tokens/s, the engine thread's CPU seconds per 1000 tokens)."""
    if traced:
        spec_tracing.enable(exporter="otlp", level=3, **settings)
        spec_tracing.flush()  # the exporter process is up before the clock starts
    engine = Engine("eagle", batch_size=64, num_steps=3)
    for prompt in demo_prompts(requests):
        engine.add_request(prompt, new_tokens)
    cpu0 = time.thread_time()
    engine.run()
    cpu = time.thread_time() - cpu0
    if traced:
        spec_tracing.shutdown()  # every span delivered before the next run
    tokens = engine.stats.generated_tokens
    return tokens / engine.stats.elapsed_s, 1000 * cpu / tokens


def bench_engine(quick: bool) -> dict:
    # One intra-op thread: the engine's thread is one core, as a GPU server's scheduler thread
    # is; the exporter process and the receiver share the other core.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    requests, new_tokens = (128, 64) if quick else (256, 96)
    repeats = 3 if quick else 7
    ratios, cpu_ratios, off_rates, on_rates = [], [], [], []
    try:
        with ReceiverProcess() as receiver:
            otlp_env(receiver.endpoint)
            _run(False, 16, 8)  # warm-up: model build, allocator
            for i in range(repeats):  # pairs in ABBA order, so drift hits both sides alike
                if i % 2:
                    (on, on_cpu), (off, off_cpu) = (
                        _run(True, requests, new_tokens),
                        _run(False, requests, new_tokens),
                    )
                else:
                    (off, off_cpu), (on, on_cpu) = (
                        _run(False, requests, new_tokens),
                        _run(True, requests, new_tokens),
                    )
                off_rates.append(off)
                on_rates.append(on)
                ratios.append(on / off)
                cpu_ratios.append(off_cpu / on_cpu)
            spans = receiver.span_count()
    finally:
        torch.set_num_threads(threads)
    return {
        "tokens_per_s_off": statistics.median(off_rates),
        "tokens_per_s_on": statistics.median(on_rates),
        "on_over_off": statistics.median(ratios),
        "on_over_off_each": ratios,
        # The same as CPU time of the engine's own thread: what tracing adds to that thread,
        # without the other processes' share of the machine (exporter, receiver) in it.
        "thread_cpu_off_over_on": statistics.median(cpu_ratios),
        "spans_received": spans,
        "goal": "on/off >= 0.97",
    }
