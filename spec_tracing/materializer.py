"""Off the engine's thread: expand batch events into one span per request and stage.

Spans are built as finished SDK ReadableSpans with ids chosen by ReqTimeStats and handed to the
provider's span processors (on_end), the same objects the SDK's own tracer would hand them, so
any SDK exporter, the in-memory exporter of tests included, receives them unchanged. Bad input
(a request without time stats, counts of the wrong length, negative or non-integer counts) drops
that event and is counted; a single warning says so.
"""

from __future__ import annotations

import logging
import operator
import random
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .attributes import INSTRUMENTATION_SCOPE, SpanAttr
from .clock import to_epoch_ns
from .hotpath import END, FINISH, START
from .stages import RequestStage
from .timestats import ReqTimeStats

logger = logging.getLogger(__name__)

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_VERIFY = RequestStage.SPEC_VERIFY.name


class InvalidEvent(ValueError):
    pass


class SpanSink:
    """Where materialized spans go: an SDK TracerProvider's span processors."""

    def __init__(self, provider: Any, version: str = ""):
        self.provider = provider
        self._processor = provider._active_span_processor
        self._resource = provider.resource
        self._sampler = provider.sampler
        self._scope = InstrumentationScope(INSTRUMENTATION_SCOPE, version)

    def should_sample(self, ctx: Any, trace_id: int, attributes: dict) -> bool:
        try:
            result = self._sampler.should_sample(
                ctx, trace_id, RequestStage.REQUEST.name, SpanKind.INTERNAL, attributes
            )
            return result.decision.is_sampled()
        except Exception:
            logger.debug("spec-tracing: sampler failed; sampling the request", exc_info=True)
            return True

    def emit(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent: SpanContext | None,
        start_ns: int,
        end_ns: int,
        attributes: dict,
        status: Status | None = None,
    ) -> None:
        span = ReadableSpan(
            name=name,
            context=SpanContext(trace_id, span_id, False, _SAMPLED),
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            start_time=start_ns,
            end_time=end_ns,
            instrumentation_scope=self._scope,
            status=status or Status(StatusCode.UNSET),
        )
        self._processor.on_end(span)


def _counts(values: Any, n: int, what: str) -> list[int] | None:
    if values is None:
        return None
    if isinstance(values, int) and not isinstance(values, bool):
        values = [values] * n
    elif hasattr(values, "tolist"):  # torch tensor / numpy array, read here, off the hot thread
        values = values.tolist()
    try:
        out = [operator.index(v) for v in values]
    except TypeError:
        raise InvalidEvent(f"{what} must be integers, got {values!r:.80}") from None
    if len(out) != n:
        raise InvalidEvent(f"{what} has {len(out)} entries for a batch of {n}")
    if any(v < 0 for v in out):
        raise InvalidEvent(f"{what} must be >= 0, got {out!r:.80}")
    return out


def _time_stats(req: Any) -> ReqTimeStats:
    stats = req if isinstance(req, ReqTimeStats) else getattr(req, "time_stats", None)
    if not isinstance(stats, ReqTimeStats):
        raise InvalidEvent(f"request {req!r:.60} has no ReqTimeStats (.time_stats)")
    return stats


class Materializer:
    """The recorder's consumer: turns each event into spans and per-request summaries."""

    def __init__(self, sink: SpanSink):
        self.sink = sink
        self.spans = 0
        self.invalid = 0
        self.unmatched = 0
        self.metrics = None  # SpecMetrics, when metrics are on

    def __call__(self, event: tuple) -> None:
        try:
            self._process(event)
        except InvalidEvent as exc:
            self.invalid += 1
            if self.invalid == 1:
                logger.warning(
                    "spec-tracing: dropped an event: %s (further bad events are "
                    "counted, not logged)",
                    exc,
                )

    def _process(self, event: tuple) -> None:
        kind, stage, t0, t1, reqs, accepted, proposed, attrs = event
        stats = [_time_stats(r) for r in reqs]
        if kind == FINISH:
            self._finish(stats[0], t0, attrs or {})
            return
        n = len(stats)
        acc = _counts(accepted, n, "accepted counts")
        prop = _counts(proposed, n, "proposed counts")
        name = stage.name
        batch_attrs = {SpanAttr.BATCH_SIZE: n}
        if attrs:
            batch_attrs.update(attrs)
        is_verify = name == _VERIFY and acc is not None
        width = batch_attrs.get(SpanAttr.NUM_STEPS)
        round_accepted: list[int] = []
        round_proposed: list = []
        for i, st in enumerate(stats):
            if kind == START:
                st._open[name] = t0
                continue
            if kind == END:
                st.last_times[name + ".end"] = t0
                start = st._open.pop(name, None)
                if start is None:
                    self.unmatched += 1
                    continue
                begin, end = start, t0
            else:
                begin, end = t0, t1
            step = st._steps.get(name, 0)
            st._steps[name] = step + 1
            span_attrs = dict(batch_attrs)
            span_attrs[SpanAttr.STEP] = step
            if is_verify:
                # The width actually offered this round; the batch's width if not given per
                # request; unknown otherwise (then it counts for accept_length only).
                a, p = acc[i], prop[i] if prop is not None else width
                span_attrs[SpanAttr.ACCEPTED_TOKENS] = a
                span_attrs[SpanAttr.EMITTED_TOKENS] = a + 1
                if p is not None:
                    span_attrs[SpanAttr.PROPOSED_TOKENS] = p
                st.acceptance.add(a, p)
                round_accepted.append(a)
                round_proposed.append(p)
            if st.sampled:
                self.sink.emit(
                    name,
                    st.trace_id,
                    random.getrandbits(64) or 1,
                    _root_context(st),
                    to_epoch_ns(begin),
                    to_epoch_ns(end),
                    span_attrs,
                )
                self.spans += 1
        if is_verify and self.metrics is not None and round_proposed:
            # Metrics count every request, sampled or not.
            self.metrics.record_verify(round_accepted, round_proposed, batch_attrs)

    def _finish(self, st: ReqTimeStats, ts: float, how: dict) -> None:
        st._open.clear()
        if not st.sampled:
            return
        summary = st.acceptance.as_dict()
        attrs: dict[str, Any] = {k: v for k, v in st.attributes.items()}
        if st.rid is not None:
            attrs[SpanAttr.REQUEST_ID] = str(st.rid)
        attrs[SpanAttr.FINISH_REASON] = how.get("reason", "stop")
        attrs[SpanAttr.VERIFY_ROUNDS] = summary["verify_rounds"]
        attrs[SpanAttr.TOTAL_ACCEPTED] = summary["accepted_drafts"]
        attrs[SpanAttr.TOTAL_PROPOSED] = summary["proposed_drafts"]
        for key, attr in (
            ("accept_rate", SpanAttr.ACCEPT_RATE),
            ("accept_length", SpanAttr.ACCEPT_LENGTH),
        ):
            if summary[key] is not None:
                attrs[attr] = summary[key]
        error = how.get("error")
        status = Status(StatusCode.ERROR, error) if error is not None else None
        parent = None
        if st.parent is not None:
            parent = SpanContext(st.parent[0], st.parent[1], True, TraceFlags(st.parent[2]))
        self.sink.emit(
            RequestStage.REQUEST.name,
            st.trace_id,
            st.span_id,
            parent,
            to_epoch_ns(st.start_ts),
            to_epoch_ns(ts),
            attrs,
            status,
        )
        self.spans += 1


def _root_context(st: ReqTimeStats) -> SpanContext:
    return SpanContext(st.trace_id, st.span_id, False, _SAMPLED)
