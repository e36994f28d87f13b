import os
from pathlib import Path

import pytest

import spec_tracing
from spec_tracing.settings import OTEL_VARS, SPEC_VARS, ConfigError, Settings

BAD_VALUES = {
    "SPEC_TRACING_ENABLED": "maybe",
    "SPEC_TRACING_LEVEL": "4",
    "SPEC_TRACING_EXPORTER": "zipkin",
    "SPEC_TRACING_FILE": "   ",
    "SPEC_TRACING_QUEUE_SIZE": "0",
    "SPEC_TRACING_DRAIN_INTERVAL_MS": "0",
    "SPEC_TRACING_SHUTDOWN_TIMEOUT_MS": "-5",
    "SPEC_TRACING_EXPORT_PROCESS": "sometimes",
    "SPEC_TRACING_EXPORT_QUEUE_SPANS": "-1",
    "SPEC_TRACING_EXPORT_NICE": "20",
    "SPEC_TRACING_MAX_OPEN_REQUESTS": "0",
    "SPEC_TRACING_STEP_SAMPLE_RATIO": "1.5",
    "SPEC_TRACING_STEP_KEEP": "error,slowest",
    "SPEC_TRACING_STEP_KEEP_MAX": "1.5",
    "SPEC_TRACING_METRICS": "lots",
    "SPEC_TRACING_PROMETHEUS_PORT": "70000",
    "SPEC_TRACING_PROMETHEUS_HOST": "",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "udp",
    "OTEL_METRIC_EXPORT_INTERVAL": "0",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317/v1/traces",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://collector/v1/traces",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://:4318",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift",
    "OTEL_EXPORTER_OTLP_HEADERS": "authorization",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "=x",
    "OTEL_EXPORTER_OTLP_INSECURE": "sometimes",
    "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "2",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "ten",
    "OTEL_SERVICE_NAME": " ",
    "OTEL_RESOURCE_ATTRIBUTES": "team",
    "OTEL_TRACES_SAMPLER": "sometimes_on",
    "OTEL_TRACES_SAMPLER_ARG": "1.5",
    "OTEL_BSP_SCHEDULE_DELAY": "-1",
    "OTEL_BSP_EXPORT_TIMEOUT": "soon",
    "OTEL_BSP_MAX_QUEUE_SIZE": "0",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "x",
    # Values the exporter process used to die on after enable() had accepted them:
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "10s",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "abc",
    "OTEL_EXPORTER_OTLP_COMPRESSION": "zstd",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "bogus",
    "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "lz4",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "a=b c",
    "OTEL_EXPORTER_OTLP_METRICS_INSECURE": "maybe",
    "OTEL_EXPORTER_OTLP_CERTIFICATE": "/no/such/ca.pem",
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": "/no/such/ca.pem",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY": "/no/such/key.pem",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "/no/such/cert.pem",
    "OTEL_METRIC_EXPORT_TIMEOUT": "-3",
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "abc",
    "OTEL_ATTRIBUTE_COUNT_LIMIT": "-1",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "1.5",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "many",
    "OTEL_SPAN_EVENT_COUNT_LIMIT": "x",
    "OTEL_SPAN_LINK_COUNT_LIMIT": "x",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": "x",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT": "x",
}


def test_every_variable_has_a_bad_value_case():
    names = {v.name for v in SPEC_VARS} | {name for name, _, _ in OTEL_VARS}
    assert names == set(BAD_VALUES)


@pytest.mark.parametrize("name,value", sorted(BAD_VALUES.items()))
def test_bad_environment_value_is_one_config_error_naming_variable_and_value(
    monkeypatch, name, value
):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        spec_tracing.enable()
    assert info.value.variable == name
    assert "expected" in str(info.value)
    if "HEADERS" in name:  # credentials are never echoed
        assert value not in str(info.value) or value == "=x" and "<redacted>" in str(info.value)
    else:
        assert repr(value) in str(info.value)
    assert not spec_tracing.get_global_tracing_enabled()


def test_header_values_are_not_echoed_in_errors(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer s3cret,broken")
    with pytest.raises(ConfigError) as info:
        Settings.from_env()
    assert "s3cret" not in str(info.value)


def test_batch_size_above_queue_size_is_rejected(monkeypatch):
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "10")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "20")
    with pytest.raises(ConfigError, match="OTEL_BSP_MAX_EXPORT_BATCH_SIZE='20'.*at most"):
        Settings.from_env()


