"""vLLM tier (real vLLM, CPU build; its own environment: scripts/test-vllm.sh). A tiny Llama is
served with n-gram speculative decoding; spans arrive at a real OTLP receiver on 127.0.0.1 and
are checked against vLLM's own spec-decode counters."""

import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import assert_wraps_and_restores, clean_env

if os.environ.get("REQUIRE_VLLM"):  # scripts/test-vllm.sh: a broken install must fail, not skip
    import vllm  # noqa: F401
else:
    pytest.importorskip("vllm", reason="the vLLM tier runs in its own environment")

from vllm_runners import cpu_build_env  # noqa: E402

from spec_tracing.semconv import SpanAttr  # noqa: E402
from spec_tracing.testing.otlp_receiver import OtlpReceiver  # noqa: E402

pytestmark = pytest.mark.vllm
APP = os.path.join(os.path.dirname(__file__), "vllm_app.py")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tiny-llama"))


def _run_app(model_dir, env_extra, traceparent=None):
    env = clean_env()
    env.update(HF_HUB_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1", SPEC_TRACING_ENABLED="1")
    env.update(cpu_build_env(env))
    env.update(env_extra)
    args = [sys.executable, APP, model_dir] + ([traceparent] if traceparent else [])
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def _wait_for(receiver, counts, timeout_s=30.0):
    """The receiver's spans once it holds `counts` spans by name: vLLM's processes may still
    be flushing when the script has returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        spans = receiver.spans()
        seen = Counter(s.name for s in spans)
        if all(seen[name] >= n for name, n in counts.items()) or time.monotonic() > deadline:
            return spans
        time.sleep(0.2)


def _check_spans_against_vllm(spans, result, most_drafts=3):
    counters = result["counters"]
    roots = {s.span_id: s for s in spans if s.name == "spec_request"}
    verify = [s for s in spans if s.name == "spec_verify"]
    draft = [s for s in spans if s.name == "spec_draft"]
    assert len(roots) == 4
    # vLLM's internal request id: the caller's id plus a random suffix.
    assert sorted(r.attributes[SpanAttr.REQUEST_ID].rsplit("-", 1)[0] for r in roots.values()) == [
        f"req-{i}" for i in range(4)
    ]
    # Every stage span hangs under its request's root, inside its time window.
    for s in verify + draft:
        root = roots[s.parent_span_id]
        assert s.trace_id == root.trace_id
        assert root.start_ns <= s.start_ns <= s.end_ns <= root.end_ns
    # Agreement with vLLM's own counters, which count requests with drafts only.
    accepted = sum(s.attributes[SpanAttr.ACCEPTED_TOKENS] for s in verify)
    proposed = sum(s.attributes[SpanAttr.PROPOSED_TOKENS] for s in verify)
    assert accepted == counters["vllm:spec_decode_num_accepted_tokens"]
    assert proposed == counters["vllm:spec_decode_num_draft_tokens"]
    assert len(verify) == counters["vllm:spec_decode_num_drafts"]
    assert 0 < accepted < proposed  # the tiny model loops, so n-gram drafts partly match
    assert all(1 <= s.attributes[SpanAttr.PROPOSED_TOKENS] <= most_drafts for s in verify)
    # Per request: one verify per step with drafts, steps numbered 0.., and the root's summary.
    per_request = Counter(s.parent_span_id for s in verify)
    for span_id, root in roots.items():
        steps = sorted(s.attributes[SpanAttr.STEP] for s in verify if s.parent_span_id == span_id)
        assert steps == list(range(per_request[span_id]))
        assert root.attributes[SpanAttr.VERIFY_ROUNDS] == per_request[span_id]
        assert root.attributes[SpanAttr.FINISH_REASON] == "length"
    # Drafts run every decode step, for every request in the batch.
    assert Counter(s.parent_span_id for s in draft).keys() == roots.keys()
    assert len(draft) >= len(verify)
    # Accepted tokens + bonus never exceed what the requests generated.
    assert accepted + len(verify) <= result["generated"]


def test_vllm_spans_with_spec_tracings_own_exporter(model_dir):
    with OtlpReceiver("grpc") as receiver:
        result = _run_app(
            model_dir,
            {"SPEC_TRACING_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint},
        )
        spans = _wait_for(receiver, {"spec_request": 4})
    _check_spans_against_vllm(spans, result)
    # No caller context: each request is its own trace.
    assert len({s.trace_id for s in spans if s.name == "spec_request"}) == 4


def test_vllm_dynamic_schedule_widths_and_their_changes(model_dir):
    """vLLM's dynamic speculative decoding picks the draft width by the scheduled batch size
    (vllm_app's DYNAMIC: 2 drafts at 3-8 requests, 4 at 1-2; the requests end one by one):
    each draft span carries the width the step ran with, no verify offers more than its width,
    and the one change of width is a spec_adapt span between the last narrow draft and the
    first wide one. (A step scheduled with a request that ended in the step before counts it:
    its drafts may be for one request fewer than the batch it was chosen for.)"""
    from vllm.config import SpeculativeConfig
    from vllm_app import DYNAMIC

    if "num_speculative_tokens_per_batch_size" not in SpeculativeConfig.__dataclass_fields__:
        pytest.skip("this vLLM has no dynamic speculative decoding")
    with OtlpReceiver("grpc") as receiver:
        env = {"SPEC_TRACING_EXPORTER": "otlp", "VLLM_APP_DYNAMIC": "1",
               "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}  # fmt: skip
        result = _run_app(model_dir, env)
        spans = _wait_for(receiver, {"spec_request": 4})
    _check_spans_against_vllm(spans, result, most_drafts=4)
    steps = sorted(
        {
            (s.start_ns, s.attributes[SpanAttr.BATCH_SIZE], s.attributes[SpanAttr.NUM_STEPS])
            for s in spans
            if s.name == "spec_draft"
        }
    )
    widths = [w for _, _, w in steps]
    assert widths == sorted(widths) and set(widths) == {2, 4}  # narrow, then wide: one change
    assert all(w == 2 for _, b, w in steps if b >= 3) and all(w == 4 for _, b, w in steps if b == 1)
    for s in spans:
        if s.name == "spec_verify":
            assert s.attributes[SpanAttr.PROPOSED_TOKENS] <= s.attributes[SpanAttr.NUM_STEPS]
    adapts = [s for s in spans if s.name == "spec_adapt"]  # one per request of the step
    changes = {(s.start_ns, s.attributes[SpanAttr.ADAPT_OLD_WIDTH],
                s.attributes[SpanAttr.ADAPT_NEW_WIDTH], s.attributes[SpanAttr.ADAPT_SLOT],
                tuple(v.int_value for v in s.attributes[SpanAttr.ADAPT_CANDIDATES].values))
               for s in adapts}  # fmt: skip
    ((at, old, new, slot, candidates),) = changes
    assert (old, new, slot, candidates) == (2, 4, DYNAMIC[0][0], (2, 4))
    last_narrow = max(t for t, _, w in steps if w == 2)
    first_wide = min(t for t, _, w in steps if w == 4)
    assert last_narrow <= at <= first_wide


def test_vllm_spans_join_the_callers_trace_with_vllms_tracing_on(model_dir):
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    with OtlpReceiver("grpc") as receiver:
        # vLLM's own tracing on: it installs a TracerProvider in each process and emits its
        # llm_request spans to the same receiver.
        endpoint = receiver.endpoint.removeprefix("http://")
        result = _run_app(model_dir, {"VLLM_APP_OTLP_TRACES_ENDPOINT": endpoint}, traceparent)
        spans = _wait_for(receiver, {"spec_request": 4, "llm_request": 4})
    ours = [s for s in spans if s.name.startswith("spec_")]
    _check_spans_against_vllm(ours, result)
    vllm_requests = [s for s in spans if s.name == "llm_request"]
    assert len(vllm_requests) == 4
    # One trace: the caller's, with vLLM's request spans and ours in it.
    assert {s.trace_id for s in vllm_requests + ours} == {trace_id}
    # Ours carry the resource of vLLM's EngineCore provider (exported from our own process).
    assert {s.resource.get("vllm.process_kind") for s in ours} == {"engine_core"}


def test_instrumentor_wraps_and_restores_vllm_exactly():
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    from spec_tracing.instrumentation.vllm import VLLMInstrumentor

    names = {
        Scheduler: (
            "add_request",
            "_free_request",
            "make_spec_decoding_stats",
            "update_from_output",
        ),
        GPUModelRunner: ("execute_model", "_sample", "propose_draft_token_ids", "sample_tokens"),
    }
    assert_wraps_and_restores(VLLMInstrumentor(), names)
