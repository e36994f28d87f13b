"""The hand-written OTLP protobuf path (otlp_proto.py) against the SDK's own encoder, and the SDK
internals the exporter leans on (sdk_private.py)."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource

from spec_tracing.export import sdk_private
from spec_tracing.export.otlp_proto import OtlpEncoder
from spec_tracing.export.sdk_spans import SpanBuilder
from spec_tracing.semconv import INSTRUMENTATION_SCOPE, SpanAttr
from spec_tracing.testing.otlp_receiver import OtlpReceiver
from spec_tracing.wire import ROOT_RECORD, STAGE_RECORD

ids64 = st.integers(1, 2**64 - 1)
times = st.floats(1.0, 1e6, allow_nan=False)
counts = st.none() | st.integers(0, 10_000)
attr_values = (
    st.integers(-(2**63), 2**63 - 1)
    | st.booleans()
    | st.text(max_size=8)
    | st.floats(allow_nan=False)
)
attrs = st.dictionaries(st.sampled_from(["a", "spec_decode.num_steps", "x.y"]), attr_values)
rows = st.tuples(st.integers(1, 2**128 - 1), ids64, times, times, st.integers(0, 5000), counts,
                 counts, st.none() | st.integers(0, 100_000))  # fmt: skip
stage_records = st.tuples(
    st.just(STAGE_RECORD),
    st.sampled_from(["spec_draft", "spec_verify", "spec_draft_extend"]),
    attrs,
    st.lists(rows, min_size=1, max_size=4),
)
parents = st.none() | st.tuples(st.integers(1, 2**128 - 1), ids64, st.sampled_from([0, 1]))
root_records = st.tuples(
    st.just(ROOT_RECORD), st.integers(1, 2**128 - 1), ids64, parents, times, times, attrs,
    st.none() | st.text(max_size=12),
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(records=st.lists(stage_records | root_records, min_size=1, max_size=5), seed=st.integers())
def test_hand_encoded_spans_decode_to_what_the_sdk_encoder_makes(records, seed):
    resource = Resource.create({"service.name": "svc", "n": 3})
    random.seed(seed)
    encoder = OtlpEncoder(resource.attributes, INSTRUMENTATION_SCOPE, "1.2.3")
    ours = ExportTraceServiceRequest.FromString(encoder.request(encoder.spans(records)))
    theirs = encode_spans(SpanBuilder(resource, "1.2.3").build(records))
    # Stage span ids are random (each path draws its own): valid and distinct, then compared
    # as equal; roots keep their recorded ids, compared as they are.
    stage_ids = [
        span.span_id
        for spans in ours.resource_spans[0].scope_spans
        for span in spans.spans
        if span.name != "spec_request"
    ]
    assert all(len(i) == 8 and i != bytes(8) for i in stage_ids)
    assert len(set(stage_ids)) == len(stage_ids)
    for message in (ours, theirs):
        for span in message.resource_spans[0].scope_spans[0].spans:
            if span.name != "spec_request":
                span.span_id = b""
    assert ours == theirs


def test_verify_attributes_are_the_same_rule_on_both_paths():
    record = (STAGE_RECORD, "spec_verify", {}, [(5, 7, 1.0, 2.0, 3, 2, 4, 9)])
    span = SpanBuilder(Resource.get_empty(), "v").build([record])[0]
    assert span.attributes[SpanAttr.OUTPUT_OFFSET] == 9
    assert span.attributes[SpanAttr.ACCEPTED_TOKENS] == 2
    assert span.attributes[SpanAttr.EMITTED_TOKENS] == 3  # the bonus token
    assert span.attributes[SpanAttr.PROPOSED_TOKENS] == 4
    assert span.attributes[SpanAttr.STEP] == 3


def test_the_sdk_still_has_the_internals_the_exporter_uses():
    # Fails loudly on an SDK release that renamed one: update sdk_private.py, then this pin.
    assert sdk_private.missing() == [], sdk_private.sdk_version()


def test_exporters_built_here_take_pre_encoded_spans():
    for cls in (sdk_private.http_exporter_class(), sdk_private.grpc_exporter_class()):
        exporter = cls()
        try:
            assert sdk_private.accepts_encoded(exporter)
        finally:
            exporter.shutdown()


def test_the_grpc_exporter_sends_encoded_bytes_as_they_are_and_sdk_spans_as_before():
    record = (STAGE_RECORD, "spec_verify", {"k": 1},
              [(5, 7, 1.0, 2.0, 3, 2, 4, None), (6, 8, 1.0, 2.0, 0, 1, 4, 1)])  # fmt: skip
    encoder = OtlpEncoder({"service.name": "svc"}, INSTRUMENTATION_SCOPE, "1")
    payload = encoder.request(encoder.spans([record]))
    assert sdk_private._request_bytes(payload) is payload  # not parsed and serialized again
    with OtlpReceiver("grpc") as receiver:
        exporter = sdk_private.grpc_exporter_class()(endpoint=receiver.endpoint, insecure=True)
        try:
            assert exporter._translate_data(sdk_private.EncodedSpans(payload, 2)) is payload
            assert exporter.export(sdk_private.EncodedSpans(payload, 2)).name == "SUCCESS"
            sdk_spans = SpanBuilder(Resource.create({"service.name": "svc"}), "1").build([record])
            assert exporter.export(sdk_spans).name == "SUCCESS"
            # What the SDK does after an UNAVAILABLE error: the new client passes bytes too.
            exporter._initialize_channel_and_stub()
            assert exporter.export(sdk_private.EncodedSpans(payload, 2)).name == "SUCCESS"
        finally:
            exporter.shutdown()
        spans = receiver.wait_for_spans(6)
    assert len(spans) == 6
    assert sorted((int(s.trace_id, 16), s.attributes["accepted_tokens"]) for s in spans) == [
        (5, 2), (5, 2), (5, 2), (6, 1), (6, 1), (6, 1)
    ]  # fmt: skip


def test_a_provider_without_the_processor_hook_gets_an_error_naming_the_sdk():
    class Foreign:
        pass

    try:
        sdk_private.span_processor(Foreign())
    except RuntimeError as exc:
        assert "_active_span_processor" in str(exc) and "opentelemetry-sdk" in str(exc)
    else:
        raise AssertionError("no error")


@pytest.mark.parametrize("export_process", [True, False], ids=["process", "thread"])
def test_a_lone_surrogate_costs_nothing(monkeypatch, export_process):
    """A request id or attribute with a lone surrogate (UTF-8 cannot hold it) is written as its
    escape; its batch's other spans, and the span itself, arrive."""
    import spec_tracing
    from spec_tracing import ReqTimeStats, lifecycle

    with OtlpReceiver("http") as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        spec_tracing.enable(exporter="otlp", metrics=False, export_process=export_process)
        for i in range(50):
            odd = {"k\udc00": "v\udfff"} if i == 4 else None
            ReqTimeStats(rid="bad-\ud800" if i == 3 else f"ok-{i}", attributes=odd).finish()
        spec_tracing.shutdown(10_000)
        receiver.wait_for_spans(50)
        ids = {s.attributes[SpanAttr.REQUEST_ID]: s for s in receiver.spans()}
    stats = lifecycle.last_stats()
    assert stats["spans"] == 50 and stats["export_failed_spans"] == 0
    assert "bad-\\ud800" in ids
    assert ids["ok-4"].attributes["k\\udc00"] == "v\\udfff"
