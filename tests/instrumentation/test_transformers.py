"""The transformers instrumentor against real transformers: assisted generation with a draft
model and prompt lookup, on tiny random Llamas built here (nothing is downloaded)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import clean_env

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from tiny_hf import K, generate, prompt, tiny_models  # noqa: E402
from transformers.generation import candidate_generator  # noqa: E402
from transformers.generation.utils import GenerationMixin  # noqa: E402

import spec_tracing  # noqa: E402
from spec_tracing.instrumentation.transformers import (  # noqa: E402
    NEXT_NUM_STEPS,
    TransformersInstrumentor,
)
from spec_tracing.metrics.instruments import MetricName, metric_sums  # noqa: E402
from spec_tracing.semconv import SpanAttr  # noqa: E402


@pytest.fixture
def instrumented(spec_spans):
    instrumentor = TransformersInstrumentor()
    instrumentor.instrument()
    try:
        yield spec_spans
    finally:
        instrumentor.uninstrument()


def _rounds(capture):
    verify = sorted(capture.spans("spec_verify"), key=lambda s: s.start_time)
    draft = sorted(capture.spans("spec_draft"), key=lambda s: s.start_time)
    return draft, verify


def test_assisted_generation_one_draft_and_verify_per_round(instrumented):
    target, draft = tiny_models()
    ids = prompt(1)
    max_new = 30
    out = generate(target, ids, max_new, assistant_model=draft)
    new_tokens = out.shape[1] - ids.shape[1]

    roots = instrumented.roots()
    assert len(roots) == 1
    root = roots[0]
    drafts, verifies = _rounds(instrumented)
    assert len(drafts) == len(verifies) >= 2
    instrumented.assert_children_of(root, drafts + verifies)
    instrumented.assert_every_request_has_stages(["spec_draft", "spec_verify"])
    for d, v in zip(drafts, verifies, strict=True):
        assert d.end_time <= v.start_time <= v.end_time  # verify follows its round's draft
        assert d.attributes[SpanAttr.WORKER] == "AssistedCandidateGenerator"

    accepted = [v.attributes[SpanAttr.ACCEPTED_TOKENS] for v in verifies]
    proposed = [v.attributes[SpanAttr.PROPOSED_TOKENS] for v in verifies]
    # transformers cuts num_matches at the length limit (and EOS, disabled here), so the last
    # round counts only the tokens it kept: every round emits accepted + 1 tokens, exactly.
    assert sum(a + 1 for a in accepted) == new_tokens == max_new
    assert all(0 <= a <= p <= K for a, p in zip(accepted, proposed, strict=True))
    # The perturbed draft is neither always right nor always wrong.
    assert 0 < sum(accepted) < sum(proposed)
    # The draft was asked for K tokens until the budget ran short.
    assert proposed[0] == K and proposed[-1] <= K
    assert all(v.attributes[SpanAttr.NUM_STEPS] == K for v in verifies)  # constant schedule

    # Each round's tokens start where the previous round's ended: the first round emits the
    # first new token (assisted generation has no separate prefill step).
    offsets = [v.attributes[SpanAttr.OUTPUT_OFFSET] for v in verifies]
    assert offsets == [sum(a + 1 for a in accepted[:i]) for i in range(len(accepted))]
    assert root.attributes[SpanAttr.GEN_AI_MODEL] == target.config.name_or_path
    assert root.attributes[SpanAttr.GEN_AI_PROVIDER] == "transformers"

    summary = root.attributes
    assert summary[SpanAttr.VERIFY_ROUNDS] == len(verifies)
    assert summary[SpanAttr.TOTAL_ACCEPTED] == sum(accepted)
    assert summary[SpanAttr.TOTAL_PROPOSED] == sum(proposed)

    # Tracing does not change what transformers generates.
    plain = generate(target, ids, max_new)
    assert torch.equal(out, plain)


def test_prompt_lookup_rounds_with_and_without_proposals(instrumented):
    target, _ = tiny_models()
    # Repeats in the prompt give the n-gram lookup something to propose.
    ids = torch.tensor([[5, 6, 7, 8, 9] * 3 + [5, 6]])
    max_new = 20
    out = generate(target, ids, max_new, prompt_lookup_num_tokens=3)
    new_tokens = out.shape[1] - ids.shape[1]

    assert len(instrumented.roots()) == 1
    drafts, verifies = _rounds(instrumented)
    assert len(drafts) == len(verifies)
    assert {d.attributes[SpanAttr.WORKER] for d in drafts} == {"PromptLookupCandidateGenerator"}
    accepted = [v.attributes[SpanAttr.ACCEPTED_TOKENS] for v in verifies]
    proposed = [v.attributes[SpanAttr.PROPOSED_TOKENS] for v in verifies]
    assert sum(a + 1 for a in accepted) == new_tokens == max_new
    assert all(0 <= a <= p <= 3 for a, p in zip(accepted, proposed, strict=True))
    # Rounds where no n-gram matched still count, with nothing proposed.
    assert 0 in proposed and any(p > 0 for p in proposed)
    assert all(v.attributes[SpanAttr.NUM_STEPS] == 3 for v in verifies)


def test_heuristic_schedule_width_follows_transformers(instrumented):
    target, draft = tiny_models()
    draft.generation_config.num_assistant_tokens_schedule = "heuristic"
    ids = prompt(2)
    generate(target, ids, 40, assistant_model=draft)
    _, verifies = _rounds(instrumented)
    widths = [v.attributes[SpanAttr.NUM_STEPS] for v in verifies]
    next_widths = [v.attributes[NEXT_NUM_STEPS] for v in verifies]
    # Each round's width is the one transformers chose after the previous round.
    assert widths[1:] == next_widths[:-1]
    # transformers' heuristic: +2 after a fully accepted round, -1 (not below 1) otherwise.
    for v, width, nxt in zip(verifies, widths, next_widths, strict=True):
        full = v.attributes[SpanAttr.ACCEPTED_TOKENS] == v.attributes[SpanAttr.PROPOSED_TOKENS]
        assert nxt == (width + 2 if full else max(1, width - 1))
    assert len(set(widths)) > 1  # the width did adapt during the call


def test_metrics_and_width_gauge(tmp_path):
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    spec_tracing.enable(span_exporter=exporter, metric_readers=[reader], export_process=False)
    instrumentor = TransformersInstrumentor()
    instrumentor.instrument()
    try:
        target, draft = tiny_models()
        ids = prompt(3)
        out = generate(target, ids, 25, assistant_model=draft)
        spec_tracing.flush()
        values = metric_sums(reader.get_metrics_data())
    finally:
        instrumentor.uninstrument()
    verifies = [s for s in exporter.get_finished_spans() if s.name == "spec_verify"]
    worker = (("worker", "AssistedCandidateGenerator"),)
    assert values[(MetricName.VERIFY_ROUNDS, worker)] == len(verifies)
    assert values[(MetricName.EMITTED, worker)] == out.shape[1] - ids.shape[1]
    assert values[(MetricName.ACCEPTED, worker)] == sum(
        v.attributes[SpanAttr.ACCEPTED_TOKENS] for v in verifies
    )
    assert values[(MetricName.NUM_STEPS, worker)] == K


def test_uninstrument_restores_transformers_and_instrumenting_twice_is_harmless(spec_spans):
    originals = {
        (cls, name): vars(cls)[name]
        for cls in (GenerationMixin, *vars(candidate_generator).values())
        if isinstance(cls, type)
        for name in ("_assisted_decoding", "get_candidates", "update_candidate_strategy")
        if name in vars(cls)
    }
    instrumentor = TransformersInstrumentor()
    instrumentor.instrument()
    TransformersInstrumentor().instrument()  # a second instance, a second call: no-ops
    try:
        assert (
            candidate_generator.PromptLookupCandidateGenerator.get_candidates
            is not (
                originals[(candidate_generator.PromptLookupCandidateGenerator, "get_candidates")]
            )
        )
        target, draft = tiny_models()
        ids = prompt(4)
        out = generate(target, ids, 12, assistant_model=draft)
        _, verifies = _rounds(spec_spans)
        assert len(spec_spans.roots()) == 1
        # Not doubled: emitted tokens over the spans equal the tokens generated.
        emitted = sum(v.attributes[SpanAttr.ACCEPTED_TOKENS] + 1 for v in verifies)
        assert emitted == out.shape[1] - ids.shape[1]
    finally:
        instrumentor.uninstrument()
    after = {key: vars(key[0])[key[1]] for key in originals}
    assert after == originals  # the very same function objects, nothing left wrapped
    spec_spans.clear()
    generate(target, ids, 12, assistant_model=draft)
    assert spec_spans.spans() == []


def test_plain_generate_makes_no_spans(instrumented):
    target, _ = tiny_models()
    ids = prompt(5)
    generate(target, ids, 10)  # no assistant, no lookup: not speculative decoding
    assert instrumented.spans() == []


def test_generate_error_ends_the_request_with_an_error(instrumented):
    target, draft = tiny_models()
    ids = prompt(6)
    boom = RuntimeError("draft failed")

    def failing(self, *args, **kwargs):
        raise boom

    draft.forward = failing.__get__(draft)
    with pytest.raises(RuntimeError) as raised:
        generate(target, ids, 10, assistant_model=draft)
    assert raised.value is boom  # the user's error, untouched
    (root,) = instrumented.roots()
    assert not root.status.is_ok
    assert root.attributes[SpanAttr.FINISH_REASON] == "abort"


def test_under_opentelemetry_instrument(tmp_path):
    tool = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
    if tool is None:
        pytest.fail("opentelemetry-instrument is not installed beside this python")
    app = os.path.join(os.path.dirname(__file__), "tiny_hf.py")
    env = clean_env()
    env.update(
        SPEC_TRACING_ENABLED="1",
        SPEC_TRACING_EXPORTER="file",
        SPEC_TRACING_FILE=str(tmp_path / "hf.jsonl"),
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        HF_HUB_OFFLINE="1",
    )
    done = subprocess.run(
        [tool, sys.executable, app], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    new = int(done.stdout.split("new")[1])
    spans = [
        s
        for line in (tmp_path / "hf.jsonl").read_text().splitlines()
        for rs in json.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    ]
    names = [s["name"] for s in spans]
    assert names.count("spec_request") == 1
    assert names.count("spec_draft") == names.count("spec_verify") > 0
    accepted = [
        a["value"]["intValue"]
        for s in spans
        if s["name"] == "spec_verify"
        for a in s["attributes"]
        if a["key"] == SpanAttr.ACCEPTED_TOKENS
    ]
    assert sum(int(a) + 1 for a in accepted) == new
