"""The SGLang wrappers' own bookkeeping, on objects with the attributes they read from SGLang's
Req (the real engine runs them in tests/sglang_tier): which requests get a verify round, which
are skipped, which end. Runs in the main suite, without SGLang installed."""

import spec_tracing
from spec_tracing.instrumentation import sglang as seam
from spec_tracing.semconv import SpanAttr


class _Req:
    """The attributes of sglang.srt.managers.schedule_batch.Req the wrappers read."""

    def __init__(self, rid):
        self.rid = rid
        self.spec_verify_ct = 0
        self.finished_reason = None
        self.time_stats = type("SGLangTimeStats", (), {"trace_ctx": None})()


class _Batch:
    def __init__(self, reqs):
        self.reqs = reqs


class _Worker:
    speculative_num_draft_tokens = 4
    speculative_num_steps = 3


def _new_req(rid):
    req = _Req(rid)
    seam._req_init(lambda *a, **k: None, req, (), {})  # as SGLang's Req.__init__, wrapped
    return req


def _step(batch, result, finishing=(), not_counted=()):
    """One decode step through the wrappers: EAGLE v2's forward, then the scheduler's result
    processing, which counts a round for every request but those SGLang skips."""
    worker, draft_worker = _Worker(), _Worker()
    worker._draft_worker = draft_worker

    def forward(batch):
        seam._stamp_draft(lambda: None, draft_worker, (), {})
        seam._stamp(seam._EXTEND)(lambda: None, draft_worker, (), {})
        return result

    def process(batch, result):
        for req in batch.reqs:
            if req.rid not in not_counted:
                req.spec_verify_ct += 1
            if req.rid in finishing:
                req.finished_reason = type("FINISH_LENGTH", (), {})()

    seam._forward_eagle(forward, worker, (batch,), {})
    seam._process_decode(process, None, (batch, result), {})


def test_verify_rounds_follow_sglangs_count_and_untraced_requests_are_skipped(spec_spans):
    spec_tracing.set_trace_level(0)
    untraced = _new_req("untraced")  # created while tracing was off: no trace, no error
    spec_tracing.set_trace_level(3)
    a, b, c = _new_req("a"), _new_req("b"), _new_req("c")
    batch = _Batch([a, untraced, b, c])
    result = type("Result", (), {})()
    result.num_correct_drafts_per_req_cpu = [2, 1, 0, 3]
    _step(batch, result)
    # SGLang skips b's round (as it does a finished or retracted request); c finishes.
    result.num_correct_drafts_per_req_cpu = [1, 1, 3, 2]
    _step(batch, result, finishing={"c"}, not_counted={"b"})
    for req in (a, b):
        req._spec_tracing.finish()
    spec_tracing.flush()

    verify = {}
    for span in spec_spans.spans("spec_verify"):
        rid = next(r for r in spec_spans.roots() if r.context.trace_id == span.context.trace_id)
        verify.setdefault(rid.attributes[SpanAttr.REQUEST_ID], []).append(
            span.attributes[SpanAttr.ACCEPTED_TOKENS]
        )
    assert verify == {"a": [2, 1], "b": [0], "c": [3, 2]}
    assert {r.attributes[SpanAttr.REQUEST_ID] for r in spec_spans.roots()} == {"a", "b", "c"}
    (c_root,) = [r for r in spec_spans.roots() if r.attributes[SpanAttr.REQUEST_ID] == "c"]
    assert c_root.attributes[SpanAttr.FINISH_REASON] == "length"
    assert len(spec_spans.spans("spec_draft")) == 6  # a, b, c in both steps
    assert spec_tracing.stats()["invalid_events"] == 0
