"""Benchmarks 1 and 2: the cost on the engine's thread, disabled and enabled."""

from __future__ import annotations

import random
import statistics
import time
import timeit

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

import spec_tracing
from spec_tracing import ReqTimeStats, RequestStage, set_time_batch, trace_stage
from spec_tracing.semconv import SpanAttr

from .common import median_of, spread


class _Batch:
    def __init__(self, n: int):
        self.reqs = [_Req(i) for i in range(n)]
        self.accepted = [i % 4 for i in range(n)]


class _Req:
    def __init__(self, i: int):
        self.rid = i
        self.time_stats = ReqTimeStats(rid=i)


class Worker:
    num_steps = 3

    def bare(self, batch):
        return None

    @trace_stage(RequestStage.SPEC_DRAFT, attrs={SpanAttr.NUM_STEPS: "self.num_steps"})
    def draft(self, batch):
        return None

    @trace_stage(RequestStage.SPEC_VERIFY, accepted="batch.accepted", proposed="self.num_steps")
    def verify(self, batch):
        return None

    @trace_stage(RequestStage.SPEC_DRAFT_EXTEND)
    def draft_extend(self, batch):
        return None


def _noop(reqs, set_func, trace_only=True):
    return None


def bench_disabled(quick: bool) -> dict:
    """1. Tracing off: a decorated hook and set_time_batch vs a bare no-op call.

    A call costs ~40 ns and this machine's speed drifts by more than that ratio's goal within a
    second, so the statements are timed in short rounds, shuffled within each round, and the
    figure is the median over rounds of each round's own ratio, with its quartiles."""
    spec_tracing.shutdown()
    w, b = Worker(), _Batch(64)
    env = {
        "w": w,
        "b": b,
        "set_time_batch": set_time_batch,
        "noop": _noop,
        "f": ReqTimeStats.set_spec_draft_start_time,
    }
    stmts = {
        "bare": "w.bare(b)",
        "hook": "w.draft(b)",
        "bare3": "noop(b.reqs, f, True)",
        "stb": "set_time_batch(b.reqs, f, True)",
    }
    timers = {k: timeit.Timer(stmt, globals=env) for k, stmt in stmts.items()}
    n, rounds = 20_000, (200 if quick else 1000)
    ns: dict[str, list[float]] = {k: [] for k in stmts}
    rng = random.Random(0)
    for _ in range(rounds):
        order = list(timers)
        rng.shuffle(order)
        for k in order:
            ns[k].append(timers[k].timeit(n) / n * 1e9)

    def ratio(k: str, base: str) -> tuple[float, list[float]]:
        q1, median, q3 = spread([a / b for a, b in zip(ns[k], ns[base], strict=True)])
        return median, [q1, q3]

    hook_ratio, hook_q = ratio("hook", "bare")
    stb_ratio, stb_q = ratio("stb", "bare3")
    return {
        "bare_call_ns": statistics.median(ns["bare"]),
        "decorated_hook_ns": statistics.median(ns["hook"]),
        "decorated_hook_ratio": hook_ratio,
        "decorated_hook_ratio_quartiles": hook_q,
        "bare_call_3_args_ns": statistics.median(ns["bare3"]),
        "set_time_batch_ns": statistics.median(ns["stb"]),
        "set_time_batch_ratio": stb_ratio,
        "set_time_batch_ratio_quartiles": stb_q,
        "rounds": rounds,
        "goal": "ratios <= 1.2",
    }


class _NullExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


def _ours(batch: _Batch, steps: int) -> float:
    w = Worker()
    t = time.perf_counter()
    for _ in range(steps):
        w.draft(batch)
        w.verify(batch)
        w.draft_extend(batch)
    return (time.perf_counter() - t) / steps


