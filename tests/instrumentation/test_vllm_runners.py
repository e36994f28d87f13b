"""vLLM on both of its model runners (real vLLM, CPU build; the vLLM tier): the V2 runner is what
vLLM runs on every GPU install, the V1 runner what the CPU build runs by default. For each, the
engine's output is first proven equal to non-speculative greedy decoding (so the V2 runner's
CPU stand-ins change nothing), then per request the spec_verify spans, ordered by step, must
equal vLLM's own per-step accepted and drafted counts (`per_request_spec_decode_metrics=
"detailed"`), and every decode step must carry a spec_draft span. For n-gram lookup and for an
EAGLE head (one layer, built in code from the tiny target's own weights)."""

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest
from conftest import clean_env

if os.environ.get("REQUIRE_VLLM"):  # scripts/test-vllm.sh: a broken install must fail, not skip
    import vllm  # noqa: F401
else:
    pytest.importorskip("vllm", reason="the vLLM tier runs in its own environment")

from vllm_runners import runner_env, v2_lacks  # noqa: E402

from spec_tracing.report.otlp_json import read_spans  # noqa: E402
from spec_tracing.semconv import SpanAttr  # noqa: E402
from spec_tracing.testing.schema import schema_problems  # noqa: E402

pytestmark = pytest.mark.vllm
APP = os.path.join(os.path.dirname(__file__), "vllm_app.py")
# Test-only: hides the V2 runner's worker seams from spec-tracing, as a vLLM that renamed them
# would (the scheduler's seams stay).
HIDE_WORKER_SEAMS = os.path.join(os.path.dirname(__file__), "hide_worker_seams")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tiny-llama-runners"))


