"""The attributes every engine's spans carry, whatever the engine (docs/reference/spans.md,
"One schema"): what a dashboard or a CI assertion may rely on without knowing the engine.
`schema_problems(spans)` lists what a set of spans lacks; the tests run it on the reference
engine, transformers, vLLM and SGLang.

Takes SDK ReadableSpans or spans read back from a file (report.otlp_json.OtlpSpan).
"""

from __future__ import annotations

from ..semconv import SpanAttr
from ..stages import RequestStage

COMMON = {
    RequestStage.REQUEST.name: (
        SpanAttr.REQUEST_ID,
        SpanAttr.FINISH_REASON,
        SpanAttr.VERIFY_ROUNDS,
        SpanAttr.TOTAL_ACCEPTED,
        SpanAttr.TOTAL_PROPOSED,
        SpanAttr.GEN_AI_PROVIDER,
    ),
    RequestStage.SPEC_VERIFY.name: (
        SpanAttr.STEP,
        SpanAttr.BATCH_SIZE,
        SpanAttr.ACCEPTED_TOKENS,
        SpanAttr.EMITTED_TOKENS,
        SpanAttr.PROPOSED_TOKENS,
        SpanAttr.OUTPUT_OFFSET,
    ),
    RequestStage.SPEC_DRAFT.name: (SpanAttr.STEP, SpanAttr.BATCH_SIZE),
    RequestStage.SPEC_DRAFT_EXTEND.name: (SpanAttr.STEP, SpanAttr.BATCH_SIZE),
}
# On a root whose request had verify rounds, and (the rate) drafts proposed.
WITH_ROUNDS = (SpanAttr.ACCEPT_LENGTH, SpanAttr.TOKENS_PER_STEP, SpanAttr.DRAFT_TIME_SHARE)
WITH_PROPOSALS = (SpanAttr.ACCEPT_RATE,)


def _span_id(span) -> str:
    context = getattr(span, "context", None)
    if context is not None:
        return f"{context.span_id:016x}"
    return str(getattr(span, "span_id", "?"))


def schema_problems(spans) -> list[str]:
    """One line per missing attribute: "<span name> <span id>: no <attribute>"."""
    problems = []
    for span in spans:
        wanted = COMMON.get(span.name)
        if wanted is None:
            continue
        attrs = span.attributes or {}
        if span.name == RequestStage.REQUEST.name:
            if attrs.get(SpanAttr.VERIFY_ROUNDS):
                wanted += WITH_ROUNDS
            if attrs.get(SpanAttr.TOTAL_PROPOSED):
                wanted += WITH_PROPOSALS
        problems += [
            f"{span.name} {_span_id(span)}: no {key}" for key in wanted if key not in attrs
        ]
    return problems
