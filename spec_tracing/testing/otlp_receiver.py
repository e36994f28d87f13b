"""A real OTLP trace receiver (gRPC and HTTP/protobuf) on 127.0.0.1, for tests and benchmarks.

It decodes what exporters send with opentelemetry-proto's generated messages, keeps the requests,
and can be stopped, stalled and restarted on the same port. Binds to loopback only.
"""

from __future__ import annotations

import gzip
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from ..report.otlp_json import OtlpSpan

HOST = "127.0.0.1"


def _value(any_value) -> object:
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


class _Store:
    def __init__(self) -> None:
        self.requests: list = []
        self.metric_requests: list = []
        self.lock = threading.Lock()
        self.delay_s = 0.0
        self.reject = False  # answer trace exports with partial_success: every span rejected

    def answer(self, request, response_type):
        """The response to `request`: empty, or rejecting its spans when `reject` is set (and
        keeping none of them, as a collector that refuses them does)."""
        response = response_type()
        if (
            self.reject
            and hasattr(response, "partial_success")
            and hasattr(request, "resource_spans")
        ):
            response.partial_success.rejected_spans = sum(
                len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans
            )
            response.partial_success.error_message = "rejected by the test receiver"
        return response

    def add(self, request) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.reject and not isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest):
            return
        with self.lock:
            if isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest):
                self.metric_requests.append(request)
            else:
                self.requests.append(request)

    def metric_values(self) -> dict[tuple[str, tuple], float]:
        """Latest value of each (metric name, sorted attributes): sums, gauges, histogram
        counts (cumulative, so the latest export holds the totals)."""
        out = {}
        with self.lock:
            requests = list(self.metric_requests)
        for req in requests:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        for p in getattr(m, kind).data_points:
                            attrs = tuple(sorted((kv.key, _value(kv.value)) for kv in p.attributes))
                            if kind == "histogram":
                                value = p.count
                            else:
                                value = getattr(p, p.WhichOneof("value"))
                            out[(m.name, attrs)] = value
        return out

    def spans(self) -> list[OtlpSpan]:
        out = []
        with self.lock:
            requests = list(self.requests)
        for req in requests:
            for rs in req.resource_spans:
                resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(
                            OtlpSpan(
                                s.name,
                                s.trace_id.hex(),
                                s.span_id.hex(),
                                s.parent_span_id.hex(),
                                s.start_time_unix_nano,
                                s.end_time_unix_nano,
                                {kv.key: _value(kv.value) for kv in s.attributes},
                                s.status.code,
                                resource,
                            )
                        )
        return out

    def span_count(self) -> int:
        with self.lock:
            return sum(
                len(ss.spans)
                for r in self.requests
                for rs in r.resource_spans
                for ss in rs.scope_spans
            )


class _GrpcTraces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: _Store):
        self.store = store

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        self.store.add(request)
        return self.store.answer(request, trace_service_pb2.ExportTraceServiceResponse)


class _GrpcMetrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, store: _Store):
        self.store = store

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        self.store.add(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


# HTTP path -> (request message, response message)
_HTTP_ROUTES = {
    "/v1/traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
}


class OtlpReceiver:
    """`OtlpReceiver("grpc"|"http")`; `start()` picks an ephemeral port unless one is given."""

    def __init__(self, protocol: str = "grpc", port: int = 0):
        if protocol not in ("grpc", "http"):
            raise ValueError(f"protocol {protocol!r} is not allowed; use grpc or http")
        self.protocol = protocol
        self.port = port
        self._store = _Store()
        self._server = None

    @property
    def endpoint(self) -> str:
        """The URL to put in OTEL_EXPORTER_OTLP_ENDPOINT."""
        return f"http://{HOST}:{self.port}"

    @property
    def traces_endpoint(self) -> str:
        """The URL to put in OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (HTTP wants the full path)."""
        return self.endpoint + ("/v1/traces" if self.protocol == "http" else "")

    def start(self) -> OtlpReceiver:
        if self.protocol == "grpc":
            import grpc

            server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
                _GrpcTraces(self._store), server
            )
            metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
                _GrpcMetrics(self._store), server
            )
            self.port = server.add_insecure_port(f"{HOST}:{self.port}")
            server.start()
        else:
            server = ThreadingHTTPServer((HOST, self.port), _http_handler(self._store))
            server.daemon_threads = True
            self.port = server.server_address[1]
            threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if self.protocol == "grpc":
            server.stop(grace=None).wait()
        else:
            server.shutdown()
            server.server_close()

    def reject_spans(self, reject: bool = True) -> None:
        """Answer trace exports with OTLP partial_success, rejecting every span (a collector
        whose limits or validation refuse them): the exporter gets a success status."""
        self._store.reject = reject

    def set_delay(self, seconds: float) -> None:
        """Answer every export only after `seconds` (a slow collector)."""
        self._store.delay_s = seconds

    def spans(self) -> list[OtlpSpan]:
        return self._store.spans()

    def span_count(self) -> int:
        return self._store.span_count()

    def metric_values(self) -> dict[tuple[str, tuple], float]:
        """Metrics received: latest value per (name, sorted attribute items)."""
        return self._store.metric_values()

    def wait_for_spans(self, count: int, timeout_s: float = 10.0) -> list[OtlpSpan]:
        """Wait until at least `count` spans arrived (or the timeout passed); return them all."""
        deadline = time.monotonic() + timeout_s
        while self.span_count() < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.spans()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _http_handler(store: _Store):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path not in _HTTP_ROUTES:
                self.send_response(404)
                self.end_headers()
                return
            request_type, response_type = _HTTP_ROUTES[self.path]
            request = request_type()
            request.ParseFromString(body)
            store.add(request)
            payload = store.answer(request, response_type).SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):  # keep test output clean
            pass

    return Handler
