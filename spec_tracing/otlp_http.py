"""An overall deadline for each OTLP/HTTP request (spans: export/; metrics: metrics/).

requests (urllib3 under it) applies its timeout to each socket read, so a collector that trickles
its response a byte at a time holds the export thread for as long as it likes: with
OTEL_EXPORTER_OTLP_TIMEOUT=2 a trickling collector held it 30 s. The SDK's HTTP client passes
each attempt the time left before its deadline; `with_deadline` makes that the attempt's whole
time, response body included: when it is spent, the socket the attempt uses is shut down, the
SDK sees a connection error, its deadline has passed, and the spans are counted failed.

The answer itself is untrusted input: at most MAX_RESPONSE_BYTES of it are read (raw, then
inflated to at most as many), which is far more than an OTLP partial_success needs, so a gzip
bomb or an endless body costs this process nothing; and a 3xx is a failed export (the SDK would
take any status below 400 as success, and does not follow redirects), said once in a warning.
What is not cut: a TLS handshake that trickles (the socket is known to the connection only once
the handshake is done) and requests through an HTTP proxy; both keep per-read timeouts.
"""

from __future__ import annotations

import logging
import socket
import threading
import zlib
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_local = threading.local()
logger = logging.getLogger(__name__)
MAX_RESPONSE_BYTES = 64 * 1024


class RedirectRefused(ConnectionError):
    """A collector answered 3xx: the export did not reach a receiver."""


def _bounded_body(response: Any) -> None:
    """Read at most MAX_RESPONSE_BYTES of a streamed response (inflated to at most as many)
    into response._content, and release the connection."""
    try:
        raw = response.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=False) or b""
    finally:
        response.close()  # what was not read is never read: the connection is not reused
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if raw and encoding in ("gzip", "x-gzip", "deflate"):
        try:  # 47: a gzip or zlib header, whichever it is; max_length caps what one call makes
            raw = zlib.decompressobj(47).decompress(raw, MAX_RESPONSE_BYTES)
        except zlib.error:
            raw = b""
    elif encoding not in ("", "identity"):
        raw = b""  # an encoding this reader does not inflate: no partial_success read
    response._content = raw[:MAX_RESPONSE_BYTES] if len(raw) <= MAX_RESPONSE_BYTES else b""
    response._content_consumed = True


class _Attempt:
    """The connections one request used; `cut` shuts their sockets unless the request ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self._ended = False
        self.cut_off = False

    def use(self, connection: Any) -> None:
        with self._lock:
            self._connections.append(connection)

    def cut(self) -> None:
        with self._lock:
            if self._ended:
                return
            self.cut_off = True
            for connection in self._connections:
                sock = getattr(connection, "sock", None)
                if sock is not None:
                    try:  # the plain socket's shutdown: wakes a reader blocked in recv, TLS or not
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
                    except OSError:
                        pass

    def end(self) -> None:
        with self._lock:
            self._ended = True


class _Tracked:
    """Mixed into urllib3's connections: tells the running attempt which connection it uses."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        attempt = getattr(_local, "attempt", None)
        if attempt is not None:
            attempt.use(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _Connection(_Tracked, HTTPConnection):
    pass


class _TlsConnection(_Tracked, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TlsPool(HTTPSConnectionPool):
    ConnectionCls = _TlsConnection


def http_session(exporter: Any) -> Any:
    """The requests.Session an SDK OTLP/HTTP exporter (spans or metrics) sends with, or None
    (an SDK internal: export/sdk_private.py's missing() checks it is still there)."""
    transport = getattr(getattr(exporter, "_client", None), "_transport", None)
    return getattr(transport, "_session", None)


def bound_http_requests(exporter: Any) -> Any:
    """`exporter` with each of its HTTP requests bounded as a whole by its timeout."""
    session = http_session(exporter)
    if session is not None:
        with_deadline(session)
    return exporter


def with_deadline(session: Any) -> Any:
    """`session` (a requests.Session, the SDK's or the user's credential provider's) with each
    request bounded by its timeout as a whole. Returns the same session."""
    for adapter in session.adapters.values():
        manager = getattr(adapter, "poolmanager", None)
        if manager is not None:
            manager.pool_classes_by_scheme = {"http": _Pool, "https": _TlsPool}
    send = session.send

    def send_by_deadline(request: Any, **kwargs: Any) -> Any:
        timeout = kwargs.get("timeout")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
            return send(request, **kwargs)
        attempt = _local.attempt = _Attempt()
        timer = threading.Timer(max(timeout, 0.0), attempt.cut)
        timer.daemon = True
        timer.start()
        try:
            response = send(request, **{**kwargs, "stream": True})
            _bounded_body(response)  # inside the deadline
            if 300 <= response.status_code < 400:
                _refuse_redirect(session, response)
            return response
        except Exception as exc:
            if attempt.cut_off:
                raise TimeoutError(f"no complete response within {timeout:.3g} s") from exc
            raise
        finally:
            attempt.end()
            timer.cancel()
            _local.attempt = None

    session.send = send_by_deadline
    return session


def _refuse_redirect(session: Any, response: Any) -> None:
    where = response.headers.get("Location", "no Location")
    why = (
        f"the collector answered {response.status_code} (to {where}); OTLP exports are not "
        "redirected: set the endpoint to the address that takes them"
    )
    if not getattr(session, "_spec_tracing_warned_redirect", False):
        session._spec_tracing_warned_redirect = True
        logger.warning("spec-tracing: export failed: %s", why)
    raise RedirectRefused(why)
