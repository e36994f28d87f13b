"""EngineCore process, vLLM's scheduler: requests, acceptance, and the step's stage events.

`add_request` opens the request's root span (`spec_request`), joining the trace of the request's
`trace_headers` when it carries a traceparent; `make_spec_decoding_stats` is called by vLLM once
per request with drafts with the same proposed/accepted numbers its `vllm:spec_decode_*` counters
get, so `accepted_tokens` agrees with them by construction; `update_from_output` then records the
step's verify and draft batches (one event each) with the times the worker put on the step's
output; `_free_request` ends the root (ERROR when aborted). A step in which a request had no
drafts (an n-gram miss) has no spec_verify span for it: vLLM counts only requests with drafts.
With a dynamic schedule (`num_speculative_tokens_per_batch_size`) each step's draft carries the
width the scheduler chose for its batch size, the verify the width it checks (the previous
step's), and each change of width is a `spec_adapt` span on the step's requests.

Degrade, don't vanish: when no worker times came with a step (a worker seam missing in this vLLM)
but vLLM counted verify rounds, the verify is still recorded, timed by the scheduler's own step
bounds (from `schedule()` returning to `update_from_output`), with `spec_tracing.timing =
"scheduler_step"`; and once per process a warning names the runner and the missing seams."""

from __future__ import annotations

import inspect
import logging
import os
from time import perf_counter

from ...record import hotpath
from ...record.request_trace import ReqTimeStats
from ...semconv import SpanAttr
from ...stages import RequestStage
from .._wrapping import Inline, Seam
from ..auto import enable_from_environment
from . import step_times
from .frontend import announced_root
from .step_times import (
    DRAFT_END,
    DRAFT_START,
    EXTEND_END,
    EXTEND_START,
    VERIFY_END,
    VERIFY_START,
)

logger = logging.getLogger(__name__)

_requests: dict[str, ReqTimeStats] = {}  # request id -> its trace state
# The current step's verified requests (trace states, proposed, accepted, output tokens before
# the round), appended inside vLLM's own per-request accounting loop.
_round: tuple[list, list, list, list] | None = None
_ending: list | None = None  # requests freed during the current step
_SCHEDULED = "_spec_tracing_scheduled"  # on SchedulerOutput: when schedule() returned
# Rounds counted with no worker times before the self-check says so (a warm-up step or two may
# legitimately come without them).
DARK_AFTER_ROUNDS = 16
health = {"rounds": 0, "timed_rounds": 0, "scheduler_timed_rounds": 0, "dark_warnings": 0}


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
                root_ids = announced_root(headers)
                _requests[rid] = ReqTimeStats(
                    rid=rid, carrier=None if root_ids else carrier, root_ids=root_ids,
                    attributes=_gen_ai(instance),
                )  # fmt: skip
    except Exception:
        logger.debug("spec-tracing: request not traced", exc_info=True)
    return result


def _gen_ai(scheduler) -> dict:
    """The GenAI attributes vLLM's scheduler knows: the model (as served) and the provider."""
    attrs = {SpanAttr.GEN_AI_PROVIDER: "vllm"}
    config = getattr(getattr(scheduler, "vllm_config", None), "model_config", None)
    name = getattr(config, "served_model_name", None) or getattr(config, "model", None)
    if isinstance(name, list | tuple):
        name = name[0] if name else None
    if isinstance(name, str) and name:
        attrs[SpanAttr.GEN_AI_MODEL] = name
    return attrs


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
            _note_round(self, request_id, num_draft_tokens, num_accepted_tokens,
                        num_invalid_spec_tokens)  # fmt: skip
        return original(
            self,
            spec_decoding_stats,
            num_draft_tokens,
            num_accepted_tokens,
            num_invalid_spec_tokens,
            request_id,
        )

    if parameters(original) != parameters(make_spec_decoding_stats):
        logger.warning(
            "spec-tracing: vLLM's Scheduler.make_spec_decoding_stats%s is not the one supported: "
            "accepted drafts are not recorded",
            inspect.signature(original),
        )
        return None
    return make_spec_decoding_stats