def test_defaults_when_nothing_is_set():
    import os

    s = Settings.from_env({})
    assert (s.enabled, s.level, s.exporter) == (False, 3, "otlp")
    assert s.file == os.path.abspath("spec-traces.jsonl")


def test_keyword_overrides_are_validated_like_variables():
    assert Settings.from_env({}, level=1, exporter="file").level == 1
    with pytest.raises(ConfigError, match="level=5"):
        Settings.from_env({}, level=5)
    with pytest.raises(ConfigError, match="colour"):
        Settings.from_env({}, colour="red")


def test_unwritable_trace_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="SPEC_TRACING_FILE"):
        spec_tracing.enable(exporter="file", file=str(tmp_path / "missing-dir" / "t.jsonl"))


def test_the_configuration_page_documents_every_variable_with_its_default():
    readme = (Path(__file__).parent.parent / "docs" / "reference" / "configuration.md").read_text()
    for var in SPEC_VARS:
        row = next((ln for ln in readme.splitlines() if ln.startswith(f"| `{var.name}`")), None)
        assert row is not None, f"README has no row for {var.name}"
        assert str(var.default).lower() in row.lower(), f"README row for {var.name}: {row}"
    for name, _, _ in OTEL_VARS:
        assert f"`{name}`" in readme, f"README does not mention {name}"


def test_grpc_endpoint_may_be_host_and_port(monkeypatch):
    # What the SDK's gRPC exporter and vLLM's --otlp-traces-endpoint accept.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "127.0.0.1:4317")
    settings = Settings.from_env()
    assert settings.otel["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "127.0.0.1:4317"


def test_drain_interval_reaches_the_recorder(monkeypatch):
    monkeypatch.setenv("SPEC_TRACING_DRAIN_INTERVAL_MS", "250")
    spec_tracing.enable(exporter="none")
    try:
        assert spec_tracing.lifecycle._active.recorder.interval_s == 0.25
    finally:
        spec_tracing.shutdown()


@pytest.mark.parametrize(
    "value",
    ["http://[::1", "http://host:port", "grpc//x:1/y"],
)
def test_endpoints_that_do_not_parse_are_config_errors(monkeypatch, value):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", value)
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        Settings.from_env()


@pytest.mark.parametrize(
    "value", ["grpc://127.0.0.1:4317", "http://127.0.0.1:4318", "https://c:4317", "c:4317"]
)
def test_every_endpoint_form_vllm_and_the_sdk_accept_is_accepted(monkeypatch, value):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", value)
    assert Settings.from_env().otel["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == value


def test_a_bad_prometheus_host_names_the_host_variable(monkeypatch):
    monkeypatch.setenv("SPEC_TRACING_PROMETHEUS_HOST", "not a host")
    with pytest.raises(ConfigError, match="SPEC_TRACING_PROMETHEUS_HOST"):
        Settings.from_env()


SECRET = "Bearer s3cr3t-t0ken"


@pytest.mark.parametrize(
    "header",
    [f"authorization={SECRET}", f"authorization=x;{SECRET}", f'authorization="{SECRET}"',
     f"authorization=é{SECRET}", f"authorization=a\\{SECRET}"],
)  # fmt: skip
def test_headers_the_sdk_would_print_are_refused_without_echoing_them(monkeypatch, header, caplog):
    from opentelemetry.util.re import parse_env_headers

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", header)
    with pytest.raises(ConfigError) as err:
        Settings.from_env()
    assert "s3cr3t" not in str(err.value) and "<redacted>" in str(err.value)
    # The SDK itself would have printed it: the reason for refusing.
    with caplog.at_level("WARNING"):
        parse_env_headers(header)
    assert "s3cr3t" in caplog.text


def test_url_encoded_headers_are_accepted_and_never_in_repr(monkeypatch):
    from opentelemetry.util.re import parse_env_headers

    value = "authorization=Bearer%20s3cr3t,x-team=infra"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", value)
    settings = Settings.from_env()
    assert parse_env_headers(value)["authorization"] == "Bearer s3cr3t"
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings)


@pytest.mark.parametrize(
    "name,value",
    [
        ("SPEC_TRACING_SHUTDOWN_TIMEOUT_MS", "10000000000000"),  # overflowed shutdown()'s wait
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "inf"),  # gRPC: every span lost
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1e400"),  # HTTP: every span failed
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "nan"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x=a%0Ab"),  # decodes to a newline: HTTP refuses it
        ("OTEL_EXPORTER_OTLP_HEADERS", "x=caf%C3%A9"),  # decodes to é: gRPC refuses it
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost"),  # gRPC would dial port 443
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "grpc://collector"),
    ],
)
def test_values_that_would_fail_every_export_later_are_refused_at_enable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name) as err:
        spec_tracing.enable(exporter="none", metrics=False)
    if "HEADERS" in name:
        assert value not in str(err.value) and "<redacted>" in str(err.value)


