"""End to end over the wire: real OTLP gRPC and HTTP receivers on 127.0.0.1; the file exporter."""

import json

import pytest
from conftest import Req

import spec_tracing
from spec_tracing import ReqTimeStats, set_spec_verify_end_time_batch, set_time_batch
from spec_tracing.semconv import SpanAttr
from spec_tracing.testing.otlp_receiver import OtlpReceiver


def one_step(reqs, accepted):
    set_time_batch(reqs, ReqTimeStats.set_spec_draft_start_time)
    set_time_batch(reqs, ReqTimeStats.set_spec_draft_end_time)
    set_time_batch(reqs, ReqTimeStats.set_spec_verify_start_time)
    set_spec_verify_end_time_batch(reqs, accepted, proposed=4)


@pytest.mark.parametrize("protocol,otel_protocol", [("grpc", "grpc"), ("http", "http/protobuf")])
def test_spans_arrive_at_a_real_otlp_receiver_with_ids_and_attributes(
    monkeypatch, protocol, otel_protocol
):
    with OtlpReceiver(protocol) as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", otel_protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "spec-e2e")
        spec_tracing.enable(exporter="otlp")
        reqs = [Req(i) for i in range(3)]
        one_step(reqs, [1, 4, 0])
        for r in reqs:
            r.time_stats.finish()
        expected = {(f"{r.time_stats.trace_id:032x}", f"{r.time_stats.span_id:016x}") for r in reqs}
        spec_tracing.shutdown()
        spans = receiver.wait_for_spans(9)

    assert len(spans) == 9
    roots = [s for s in spans if s.name == "spec_request"]
    assert {(s.trace_id, s.span_id) for s in roots} == expected
    assert all(s.parent_span_id == "" for s in roots)
    root_of = {s.trace_id: s.span_id for s in roots}
    children = [s for s in spans if s.name != "spec_request"]
    assert {s.name for s in children} == {"spec_draft", "spec_verify"}
    assert all(s.parent_span_id == root_of[s.trace_id] for s in children)
    accepted = sorted(
        s.attributes[SpanAttr.ACCEPTED_TOKENS] for s in children if s.name == "spec_verify"
    )
    assert accepted == [0, 1, 4]
    assert all(s.resource["service.name"] == "spec-e2e" for s in spans)


def test_file_exporter_writes_otlp_json_lines_with_hex_ids(tmp_path):
    path = tmp_path / "trace.jsonl"
    spec_tracing.enable(exporter="file", file=str(path))
    st = ReqTimeStats(rid="r1")
    one_step([st], [2])
    st.finish()
    spec_tracing.shutdown()

    lines = path.read_text().splitlines()
    assert lines
    spans = [
        s
        for line in lines
        for rs in json.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    ]
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {"spec_request", "spec_draft", "spec_verify"}
    root = by_name["spec_request"]
    assert root["traceId"] == f"{st.trace_id:032x}" and root["spanId"] == f"{st.span_id:016x}"
    assert by_name["spec_verify"]["parentSpanId"] == root["spanId"]
    attrs = {a["key"]: a["value"] for a in by_name["spec_verify"]["attributes"]}
    assert attrs[SpanAttr.ACCEPTED_TOKENS] == {"intValue": "2"}
    assert by_name["spec_verify"]["kind"] == 1  # enums as integers, as OTLP/JSON requires


def test_application_provider_is_used_instead_of_replacing_it():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    app_provider = TracerProvider()
    app_provider.add_span_processor(SimpleSpanProcessor(exporter))
    spec_tracing.enable(tracer_provider=app_provider)
    st = ReqTimeStats()
    st.finish()
    spec_tracing.shutdown()
    assert [s.name for s in exporter.get_finished_spans()] == ["spec_request"]
    # Ours to flush, not to shut down: the application keeps exporting.
    app_provider.get_tracer("app").start_span("after").end()
    assert [s.name for s in exporter.get_finished_spans()][-1] == "after"


def test_ratio_sampler_decides_once_per_request(monkeypatch, spec_spans):
    spec_tracing.shutdown()
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    provider = TracerProvider()  # reads the sampler variables, as the SDK does
    provider.add_span_processor(SimpleSpanProcessor(spec_spans.exporter))
    spec_tracing.enable(tracer_provider=provider)
    stats = [ReqTimeStats(rid=i) for i in range(400)]
    one_step(stats, [1] * 400)
    for st in stats:
        st.finish()
    spans = spec_spans.spans()
    sampled = {st.trace_id for st in stats if st.sampled}
    assert 100 < len(sampled) < 300
    assert {s.context.trace_id for s in spans} == sampled
    assert len(spans) == 3 * len(sampled)  # whole requests, never partial ones


@pytest.mark.parametrize("protocol,otel_protocol", [("grpc", "grpc"), ("http", "http/protobuf")])
def test_metrics_go_over_otlp_next_to_the_traces(monkeypatch, protocol, otel_protocol):
    with OtlpReceiver(protocol) as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", otel_protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        spec_tracing.enable(exporter="otlp")
        reqs = [Req(i) for i in range(3)]
        one_step(reqs, [1, 4, 0])
        spec_tracing.shutdown()
        values = receiver.metric_values()
        spans = receiver.wait_for_spans(9)
    # The requests were never finished: shutdown ends their roots, with an error status.
    roots = [s for s in spans if s.name == "spec_request"]
    assert len(spans) == 9 and len(roots) == 3
    assert all(
        s.status_code == 2 and s.attributes["spec_request.finish_reason"] == "unfinished"
        for s in roots
    )
    assert values[("spec_decode.verify_rounds", ())] == 3
    assert values[("spec_decode.proposed_drafts", ())] == 12
    assert values[("spec_decode.accepted_drafts", ())] == 5
    assert values[("spec_decode.accepted_per_position", (("position", 0),))] == 2
