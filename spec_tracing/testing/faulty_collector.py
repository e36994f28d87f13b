"""A misbehaving OTLP/HTTP collector on 127.0.0.1, for fault tests (the project's and users'):
each mode is one way a collector, an ingress or a proxy in front of it has answered an export.

    with FaultyCollector("gzip_bomb") as collector:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.endpoint
        ...

Modes (FaultyCollector.MODES): redirect (301 to https), permanent_redirect (308),
not_modified (304), gzip_bomb (200 with a gzip body of 1 MiB that inflates to 1 GiB),
endless_body (200 with a chunked body that never ends), overcount (200 whose partial_success
rejects 1,000,000 spans), slow (answers after `delay_s`). `requests` counts the exports it saw.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
import zlib

MODES = ("redirect", "permanent_redirect", "not_modified", "gzip_bomb", "endless_body",
         "overcount", "slow")  # fmt: skip


@functools.cache
def _bomb() -> bytes:
    """~1 MiB of gzip that inflates to 1 GiB of zeros (made once, in ~1 s)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join(packer.compress(block) for _ in range(1024)) + packer.flush()


def _overcount_body() -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTracePartialSuccess,
        ExportTraceServiceResponse,
    )

    return ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=1_000_000, error_message="x")
    ).SerializeToString()


class FaultyCollector:
    MODES = MODES

    def __init__(self, mode: str, delay_s: float = 2.0):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        self.mode, self.delay_s = mode, delay_s
        self.requests = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._stop = threading.Event()
        self.port = self._sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        if mode == "gzip_bomb":
            _bomb()
        threading.Thread(target=self._serve, daemon=True).start()

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
        else:  # slow
            time.sleep(self.delay_s)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self._stop.set()
        self._sock.close()

    def __enter__(self) -> FaultyCollector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