@pytest.mark.parametrize("variable", ["SPEC_TRACING_FILE", "OTEL_EXPORTER_OTLP_CERTIFICATE"])
def test_a_fifo_with_no_peer_is_a_config_error_not_a_hang(monkeypatch, tmp_path, variable):
    import os
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    monkeypatch.setenv(variable, str(fifo))
    errors = []

    def enable():
        try:
            spec_tracing.enable(exporter="file", metrics=False)
            spec_tracing.shutdown(0)
        except ConfigError as exc:
            errors.append(exc)

    thread = threading.Thread(target=enable, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():  # unblock the open() it hangs in, so the test run goes on
        os.close(os.open(fifo, os.O_RDWR))
    assert not thread.is_alive(), "enable() blocked on the FIFO"
    assert len(errors) == 1 and errors[0].variable == variable


def test_a_relative_trace_file_is_resolved_once_at_enable(monkeypatch, tmp_path):
    # A replacement exporter process started after the engine changed directory wrote a
    # second file there.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPEC_TRACING_FILE", "traces/t.jsonl")
    assert Settings.from_env().file == str(tmp_path / "traces" / "t.jsonl")
    assert Settings.from_env(file="u.jsonl").file == str(tmp_path / "u.jsonl")
    monkeypatch.delenv("SPEC_TRACING_FILE")
    assert Settings.from_env().file == str(tmp_path / "spec-traces.jsonl")


@pytest.mark.parametrize(
    "raw, says",
    [
        ("errors", "unknown rule 'errors'"),
        ("slowest:2", "slowest: a fraction 0..1"),
        ("lowest_accept:x", "lowest_accept: a fraction 0..1"),
        ("duration>fast", "duration>: milliseconds"),
        ("accept_rate<nan", "accept_rate<: a number"),
        # The window holds 2,000 requests: a smaller fraction could never fire.
        ("slowest:0.0001", "at least 1/2000"),
        ("lowest_accept:0.0004", "at least 1/2000"),
    ],
)
def test_step_keep_rules_name_the_bad_rule(raw, says):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"SPEC_TRACING_STEP_KEEP": raw})
    assert caught.value.variable == "SPEC_TRACING_STEP_KEEP" and says in str(caught.value)


def test_step_keep_rules_parse():
    from spec_tracing.settings import parse_rules

    rules = parse_rules(
        "X", " error, slowest:0.01 ,lowest_accept:0.05,accept_rate<0.3,duration>2000ms"
    )
    assert rules == (("error", None), ("slowest", 0.01), ("lowest_accept", 0.05),
                     ("accept_rate<", 0.3), ("duration>", 2000.0))  # fmt: skip
    assert parse_rules("X", "none") == ()


@pytest.mark.parametrize("value", ["-1", "nan", "abc"])
def test_a_bad_limit_the_sdk_reads_at_import_is_a_config_error(value):
    """The SDK reads OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT when imported: enable() and the CLI name it
    (a fresh interpreter, the SDK not yet imported)."""
    import subprocess
    import sys

    env = {**os.environ, "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": value}
    code = (
        "import spec_tracing\n"
        "try:\n"
        "    spec_tracing.enable(exporter='none')\n"
        "except spec_tracing.ConfigError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT" in out.stdout and "integer >= 0" in out.stdout
    cli = subprocess.run([sys.executable, "-m", "spec_tracing.cli", "demo", "--num-requests", "1"],
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert cli.returncode == 2
    assert cli.stderr.strip().splitlines() == [
        f"spec-tracing demo: OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT={value!r} is not allowed; "
        "expected an integer >= 0"
    ]