def parameters(fn) -> list:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def _note_round(
    scheduler, request_id, num_draft_tokens, num_accepted_tokens, num_invalid_spec_tokens
):
    try:
        stats = _requests.get(request_id)
        if stats is not None:
            reqs, proposed, accepted, before = _round
            invalid = num_invalid_spec_tokens.get(request_id, 0) if num_invalid_spec_tokens else 0
            reqs.append(stats)
            proposed.append(num_draft_tokens - invalid)
            accepted.append(num_accepted_tokens)
            # vLLM appends the round's tokens after this call: the output so far is where the
            # round's first token goes, steps without drafts (n-gram misses) included.
            request = scheduler.requests.get(request_id)
            before.append(None if request is None else request.num_output_tokens)
    except Exception:
        logger.debug("spec-tracing: acceptance not recorded", exc_info=True)


def _schedule(wrapped, instance, args, kwargs):
    output = wrapped(*args, **kwargs)
    try:
        setattr(output, _SCHEDULED, perf_counter())
    except Exception:
        pass
    return output


def _update_from_output(wrapped, instance, args, kwargs):
    global _round, _ending
    if hotpath.LEVEL < 2:
        return wrapped(*args, **kwargs)
    received = perf_counter()
    _round, _ending = ([], [], [], []), []
    try:
        result = wrapped(*args, **kwargs)
    finally:
        rounds, ending, _round, _ending = _round, _ending, None, None
        try:
            scheduled = args[0] if args else kwargs["scheduler_output"]
            output = args[1] if len(args) > 1 else kwargs["model_runner_output"]
            times = getattr(output, step_times.TIMES, None)
            _record_step(instance, output, times, rounds, scheduled, received)
        except Exception:
            logger.debug("spec-tracing: step not recorded", exc_info=True)
        # Requests that finished in this step end after its verify: their last round counts.
        for request_end in ending:
            _end(*request_end)
        if ending:
            # EngineCore may be killed right after the last response (--shutdown-timeout 0):
            # finished requests leave this process now, not at the next drain. (Imported
            # here: tracing is on, so lifecycle is loaded already.)
            from ... import lifecycle

            lifecycle.drain_soon()
    return result


def _end(stats: ReqTimeStats, aborted: bool, reason: str, ts: float | None) -> None:
    if aborted:
        stats.abort(reason, ts=ts)
    else:
        stats.finish(ts=ts, reason=reason)


# Dynamic speculative decoding (num_speculative_tokens_per_batch_size): the width the scheduler
# chose for the previous step, whose drafts this step verifies.
_dynamic = {"width": None}


def _widths(config, scheduled, output, attrs: dict) -> tuple[dict, dict]:
    """(the verify's attributes, the draft's) under a dynamic schedule: the draft proposes
    this step's width (the scheduler's pick for the batch size), the verify checks the previous
    step's. A change of width is a spec_adapt span on the step's requests."""
    schedule = getattr(config, "num_speculative_tokens_per_batch_size", None)
    width = getattr(scheduled, "num_spec_tokens_to_schedule", None)
    if not schedule or type(width) is not int:
        return attrs, attrs
    before, _dynamic["width"] = _dynamic["width"], width
    draft = {**attrs, SpanAttr.NUM_STEPS: width}
    if before is None:
        return attrs, draft
    if width != before:
        batch_size = len(scheduled.num_scheduled_tokens)
        most = getattr(config, "num_speculative_tokens", None) or width
        ranges = sorted(tuple(int(x) for x in r) for r in schedule)
        slot = max((lo for lo, _, _ in ranges if lo <= batch_size), default=ranges[0][0])
        at = getattr(scheduled, _SCHEDULED, None) or perf_counter()
        hotpath.record_batch_stage(_step_requests(output), RequestStage.SPEC_ADAPT, at, at, attrs={
            SpanAttr.ADAPT_OLD_WIDTH: before,
            SpanAttr.ADAPT_NEW_WIDTH: width,
            SpanAttr.ADAPT_SLOT: slot,
            SpanAttr.ADAPT_CANDIDATES: sorted({min(most, k) for _, _, k in ranges}),
        })  # fmt: skip
    return {**attrs, SpanAttr.NUM_STEPS: before}, draft


