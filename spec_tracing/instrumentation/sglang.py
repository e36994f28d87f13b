"""SGLang: spec_draft / spec_verify / spec_draft_extend spans per request and decode step, from
outside.

Loaded in SGLang's processes through its `sglang.srt.plugins` entry point (sglang_plugin.py),
which wraps when SPEC_TRACING_ENABLED is set; `SGLangInstrumentor().instrument()` does the same by
hand. Supported: sglang 0.5.23; NGRAM and the EAGLE v2 family (EAGLE, EAGLE3, STANDALONE, and
multi-layer EAGLE), with the overlap scheduler (SGLang's default) and without it.

SGLang 0.5.23 emits no spec spans of its own on these paths (NGRAM calls SGLang's own
`set_time_batch` on SGLang's own `req.time_stats`; EAGLE's stages are profiler ranges; nothing
calls a verify end). So:
- scheduler, `Req.__init__`: the request's root (`spec_request`), kept on the request object;
- the spec worker's stages, timed with perf_counter on the object that ran them: NGRAM's draft is
  `_prepare_for_speculative_decoding` (n-gram lookup, tree build) and its verify the rest of
  `forward_batch_generation` (target forward, sampling, KV moves); EAGLE v2's are the draft
  worker's `draft`, the worker's `verify` and the draft worker's `_draft_extend_for_decode`;
  `forward_batch_generation` records draft and draft extend and puts the verify's times on its
  result;
- scheduler, `process_batch_result_decode`: SGLang's own per-request accounting runs inside it
  (`req.spec_verify_ct += 1`, `spec_num_correct_drafts += result.num_correct_drafts_per_req_cpu[i]`
  for the requests it counts, the same code for every algorithm); the verify event takes exactly
  those requests and counts, so `accepted_tokens` reproduces `meta_info`'s
  `spec_num_correct_drafts`, `spec_verify_ct` and `spec_correct_drafts_histogram`; proposed =
  speculative_num_draft_tokens - 1 per round, as SGLang's `spec_num_proposed_drafts`. Requests
  that finished in the step end after it (ERROR when aborted);
- scheduler, `AdaptiveSpeculativeParams.on_verify_complete` (adaptive EAGLE, called inside
  `process_batch_result_decode`): when it returns a new step count, a `spec_adapt` span on the
  batch's requests with the slot, the EMA before and after, the old and new steps and the
  candidates;
- the user's process, `Engine.shutdown`: a short grace before SGLang SIGKILLs the scheduler.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from collections.abc import Collection
from time import perf_counter

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from .. import lifecycle
from ..record import hotpath
from ..record.compactor import STATS_ATTR
from ..record.request_trace import ReqTimeStats
from ..semconv import SpanAttr
from ..stages import RequestStage
from ._wrapping import Seam, WrapTable
from .auto import enable_from_environment

logger = logging.getLogger(__name__)

SUPPORTED = ("sglang >= 0.5.18, < 0.6",)
_STATS = STATS_ATTR  # our ReqTimeStats on SGLang's Req (SGLang's own is its time_stats)
_TIMES = "_spec_tracing_times"  # (draft start, draft end, verify end) on the batch result


# Set once a request SGLang traces itself is seen: from then on the NGRAM draft's requests are
# sorted per step (SGLang records that slice itself for those); until then the batch goes whole.
_sglang_traces_requests = False


# SGLang's Req does not know the model it runs on; the provider is all there is to say.
_GEN_AI = {SpanAttr.GEN_AI_PROVIDER: "sglang"}


def _req_init(wrapped, instance, args, kwargs):
    global _sglang_traces_requests
    wrapped(*args, **kwargs)
    try:
        # None until traced: the recorder skips requests created while tracing was off.
        setattr(instance, _STATS, None)
        enable_from_environment()
        if hotpath.LEVEL:
            if _sglang_trace_ctx(instance) is not None:
                _sglang_traces_requests = True
            carrier = _sglang_trace(instance)
            stats = ReqTimeStats(rid=instance.rid, carrier=carrier, attributes=_GEN_AI)
            setattr(instance, _STATS, stats)
    except Exception:
        logger.debug("spec-tracing: request not traced", exc_info=True)


def _sglang_trace_ctx(req):
    """The request's trace context in SGLang's own tracing (`--enable-trace`), if that is on."""
    ctx = getattr(getattr(req, "time_stats", None), "trace_ctx", None)
    return ctx if getattr(ctx, "tracing_enable", False) else None


def _sglang_trace(req) -> dict | None:
    """The request's place in SGLang's own trace: its root span's context, which the
    scheduler's copy of the request's trace context carries."""
    root = getattr(_sglang_trace_ctx(req), "root_span_context", None)
    if root is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict = {}
    TraceContextTextMapPropagator().inject(carrier, root)
    return carrier or None


# Each decode step's stage times, on the worker object that ran the stage: {stage: (start, end)}.
_STAMPS = "_spec_tracing_stamps"
_DRAFT, _VERIFY, _EXTEND = "draft", "verify", "extend"


def _stamp(stage: str):
    """A wrapper that notes when `stage` ran (perf_counter) on the object that ran it."""

    def wrapper(wrapped, instance, args, kwargs):
        if not hotpath.LEVEL:
            return wrapped(*args, **kwargs)
        t0 = perf_counter()
        result = wrapped(*args, **kwargs)
        try:
            vars(instance).setdefault(_STAMPS, {})[stage] = (t0, perf_counter())
        except Exception:
            logger.debug("spec-tracing: %s not timed", stage, exc_info=True)
        return result

    return wrapper


_stamp_draft = _stamp(_DRAFT)


def _ngram_prepare(wrapped, instance, args, kwargs):
    result = _stamp_draft(wrapped, instance, args, kwargs)
    # The NGRAM worker prepares every batch here; it turns the ones with drafts to verify into
    # TARGET_VERIFY batches, so only those had a draft.
    try:
        drafted = (args[0] if args else kwargs["batch"]).forward_mode.is_target_verify()
    except Exception:
        drafted = False
    if not drafted:
        getattr(instance, _STAMPS, {}).pop(_DRAFT, None)
    return result


def _stamps_of(worker) -> list[dict]:
    """The stamp dicts of the spec worker and of its draft worker (EAGLE's draft and draft
    extend run there), emptied for the coming step."""
    out = [vars(worker).setdefault(_STAMPS, {})]
    draft_worker = vars(worker).get("_draft_worker")  # BaseSpecWorker.draft_worker's field
    if draft_worker is not None:
        out.append(vars(draft_worker).setdefault(_STAMPS, {}))
    for stamps in out:
        stamps.clear()
    return out


def _make_forward(sglang_records_draft: bool):
    """The wrapper of a spec worker's forward_batch_generation: one decode step (draft, verify,
    and for EAGLE the draft extend) or a prefill. Draft and extend are recorded now; the
    verify's times ride on the result to process_batch_result_decode, where SGLang counts the
    accepted drafts. `sglang_records_draft`: with SGLang's own tracing on, SGLang records this
    worker's spec_draft slice itself (NGRAM), so ours is left out for those requests."""

    def forward(wrapped, instance, args, kwargs):
        if not hotpath.LEVEL:
            return wrapped(*args, **kwargs)
        try:
            stamps = _stamps_of(instance)
        except Exception:
            stamps = []
        result = wrapped(*args, **kwargs)
        end = perf_counter()
        try:
            merged = {k: v for d in stamps for k, v in d.items()}
            draft = merged.get(_DRAFT)
            if draft is None:  # prefill, idle, or a step without drafting
                return result
            # NGRAM: the verify is the rest of forward_batch_generation after the draft.
            verify = merged.get(_VERIFY) or (draft[1], end)
            attrs, width = _attrs(instance)
            setattr(result, _TIMES, (verify, width, attrs))
            # SGLang's requests as they are: the recorder finds our stats on them, off this
            # thread (the scheduler's), and one copy serves both stages.
            reqs = tuple((args[0] if args else kwargs["batch"]).reqs)
            drafted = reqs
            if sglang_records_draft and _sglang_traces_requests:
                drafted = tuple(r for r in reqs if not _sglang_trace_ctx(r))
            hotpath.record_batch_stage(drafted, RequestStage.SPEC_DRAFT, *draft, attrs=attrs)
            extend = merged.get(_EXTEND)
            if extend is not None:
                hotpath.record_batch_stage(
                    reqs, RequestStage.SPEC_DRAFT_EXTEND, *extend, attrs=attrs
                )
        except Exception:
            logger.debug("spec-tracing: draft not recorded", exc_info=True)
        return result

    return forward


