"""One schema across engines: the reference engine's and transformers' roots and stage spans
carry the common attribute set (spec_tracing/testing/schema.py); vLLM's and SGLang's tiers run
the same check on theirs. And the check itself fails on spans that lack one."""

import pytest

from spec_tracing.report.otlp_json import OtlpSpan, read_spans
from spec_tracing.semconv import SpanAttr
from spec_tracing.testing.schema import COMMON, schema_problems


def test_the_check_names_what_a_span_lacks():
    root = OtlpSpan("spec_request", "t", "r1", "", 0, 1,
                    {SpanAttr.REQUEST_ID: "a", SpanAttr.VERIFY_ROUNDS: 2}, 0)  # fmt: skip
    verify = OtlpSpan("spec_verify", "t", "v1", "r1", 0, 1, {SpanAttr.STEP: 0}, 0)
    problems = schema_problems([root, verify])
    assert "spec_request r1: no spec_decode.accept_length" in problems  # it had rounds
    assert "spec_verify v1: no accepted_tokens" in problems
    assert "spec_request r1: no spec_decode.accept_rate" not in problems  # nothing proposed
    assert schema_problems([OtlpSpan("prefill", "t", "p", "r1", 0, 1, {}, 0)]) == []


def test_the_reference_engine_carries_the_common_set(tmp_path):
    pytest.importorskip("torch")
    import spec_tracing
    from spec_tracing.reference.engine import Engine, demo_prompts

    trace = tmp_path / "run.jsonl"
    spec_tracing.enable(exporter="file", file=str(trace), metrics=False)
    for worker in ("eagle", "ngram", "multi-layer"):
        engine = Engine(worker, batch_size=4, seed=4)
        for prompt in demo_prompts(6, seed=4):
            engine.add_request(prompt, 16)
        engine.run()
    spec_tracing.shutdown()
    spans = read_spans(str(trace))
    assert {s.name for s in spans} >= set(COMMON)
    assert schema_problems(spans) == []


def test_transformers_carries_the_common_set(spec_spans):
    pytest.importorskip("transformers")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "instrumentation"))
    try:
        from tiny_hf import generate, prompt, tiny_models
    finally:
        sys.path.pop(0)
    from spec_tracing.instrumentation.transformers import TransformersInstrumentor

    instrumentor = TransformersInstrumentor()
    instrumentor.instrument()
    try:
        target, draft = tiny_models()
        generate(target, prompt(1), 20, assistant_model=draft)
        generate(target, prompt(2), 20, prompt_lookup_num_tokens=3)
    finally:
        instrumentor.uninstrument()
    spans = spec_spans.spans()
    assert {s.name for s in spans} >= {"spec_request", "spec_draft", "spec_verify"}
    assert schema_problems(spans) == []
