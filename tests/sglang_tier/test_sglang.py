"""SGLang tier (real sglang 0.5.23 on this CPU, its own environment: scripts/test-sglang.sh).
`sglang.Engine` runs NGRAM, STANDALONE and EAGLE speculative decoding on a tiny Llama built in
code (EAGLE with a tiny head, eagle_head.py), with the test-only stand-ins of standins/ (sgl_kernel
ops, torch_native TARGET_VERIFY attention and draft-extend backend). The stand-ins are proven
right first: speculative output equals non-speculative greedy output, and for the EAGLE v2 path
every round replays with the draft SGLang must have made. Then spec-tracing, switched on by
SPEC_TRACING_ENABLED alone (SGLang loads it through its `sglang.srt.plugins` entry point in its
scheduler process), must reproduce SGLang's own per-request accounting from meta_info exactly."""

import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import assert_wraps_and_restores, clean_env

if os.environ.get("REQUIRE_SGLANG"):  # scripts/test-sglang.sh: a broken install must fail
    import sglang  # noqa: F401
else:
    pytest.importorskip("sglang", reason="the SGLang tier runs in its own environment")

from spec_tracing.semconv import SpanAttr  # noqa: E402
from spec_tracing.testing.otlp_receiver import OtlpReceiver  # noqa: E402
from spec_tracing.testing.schema import schema_problems  # noqa: E402

pytestmark = pytest.mark.sglang
RUN = os.path.join(os.path.dirname(__file__), "run_engine.py")
# The test-only sgl_kernel stand-ins, for the test that imports SGLang's modules in-process (the
# engine runs in subprocesses, which get them through PYTHONPATH: run_engine.py).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "standins"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tiny-llama-sglang"))


def _skip_if_sglangs_ngram_kernel_does_not_build(output: str) -> None:
    """SGLang 0.5.18's NGRAM worker JIT-compiles a C++ corpus whose header uses size_t without
    including <cstddef>: with this machine's gcc 12 it fails to build ("'size_t' has not been
    declared", SGLang's own error, before any step runs); 0.5.23 builds. Nothing of ours is
    involved, so such a run is skipped, saying so, and the EAGLE-family cases still run."""
    if "Failed to build JIT module sgl_kernel_jit_ngram_corpus" in output:
        pytest.skip(f"SGLang {_sglang_version()}: its own n-gram kernel does not compile here "
                    "(ngram_corpus/result.h: 'size_t' has not been declared)")  # fmt: skip


def _sglang_version() -> str:
    from importlib.metadata import version

    return version("sglang")