_forward_ngram = _make_forward(sglang_records_draft=True)
_forward_eagle = _make_forward(sglang_records_draft=False)


def _attrs(worker) -> tuple[dict, int | None]:
    """The step's shared attributes and its verify width (drafts + 1 per request), read after
    the step: an adaptive EAGLE worker picks its number of steps per batch."""
    attrs = {SpanAttr.WORKER: type(worker).__name__}
    width = getattr(worker, "speculative_num_draft_tokens", None) or getattr(
        worker, "draft_token_num", None
    )
    if width:
        attrs[SpanAttr.NUM_DRAFT_TOKENS] = width
        # NGRAM keeps speculative_num_steps at 0: its drafts per round are width - 1.
        attrs[SpanAttr.NUM_STEPS] = getattr(worker, "speculative_num_steps", 0) or width - 1
    return attrs, width


# The requests of the batch process_batch_result_decode is handling (the scheduler's one
# thread), for the adaptive controller's decision, which SGLang makes inside it from counts only.
_batch_reqs: tuple = ()


def _process_decode(wrapped, instance, args, kwargs):
    global _batch_reqs
    if not hotpath.LEVEL:
        return wrapped(*args, **kwargs)
    try:
        reqs = tuple((args[0] if args else kwargs["batch"]).reqs)
    except Exception:
        reqs = ()
    try:
        before = [r.spec_verify_ct for r in reqs]
    except Exception:
        before = None  # no verify event; finished requests still end below
    _batch_reqs = reqs
    try:
        out = wrapped(*args, **kwargs)
    finally:
        _batch_reqs = ()
    try:
        _record_verify(reqs, args[1] if len(args) > 1 else kwargs["result"], before)
    except Exception:
        logger.debug("spec-tracing: verify not recorded", exc_info=True)
    try:
        _end_finished(reqs)
    except Exception:
        logger.debug("spec-tracing: request ends not recorded", exc_info=True)
    return out


