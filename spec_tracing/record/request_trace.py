"""Per-request trace state: ReqTimeStats.

A ReqTimeStats names the request's trace (trace id, root span id, parent, sampling decision) from
the moment the request arrives. Its stage setters do not create spans: they append an event to the
hot-path buffer, and the materializer turns events into child spans of the root. The root span is
emitted when the request finishes, with the ids chosen here, so a ReqTimeStats pickled into another
process (tokenizer -> scheduler) keeps its trace there, and whichever process finishes the request
emits the root.
"""

from __future__ import annotations

import pickle
import threading
import weakref
from time import perf_counter

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..ids import random_id as _random_id
from ..semconv import SpanAttr
from ..stages import RequestStage, StageConfig
from ..wire import END, FINISH, SLICE, START
from . import hotpath

_propagator = TraceContextTextMapPropagator()
_CORRECT = SpanAttr.NUM_CORRECT_DRAFTS


def _boundary(kind: int, stage: StageConfig, suffix: str):
    key = f"{stage.name}.{suffix}"

    # (ts, attrs): SGLang's set_time_batch calls a setter as `method(ts, attrs)` when given attrs.
    def setter(self: ReqTimeStats, ts: float | None = None, attrs: dict | None = None) -> None:
        ts = perf_counter() if ts is None else ts
        self.last_times[key] = ts
        if hotpath.LEVEL >= stage.level and self.sampled:
            hotpath._push((kind, stage, ts, None, (self,), None, None, attrs))

    setter._spec_event = (kind, stage)
    setter.__name__ = f"set_{stage.name}_{suffix}_time"
    hotpath.SETTERS[setter.__name__] = (kind, stage)
    setter.__doc__ = f"Mark the {suffix} of {stage.name} for this request (perf_counter seconds)."
    return setter


_live: weakref.WeakSet = weakref.WeakSet()  # sampled, unfinished, owned here
# Engine threads add and discard while shutdown() walks the set: unguarded, the walk raised "set
# changed size during iteration" in 9 of 10 rounds and at exit flushed nothing. Held once per
# request start and end (~0.1 us), never per batch.
_live_lock = threading.Lock()


def _open_requests() -> list:
    with _live_lock:
        return list(_live)


def _abandoned(state: dict) -> None:
    """The engine dropped a request without finishing it: end its root span with an error."""
    try:
        ghost = ReqTimeStats.__new__(ReqTimeStats)
        ghost.__dict__.update(state, finished=True)
        if hotpath.recording():
            how = {"reason": "abandoned", "error": "request dropped without finish() or abort()"}
            hotpath._push_finish((FINISH, RequestStage.REQUEST, perf_counter(), None, (ghost,),
                                  None, None, how))  # fmt: skip
    except Exception:  # a finalizer must never raise
        pass


def _picklable_part(state: dict) -> dict:
    def travels(value) -> bool:
        try:
            pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
            return True
        except Exception:
            return False

    out = {k: v for k, v in state.items() if k == "attributes" or travels(v)}
    out["attributes"] = {k: v for k, v in state["attributes"].items() if travels(v)}
    hotpath.invalid += len(state) + len(state["attributes"]) - len(out) - len(out["attributes"])
    return out


def end_unfinished(reason: str) -> int:
    """End the root span of every request still open in this process (at shutdown)."""
    count = 0
    for stats in _open_requests():
        if not stats.finished:
            stats._finish(None, {"reason": "unfinished", "error": reason})
            count += 1
    return count


