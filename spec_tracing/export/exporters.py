"""Span exporters chosen by SPEC_TRACING_EXPORTER, including the OTLP JSON lines file exporter.

OTLP exporters are the SDK's own; they read the OTEL_EXPORTER_OTLP_* variables themselves. The
file exporter writes one ExportTraceServiceRequest per line in OTLP/JSON (hex trace and span ids,
integer enums, camelCase keys), which is what the OpenTelemetry Collector's file exporter writes
and its otlpjsonfile receiver reads.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import stat
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
    """Appends one OTLP/JSON export request per line to `path`.

    Whole lines only: a write the disk cannot hold is cut back to the line before it and fails
    (counted); the path is opened again when it no longer names the open file (renamed or
    deleted by a log rotation), as logging.handlers.WatchedFileHandler does
    (tests/export/test_file_exporter.py)."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._open()

    def _open(self) -> None:
        fd = open_trace_file(self.path)
        st = os.fstat(fd)
        if self._fd is not None:
            os.close(self._fd)
        # A device or a pipe (/dev/stdout) is written as it is: no rotation, no seek.
        self._fd, self._regular = fd, stat.S_ISREG(st.st_mode)
        self._id = _identity(st)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        data = (json.dumps(spans_to_otlp_json(spans), separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd is None:
                return SpanExportResult.FAILURE
            try:
                if self._regular:
                    self._follow_path()
                return self._append(data)
            except OSError:
                return SpanExportResult.FAILURE

    def _follow_path(self) -> None:
        try:
            current = _identity(os.stat(self.path))
        except FileNotFoundError:
            current = None
        if current != self._id:
            self._open()

    def _append(self, data: bytes) -> SpanExportResult:
        fd = self._fd
        start = os.lseek(fd, 0, os.SEEK_END) if self._regular else 0
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError:  # ENOSPC, EFBIG (RLIMIT_FSIZE), EIO: no part of this line stays
            try:
                if self._regular and os.fstat(fd).st_size == start + written:  # ours alone
                    os.ftruncate(fd, start)
            except OSError:
                pass
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def open_trace_file(path: str, flags: int = 0) -> int:
    """The trace file, opened for append. In a directory others may write (/tmp), a symbolic
    link is not followed; a regular file that another user owns, or that others may write, is
    refused: either would send the spans wherever whoever planted it chose. Devices and pipes
    (/dev/stdout, a FIFO) are taken as they are. OSError (with the reason) otherwise."""
    folder = os.path.dirname(os.path.abspath(path))
    shared = bool(os.stat(folder).st_mode & stat.S_IWOTH)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | flags
                 | (os.O_NOFOLLOW if shared else 0), 0o600)  # fmt: skip
    st = os.fstat(fd)
    problem = None
    if stat.S_ISREG(st.st_mode) and st.st_uid != os.geteuid():
        problem = f"owned by another user (uid {st.st_uid})"
    elif stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_IWOTH:
        problem = "writable by any user (chmod o-w to use it)"
    if problem:
        os.close(fd)
        raise OSError(errno.EPERM, problem)
    return fd


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
        # O_NONBLOCK: a FIFO with no reader yet would block enable() (the engine's thread, under
        # an engine plugin) in a plain open(); here it fails at once with ENXIO.
        try:
            os.close(open_trace_file(settings.file, os.O_NONBLOCK))
        except OSError as exc:
            allowed = f"a writable file path ({exc.strerror})"
            if exc.errno == errno.ENXIO:
                allowed = "a writable file path (this is a pipe with no reader: start it first)"
            elif exc.errno == errno.ELOOP:
                allowed = "a writable file path (not a link: its folder is writable by others)"
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
