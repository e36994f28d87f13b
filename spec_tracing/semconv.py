"""Span and attribute names in one place; users' dashboards and CI assertions rely on them."""

from __future__ import annotations


class SpanAttr:
    # On spec_verify: accepted draft tokens of the request in that step, bonus token excluded.
    ACCEPTED_TOKENS = "accepted_tokens"
    # SGLang's name for accepted_tokens, on verify spans made from SGLang's own calls.
    NUM_CORRECT_DRAFTS = "num_correct_drafts"
    # Draft tokens proposed to the request in that step (the width actually used).
    PROPOSED_TOKENS = "spec_decode.proposed_tokens"
    # Tokens the step emitted for the request: accepted drafts + the bonus token.
    EMITTED_TOKENS = "spec_decode.emitted_tokens"
    # 0-based index of this stage's occurrence for the request (the decode step).
    STEP = "spec_decode.step"
    # Requests in the batch the stage ran for.
    BATCH_SIZE = "spec_decode.batch_size"
    # Active draft width of the step (chain length and tokens scored by verify).
    NUM_STEPS = "spec_decode.num_steps"
    NUM_DRAFT_TOKENS = "spec_decode.num_draft_tokens"
    WORKER = "spec_decode.worker"
    # On spec_verify: the index in the request's output of the first token this round emitted
    # (its accepted drafts, then the bonus token): every output token's origin follows.
    OUTPUT_OFFSET = "spec_decode.output_offset"
    # Where a stage's times came from when not from the stage itself ("scheduler_step": the
    # engine's step bounds, because the seam that times the stage is missing in this version).
    TIMING = "spec_tracing.timing"
    ERROR_TYPE = "error.type"
    # On spec_adapt (an adaptive controller's decision, at the step where the width changes):
    # the width before and after, the batch-size slot it was decided for (its lower bound), the
    # controller's estimate of accepted drafts per round before and after this step (an EMA
    # for SGLang-style controllers), and the widths it chooses from.
    ADAPT_OLD_WIDTH = "spec_decode.adapt.old_width"
    ADAPT_NEW_WIDTH = "spec_decode.adapt.new_width"
    ADAPT_SLOT = "spec_decode.adapt.slot"
    ADAPT_EMA_BEFORE = "spec_decode.adapt.ema_before"
    ADAPT_EMA_AFTER = "spec_decode.adapt.ema_after"
    ADAPT_CANDIDATES = "spec_decode.adapt.candidates"

    # On the request's root span.
    REQUEST_ID = "spec_request.id"
    ACCEPT_RATE = "spec_decode.accept_rate"
    ACCEPT_LENGTH = "spec_decode.accept_length"
    TOTAL_ACCEPTED = "spec_decode.accepted_drafts"
    TOTAL_PROPOSED = "spec_decode.proposed_drafts"
    VERIFY_ROUNDS = "spec_decode.verify_rounds"
    FINISH_REASON = "spec_request.finish_reason"
    # Draft + draft_extend time over draft + verify + draft_extend time, for the request.
    DRAFT_TIME_SHARE = "spec_decode.draft_time_share"
    # Output tokens per engine step of the request (its prefill step, if that emitted the first
    # token, and its verify rounds): 1.0 is plain decoding.
    TOKENS_PER_STEP = "spec_decode.tokens_per_step"
    # Seconds from the request's arrival to the start of its prefill: its wait in the queue.
    QUEUE_TIME = "spec_request.queue_time"
    # OpenTelemetry GenAI semantic conventions, where the engine knows them.
    GEN_AI_MODEL = "gen_ai.request.model"
    GEN_AI_PROVIDER = "gen_ai.provider.name"


INSTRUMENTATION_SCOPE = "spec_tracing"


def step_attributes(step: int, accepted: int | None, proposed: int | None) -> tuple:
    """The per-request attributes of a stage span, in the order both encoders write them: the
    step; and on spec_verify the accepted drafts (bonus excluded), the emitted tokens (accepted +
    the bonus token) and, when known, the drafts proposed."""
    if accepted is None:
        return ((SpanAttr.STEP, step),)
    if proposed is None:
        return (
            (SpanAttr.STEP, step),
            (SpanAttr.ACCEPTED_TOKENS, accepted),
            (SpanAttr.EMITTED_TOKENS, accepted + 1),
        )
    return (
        (SpanAttr.STEP, step),
        (SpanAttr.ACCEPTED_TOKENS, accepted),
        (SpanAttr.EMITTED_TOKENS, accepted + 1),
        (SpanAttr.PROPOSED_TOKENS, proposed),
    )