def forget_inherited() -> None:
    """After fork: the parent's open requests are the parent's to end."""
    for stats in _open_requests():
        finalizer = stats.__dict__.pop("_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
    with _live_lock:
        _live.clear()


class ReqTimeStats:
    """Trace state of one request; attach it to the engine's request as `req.time_stats`.

    carrier: a W3C trace-context carrier ({"traceparent": ...}) to join the caller's trace.
    root_ids: (trace_id, span_id) for the root span itself, when they were announced before the
    request reached the engine (a front end that started the trace for a caller that had none).
    Without one, the root span is a child of the span active in the current OpenTelemetry context,
    or starts a new trace. Sampling is decided here, once per request.
    """

    # A copy unpickled from a process whose ReqTimeStats had no such field reads None here,
    # not an AttributeError on the recorder's thread (tests/record/test_pickle.py).
    prefill_start_ts: float | None = None
    # What the compactor ships per request besides its handle (wire.py's flags): None for a
    # sampled request whose first round follows a prefill, else (sampled, output_base). Kept
    # in one attribute so a batch is sorted with one C loop (compactor._flags).
    wire_flag: tuple | None = (False, 1)

    @property
    def output_base(self) -> int:
        """Where the first verify round's tokens start in the output: 1 after a prefill that
        emits the first token (the default), 0 for an engine whose first round emits it
        (transformers)."""
        return 1 if self.wire_flag is None else self.wire_flag[1]

    @output_base.setter
    def output_base(self, value: int) -> None:
        self.wire_flag = None if self.sampled and value == 1 else (self.sampled, value)

    def __init__(
        self,
        rid: str | int | None = None,
        carrier: dict | None = None,
        attributes: dict | None = None,
        ts: float | None = None,
        *,
        root_ids: tuple[int, int] | None = None,
    ) -> None:
        self.rid = rid
        self.start_ts = perf_counter() if ts is None else ts
        self.attributes = dict(attributes) if attributes else {}
        self.last_times: dict[str, float] = {}
        self.finished = False
        # Written by the recorder's thread only: when the first token was out (the end of
        # prefill). The request's acceptance and time per stage are counted where spans are
        # assembled (pipeline/signals.py), not in the engine's process.
        self.first_token_ts: float | None = None
        self.prefill_start_ts: float | None = None  # when it left the queue
        # Trace identity.
        self.trace_id = 0
        self.span_id = 0
        self.handle = (0, 0)
        self.parent: tuple[int, int, int] | None = None  # (trace_id, span_id, flags), remote
        self.sampled = False
        sink = hotpath.SINK
        if hotpath.LEVEL and sink is not None:
            try:
                self._start_trace(sink, carrier, root_ids)
            except Exception:  # a carrier we cannot read: a new trace, counted
                hotpath.invalid += 1
                self._start_trace(sink, None)

    def _start_trace(self, sink, carrier: dict | None, root_ids=None) -> None:
        ctx = _propagator.extract(carrier) if carrier else None
        parent_span = trace.get_current_span(ctx)
        parent_sc = parent_span.get_span_context()
        if root_ids is not None:  # ids announced earlier (an engine's front end made them)
            self.trace_id, self.span_id = (int(i) for i in root_ids)
            if not (0 < self.trace_id < 2**128 and 0 < self.span_id < 2**64):
                raise ValueError(f"root_ids {root_ids!r} are not a trace id and a span id")
        elif parent_sc.is_valid:
            self.trace_id = parent_sc.trace_id
            self.parent = (parent_sc.trace_id, parent_sc.span_id, int(parent_sc.trace_flags))
            self.span_id = _random_id(64)
        else:
            self.trace_id = _random_id(128)
            self.span_id = _random_id(64)
        self.handle = (self.trace_id, self.span_id)  # what the span assembler keys on
        self.sampled = sink.should_sample(
            ctx if ctx is not None else otel_context.get_current(), self.trace_id, self.attributes
        )
        if self.sampled:
            self.wire_flag = None
            self._own()

    def _own(self) -> None:
        """Make this copy the one that ends the root span if the engine drops the request
        without finishing it (garbage collected, or still open at shutdown)."""
        finalizer = weakref.finalize(self, _abandoned, self._ghost_state())
        finalizer.atexit = False
        self._finalizer = finalizer
        with _live_lock:
            _live.add(self)

    def _ghost_state(self) -> dict:
        keep = ("rid", "start_ts", "attributes", "trace_id", "span_id", "handle", "parent",
                "sampled", "last_times", "first_token_ts", "prefill_start_ts")  # fmt: skip
        return {k: self.__dict__[k] for k in keep}

    def _disown(self) -> None:
        finalizer = self.__dict__.pop("_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
        with _live_lock:
            _live.discard(self)

    # Stage boundaries. Each is also accepted by set_time_batch(reqs, ReqTimeStats.<setter>).
    set_prefill_start_time = _boundary(START, RequestStage.PREFILL, "start")
    set_prefill_end_time = _boundary(END, RequestStage.PREFILL, "end")
    set_decode_start_time = _boundary(START, RequestStage.DECODE, "start")
    set_decode_end_time = _boundary(END, RequestStage.DECODE, "end")
    set_spec_draft_start_time = _boundary(START, RequestStage.SPEC_DRAFT, "start")
    set_spec_draft_end_time = _boundary(END, RequestStage.SPEC_DRAFT, "end")
    set_spec_verify_start_time = _boundary(START, RequestStage.SPEC_VERIFY, "start")
    set_spec_draft_extend_start_time = _boundary(START, RequestStage.SPEC_DRAFT_EXTEND, "start")
    set_spec_draft_extend_end_time = _boundary(END, RequestStage.SPEC_DRAFT_EXTEND, "end")

    def set_spec_verify_end_time(
        self,
        ts: float | None = None,
        accepted_tokens: int = 0,
        proposed_tokens: int | None = None,
        attrs: dict | None = None,
        *,
        num_correct_drafts: int | None = None,
    ) -> None:
        """End spec_verify with this step's accepted draft count (bonus token excluded) and,
        if known, the number of drafts proposed in the step. `num_correct_drafts` is SGLang's
        name for the accepted count (SGLang calls `set_spec_verify_end_time(num_correct_drafts=n)`);
        the span then carries it under both names."""
        ts = perf_counter() if ts is None else ts
        self.last_times["spec_verify.end"] = ts
        if num_correct_drafts is not None:
            accepted_tokens = num_correct_drafts
            attrs = (
                {**attrs, _CORRECT: num_correct_drafts} if attrs else {_CORRECT: num_correct_drafts}
            )
        if hotpath.LEVEL >= 2 and self.sampled:
            hotpath._push(
                (
                    END,
                    RequestStage.SPEC_VERIFY,
                    ts,
                    None,
                    (self,),
                    (accepted_tokens,),
                    None if proposed_tokens is None else (proposed_tokens,),
                    attrs,
                )
            )

    set_spec_verify_end_time._spec_event = (END, RequestStage.SPEC_VERIFY)

    def trace_slice(
        self, stage: StageConfig | str, start_ts: float, end_ts: float, attrs: dict | None = None
    ) -> None:
        """Record a span for `stage` over [start_ts, end_ts] (perf_counter seconds)."""
        if not (hotpath.LEVEL and self.sampled):
            return
        stage = hotpath._resolve_stage(stage)
        if stage is not None and hotpath.LEVEL >= stage.level:
            hotpath._push((SLICE, stage, start_ts, end_ts, (self,), None, None, attrs))

    def finish(self, ts: float | None = None, reason: str = "stop") -> None:
        """End the request: its root span is emitted with the request's summary. Only the first
        finish or abort counts."""
        self._finish(ts, {"reason": reason})

    def abort(self, reason: str, ts: float | None = None) -> None:
        """End the request with an error status and `reason` as its description."""
        self._finish(ts, {"reason": "abort", "error": str(reason)})

    def _finish(self, ts: float | None, how: dict) -> None:
        if self.finished:
            return
        self.finished = True
        self._disown()
        # Untraced (OTEL_TRACES_SAMPLER) requests end too: no root, but the per-request metrics.
        if self.trace_id and hotpath.recording():
            ts = perf_counter() if ts is None else ts
            hotpath._push_finish((FINISH, RequestStage.REQUEST, ts, None, (self,), None, None, how))

    def carrier(self) -> dict[str, str]:
        """W3C trace context of this request's root span, to hand to another service."""
        if not self.trace_id:
            return {}
        flags = "01" if self.sampled else "00"
        return {"traceparent": f"00-{self.trace_id:032x}-{self.span_id:016x}-{flags}"}

    def __getstate__(self) -> dict:
        # The pickling rule: once a request has been handed to another process, whichever copy
        # calls finish() or abort() ends it, and only that one (one root, in either direction).
        # Neither copy can know whether the other will, so neither ends it on its own when
        # collected or at shutdown ("abandoned"/"unfinished"): that would be a second root.
        state = dict(self.__dict__)
        state.pop("_finalizer", None)
        for key in ("attributes", "last_times"):
            state[key] = dict(state[key])
        try:  # a few us for this small dict, once per hand-over (not per step)
            pickle.dumps(state, pickle.HIGHEST_PROTOCOL)
        except Exception:
            # A value the engine (or a user) put here that cannot travel: it stays behind,
            # counted for this request, and the request itself still travels; pickle.dumps
            # raised into the engine, after the request had already been disowned.
            state = _picklable_part(state)
        self._disown()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"ReqTimeStats(rid={self.rid!r}, trace_id={self.trace_id:032x}, "
            f"sampled={self.sampled}, finished={self.finished})"
        )
