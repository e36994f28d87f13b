"""Span exporters chosen by SPEC_TRACING_EXPORTER, including the OTLP JSON lines file exporter.

OTLP exporters are the SDK's own; they read the OTEL_EXPORTER_OTLP_* variables themselves. The
file exporter writes one ExportTraceServiceRequest per line in OTLP/JSON (hex trace and span ids,
integer enums, camelCase keys), which is what the OpenTelemetry Collector's file exporter writes
and its otlpjsonfile receiver reads.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Mapping, Sequence

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult

from ..settings import ConfigError, Settings
from .sdk_private import grpc_exporter_class, http_exporter_class

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(node: object) -> None:
    # Proto3 JSON writes bytes as base64; OTLP/JSON wants ids as hex.
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)


def spans_to_otlp_json(spans: Sequence[ReadableSpan]) -> dict:
    """One OTLP/JSON ExportTraceServiceRequest for `spans`."""
    doc = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    _hex_ids(doc)
    return doc


class OtlpJsonFileExporter(SpanExporter):
    """Appends one OTLP/JSON export request per line to `path`."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in shutdown

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        line = json.dumps(spans_to_otlp_json(spans), separators=(",", ":"))
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            self._file.write(line + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def _otlp_exporter(otel: Mapping[str, str]) -> SpanExporter:
    protocol = otel.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or otel.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    if protocol.strip().lower() == "http/protobuf":
        return http_exporter_class()()
    # Reconnect to a restarted collector within seconds, not gRPC's default of up to 2 minutes.
    return grpc_exporter_class()(channel_options=_RECONNECT)


_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 3000),
)


def check_span_exporter(settings: Settings) -> None:
    """Fail at enable() for what the exporter process would only find later."""
    if settings.exporter == "file":
        import errno

        # O_NONBLOCK: a FIFO with no reader yet would block enable() (the engine's thread, under
        # an engine plugin) in a plain open(); here it fails at once with ENXIO.
        try:
            os.close(os.open(settings.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT |
                             os.O_NONBLOCK, 0o600))  # fmt: skip
        except OSError as exc:
            allowed = f"a writable file path ({exc.strerror})"
            if exc.errno == errno.ENXIO:
                allowed = "a writable file path (this is a pipe with no reader: start it first)"
            raise ConfigError("SPEC_TRACING_FILE", settings.file, allowed) from None


def build_span_exporter(settings: Settings) -> SpanExporter | None:
    """The exporter SPEC_TRACING_EXPORTER names, or None for `none`."""
    if settings.exporter == "otlp":
        return _otlp_exporter(settings.otel)
    if settings.exporter == "file":
        check_span_exporter(settings)
        return OtlpJsonFileExporter(settings.file)
    if settings.exporter == "console":
        return ConsoleSpanExporter()
    return None
