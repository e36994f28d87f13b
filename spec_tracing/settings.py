"""Every environment variable the plugin reads, validated in one place.

`Settings.from_env()` reads the SPEC_TRACING_* variables and checks the standard OTEL_* ones the
OpenTelemetry SDK will read when the exporters are built, so that a typo fails once, at
`enable()`, with a ConfigError naming the variable, the value and what is allowed, instead of
surfacing later inside the engine. Header values are never echoed (they carry credentials).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlparse

EXPORTERS = ("otlp", "file", "console", "none")
PROTOCOLS = ("grpc", "http/protobuf")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class ConfigError(ValueError):
    """A setting has a value the plugin cannot use."""

    def __init__(self, variable: str, value: object, allowed: str):
        self.variable = variable
        self.value = value
        self.allowed = allowed
        super().__init__(f"{variable}={value!r} is not allowed; expected {allowed}")


def parse_bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(name, raw, "one of 1/0, true/false, yes/no, on/off")


def _int_in(lo: int, hi: int | None) -> Callable[[str, str], int]:
    allowed = f"an integer {lo}..{hi}" if hi is not None else f"an integer >= {lo}"

    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(name, raw, allowed) from None
        if value < lo or (hi is not None and value > hi):
            raise ConfigError(name, raw, allowed)
        return value

    return parse


def _choice(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(name, raw, "one of " + ", ".join(choices))
        return value

    return parse


def _host(name: str, raw: str) -> str:
    import ipaddress

    text = raw.strip()
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if not re.fullmatch(
        r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*",
        text,
    ):
        raise ConfigError(name, raw, "an IP address or a host name")
    return text


def _text(name: str, raw: str) -> str:
    if not raw.strip():
        raise ConfigError(name, raw, "a non-empty string")
    return raw.strip()


def _path(name: str, raw: str) -> str:
    """Absolute at enable(): an exporter process started later (a replacement, after the
    engine changed directory) must write the same file."""
    return os.path.abspath(_text(name, raw))


@dataclass(frozen=True)
class Var:
    """One environment variable: the Settings field it feeds, its default and its meaning."""

    name: str
    field: str
    default: Any
    parse: Callable[[str, str], Any]
    doc: str


# The table the README's variable list is checked against (tests/test_settings.py).
SPEC_VARS: tuple[Var, ...] = (
    Var(
        "SPEC_TRACING_ENABLED",
        "enabled",
        False,
        parse_bool,
        "Switch tracing on in processes that start it automatically (opentelemetry-instrument, "
        "engine plugins). `spec_tracing.enable()` switches it on regardless.",
    ),
    Var(
        "SPEC_TRACING_LEVEL",
        "level",
        3,
        _int_in(0, 3),
        "0 off, 1 request spans only, 2 + spec_draft/spec_verify, 3 + spec_draft_extend.",
    ),
    Var(
        "SPEC_TRACING_EXPORTER",
        "exporter",
        "otlp",
        _choice(EXPORTERS),
        "Where spans go: OTLP (protocol from OTEL_EXPORTER_OTLP_PROTOCOL), an OTLP JSON lines "
        "file, the console, or nowhere. Ignored when the application already installed an SDK "
        "TracerProvider (its exporters are used).",
    ),
    Var(
        "SPEC_TRACING_FILE",
        "file",
        "spec-traces.jsonl",
        _path,
        "Output of the file exporter: one OTLP JSON export request per line (the OpenTelemetry "
        "Collector file exporter's format). Appended to, whole lines only (a write the disk "
        "cannot hold is cut back and counted failed); opened again when renamed or deleted "
        "(log rotation). Refused: a regular file another user owns or others may write, and "
        "a symbolic link in a folder others may write.",
    ),
    Var(
        "SPEC_TRACING_QUEUE_SIZE",
        "queue_size",
        65536,
        _int_in(1, None),
        "Bound of the hot-path buffer, in batch events (one per batch and stage). The recorder "
        "drains it from 512 events on; past the bound (an engine faster than the recorder "
        "thread), new events are dropped and counted; the engine is never blocked.",
    ),
    Var(
        "SPEC_TRACING_DRAIN_INTERVAL_MS",
        "drain_interval_ms",
        1000,
        _int_in(1, 10000),
        "How often the recorder thread empties the hot-path buffer. It also drains as soon as "
        "512 events wait, on flush(), and when an engine that ends requests in a process that "
        "may be killed next asks on a request's end; never twice within 50 ms. Each wake holds "
        "the engine process's interpreter lock a while whatever it finds, so fewer, larger "
        "drains cost the engine less (benchmark 3b: 250 ms took 1.6-1.9x the plugin CPU of "
        "1000 ms). Events of the last interval before a kill (SIGKILL) are lost.",
    ),
    Var(
        "SPEC_TRACING_EXPORT_PROCESS",
        "export_process",
        True,
        parse_bool,
        "Build and export spans in a separate process (`python -m spec_tracing.pipeline`) "
        "so span creation and OTLP encoding never take the engine's interpreter lock. Applies "
        "when spec-tracing builds the exporter itself; false: a thread of the engine's process.",
    ),
    Var(
        "SPEC_TRACING_EXPORT_QUEUE_SPANS",
        "export_queue_spans",
        262144,
        _int_in(1, None),
        "Bound of the exporter process's buffer, in spans (~55 bytes of memory each in "
        "benchmark 5: ~14 MB at the default), for when the collector is slow or down. Past it, "
        "spans are dropped and counted.",
    ),
    Var(
        "SPEC_TRACING_STEP_SAMPLE_RATIO",
        "step_sample_ratio",
        1.0,
        lambda name, raw: _ratio(name, raw),
        "Share of requests (0..1, chosen by trace id) whose step spans (prefill, draft, verify, "
        "draft_extend) are exported; every request's root and the metrics are kept whatever "
        "the ratio. Decided where spans are assembled, off the engine's process. 1: all.",
    ),
    Var(
        "SPEC_TRACING_STEP_KEEP",
        "step_keep",
        "error",
        lambda name, raw: _keep_rules(name, raw),
        "With a ratio below 1, rules that keep a request's step spans whatever the ratio, decided "
        "when it ends: error (aborted or failed), slowest:F (the slowest fraction F), "
        "lowest_accept:F and highest_accept:F (the lowest and highest fraction F by accept "
        "rate; judged once 10/F requests have ended, up to 2,000), accept_rate<X, "
        "accept_rate>X, duration>Nms; comma-separated, `none` for no rule.",
    ),
    Var(
        "SPEC_TRACING_STEP_KEEP_MAX",
        "step_keep_max",
        0.05,
        lambda name, raw: _ratio(name, raw),
        "The most the keep rules may keep, as a share (0..1) of the last 2,000 requests: past "
        "it a rule's pick is refused (counted in steps_refused_requests), so that an incident "
        "that makes every request slow keeps the steps of a bounded few. 1: no bound.",
    ),
    Var(
        "SPEC_TRACING_MAX_OPEN_REQUESTS",
        "max_open_requests",
        100000,
        _int_in(1, None),
        "Requests started and not yet ended whose step state is held where spans are assembled "
        "(~600 bytes each: ~60 MB at the default). Past it the oldest is forgotten, counted in "
        "stats()['evicted_requests']: its later steps count as unmatched ends, its root is "
        "still made.",
    ),
    Var(
        "SPEC_TRACING_EXPORT_NICE",
        "export_nice",
        10,
        _int_in(0, 19),
        "Niceness added to the exporter process (0..19, 0: none), so that when cores are "
        "contended the scheduler runs the engine first; a starved exporter drops and counts "
        "spans instead of slowing the engine.",
    ),
    Var(
        "SPEC_TRACING_METRICS",
        "metrics",
        True,
        parse_bool,
        "Record the speculative-decoding metrics. They are exported over OTLP next to the traces "
        "when SPEC_TRACING_EXPORTER=otlp, to Prometheus when SPEC_TRACING_PROMETHEUS_PORT is set, "
        "and through the application's MeterProvider if it installed one.",
    ),
    Var(
        "SPEC_TRACING_PROMETHEUS_PORT",
        "prometheus_port",
        None,
        _int_in(1, 65535),
        "Serve a Prometheus scrape endpoint (/metrics) on this port; unset (none): no endpoint.",
    ),
    Var(
        "SPEC_TRACING_PROMETHEUS_HOST",
        "prometheus_host",
        "127.0.0.1",
        _host,
        "Address the Prometheus endpoint binds to; 0.0.0.0 to let other hosts scrape it.",
    ),
    Var(
        "SPEC_TRACING_SHUTDOWN_TIMEOUT_MS",
        "shutdown_timeout_ms",
        5000,
        _int_in(0, 86_400_000),
        "Longest shutdown(), flush() and interpreter exit wait, all steps together (they return "
        "within it + 0.25 s whatever the collector or exporter process does; 0: don't wait; at "
        "most 86400000, a day).",
    ),
)


def _url(name: str, raw: str) -> str:
    text = raw.strip()
    allowed = "a URL with scheme http, https or grpc and a host, or host:port (gRPC)"
    # "host:port" without a scheme is what the SDK's gRPC exporter (and vLLM's
    # --otlp-traces-endpoint) also accept: TLS unless OTEL_EXPORTER_OTLP_INSECURE=true.
    # grpc:// is the form vLLM's own examples use; the SDK's gRPC exporter treats it as it
    # treats host:port (TLS unless insecure).
    try:
        parsed = urlparse(text if "://" in text else "//" + text)
        parsed.port  # noqa: B018 - raises on a non-numeric port
    except ValueError:
        raise ConfigError(name, raw, allowed + " (this one does not parse)") from None
    schemeless_with_path = not parsed.scheme and (parsed.path or parsed.query)
    if (
        parsed.scheme not in ("http", "https", "grpc", "")
        or not parsed.hostname
        or schemeless_with_path
    ):
        raise ConfigError(name, raw, allowed)
    # gRPC's target for "host" or grpc://host is port 443, where no collector listens: every
    # span failed. http(s):// URLs have their scheme's port.
    if parsed.scheme in ("grpc", "") and parsed.port is None:
        raise ConfigError(name, raw, allowed + " with a port (e.g. localhost:4317)")
    return raw


# The OTLP header syntax the SDK accepts without complaint (opentelemetry.util.re): it prints a
# header it cannot parse to the log, secret and all, so such a value is refused here instead.
_OWS = r"[ \t]*"
_HEADER = re.compile(
    rf"{_OWS}[\x21\x23-\x27\x2a\x2b\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7a\x7c\x7e]+{_OWS}="
    rf"{_OWS}[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*{_OWS}"
)


def _headers(name: str, raw: str) -> str:
    from urllib.parse import unquote

    for item in re.split(r"[ \t]*,[ \t]*", raw):
        # The exporters send the URL-decoded value: gRPC metadata and HTTP header values must
        # then be printable ASCII (a decoded newline or é failed every export).
        value = item.partition("=")[2].strip()
        decoded = unquote(value, errors="replace")
        if (item and not _HEADER.fullmatch(item.strip())) or not all(
            " " <= c <= "~" or c == "\t" for c in decoded
        ):
            raise ConfigError(
                name,
                "<redacted>",
                "comma-separated key=value pairs, values URL-encoded (no spaces, quotes, "
                "commas, semicolons, backslashes or non-ASCII characters: write them as %XX)",
            )
    return raw


def _key_values(name: str, raw: str) -> str:
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(name, raw, "comma-separated key=value pairs")
    return raw


def _compression(name: str, raw: str) -> str:
    # What the Python OTLP exporters implement (zstd is not among them).
    return _choice(("gzip", "deflate", "none"))(name, raw)


def _readable_file(name: str, raw: str) -> str:
    import stat

    # O_NONBLOCK: opening a FIFO with no writer would otherwise block enable(), and with it the
    # engine's thread under an engine plugin.
    try:
        fd = os.open(raw, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(name, raw, f"a readable file ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(name, raw, "a regular file (this is a pipe, device or directory)")
    finally:
        os.close(fd)
    return raw


def _protocol(name: str, raw: str) -> str:
    if raw.strip().lower() == "http/json":
        raise ConfigError(
            name,
            raw,
            "grpc or http/protobuf (the Python OTLP exporter has no "
            "http/json; use SPEC_TRACING_EXPORTER=file for OTLP JSON)",
        )
    return _choice(PROTOCOLS)(name, raw)


def _sampler(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value in SAMPLERS:
        return value
    from importlib.metadata import entry_points

    if any(ep.name == raw.strip() for ep in entry_points(group="opentelemetry_traces_sampler")):
        return raw.strip()
    raise ConfigError(name, raw, "one of " + ", ".join(SAMPLERS) + " or an installed sampler")


_MAX_TIMEOUT_S = 86400  # a day: past it, gRPC deadlines overflow and inf loses every span


def _positive_number(name: str, raw: str) -> float:
    allowed = f"a number of seconds > 0 and <= {_MAX_TIMEOUT_S}"
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, raw, allowed) from None
    if not 0 < value <= _MAX_TIMEOUT_S:  # also refuses nan, inf and 1e400 (inf)
        raise ConfigError(name, raw, allowed)
    return value


# Step keep rules (SPEC_TRACING_STEP_KEEP), checked here and applied by export/sampling.py.
QUANTILE_WINDOW = 2000  # requests a quantile rule (slowest:F, lowest_accept:F) is judged against
RULES = {  # name -> (takes an argument, what the argument is)
    "error": (False, ""),
    "slowest": (True, "a fraction 0..1 (slowest:0.01 keeps the slowest 1%)"),
    "lowest_accept": (True, "a fraction 0..1 (lowest_accept:0.01)"),
    "highest_accept": (True, "a fraction 0..1 (highest_accept:0.01)"),
    "accept_rate<": (True, "a number (accept_rate<0.3)"),
    "accept_rate>": (True, "a number (accept_rate>0.95)"),
    "duration>": (True, "milliseconds (duration>2000ms or duration>2000)"),
}
ALLOWED = (
    "comma-separated rules: error, slowest:F, lowest_accept:F, highest_accept:F, accept_rate<X, "
    "accept_rate>X, duration>Nms"
)
_FRACTIONS = ("slowest", "lowest_accept", "highest_accept")


def parse_rules(name: str, raw: str) -> tuple[tuple[str, float | None], ...]:
    """SPEC_TRACING_STEP_KEEP -> ((rule, argument), ...); a ConfigError naming the bad rule."""
    rules = []
    for item in (part.strip() for part in raw.split(",")):
        if not item or item == "none":
            continue
        rule, arg = item, None
        for key in ("slowest:", "lowest_accept:", "highest_accept:", "accept_rate<",
                    "accept_rate>", "duration>"):  # fmt: skip
            if item.startswith(key):
                rule, text = key.rstrip(":"), item[len(key) :].strip()
                if rule == "duration>" and text.endswith("ms"):
                    text = text[:-2]
                try:
                    arg = float(text)
                except ValueError:
                    raise ConfigError(name, raw, f"{rule}: {RULES[rule][1]}") from None
                if not math.isfinite(arg) or (rule in _FRACTIONS and not 0 <= arg <= 1):
                    raise ConfigError(name, raw, f"{rule}: {RULES[rule][1]}")
                if rule in _FRACTIONS and 0 < arg < 1 / QUANTILE_WINDOW:
                    # judged against the last QUANTILE_WINDOW requests: a smaller fraction
                    # is less than one request of the window and could never keep one
                    raise ConfigError(
                        name,
                        raw,
                        f"{rule}: 0, or a fraction of at least "
                        f"1/{QUANTILE_WINDOW} ({1 / QUANTILE_WINDOW:g})",
                    )
                break
        if rule not in RULES:
            raise ConfigError(name, raw, f"{ALLOWED} (unknown rule {item!r})")
        if RULES[rule][0] and arg is None:
            raise ConfigError(name, raw, f"{rule}: {RULES[rule][1]}")
        rules.append((rule, arg))
    return tuple(rules)


def _keep_rules(name: str, raw: str) -> str:
    parse_rules(name, raw)  # checked here; the sampler parses it again where it runs
    return raw.strip()


def _ratio(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, raw, "a number 0.0..1.0") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(name, raw, "a number 0.0..1.0")
    return value


# Standard variables the SDK reads itself; we only check them. (name, parser, what it does)
OTEL_VARS: tuple[tuple[str, Callable[[str, str], Any], str], ...] = (
    ("OTEL_EXPORTER_OTLP_ENDPOINT", _url, "OTLP base endpoint (gRPC 4317, HTTP 4318)."),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", _url, "OTLP endpoint for traces (HTTP: full URL)."),
    ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", _url, "OTLP endpoint for metrics."),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", _protocol, "grpc (default) or http/protobuf."),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", _protocol, "Protocol for traces only."),
    ("OTEL_EXPORTER_OTLP_HEADERS", _headers, "key=value,... sent with every export."),
    ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", _headers, "Headers for traces only."),
    ("OTEL_EXPORTER_OTLP_INSECURE", parse_bool, "gRPC without TLS."),
    ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", parse_bool, "gRPC without TLS, traces only."),
    (
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        _positive_number,
        "Export timeout; the Python SDK reads it in seconds (default 10).",
    ),
    ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", _positive_number, "Export timeout for traces, s."),
    ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", _positive_number, "Export timeout for metrics, s."),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", _compression, "gzip, deflate or none."),
    ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", _compression, "Compression for traces only."),
    ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", _compression, "Compression for metrics only."),
    ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", _headers, "Headers for metrics only."),
    ("OTEL_EXPORTER_OTLP_METRICS_INSECURE", parse_bool, "gRPC without TLS, metrics only."),
    ("OTEL_EXPORTER_OTLP_CERTIFICATE", _readable_file, "CA certificate file (TLS)."),
    ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", _readable_file, "CA certificate, traces only."),
    ("OTEL_EXPORTER_OTLP_CLIENT_KEY", _readable_file, "Client key file (mTLS)."),
    ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", _readable_file, "Client certificate (mTLS)."),
    ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", _protocol, "Protocol for metrics only."),
    ("OTEL_METRIC_EXPORT_TIMEOUT", _int_in(0, None), "Metrics export timeout, ms."),
    ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", _int_in(0, None), "Longest attribute value."),
    ("OTEL_ATTRIBUTE_COUNT_LIMIT", _int_in(0, None), "Most attributes per span."),
    ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", _int_in(0, None), "Longest span attribute."),
    ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", _int_in(0, None), "Most attributes per span."),
    ("OTEL_SPAN_EVENT_COUNT_LIMIT", _int_in(0, None), "Most events per span."),
    ("OTEL_SPAN_LINK_COUNT_LIMIT", _int_in(0, None), "Most links per span."),
    ("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", _int_in(0, None), "Most attributes per event."),
    ("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", _int_in(0, None), "Most attributes per link."),
    ("OTEL_METRIC_EXPORT_INTERVAL", _int_in(1, None), "Metrics export interval, ms."),
    ("OTEL_SERVICE_NAME", _text, "service.name of the resource."),
    ("OTEL_RESOURCE_ATTRIBUTES", _key_values, "key=value,... added to the resource."),
    ("OTEL_TRACES_SAMPLER", _sampler, "Sampler; decided once per request."),
    ("OTEL_TRACES_SAMPLER_ARG", _ratio, "Ratio for the traceidratio samplers."),
    ("OTEL_BSP_SCHEDULE_DELAY", _int_in(0, None), "Batch span processor delay, ms."),
    ("OTEL_BSP_EXPORT_TIMEOUT", _int_in(0, None), "Batch span processor export timeout, ms."),
    ("OTEL_BSP_MAX_QUEUE_SIZE", _int_in(1, None), "Batch span processor queue bound."),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _int_in(1, None), "Spans per export request."),
)


# Read by the OpenTelemetry SDK when opentelemetry.sdk.trace is imported (a blank value: unset).
_READ_AT_SDK_IMPORT = ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",)


def check_sdk_import_environment(environ: Mapping[str, str] | None = None) -> None:
    """ConfigError for a variable the SDK reads at import with a value it would refuse."""
    environ = os.environ if environ is None else environ
    for name, parse, _ in OTEL_VARS:
        raw = environ.get(name, "")
        if name in _READ_AT_SDK_IMPORT and raw.strip():
            parse(name, raw)


@dataclass(frozen=True)
class Settings:
    """The plugin's configuration. Build it with `Settings.from_env(**overrides)`."""

    enabled: bool = False
    level: int = 3
    exporter: str = "otlp"
    file: str = "spec-traces.jsonl"
    queue_size: int = 65536
    drain_interval_ms: int = 1000
    shutdown_timeout_ms: int = 5000
    export_process: bool = True
    export_queue_spans: int = 262144
    export_nice: int = 10
    max_open_requests: int = 100000
    step_sample_ratio: float = 1.0
    step_keep: str = "error"
    step_keep_max: float = 0.05
    metrics: bool = True
    prometheus_port: int | None = None
    prometheus_host: str = "127.0.0.1"
    # Raw OTEL_* values that were set (validated), for the provider. Not in repr: headers.
    otel: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read and validate the environment; keyword arguments (Settings fields) override it."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for var in SPEC_VARS:
            raw = env.get(var.name)
            values[var.field] = var.default if raw is None else var.parse(var.name, raw)
        otel = {}
        for name, parse, _ in OTEL_VARS:
            raw = env.get(name)
            if raw is not None and raw != "":
                parse(name, raw)
                otel[name] = raw
        _check_bsp(otel)
        values["file"] = os.path.abspath(values["file"])  # the default too (see _path)
        settings = cls(otel=otel, **values)
        return settings.with_overrides(**overrides) if overrides else settings

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with fields replaced; each value is validated like its variable."""
        names = {f.name for f in fields(self)} - {"otel"}
        by_field = {v.field: v for v in SPEC_VARS}
        checked = {}
        for key, value in overrides.items():
            if key not in names:
                raise ConfigError(key, value, "one of the settings " + ", ".join(sorted(names)))
            try:
                checked[key] = by_field[key].parse(key, str(value))
            except ConfigError as exc:
                raise ConfigError(key, value, exc.allowed) from None
        return replace(self, **checked)


def _check_bsp(otel: Mapping[str, str]) -> None:
    queue = otel.get("OTEL_BSP_MAX_QUEUE_SIZE")
    batch = otel.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
    if queue and batch and int(batch) > int(queue):
        raise ConfigError(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", batch, f"at most OTEL_BSP_MAX_QUEUE_SIZE ({queue})"
        )
