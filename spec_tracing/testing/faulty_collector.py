"""A misbehaving OTLP collector on 127.0.0.1, for fault tests (the project's and users'): each
mode is one way a collector, an ingress or a proxy in front of it has answered an export.

    with FaultyCollector("gzip_bomb") as collector:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.endpoint
        ...

Modes (FaultyCollector.MODES), OTLP/HTTP: redirect (301 to https), permanent_redirect (308),
not_modified (304), gzip_bomb (200 with a gzip body of 1 MiB that inflates to 1 GiB),
endless_body (200 with a chunked body that never ends), overcount (200 whose partial_success
rejects 1,000,000 spans), slow (answers after `delay_s`), reset (reads the export, then resets
the connection), trickle (200 with a body sent a byte every 0.5 s), hang (reads the export and
never answers). OTLP/gRPC (`protocol` "grpc"): grpc_unavailable (UNAVAILABLE, as a collector
shedding load), grpc_overcount (partial_success rejects 1,000,000 spans), grpc_hang (never
answers), grpc_big_reply (a 5 MiB answer, past gRPC's 4 MiB receive limit). `requests` counts
the exports it saw.
"""

from __future__ import annotations

import functools
import socket
import struct
import threading
import time
import zlib

HTTP_MODES = ("redirect", "permanent_redirect", "not_modified", "gzip_bomb", "endless_body",
              "overcount", "slow", "reset", "trickle", "hang")  # fmt: skip
GRPC_MODES = ("grpc_unavailable", "grpc_overcount", "grpc_hang", "grpc_big_reply")
MODES = HTTP_MODES + GRPC_MODES


@functools.cache
def _bomb() -> bytes:
    """~1 MiB of gzip that inflates to 1 GiB of zeros (made once, in ~1 s)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join(packer.compress(block) for _ in range(1024)) + packer.flush()


def _overcount_body() -> bytes:
    return _trace_response(rejected=1_000_000).SerializeToString()


def _trace_response(rejected: int = 0, message: str = "x"):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTracePartialSuccess,
        ExportTraceServiceResponse,
    )

    if not rejected and not message:
        return ExportTraceServiceResponse()
    return ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=rejected, error_message=message)
    )


class FaultyCollector:
    MODES = MODES

    def __init__(self, mode: str, delay_s: float = 2.0):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        self.mode, self.delay_s = mode, delay_s
        self.requests = 0
        self._stop = threading.Event()
        if mode in GRPC_MODES:
            self._start_grpc()
            return
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        if mode == "gzip_bomb":
            _bomb()
        threading.Thread(target=self._serve, daemon=True).start()

    def _start_grpc(self) -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.metrics.v1 import (
            metrics_service_pb2,
            metrics_service_pb2_grpc,
        )
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        collector = self

        def answer(context, response):
            collector.requests += 1
            if collector.mode == "grpc_unavailable":
                context.abort(grpc.StatusCode.UNAVAILABLE, "shedding load")
            if collector.mode == "grpc_hang":
                collector._stop.wait()
                context.abort(grpc.StatusCode.UNAVAILABLE, "closed")
            return response

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802 - gRPC's name
                if collector.mode == "grpc_big_reply":
                    return answer(context, _trace_response(message="x" * (5 << 20)))
                rejected = 1_000_000 if collector.mode == "grpc_overcount" else 0
                return answer(context, _trace_response(rejected=rejected, message=""))

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):  # noqa: N802 - gRPC's name
                return answer(context, metrics_service_pb2.ExportMetricsServiceResponse())

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            body += chunk
        return True

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                while self._read_request(conn):
                    self.requests += 1
                    self._respond(conn)
            except OSError:  # the exporter gave up on us: what it should do
                pass

    def _respond(self, conn: socket.socket) -> None:
        mode = self.mode
        if mode in ("redirect", "permanent_redirect", "not_modified"):
            code = {"redirect": "301 Moved Permanently", "permanent_redirect":
                    "308 Permanent Redirect", "not_modified": "304 Not Modified"}[mode]  # fmt: skip
            conn.sendall(f"HTTP/1.1 {code}\r\nLocation: https://127.0.0.1:{self.port}/v1/traces"
                         "\r\nContent-Length: 0\r\n\r\n".encode())  # fmt: skip
        elif mode == "gzip_bomb":
            body = _bomb()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            conn.sendall(body)
        elif mode == "endless_body":
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b"%x\r\n%s\r\n" % (65536, bytes(65536))
            while not self._stop.is_set():
                conn.sendall(chunk)
        elif mode == "overcount":
            body = _overcount_body()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        elif mode == "reset":  # RST, not FIN: SO_LINGER with a zero timeout, then close
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            raise OSError("reset")
        elif mode == "trickle":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                         b"Content-Length: 4096\r\n\r\n")  # fmt: skip
            for _ in range(4096):
                if self._stop.wait(0.5):
                    break
                conn.sendall(b"\x00")
        elif mode == "hang":
            self._stop.wait()
        else:  # slow
            time.sleep(self.delay_s)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self._stop.set()
        if self.mode in GRPC_MODES:
            self._server.stop(grace=None)
        else:
            self._sock.close()

    def __enter__(self) -> FaultyCollector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