def _end_finished(reqs: tuple) -> None:
    # finished() is `finished_reason is not None`; read inline, it is ~5x cheaper a request.
    ended = False
    for req in [r for r in reqs if r.finished_reason is not None]:
        stats = getattr(req, _STATS, None)
        if stats is not None and not stats.finished:
            _end(req, stats)
            ended = True
    if ended:
        # SGLang's Engine.shutdown() kills the scheduler right after the last response: let
        # finished requests leave this process now, not at the next drain.
        lifecycle.drain_soon()


def _adaptive_decision(wrapped, instance, args, kwargs):
    """AdaptiveSpeculativeParams.on_verify_complete(num_correct_drafts_per_req, batch_size):
    when it returns a new step count, a spec_adapt span on the batch's requests with the
    controller's inputs: its batch-size slot, the EMA of accepted drafts before and after this
    batch, the old and new steps, the slot's candidates."""
    if not hotpath.LEVEL or not _batch_reqs:
        return wrapped(*args, **kwargs)
    try:
        batch_size = args[1] if len(args) > 1 else kwargs["batch_size"]
        bs = instance._find_closest_bs(instance._pad_to_cuda_graph_bs(batch_size))
        slot = instance._slots[bs]
        ema_before, old = slot.ema_accept_len, slot.current_steps
    except Exception:
        logger.debug("spec-tracing: adaptive slot not read", exc_info=True)
        return wrapped(*args, **kwargs)
    new = wrapped(*args, **kwargs)
    if new is not None:
        try:
            now = perf_counter()
            hotpath.record_batch_stage(_batch_reqs, RequestStage.SPEC_ADAPT, now, now, attrs={
                SpanAttr.ADAPT_OLD_WIDTH: int(old),
                SpanAttr.ADAPT_NEW_WIDTH: int(new),
                SpanAttr.ADAPT_SLOT: int(bs),
                SpanAttr.ADAPT_EMA_BEFORE: float(ema_before),
                SpanAttr.ADAPT_EMA_AFTER: float(slot.ema_accept_len),
                SpanAttr.ADAPT_CANDIDATES: [int(c) for c in slot.candidate_steps],
            })  # fmt: skip
        except Exception:
            logger.debug("spec-tracing: adaptive decision not recorded", exc_info=True)
    return new


def _record_verify(reqs: tuple, result, before: list | None) -> None:
    """The verify event for the requests SGLang counted this round (spec_verify_ct went up by
    one), with their accepted drafts. Per request, only counters are read here (the scheduler's
    thread); the recorder finds our stats on the requests."""
    times = getattr(result, _TIMES, None)
    correct = getattr(result, "num_correct_drafts_per_req_cpu", None)
    if times is None or correct is None or before is None:
        return
    (verify_start, verify_end), width, attrs = times
    after = [r.spec_verify_ct for r in reqs]
    if sum(after) - sum(before) != len(reqs):  # some were not counted (finished, retracted)
        counted = [i for i, (a, b) in enumerate(zip(after, before, strict=True)) if a > b]
        reqs = tuple(reqs[i] for i in counted)
        correct = [correct[i] for i in counted]
    if not reqs:
        return
    # SGLang's spec_num_proposed_drafts: speculative_num_draft_tokens - 1 per round.
    proposed = width - 1 if width else None
    hotpath.record_batch_stage(
        reqs, RequestStage.SPEC_VERIFY, verify_start, verify_end, correct, proposed, attrs
    )