def _sglang_like(tracer, batch: _Batch, contexts, steps: int) -> float:
    """What SGLang's old path does: a loop over the batch creating one SDK span per request
    and stage on the scheduler's thread."""
    t = time.perf_counter()
    for _ in range(steps):
        for stage in ("spec_draft", "spec_verify", "spec_draft_extend"):
            t0 = time.time_ns()
            for i, ctx in enumerate(contexts):
                span = tracer.start_span(stage, context=ctx, start_time=t0)
                if stage == "spec_verify":
                    span.set_attribute("accepted_tokens", batch.accepted[i])
                span.end()
    return (time.perf_counter() - t) / steps


def _measure(n: int, tracer, quick: bool) -> dict:
    repeats = 3 if quick else 7
    spec_tracing.enable(exporter="none", export_process=False, metrics=False, level=3)
    batch = _Batch(n)
    recorder = spec_tracing.lifecycle._active.recorder
    # Timed in blocks of 5 steps with the consumer held (what is timed is the engine thread's
    # own work) and a drain between blocks, untimed: the buffer then holds what it holds in a
    # server (the recorder drains every 100 ms, ~5 steps at 50 steps/s), so the garbage
    # collector walks as many buffered events as it would there. Many short blocks, median.
    blocks = 200 if quick else 1000

    def block() -> float:
        with recorder._lock:
            cost = _ours(batch, 5)
        recorder.flush(30)
        return cost

    q1, ours_s, q3 = spread([block() for _ in range(blocks)])
    spec_tracing.shutdown()
    contexts = [
        set_span_in_context(NonRecordingSpan(SpanContext(i + 1, i + 1, False, TraceFlags(1))))
        for i in range(n)
    ]
    base_steps = max(5, 1000 // n)
    base_s = median_of(lambda: _sglang_like(tracer, batch, contexts, base_steps), repeats)
    return {
        "ours_us": ours_s * 1e6,
        "ours_us_quartiles": [q1 * 1e6, q3 * 1e6],
        "baseline_us": base_s * 1e6,
        "ours_over_baseline": ours_s / base_s,
    }


class _SGLangReq:
    """What spec-tracing's SGLang wrappers read on SGLang's Req (schedule_batch.Req)."""

    def __init__(self, i: int):
        self.rid = str(i)
        self.spec_verify_ct = 0
        self.finished_reason = None
        self.time_stats = _Bare()  # SGLang's own ReqTimeStats; its trace_ctx is off
        self._spec_tracing = ReqTimeStats(rid=self.rid)


class _Bare:
    trace_ctx = None


class _SGLangWorker:
    """An EAGLE v2 worker's attributes that the wrappers read."""

    speculative_num_draft_tokens = 4
    speculative_num_steps = 3


def _sglang_step(n: int, blocks: int) -> tuple[float, float, float]:
    """The scheduler thread's cost of spec-tracing's SGLang wrappers per decode step: the spec
    worker's forward_batch_generation (draft and draft-extend stamps, on the draft worker as
    EAGLE v2 has them) and the scheduler's process_batch_result_decode; the wrapped functions do
    only what the wrappers rely on (stamp the stages, count the verify round)."""
    from spec_tracing.instrumentation import sglang as seam

    worker, draft_worker = _SGLangWorker(), _SGLangWorker()
    worker._draft_worker = draft_worker
    batch = _Batch(0)
    batch.reqs = [_SGLangReq(i) for i in range(n)]
    result = type("Result", (), {})()
    result.num_correct_drafts_per_req_cpu = [i % 4 for i in range(n)]
    draft, extend = seam._stamp_draft, seam._stamp(seam._EXTEND)

    def forward(batch):
        draft(lambda: None, draft_worker, (), {})
        extend(lambda: None, draft_worker, (), {})
        return result

    def process(batch, result):
        for req in batch.reqs:
            req.spec_verify_ct += 1

    def steps(k: int) -> float:
        t = time.perf_counter()
        for _ in range(k):
            seam._forward_eagle(forward, worker, (batch,), {})
            seam._process_decode(process, None, (batch, result), {})
        return (time.perf_counter() - t) / k

    def bare(k: int) -> float:
        t = time.perf_counter()
        for _ in range(k):
            forward(batch)
            process(batch, result)
        return (time.perf_counter() - t) / k

    recorder = spec_tracing.lifecycle._active.recorder
    ours, base = [], []
    for _ in range(blocks):  # as _measure: blocks of 5 steps, drained between them, untimed
        with recorder._lock:
            ours.append(steps(5))
            base.append(bare(5))
        recorder.flush(30)
    return spread([a - b for a, b in zip(ours, base, strict=True)])


def bench_sglang(quick: bool) -> dict:
    """2. Tracing on at level 3: spec-tracing's SGLang wrappers per decode step, on the
    scheduler's thread (what they add to the wrapped calls)."""
    spec_tracing.enable(exporter="none", export_process=False, metrics=False, level=3)
    try:
        out = {}
        for n in (1, 64, 256):
            q1, med, q3 = _sglang_step(n, 200 if quick else 1000)
            out[n] = {"us": med * 1e6, "us_quartiles": [q1 * 1e6, q3 * 1e6]}
    finally:
        spec_tracing.shutdown()
    out["batch256_over_batch1"] = out[256]["us"] / out[1]["us"]
    return out


class _VLLMScheduler:
    """vLLM's Scheduler.make_spec_decoding_stats, its signature and a body of its size."""

    log_stats = False

    def make_spec_decoding_stats(
        self,
        spec_decoding_stats,
        num_draft_tokens,
        num_accepted_tokens,
        num_invalid_spec_tokens,
        request_id,
    ):
        if not self.log_stats or not num_draft_tokens:
            return None
        return spec_decoding_stats


def bench_vllm_round(quick: bool) -> dict:
    """2. Tracing on: what spec-tracing adds to vLLM's per-request accounting call
    (make_spec_decoding_stats, once per request with drafts per step) on EngineCore's thread,
    as installed on vLLM's Scheduler (WrapTable), per request of a batch of 256."""
    from spec_tracing.instrumentation._wrapping import Inline, WrapTable
    from spec_tracing.instrumentation.vllm import scheduler as seam

    class Traced(_VLLMScheduler):
        pass

    table = WrapTable(
        lambda: [(Traced, "make_spec_decoding_stats", Inline(seam._make_spec_decoding_stats))]
    )
    table.wrap()
    ids = [f"r{i}" for i in range(256)]
    spec_tracing.enable(exporter="none", export_process=False, metrics=False, level=3)
    seam._requests.update({rid: ReqTimeStats(rid=rid) for rid in ids})

    def step(scheduler) -> float:
        seam._round = ([], [], [])
        t = time.perf_counter()
        for rid in ids:
            scheduler.make_spec_decoding_stats(
                None,
                num_draft_tokens=3,
                num_accepted_tokens=1,
                num_invalid_spec_tokens=None,
                request_id=rid,
            )
        elapsed = time.perf_counter() - t
        seam._round = None
        return elapsed

    try:
        plain, traced = _VLLMScheduler(), Traced()
        added = [step(traced) - step(plain) for _ in range(300 if quick else 2000)]
    finally:
        table.unwrap()
        seam._requests.clear()
        spec_tracing.shutdown()
    q1, med, q3 = spread(added)
    return {"ns_per_request": med / 256 * 1e9, "ns_quartiles": [q1 / 256 * 1e9, q3 / 256 * 1e9]}


def bench_enabled(quick: bool) -> dict:
    """2. Tracing on at level 3: the engine thread's cost of one decode step's tracing."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_NullExporter()))
    tracer = provider.get_tracer("baseline")
    out = {n: _measure(n, tracer, quick) for n in (1, 16, 64, 256)}
    provider.shutdown()
    out["batch256_over_batch1"] = out[256]["ours_us"] / out[1]["ours_us"]
    out["goal"] = "ours/baseline <= 1/500 at 256; batch256/batch1 <= 2"
    return out
