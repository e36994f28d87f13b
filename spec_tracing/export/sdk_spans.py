"""Span records -> SDK spans: the last step, run on the recorder's thread or in the exporter
process.

The assembler (assembler.py) turns compact events into span records (wire.py): plain tuples of ints,
floats and strings that pickle cheaply. Here each record becomes a finished SDK ReadableSpan with
the ids the request's ReqTimeStats chose, handed to the provider's span processors (on_end): the
same objects the SDK's own tracer would hand them, so any SDK exporter, the in-memory exporter of
tests included, receives them unchanged.

Records:
    (STAGE_RECORD, name, batch_attrs, rows)
        rows: (trace_id, root_id, t0, t1, step, acc, prop, output_offset)
    (ROOT_RECORD, trace_id, span_id, parent, t0, t1, attrs, error)
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .. import ids
from ..semconv import INSTRUMENTATION_SCOPE, SpanAttr, step_attributes
from ..stages import RequestStage
from ..wire import STAGE_RECORD
from .clock import to_epoch_ns
from .sdk_private import span_processor

logger = logging.getLogger(__name__)

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)


class SpanBuilder:
    """Span records -> finished ReadableSpans for one resource and instrumentation scope."""

    def __init__(self, resource: Any, version: str):
        self.resource = resource
        self.scope = InstrumentationScope(INSTRUMENTATION_SCOPE, version)

    def build(self, records: list) -> list[ReadableSpan]:
        out: list[ReadableSpan] = []
        for record in records:
            if record[0] == STAGE_RECORD:
                self._stage(out, *record[1:])
            else:
                self._root(out, *record[1:])
        return out

    def _span(self, name, trace_id, span_id, parent, t0, t1, attributes, status=_UNSET):
        return ReadableSpan(
            name=name,
            context=SpanContext(trace_id, span_id, False, _SAMPLED),
            parent=parent,
            resource=self.resource,
            attributes=attributes,
            start_time=to_epoch_ns(t0),
            end_time=to_epoch_ns(t1),
            instrumentation_scope=self.scope,
            status=status,
        )

    def _stage(self, out: list, name: str, batch_attrs: dict, rows: list) -> None:
        for trace_id, root_id, t0, t1, step, acc, prop, offset in rows:
            attrs = dict(batch_attrs)
            attrs.update(step_attributes(step, acc, prop))
            if offset is not None:
                attrs[SpanAttr.OUTPUT_OFFSET] = offset
            parent = SpanContext(trace_id, root_id, False, _SAMPLED)
            span_id = ids.random_id(64)
            out.append(self._span(name, trace_id, span_id, parent, t0, t1, attrs))

    def _root(self, out: list, trace_id, span_id, parent, t0, t1, attrs, error) -> None:
        parent_ctx = None
        if parent is not None:
            parent_ctx = SpanContext(parent[0], parent[1], True, TraceFlags(parent[2]))
        status = Status(StatusCode.ERROR, error) if error is not None else _UNSET
        name = RequestStage.REQUEST.name
        out.append(self._span(name, trace_id, span_id, parent_ctx, t0, t1, attrs, status))


class SpanSink:
    """Where spans go in this process: an SDK TracerProvider's span processors (on_end). Also
    makes sampling decisions with the provider's sampler."""

    def __init__(self, provider: Any, version: str = ""):
        self.provider = provider
        self._processor = span_processor(provider)
        self._sampler = provider.sampler
        self._builder = SpanBuilder(provider.resource, version)
        self.spans = 0

    def should_sample(self, ctx: Any, trace_id: int, attributes: dict) -> bool:
        try:
            result = self._sampler.should_sample(
                ctx, trace_id, RequestStage.REQUEST.name, SpanKind.INTERNAL, attributes
            )
            return result.decision.is_sampled()
        except Exception:
            logger.debug("spec-tracing: sampler failed; sampling the request", exc_info=True)
            return True

    def write(self, records: list) -> None:
        """Emit the spans of a list of records."""
        for span in self._builder.build(records):
            self._processor.on_end(span)
            self.spans += 1
