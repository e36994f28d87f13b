"""SGLang's adaptive speculation controller (AdaptiveSpeculativeParams, real sglang 0.5.23, in
this process) under the SGLang instrumentor: each step-count switch the controller returns is
one spec_adapt span per request of the batch, carrying the controller's own slot, EMA before and
after, old and new steps and candidates. The batch is what process_batch_result_decode (the
scheduler's method that calls the controller) names while it runs: set here as it sets it."""

import os
import sys

import pytest

from spec_tracing import ReqTimeStats
from spec_tracing.semconv import SpanAttr

if os.environ.get("REQUIRE_SGLANG"):  # scripts/test-sglang.sh: a broken install must fail
    import sglang  # noqa: F401
else:
    pytest.importorskip("sglang", reason="the SGLang tier runs in its own environment")

pytestmark = pytest.mark.sglang
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "standins"))


def test_each_switch_of_sglangs_adaptive_controller_is_a_spec_adapt_span(spec_spans):
    from sglang.srt.speculative.adaptive_spec_params import AdaptiveSpeculativeParams

    from spec_tracing.instrumentation import sglang as integration

    instrumentor = integration.SGLangInstrumentor()
    instrumentor.instrument()
    try:
        params = AdaptiveSpeculativeParams(initial_steps=3)  # SGLang's default config
        reqs = (ReqTimeStats(rid="a"), ReqTimeStats(rid="b"))
        slot = params._slots[1]  # batch size 2 routes to the "1" slot
        switches = []
        for step in range(80):
            counts = [slot.current_steps] * 2 if step < 40 else [0, 0]  # all kept, then none
            old, ema = slot.current_steps, slot.ema_accept_len
            integration._batch_reqs = reqs
            try:
                new = params.on_verify_complete(counts, 2)
            finally:
                integration._batch_reqs = ()
            if new is not None:
                switches.append((old, new, ema, slot.ema_accept_len))
        for r in reqs:
            r.finish()
    finally:
        instrumentor.uninstrument()
    assert [s[1] > s[0] for s in switches][:1] == [True] and switches[-1][1] < switches[-1][0]
    adapts = sorted(spec_spans.spans("spec_adapt"), key=lambda s: (s.start_time, s.parent.span_id))
    assert len(adapts) == 2 * len(switches)  # one per request of the batch
    got = [(s.attributes[SpanAttr.ADAPT_OLD_WIDTH], s.attributes[SpanAttr.ADAPT_NEW_WIDTH],
            s.attributes[SpanAttr.ADAPT_EMA_BEFORE], s.attributes[SpanAttr.ADAPT_EMA_AFTER])
           for s in adapts[::2]]  # fmt: skip
    assert got == switches
    for span in adapts:
        assert span.attributes[SpanAttr.ADAPT_SLOT] == 1
        assert list(span.attributes[SpanAttr.ADAPT_CANDIDATES]) == slot.candidate_steps
    roots = {s.context.span_id for s in spec_spans.roots()}
    assert {s.parent.span_id for s in adapts} == roots  # on both requests' traces