def _step_requests(output) -> list:
    """The trace states of the requests the step ran."""
    return [stats for stats in map(_requests.get, output.req_ids) if stats is not None]


def _record_step(scheduler, output, times, rounds, scheduled, received) -> None:
    config = getattr(scheduler.vllm_config, "speculative_config", None)
    attrs = {SpanAttr.WORKER: str(getattr(config, "method", "") or "vllm")}
    width = getattr(config, "num_speculative_tokens", None)
    if width:
        attrs[SpanAttr.NUM_STEPS] = width
    attrs, draft_attrs = _widths(config, scheduled, output, attrs)
    reqs, proposed, accepted, before = rounds
    if None in before:  # a request vLLM no longer held: offsets follow from the rounds
        before = None
    if reqs:
        health["rounds"] += 1
        if times is not None and times[VERIFY_END] is not None:
            health["timed_rounds"] += 1
            start, end = times[VERIFY_START], times[VERIFY_END]
        else:  # the worker's times are missing: the scheduler's own step bounds
            start, end = getattr(scheduled, _SCHEDULED, None) or received, received
            attrs = {**attrs, SpanAttr.TIMING: "scheduler_step"}
            health["scheduler_timed_rounds"] += 1
            _check_dark(scheduler)
        hotpath.record_batch_stage(
            reqs, RequestStage.SPEC_VERIFY, start, end, accepted, proposed, attrs, before
        )
    if times is None:
        return
    if times[EXTEND_START] is not None or times[DRAFT_START] is not None:
        batch = _step_requests(output)
        if times[EXTEND_START] is not None:
            hotpath.record_batch_stage(
                batch, RequestStage.SPEC_DRAFT_EXTEND, times[EXTEND_START], times[EXTEND_END],
                attrs=draft_attrs,
            )  # fmt: skip
        if times[DRAFT_START] is not None:
            hotpath.record_batch_stage(
                batch, RequestStage.SPEC_DRAFT, times[DRAFT_START], times[DRAFT_END],
                attrs=draft_attrs,
            )  # fmt: skip


def _check_dark(scheduler) -> None:
    if health["timed_rounds"] or health["dark_warnings"]:
        return
    if health["scheduler_timed_rounds"] < DARK_AFTER_ROUNDS:
        return
    health["dark_warnings"] += 1
    from . import describe_runner, missing_seams, vllm_version

    logger.warning(
        "spec-tracing: vLLM %s (%s): %d verify rounds counted but no verify times came from the "
        "worker; spec_verify is timed by the scheduler's step bounds (spec_tracing.timing="
        "scheduler_step). Seams not found: %s",
        vllm_version(),
        describe_runner(scheduler.vllm_config),
        health["scheduler_timed_rounds"],
        missing_seams() or "none (is the plugin loaded in the worker process?)",
    )


SEAMS = [
    Seam(
        "vllm.v1.core.sched.scheduler:Scheduler",
        "add_request",
        _add_request,
        "spec_request (the root)",
    ),  # fmt: skip
    Seam(
        "vllm.v1.core.sched.scheduler:Scheduler", "_free_request", _free_request, "spec_request end"
    ),  # fmt: skip
    Seam(
        "vllm.v1.core.sched.scheduler:Scheduler",
        "make_spec_decoding_stats",
        Inline(_make_spec_decoding_stats),
        "accepted/proposed counts of spec_verify",
    ),  # fmt: skip
    Seam(
        "vllm.v1.core.sched.scheduler:Scheduler",
        "update_from_output",
        _update_from_output,
        "every stage event",
    ),  # fmt: skip
    Seam(
        "vllm.v1.core.sched.scheduler:Scheduler",
        "schedule",
        _schedule,
        "scheduler step bounds (spec_verify when worker times are missing)",
    ),  # fmt: skip
]