def _run(model_dir, runner, extra=None, spans_file=None):
    env = clean_env()
    env.update(HF_HUB_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1")
    env.update(runner_env(runner, env))
    if spans_file:
        env.update(SPEC_TRACING_ENABLED="1", SPEC_TRACING_EXPORTER="file",
                   SPEC_TRACING_FILE=str(spans_file))  # fmt: skip
    env.update(extra or {})
    done = subprocess.run([sys.executable, APP, model_dir], env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT ")), done.stdout + done.stderr  # vLLM logs to both


def _by_request(spans):
    """{caller's request id: {stage name: [spans ordered by step]}} and the roots."""
    roots = {s.span_id: s for s in spans if s.name == "spec_request"}
    stages = defaultdict(lambda: defaultdict(list))
    for s in spans:
        if s.parent_span_id in roots:
            rid = roots[s.parent_span_id].attributes[SpanAttr.REQUEST_ID].rsplit("-", 1)[0]
            stages[rid][s.name].append(s)
    for per_stage in stages.values():
        for group in per_stage.values():
            group.sort(key=lambda s: s.attributes[SpanAttr.STEP])
    return stages, roots


@pytest.fixture(scope="module")
def greedy(model_dir):
    """Non-speculative greedy output per runner, run once each."""
    cache = {}

    def of(runner):
        if runner not in cache:
            cache[runner] = _run(model_dir, runner, {"VLLM_APP_SPEC": "none"})[0]
        return cache[runner]

    return of


@pytest.mark.parametrize(
    "runner,method", [("v2", "ngram"), ("v2", "eagle"), ("v1", "ngram"), ("v1", "eagle")]
)
def test_spans_equal_vllms_own_per_step_counts_on_each_runner(
    model_dir, greedy, runner, method, tmp_path
):
    if runner == "v2" and v2_lacks(method):
        pytest.skip(v2_lacks(method))
    result, log = _run(model_dir, runner, {"VLLM_APP_SPEC": method}, tmp_path / "spans.jsonl")
    greedy = greedy(runner)
    if runner == "v2":
        assert "Using V2 Model Runner" in log
    # The engine is right first: speculative output == greedy output, token for token.
    assert {r: q["token_ids"] for r, q in result["requests"].items()} == {
        r: q["token_ids"] for r, q in greedy["requests"].items()
    }
    spans = read_spans(str(tmp_path / "spans.jsonl"))
    stages, roots = _by_request(spans)
    assert len(roots) == len(result["requests"]) == 4
    total_rounds = 0
    for rid, oracle in result["requests"].items():
        verify = stages[rid]["spec_verify"]
        assert [s.attributes[SpanAttr.ACCEPTED_TOKENS] for s in verify] == oracle["accepted"]
        assert [s.attributes[SpanAttr.PROPOSED_TOKENS] for s in verify] == oracle["drafted"]
        assert [s.attributes[SpanAttr.STEP] for s in verify] == list(range(len(verify)))
        assert all(SpanAttr.TIMING not in s.attributes for s in verify)  # the worker timed them
        assert len(stages[rid]["spec_draft"]) >= len(verify) > 0
        # Where each round's tokens sit in the output, from vLLM's own count: each round starts
        # where an engine step started and fills that step (its accepted drafts and bonus;
        # vLLM cuts the last at max_tokens); steps without drafts (n-gram misses) lie between.
        offsets = [s.attributes[SpanAttr.OUTPUT_OFFSET] for s in verify]
        length = len(oracle["token_ids"])
        starts = [0] + oracle["steps"]  # output length before each step
        for offset, accepted in zip(offsets, oracle["accepted"], strict=True):
            assert offset in starts, (offset, starts)
            end = starts[starts.index(offset) + 1]  # the output after that step
            assert end == min(length, offset + accepted + 1), (offset, accepted, starts)
        if method == "eagle":  # a draft every step: every token comes from a verify round
            assert offsets == [1 + sum(a + 1 for a in oracle["accepted"][:i])
                               for i in range(len(verify))]  # fmt: skip
        total_rounds += len(verify)
    assert total_rounds == result["counters"]["vllm:spec_decode_num_drafts"]
    # One schema across engines, and vLLM's model on every root.
    assert schema_problems(spans) == []
    assert {r.attributes[SpanAttr.GEN_AI_MODEL] for r in roots.values()} == {str(model_dir)}
    for s in spans:
        if s.name != "spec_request":
            root = roots[s.parent_span_id]
            assert root.start_ns <= s.start_ns <= s.end_ns <= root.end_ns
    # V2's EAGLE speculator catches the draft model up on the verified tokens first
    # (spec_draft_extend), then drafts: the draft starts where the catch-up ends.
    extends = [s for s in spans if s.name == "spec_draft_extend"]
    if (runner, method) == ("v2", "eagle"):
        drafts = {(s.parent_span_id, s.attributes[SpanAttr.STEP]): s for s in spans
                  if s.name == "spec_draft"}  # fmt: skip
        assert len(extends) == len(drafts)
        for e in extends:
            draft = drafts[(e.parent_span_id, e.attributes[SpanAttr.STEP])]
            assert e.start_ns < e.end_ns == draft.start_ns < draft.end_ns
    else:
        assert extends == []


def test_a_missing_worker_seam_costs_its_timing_not_the_counts(model_dir, tmp_path):
    env = {"SPEC_TRACING_TEST_HIDE": "1", "VLLM_APP_SPEC": "ngram" if not v2_lacks("ngram")
           else "eagle"}  # fmt: skip
    spans_file = tmp_path / "spans.jsonl"
    result, log = _run(model_dir, "v2", env | {"PYTHONPATH": HIDE_WORKER_SEAMS}, spans_file)
    # One line names what is missing, in the worker and in EngineCore.
    assert "seams not found" in log
    assert "GPUModelRunner.sample_renamed (spec_verify end, V2 runner)" in log
    assert "no verify times came from the worker" in log
    spans = read_spans(str(spans_file))
    stages, _ = _by_request(spans)
    for rid, oracle in result["requests"].items():
        verify = stages[rid]["spec_verify"]
        assert [s.attributes[SpanAttr.ACCEPTED_TOKENS] for s in verify] == oracle["accepted"]
        assert {s.attributes[SpanAttr.TIMING] for s in verify} == {"scheduler_step"}
        assert all(s.end_ns > s.start_ns for s in verify)
    # The draft's own seam still times it.
    assert all(stages[rid]["spec_draft"] for rid in result["requests"])


def test_doctor_finds_every_vllm_seam_of_this_release():
    done = subprocess.run([sys.executable, "-m", "spec_tracing.cli", "doctor"], env=clean_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    vllm_part = done.stdout.split("\nvLLM: ")[1].split("\n\n")[0]
    assert "in the supported range" in vllm_part.splitlines()[0]
    assert "code path:" in vllm_part and "MISSING" not in vllm_part
    assert "wrapped  GPUModelRunner.sample" in vllm_part  # the V2 runner's
    assert "every seam found" in vllm_part
