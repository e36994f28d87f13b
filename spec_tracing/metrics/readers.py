"""The meter provider behind the metrics: readers from settings, flush and shutdown."""

from __future__ import annotations

import errno
import logging
import socket
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics as metrics_api
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from ..settings import ConfigError, Settings

logger = logging.getLogger(__name__)


@dataclass
class Meters:
    provider: Any = None  # None: metrics are off
    owned: bool = False
    server: Any = None  # the Prometheus HTTP server we started
    flushable: tuple = ()  # readers a flush pushes (not Prometheus: see flush)

    def flush(self, timeout_ms: int) -> None:
        # A force_flush hands the Prometheus reader a second copy of the data, which its next
        # scrape would show twice; so flush the other readers one by one.
        if self.provider is None:
            return
        if not self.owned:
            self.provider.force_flush(timeout_ms)
        for reader in self.flushable:
            reader.force_flush(timeout_ms)

    def close_endpoint(self) -> None:
        """Release the Prometheus port at once (a scrape is all it serves): a re-enable() must
        find it free even while the rest of the old setup waits on a dead collector."""
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def shutdown(self, timeout_ms: int) -> None:
        self.close_endpoint()
        self.flush(timeout_ms)
        if self.owned:
            self.provider.shutdown(timeout_millis=timeout_ms)


def build_meters(settings: Settings, readers: list | None, otlp: bool) -> Meters:
    """Metrics go to `readers`, OTLP (when `otlp`), Prometheus (when a port is set), or else
    the application's SDK MeterProvider; with none of these, metrics are off."""
    if not settings.metrics:
        return Meters()
    readers = list(readers or [])
    existing = metrics_api.get_meter_provider()
    if not readers and settings.prometheus_port is None and isinstance(existing, MeterProvider):
        return Meters(existing, owned=False)
    if otlp:
        readers.append(PeriodicExportingMetricReader(_otlp_metric_exporter(settings.otel)))
    flushable = tuple(readers)
    server = None
    if settings.prometheus_port is not None:
        reader, server = _prometheus(settings)
        if reader is not None:
            readers.append(reader)
    if not readers:
        return Meters()
    # Our shutdown() bounds this provider's; the SDK's own exit hook would not be bounded.
    provider = MeterProvider(
        resource=Resource.create(), metric_readers=readers, shutdown_on_exit=False
    )
    return Meters(provider, True, server, flushable)


def _otlp_metric_exporter(otel):
    protocol = otel.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") or otel.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    if protocol.strip().lower() == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        from ..otlp_http import bound_http_requests

        return bound_http_requests(OTLPMetricExporter())
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter()


def _prometheus(settings: Settings):
    port = settings.prometheus_port
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry
    except ImportError:
        raise ConfigError(
            "SPEC_TRACING_PROMETHEUS_PORT", port, "pip install 'spec-tracing[prometheus]' first"
        ) from None
    registry = CollectorRegistry()  # our own: enabling twice must not register twice
    try:
        server = _start_server(port, settings.prometheus_host, registry)
    except OSError as exc:
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(
                "SPEC_TRACING_PROMETHEUS_HOST",
                settings.prometheus_host,
                f"an address of this machine ({exc.strerror})",
            ) from None
        # A port another engine on this host holds (replicas, DP ranks given one setting) costs
        # this process its scrape endpoint only, never its traces or OTLP metrics.
        PROMETHEUS_CLASHES[0] += 1
        logger.warning(
            "spec-tracing: SPEC_TRACING_PROMETHEUS_PORT=%s on %s is taken (%s): this process "
            "serves no Prometheus endpoint; tracing and OTLP metrics go on. Give each engine "
            "process its own port.",
            port, settings.prometheus_host, exc.strerror,
        )  # fmt: skip
        return None, None
    return PrometheusMetricReader(registry=registry), server


def check_prometheus_host(settings: Settings) -> None:
    """A ConfigError now for an address the endpoint could never bind (it is bound later, in
    the exporter process): binding port 0 there takes no port anyone wants."""
    if settings.prometheus_port is None or not settings.metrics:
        return
    host = settings.prometheus_host
    try:
        family = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
    except OSError as exc:
        raise ConfigError(
            "SPEC_TRACING_PROMETHEUS_HOST", host,
            f"an address of this machine ({exc.strerror or exc})",
        ) from None  # fmt: skip


# A scrape takes well under a second; a connection that sends nothing for this long is closed,
# and past MAX_CONNECTIONS open at once new ones are closed unanswered, so idle or half-sent
# requests cannot pile up threads (tests/metrics/test_metrics.py, slowloris).
READ_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 16


def _start_server(port: int, host: str, registry):
    """prometheus_client's WSGI app behind a threading server with a read timeout and a bound on
    connections (start_http_server has neither)."""
    import threading
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    class Handler(WSGIRequestHandler):
        timeout = READ_TIMEOUT_S

        def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
            pass

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 128  # socketserver's 5 drops a burst's connections (SYN retries)
        address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

        def process_request(self, request, client_address):
            if not self.slots.acquire(blocking=False):
                self.shutdown_request(request)
                return
            try:
                super().process_request(request, client_address)
            except Exception:
                self.slots.release()
                raise

        def handle_error(self, request, client_address):
            # A client that timed out or went away: socketserver would print a traceback on
            # the engine's stderr for each one (a flood of idle connections, a flood of lines).
            logger.debug("spec-tracing: Prometheus connection from %s failed", client_address,
                         exc_info=True)  # fmt: skip

        def process_request_thread(self, request, client_address):
            try:
                super().process_request_thread(request, client_address)
            finally:
                self.slots.release()

    server = make_server(host, port, make_wsgi_app(registry), Server, handler_class=Handler)
    threading.Thread(
        target=server.serve_forever, name="spec-tracing-prometheus", daemon=True
    ).start()
    return server


PROMETHEUS_CLASHES = [0]  # endpoints not served because the port was taken (stats())