def _end(req, stats: ReqTimeStats) -> None:
    reason = getattr(req, "finished_reason", None)
    kind = type(reason).__name__
    if kind == "FINISH_ABORT":
        stats.abort(getattr(reason, "message", None) or "aborted")
    else:
        stats.finish(reason=kind.removeprefix("FINISH_").lower() or "stop")


# Engine.shutdown() SIGKILLs the scheduler's process tree at once. A request's root leaves the
# scheduler's process within milliseconds of the step that finished it (drain_soon), but a
# shutdown straight after the last response could still beat it (1 root in 12 in six runs of
# the SGLang tier with no pause): this much time is given first, in the engine's own process.
SHUTDOWN_GRACE_S = 0.25


def _engine_shutdown(wrapped, instance, args, kwargs):
    time.sleep(SHUTDOWN_GRACE_S)
    return wrapped(*args, **kwargs)


_SPEC = "sglang.srt.speculative"


def _targets():
    # StandaloneWorkerV2 / StandaloneDraftWorker subclass the EAGLE v2 classes without
    # overriding these methods: wrapping the base classes covers them.
    eagle = []
    for worker, draft_worker in (
        (f"{_SPEC}.eagle_worker_v2:EAGLEWorkerV2", f"{_SPEC}.eagle_worker_v2:EagleDraftWorker"),
        (f"{_SPEC}.multi_layer_eagle_worker_v2:MultiLayerEagleWorkerV2",
         f"{_SPEC}.multi_layer_eagle_worker_v2:MultiLayerEagleDraftWorker"),
    ):  # fmt: skip
        eagle += [
            Seam(worker, "forward_batch_generation", _forward_eagle, "EAGLE v2 stage events"),
            Seam(worker, "verify", _stamp(_VERIFY), "spec_verify, EAGLE v2"),
            Seam(draft_worker, "draft", _stamp_draft, "spec_draft, EAGLE v2"),
            Seam(
                draft_worker,
                "_draft_extend_for_decode",
                _stamp(_EXTEND),
                "spec_draft_extend, EAGLE v2",
            ),  # fmt: skip
        ]
    ngram = f"{_SPEC}.ngram_worker:NGRAMWorker"
    adaptive = Seam(
        f"{_SPEC}.adaptive_spec_params:AdaptiveSpeculativeParams", "on_verify_complete",
        _adaptive_decision, "spec_adapt (the adaptive controller's decisions)",
    )  # fmt: skip
    return (
        [
            Seam(
                "sglang.srt.managers.schedule_batch:Req",
                "__init__",
                _req_init,
                "spec_request (the root)",
            ),  # fmt: skip
            Seam(ngram, "_prepare_for_speculative_decoding", _ngram_prepare, "spec_draft, NGRAM"),
            Seam(ngram, "forward_batch_generation", _forward_ngram, "spec_verify, NGRAM"),
            Seam(
                "sglang.srt.managers.scheduler_components.batch_result_processor:"
                "SchedulerBatchResultProcessor",
                "process_batch_result_decode",
                _process_decode,
                "accepted/proposed counts, every stage event",
            ),  # fmt: skip
        ]
        + eagle
        + [adaptive]
        + _engine_target()
    )


def _engine_target() -> list:
    # Only where sglang.Engine is in use already (the user's process): importing it in a
    # scheduler process would load SGLang's whole front end there for nothing.
    engine = sys.modules.get("sglang.srt.entrypoints.engine")
    return [] if engine is None else [(engine.Engine, "shutdown", _engine_shutdown)]


_table = WrapTable(_targets, engine="SGLang")
wrap_all = _table.wrap  # what the sglang.srt.plugins entry point calls


class SGLangInstrumentor(BaseInstrumentor):
    """Wraps SGLang's scheduler and NGRAM worker in this process; `uninstrument()` restores
    them. In SGLang's scheduler processes the `sglang.srt.plugins` entry point does the same."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return SUPPORTED

    def _instrument(self, **kwargs) -> None:
        # opentelemetry-instrument calls every installed instrumentor (skip_dep_check); where
        # sglang is not installed there is nothing to wrap and nothing to say
        # (tests/instrumentation/test_auto_instrument.py, empty stderr).
        if importlib.util.find_spec("sglang") is None:
            return
        enable_from_environment(kwargs.get("tracer_provider"))
        wrap_all()

    def _uninstrument(self, **kwargs) -> None:
        _table.unwrap()
