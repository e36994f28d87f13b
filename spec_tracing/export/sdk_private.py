"""Every use of an OpenTelemetry SDK name that is not public API, in one place.

Three shortcuts save the exporter most of its cost, and each leans on an SDK internal:
- finished spans are handed to a provider's span processors directly (`_active_span_processor`),
  the object the SDK's own tracer hands them to;
- pre-encoded OTLP bytes go to the HTTP exporter's `_client.export` (checking `_shutdown`; its
  `_client._submit` is wrapped to read the response's partial_success; the requests session at
  `_client._transport._session` gets an overall deadline per request, otlp_http.py), and
  to the gRPC exporter's channel as they are: its `_translate_data` hook returns them and its
  `_stub` (from which `_initialize_channel_and_stub` builds the client) serializes bytes as
  bytes, so retries, headers, TLS and reconnection stay the SDK's.
`missing()` lists what the installed SDK lacks; tests/export/test_sdk_private.py fails on an SDK
that renamed any of them. Without the encoder hooks, spans are built as SDK ReadableSpans and
exported the public way (slower, same result); without `_active_span_processor` spans cannot be
handed over, and enable() says so naming the SDK version.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ..otlp_http import bound_http_requests, http_session

# The SDK releases these internals were read from and tested against.
TESTED = "opentelemetry-sdk 1.40 .. 1.45"


class EncodedSpans:
    """Spans already encoded as ExportTraceServiceRequest bytes (otlp_proto.py); what the
    exporters below accept besides ReadableSpans."""

    def __init__(self, payload: bytes, count: int):
        self.payload = payload
        self.count = count

    def __len__(self) -> int:
        return self.count


def sdk_version() -> str:
    from opentelemetry.sdk.version import __version__

    return __version__


def span_processor(provider: Any) -> Any:
    """The processor an SDK TracerProvider hands finished spans to."""
    try:
        return provider._active_span_processor
    except AttributeError:
        raise RuntimeError(
            f"spec-tracing cannot hand spans to this TracerProvider ({type(provider).__name__}, "
            f"opentelemetry-sdk {sdk_version()}): it has no _active_span_processor; "
            f"spec-tracing was tested with {TESTED}"
        ) from None


class Rejections:
    """Spans a collector took but rejected through OTLP partial_success (its limits or
    validation refused them): the export itself succeeded, so without this they were counted
    exported. One warning per exporter, with the collector's message."""

    rejected_spans = 0

    def note_response(self, response: Any) -> None:
        partial = getattr(response, "partial_success", None)
        rejected = getattr(partial, "rejected_spans", 0) if partial is not None else 0
        if rejected:
            if not self.rejected_spans:
                import logging

                logging.getLogger("spec_tracing.export").warning(
                    "spec-tracing exporter: the collector rejected spans (%s); counted in "
                    "stats()['export_rejected_spans']",
                    partial.error_message or "no message",
                )
            self.rejected_spans += rejected


def http_exporter_class() -> type:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )
    from opentelemetry.sdk.trace.export import SpanExportResult

    class HttpExporter(OTLPSpanExporter, Rejections):
        accepts_encoded = hasattr(OTLPSpanExporter(), "_client")

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            bound_http_requests(self)
            submit = getattr(getattr(self, "_client", None), "_submit", None)
            if submit is not None:  # the response body, for partial_success

                def submit_and_read(data, timeout, _submit=submit):
                    result = _submit(data, timeout)
                    try:
                        if result.status_code is not None and 200 <= result.status_code < 300:
                            body = result.content()
                            if body:
                                self.note_response(ExportTraceServiceResponse.FromString(body))
                    except Exception:  # an unreadable body is the collector's affair
                        pass
                    return result

                self._client._submit = submit_and_read

        # Pre-encoded bytes go straight to the exporter's HTTP client, with its retries.
        def export(self, spans):
            if isinstance(spans, EncodedSpans):
                if self._shutdown:
                    return SpanExportResult.FAILURE
                result = self._client.export(spans.payload)
                return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
            return super().export(spans)

    return HttpExporter


_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


# What GrpcExporter leans on, on an SDK OTLPSpanExporter instance.
_GRPC_INTERNALS = ("_translate_data", "_initialize_channel_and_stub", "_stub", "_channel")


def _request_bytes(request: Any) -> bytes:
    return request if type(request) is bytes else request.SerializeToString()


def grpc_exporter_class() -> type:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    class GrpcExporter(OTLPSpanExporter, Rejections):
        # Pre-encoded bytes go to gRPC as they are, through the SDK's own retries, headers, TLS
        # and channel re-creation (which builds the client from `_stub`): parsing them into a
        # request only for gRPC to serialize it again took ~22% of the exporter's CPU.
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.accepts_encoded = all(hasattr(self, name) for name in _GRPC_INTERNALS)
            if self.accepts_encoded:
                self._stub = self._bytes_stub
                self._client = self._bytes_stub(self._channel)

        def _bytes_stub(self, channel: Any) -> Any:
            """TraceServiceStub with an Export whose serializer passes request bytes through,
            and whose response is read for partial_success."""
            call = channel.unary_unary(
                _EXPORT_METHOD,
                request_serializer=_request_bytes,
                response_deserializer=ExportTraceServiceResponse.FromString,
            )

            def export(*args: Any, **kwargs: Any) -> Any:
                response = call(*args, **kwargs)
                self.note_response(response)
                return response

            return SimpleNamespace(Export=export)

        def _translate_data(self, data):
            if isinstance(data, EncodedSpans):
                return data.payload
            return super()._translate_data(data)

    return GrpcExporter


def accepts_encoded(exporter: Any) -> bool:
    """Whether `exporter` takes EncodedSpans (an exporter class above, on an SDK that still has
    the hooks it uses)."""
    return bool(getattr(exporter, "accepts_encoded", False))


def missing() -> list[str]:
    """The SDK internals used here that the installed SDK lacks."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http
    from opentelemetry.sdk.trace import TracerProvider

    gone = []
    if not hasattr(TracerProvider(), "_active_span_processor"):
        gone.append("TracerProvider._active_span_processor")
    http = Http()
    for name in ("_client", "_shutdown"):
        if not hasattr(http, name):
            gone.append(f"http OTLPSpanExporter.{name}")
    for name in ("export", "_submit"):
        if not hasattr(getattr(http, "_client", None), name):
            gone.append(f"http OTLPSpanExporter._client.{name}")
    if http_session(http) is None:
        gone.append("http OTLPSpanExporter._client._transport._session")
    http.shutdown()
    grpc = Grpc()
    gone += [f"grpc OTLPSpanExporter.{n}" for n in _GRPC_INTERNALS if not hasattr(grpc, n)]
    grpc.shutdown()
    return gone