def _run(model_dir, mode, env_extra=None, steps=1):
    env = {**clean_env(), "SGLANG_USE_CPU_ENGINE": "1", "HF_HUB_OFFLINE": "1",
           "RUN_ENGINE_DRAFT_STEPS": str(steps), **(env_extra or {})}  # fmt: skip
    done = subprocess.run([sys.executable, RUN, model_dir, mode], env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    if done.returncode != 0:
        _skip_if_sglangs_ngram_kernel_does_not_build(done.stderr)
    assert done.returncode == 0, done.stderr[-4000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def _spans_once_rooted(receiver, ids, timeout_s=30.0):
    """The receiver's spans once every request id in `ids` has its spec_request root (or the
    timeout passed): the exporter may still be sending when the engine has returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        spans = receiver.spans()
        seen = {s.attributes.get(SpanAttr.REQUEST_ID) for s in spans if s.name == "spec_request"}
        if set(ids) <= seen or time.monotonic() > deadline:
            return spans
        time.sleep(0.2)


@pytest.fixture(scope="module")
def greedy_texts(model_dir):
    """What the model says without speculation (greedy): what every speculative run must say."""
    return [o["text"] for o in _run(model_dir, "none")]


def test_ngram_output_equals_non_speculative_greedy(model_dir, greedy_texts):
    ngram = _run(model_dir, "ngram")
    assert [o["text"] for o in ngram] == greedy_texts
    # The drafts were really verified, and some accepted: the stand-ins ran.
    assert all(o["meta"]["spec_verify_ct"] > 0 for o in ngram)
    assert sum(o["meta"]["spec_num_correct_drafts"] for o in ngram) > 0


def _greedy(model_dir):
    """The target's greedy next token after a context (transformers, the same weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def greedy_next(ids):
        with torch.no_grad():
            return int(model(torch.tensor([ids])).logits[0, -1].argmax())

    return greedy_next


def _draft_rule(mode, model_dir, greedy_next):
    """The draft SGLang must have made after a context (token ids: the verified ones and the
    round's drafts before it).

    standalone: STANDALONE with the target as its own draft accepts far less than every draft.
    The reason is SGLang's, not the stand-ins': the EAGLE v2 worker feeds its draft the context
    rotated left by one token (`_draft_extend_for_prefill`: input_ids[1:] + the next token; the
    decode-time draft extend likewise takes the target's predictions), which suits an EAGLE head
    but leaves an ordinary draft model without the first token. So the draft is the model's
    greedy token after the context minus its first token.
    eagle: the head of eagle_head.py guesses from the last token alone."""
    if mode == "eagle":
        from eagle_head import guesser

        guess = guesser(model_dir, model_dir.rstrip("/") + "-eagle-head")
        return lambda ids: guess(ids[-1])
    return lambda ids: greedy_next(ids[1:])


@pytest.mark.parametrize(
    "mode,steps", [("standalone", 1), ("eagle", 1), ("standalone", 3), ("eagle", 3)]
)
def test_eagle_v2_output_equals_greedy_and_every_round_is_replayed(
    model_dir, greedy_texts, mode, steps
):
    """The EAGLE v2 path's stand-ins proven right: the output equals greedy, and replaying the
    rounds with the drafts SGLang must have made (a chain of `steps` tokens per round, each
    drafted after the context and the drafts before it; the prefill gives the first output
    token) gives SGLang's own per-request counts exactly."""
    from transformers import AutoTokenizer

    result = _run(model_dir, mode, steps=steps)
    assert [o["text"] for o in result] == greedy_texts
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    greedy_next = _greedy(model_dir)
    draft_after = _draft_rule(mode, model_dir, greedy_next)
    for out in result:
        prompt = tokenizer(out["prompt"])["input_ids"]
        full = prompt + out["ids"]
        # The last round may accept drafts past max_new_tokens (SGLang counts them, then cuts
        # the output): the target's greedy continuation beyond the output decides those.
        extended = list(full)
        for _ in range(steps):
            extended.append(greedy_next(extended))
        position, histogram = len(prompt) + 1, [0] * (steps + 1)
        while position < len(full):
            drafts = []
            for _ in range(steps):
                drafts.append(draft_after(full[:position] + drafts))
            accepted = 0
            while accepted < steps and extended[position + accepted] == drafts[accepted]:
                accepted += 1
            histogram[accepted] += 1
            position += 1 + accepted
        assert histogram == out["meta"]["spec_correct_drafts_histogram"]
    # Over the run, rounds that accepted none and rounds that accepted some occur: the replay is
    # tested on accepts and rejects.
    histograms = [o["meta"]["spec_correct_drafts_histogram"] for o in result]
    assert sum(h[0] for h in histograms) and sum(sum(h[1:]) for h in histograms)


@pytest.mark.parametrize(
    "mode,overlap,steps",
    [
        ("ngram", False, 1),
        ("ngram", True, 1),
        ("standalone", False, 1),
        ("standalone", True, 1),
        ("eagle", False, 1),
        ("eagle", True, 3),
    ],
    ids=[
        "ngram-sync",
        "ngram-overlap",
        "standalone-sync",
        "standalone-overlap",
        "eagle-sync",
        "eagle-overlap-3-steps",
    ],
)
def test_spans_reproduce_sglangs_own_accounting(model_dir, greedy_texts, mode, overlap, steps):
    # SGLang's default is the overlap scheduler (the next batch is launched before the last
    # one's results are processed); both schedules must give the same counts.
    with OtlpReceiver("grpc") as receiver:
        env = {"SPEC_TRACING_ENABLED": "1", "SPEC_TRACING_EXPORTER": "otlp",
               "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
               "OTEL_EXPORTER_OTLP_INSECURE": "true",
               "RUN_ENGINE_OVERLAP": "1" if overlap else "0"}  # fmt: skip
        result = _run(model_dir, mode, env, steps=steps)
        spans = _spans_once_rooted(receiver, [o["meta"]["id"] for o in result])
    assert [o["text"] for o in result] == greedy_texts
    roots = {s.attributes[SpanAttr.REQUEST_ID]: s for s in spans if s.name == "spec_request"}
    # Every request has its root, though Engine.shutdown() kills the scheduler's process tree
    # straight after the last response: the plugin gives the hand-off its grace first.
    assert all(o["shutdown_wrapped"] for o in result)
    assert sorted(roots) == sorted(o["meta"]["id"] for o in result)
    for out in result:
        meta, root = out["meta"], roots[out["meta"]["id"]]
        verify = [s for s in spans if s.name == "spec_verify" and s.parent_span_id == root.span_id]
        draft = [s for s in spans if s.name == "spec_draft" and s.parent_span_id == root.span_id]
        extend = [
            s for s in spans if s.name == "spec_draft_extend" and s.parent_span_id == root.span_id
        ]
        accepted = [s.attributes[SpanAttr.ACCEPTED_TOKENS] for s in verify]
        assert len(verify) == meta["spec_verify_ct"]
        assert sum(accepted) == meta["spec_num_correct_drafts"]
        assert (
            sum(s.attributes[SpanAttr.PROPOSED_TOKENS] for s in verify)
            == meta["spec_num_proposed_drafts"]
        )
        histogram = Counter(accepted)
        assert [histogram[k] for k in range(len(meta["spec_correct_drafts_histogram"]))] == meta[
            "spec_correct_drafts_histogram"
        ]
        assert len(draft) == len(verify)
        # EAGLE v2 workers catch the draft model up after every verify; NGRAM has no draft model.
        assert len(extend) == (0 if mode == "ngram" else len(verify))
        by_step = {s.attributes[SpanAttr.STEP]: s for s in verify}
        for stage in draft + extend:  # draft, verify, extend in that order within a step
            v = by_step[stage.attributes[SpanAttr.STEP]]
            assert (
                (stage.end_ns <= v.start_ns)
                if stage.name == "spec_draft"
                else (v.end_ns <= stage.start_ns)
            )
            assert stage.attributes[SpanAttr.WORKER] == v.attributes[SpanAttr.WORKER]
        worker = {"ngram": "NGRAMWorker", "standalone": "StandaloneWorkerV2",
                  "eagle": "EAGLEWorkerV2"}[mode]  # fmt: skip
        assert {s.attributes[SpanAttr.WORKER] for s in verify} == {worker}
        width = 4 if mode == "ngram" else steps + 1  # speculative_num_draft_tokens
        assert {s.attributes[SpanAttr.NUM_DRAFT_TOKENS] for s in verify} == {width}
        assert {s.attributes[SpanAttr.NUM_STEPS] for s in verify} == {width - 1}
        for s in verify + draft + extend:
            assert s.trace_id == root.trace_id
            assert root.start_ns <= s.start_ns <= s.end_ns <= root.end_ns
        assert sorted(s.attributes[SpanAttr.STEP] for s in verify) == list(range(len(verify)))
        assert root.attributes[SpanAttr.FINISH_REASON] == "length"
        assert root.attributes[SpanAttr.TOTAL_ACCEPTED] == meta["spec_num_correct_drafts"]
        # Where each round's tokens sit in the output: after the prefill's token, each round
        # after the last one's accepted drafts and bonus (SGLang cuts the last at max tokens).
        rounds = sorted(verify, key=lambda s: s.attributes[SpanAttr.STEP])
        offsets = [s.attributes[SpanAttr.OUTPUT_OFFSET] for s in rounds]
        ordered = [s.attributes[SpanAttr.ACCEPTED_TOKENS] for s in rounds]
        assert offsets == [1 + sum(a + 1 for a in ordered[:i]) for i in range(len(rounds))]
        assert offsets[-1] < meta["completion_tokens"] <= offsets[-1] + ordered[-1] + 1
    # One schema across engines.
    assert schema_problems(spans) == []


def test_instrumentor_wraps_and_restores_sglang_exactly():
    from sglang.srt.entrypoints.engine import Engine
    from sglang.srt.managers.schedule_batch import Req
    from sglang.srt.managers.scheduler_components.batch_result_processor import (
        SchedulerBatchResultProcessor,
    )
    from sglang.srt.speculative.eagle_worker_v2 import EagleDraftWorker, EAGLEWorkerV2
    from sglang.srt.speculative.multi_layer_eagle_worker_v2 import (
        MultiLayerEagleDraftWorker,
        MultiLayerEagleWorkerV2,
    )
    from sglang.srt.speculative.ngram_worker import NGRAMWorker

    from spec_tracing.instrumentation.sglang import SGLangInstrumentor

    names = {
        Engine: ("shutdown",),  # wrapped where sglang.Engine is in use, as here
        Req: ("__init__",),
        NGRAMWorker: ("_prepare_for_speculative_decoding", "forward_batch_generation"),
        SchedulerBatchResultProcessor: ("process_batch_result_decode",),
        EAGLEWorkerV2: ("forward_batch_generation", "verify"),
        EagleDraftWorker: ("draft", "_draft_extend_for_decode"),
        MultiLayerEagleWorkerV2: ("forward_batch_generation", "verify"),
        MultiLayerEagleDraftWorker: ("draft", "_draft_extend_for_decode"),
    }
    assert_wraps_and_restores(SGLangInstrumentor(), names)


def test_every_eagle_v2_worker_runs_its_stages_through_the_wrapped_methods():
    """The EAGLE family's stages are timed by wrapping four methods. STANDALONE runs on this CPU
    (the accounting test); multi-layer EAGLE needs an MTP draft with one model per layer that no
    CPU path here can run, so its decode step is checked from SGLang's own code: it reaches the
    draft, verify and draft-extend stages through exactly those methods, in that order, and the
    Standalone classes inherit them unchanged."""
    import ast
    import inspect

    from sglang.srt.speculative.eagle_worker_v2 import EagleDraftWorker, EAGLEWorkerV2
    from sglang.srt.speculative.multi_layer_eagle_worker_v2 import MultiLayerEagleWorkerV2
    from sglang.srt.speculative.standalone_worker_v2 import (
        StandaloneDraftWorker,
        StandaloneWorkerV2,
    )

    wanted = [
        "self.draft_worker.draft",
        "self.verify",
        "self.draft_worker._draft_extend_for_decode",
    ]
    for cls in (EAGLEWorkerV2, MultiLayerEagleWorkerV2):
        tree = ast.parse(inspect.getsource(cls.forward_batch_generation).lstrip())
        calls = sorted(
            (n.lineno, n.col_offset, ast.unparse(n.func))
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
        )
        assert [c for *_, c in calls if c in wanted][:3] == wanted, cls
    for sub, base in (
        (StandaloneWorkerV2, EAGLEWorkerV2),
        (StandaloneDraftWorker, EagleDraftWorker),
    ):
        assert issubclass(sub, base)
        for name in ("forward_batch_generation", "verify", "draft", "_draft_extend_for_decode"):
            if hasattr(base, name):
                assert name not in vars(sub), (sub, name)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_launch_server_traces_every_request_and_survives_ctrl_c(model_dir, greedy_texts, tmp_path):
    import http.client
    import signal

    # greedy_texts built the model, if this test runs alone
    port = _free_port()
    standins = os.path.join(os.path.dirname(__file__), "standins")
    with OtlpReceiver("grpc") as receiver:
        env = {**clean_env(), "SGLANG_USE_CPU_ENGINE": "1", "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": standins, "SPEC_TRACING_ENABLED": "1",
               "SPEC_TRACING_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
               "OTEL_EXPORTER_OTLP_INSECURE": "true"}  # fmt: skip
        cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", model_dir,
               "--device", "cpu", "--attention-backend", "torch_native",
               "--disable-overlap-schedule", "--dtype", "float32", "--mem-fraction-static", "0.3",
               "--max-total-tokens", "4096", "--disable-cuda-graph", "--skip-server-warmup",
               "--speculative-algorithm", "NGRAM", "--speculative-num-draft-tokens", "4",
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        log = open(tmp_path / "server.log", "w")  # noqa: SIM115
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while True:
                if server.poll() is not None:
                    log_text = (tmp_path / "server.log").read_text()
                    _skip_if_sglangs_ngram_kernel_does_not_build(log_text)
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "server did not start"
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/health")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    pass
                time.sleep(1)
            metas = []
            for prompt in ("the quick brown fox jumps over the lazy dog the quick brown fox",
                           "one two three four one two three four one two"):  # fmt: skip
                body = {"text": prompt, "sampling_params": {"temperature": 0, "max_new_tokens": 24,
                                                           "ignore_eos": True}}  # fmt: skip
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                conn.request("POST", "/generate", json.dumps(body),
                             {"Content-Type": "application/json"})  # fmt: skip
                resp = conn.getresponse()
                assert resp.status == 200
                metas.append(json.loads(resp.read())["meta_info"])
            time.sleep(0.5)
        finally:
            server.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                server.wait(120)
            finally:
                if server.poll() is None:
                    server.kill()
                log.close()
        wanted = {m["id"] for m in metas}
        spans = _spans_once_rooted(receiver, wanted)
    roots = {s.attributes[SpanAttr.REQUEST_ID]: s for s in spans if s.name == "spec_request"}
    # Ours, plus the server's own /health probes (SGLang answers them with a real generation).
    assert wanted <= roots.keys()
    assert all(rid in wanted or rid.startswith("HEALTH_CHECK") for rid in roots)
    for meta in metas:
        root = roots[meta["id"]]
        verify = [s for s in spans if s.name == "spec_verify" and s.parent_span_id == root.span_id]
        assert len(verify) == meta["spec_verify_ct"]
        assert (
            sum(s.attributes[SpanAttr.ACCEPTED_TOKENS] for s in verify)
            == meta["spec_num_correct_drafts"]
        )


@pytest.mark.parametrize("mode", ["ngram", "eagle"])
def test_with_sglangs_own_tracing_our_spans_join_its_request_traces(model_dir, mode):
    with OtlpReceiver("grpc") as receiver:
        env = {
            "SPEC_TRACING_ENABLED": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "RUN_ENGINE_SGLANG_TRACE_ENDPOINT": receiver.endpoint.removeprefix("http://"),
        }
        result = _run(model_dir, mode, env)
        spans = _spans_once_rooted(receiver, [o["meta"]["id"] for o in result])
    by_id = {s.span_id: s for s in spans}
    roots = {s.attributes[SpanAttr.REQUEST_ID]: s for s in spans if s.name == "spec_request"}
    assert sorted(roots) == sorted(o["meta"]["id"] for o in result)
    for out in result:
        root = roots[out["meta"]["id"]]
        sglang_root = by_id[root.parent_span_id]  # SGLang's own request span
        assert "Req" in sglang_root.name and sglang_root.trace_id == root.trace_id
        mine = [s for s in spans if s.parent_span_id == root.span_id]
        names = Counter(s.name for s in mine)
        rounds = out["meta"]["spec_verify_ct"]
        # SGLang records NGRAM's spec_draft slices itself then: ours are not added twice. Its
        # EAGLE worker records none (profiler ranges only): ours are.
        if mode == "ngram":
            assert names == {"spec_verify": rounds}
        else:
            assert names == {"spec_draft": rounds, "spec_verify": rounds,
                             "spec_draft_extend": rounds}  # fmt: skip
        assert (
            sum(s.attributes[SpanAttr.ACCEPTED_TOKENS] for s in mine if s.name == "spec_verify")
            == out["meta"]["spec_num_correct_drafts"]
        )
