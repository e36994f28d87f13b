"""Benchmark 3: the reference engine end to end, tracing on (every span exported over OTLP into
a real receiver in another process) vs off, at batch 64."""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time

import torch

import spec_tracing
from spec_tracing.reference.engine import Engine, demo_prompts

from .common import ReceiverProcess, otlp_env, spread

ENGINE_CPU = 0
CORES = frozenset(os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ())
PIN = ENGINE_CPU in CORES and len(CORES) > 1


@contextlib.contextmanager
def _elsewhere():
    """Processes started inside (the receiver, the exporter) get the cores other than
    ENGINE_CPU."""
    if not PIN:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, CORES - {ENGINE_CPU})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _pin_engine_process() -> None:
    """Every thread of this process (the engine's, and the recorder's, which only runs when it
    holds the same interpreter lock) on ENGINE_CPU."""
    if PIN:
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # a thread that just ended
                os.sched_setaffinity(int(tid), {ENGINE_CPU})


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's Python threads so far, by name (the engine's thread is
    the main thread; spec-tracing names its own), from each thread's CPU clock (ns
    resolution: /proc's 10 ms ticks are too coarse for a thread that works ~10 ms a run)."""
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            seconds = time.clock_gettime(clock)
        except (OSError, TypeError):  # a thread that just ended
            continue
        if thread is threading.main_thread():
            name = "engine (main thread)"
        elif thread.name.startswith("spec-tracing"):
            name = thread.name
        else:
            name = "other"
        out[name] = out.get(name, 0.0) + seconds
    return out


def _run(traced: bool, requests: int, new_tokens: int, threads: dict | None = None, **settings):
    """(tokens/s, the engine process's CPU seconds per 1000 tokens: the engine's thread and,
    traced, the recorder thread that shares its interpreter lock). Traced, `threads` gets each
    thread's CPU seconds per 1000 tokens added."""
    if traced:
        with _elsewhere():  # the exporter process
            spec_tracing.enable(exporter="otlp", level=3, **settings)
        _pin_engine_process()
        spec_tracing.flush()  # the exporter process is up before the clock starts
    engine = Engine("eagle", batch_size=64, num_steps=3)
    for prompt in demo_prompts(requests):
        engine.add_request(prompt, new_tokens)
    cpu0, by_thread0 = time.process_time(), _thread_cpu()
    engine.run()
    if traced:
        spec_tracing.flush()  # the recorder's work for these tokens is counted
    cpu = time.process_time() - cpu0
    if threads is not None:
        tokens = engine.stats.generated_tokens
        for name, seconds in _thread_cpu().items():
            spent = 1000 * (seconds - by_thread0.get(name, 0.0)) / tokens
            threads.setdefault(name, []).append(spent)
    if traced:
        spec_tracing.shutdown()  # every span delivered before the next run
    tokens = engine.stats.generated_tokens
    return tokens / engine.stats.elapsed_s, 1000 * cpu / tokens


def _quartiles(values: list[float]) -> list[float]:
    q1, _, q3 = spread(values)
    return [q1, q3]


def bench_engine(quick: bool) -> dict:
    # One intra-op thread, and the engine's process pinned to one core: the engine's thread is
    # one core, as a GPU server's scheduler thread is; the exporter process and the receiver
    # share the others. Unpinned, single runs varied by +-10% as the kernel moved threads
    # between the two cores. The recorder thread stays with the engine: it runs only while it
    # holds the interpreter lock the engine needs, so another core buys it nothing, and there
    # the exporter and receiver could preempt it while it holds that lock.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # Many short pairs rather than a few long ones: on this shared machine the engine's own
    # speed drifts by up to 10% from run to run, and adjacent runs drift together.
    requests, new_tokens = 128, 64
    pairs = 6 if quick else 20
    ratios, cpu_ratios, off_rates, on_rates = [], [], [], []
    threads_on: dict[str, list] = {}
    threads_off: dict[str, list] = {}
    try:
        with _elsewhere():
            receiver = ReceiverProcess()
        _pin_engine_process()
        with receiver:
            otlp_env(receiver.endpoint)
            _run(False, 16, 8)  # warm-up: model build, allocator
            for i in range(pairs):  # ABBA order, so drift hits both sides alike
                order = (True, False) if i % 2 else (False, True)
                runs = {
                    traced: _run(
                        traced, requests, new_tokens, threads_on if traced else threads_off
                    )
                    for traced in order
                }
                (on, on_cpu), (off, off_cpu) = runs[True], runs[False]
                off_rates.append(off)
                on_rates.append(on)
                ratios.append(on / off)
                cpu_ratios.append(off_cpu / on_cpu)
            spans = receiver.span_count()
    finally:
        torch.set_num_threads(threads)
        if PIN:
            os.sched_setaffinity(0, CORES)
    return {
        "pairs": pairs,
        "engine_pinned_to_cpu": ENGINE_CPU if PIN else None,
        "tokens_per_pair_run": requests * new_tokens,
        "tokens_per_s_off": statistics.median(off_rates),
        "tokens_per_s_on": statistics.median(on_rates),
        "on_over_off": statistics.median(ratios),
        "on_over_off_quartiles": _quartiles(ratios),
        "on_over_off_each": ratios,
        # CPU of the engine's process per token: what tracing adds to the process whose
        # interpreter lock the engine holds, without the exporter's and receiver's share of
        # the machine.
        "process_cpu_off_over_on": statistics.median(cpu_ratios),
        "process_cpu_off_over_on_quartiles": _quartiles(cpu_ratios),
        "spans_received": spans,
        # Where the traced run's extra CPU went: each thread's CPU seconds per 1000 tokens
        # (medians; /proc ticks are 10 ms, so a thread's figure is good to ~10 ms per run).
        "thread_cpu_s_per_1000_tokens_on": {k: statistics.median(v) for k, v in threads_on.items()},
        "thread_cpu_s_per_1000_tokens_off": {
            k: statistics.median(v) for k, v in threads_off.items()
        },
        "goal": "on/off >= 0.99 at the median, >= 0.975 at the lower quartile",
    }
