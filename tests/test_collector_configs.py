"""The fleet collector configs (collector-config/fleet-*.yaml) against the fields of the
OpenTelemetry Collector contrib components they use. No collector runs here, so the fields are
the ones in collector-contrib's sources, copied below with where they were read:
processor/tailsamplingprocessor/config.go (commit 497862f6) and
exporter/loadbalancingexporter/config.go (commit 870de363)."""

from pathlib import Path

import pytest
import yaml

from spec_tracing.semconv import SpanAttr
from spec_tracing.stages import RequestStage

ROOT = Path(__file__).parent.parent / "collector-config"

TAIL_SAMPLING = {"decision_wait", "num_traces", "expected_new_traces_per_sec", "policies"}
# Policy type -> the fields of its block (the block is named as the type).
POLICIES = {
    "always_sample": set(),
    "latency": {"threshold_ms", "upper_threshold_ms"},
    "numeric_attribute": {"key", "min_value", "max_value", "invert_match"},
    "probabilistic": {"hash_salt", "sampling_percentage"},
    "status_code": {"status_codes"},
    "string_attribute": {"key", "values", "enabled_regex_matching", "cache_max_size",
                         "invert_match"},
    "rate_limiting": {"spans_per_second"},
    "span_count": {"min_spans", "max_spans"},
    "trace_state": {"key", "values"},
    "boolean_attribute": {"key", "value"},
    "ottl_condition": {"error_mode", "span", "spanevent"},
}  # fmt: skip
LOADBALANCING = {"protocol", "resolver", "routing_key"}
RESOLVERS = {"static": {"hostnames"}, "dns": {"hostname", "port", "interval", "timeout"},
             "k8s": {"service", "ports"}}  # fmt: skip


def _load(name):
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize(
    "name", ["fleet-gateway.yaml", "fleet-sampling.yaml", "otel-collector.yaml"]
)
def test_pipelines_use_only_components_the_config_defines(name):
    config = _load(name)
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], (name, component)


def test_the_gateway_routes_whole_traces_to_the_sampling_tier():
    config = _load("fleet-gateway.yaml")
    lb = config["exporters"]["loadbalancing"]
    assert set(lb) <= LOADBALANCING
    assert lb["routing_key"] == "traceID"  # every span of a request to the same sampler
    (resolver,) = lb["resolver"].items()
    assert resolver[0] in RESOLVERS and set(resolver[1]) <= RESOLVERS[resolver[0]]
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["loadbalancing"]
    # The engines' metrics come in over OTLP too: served here, never refused.
    assert "metrics" in config["service"]["pipelines"]


def test_the_sampling_tier_keeps_failed_slow_low_acceptance_and_a_baseline():
    config = _load("fleet-sampling.yaml")
    tail = config["processors"]["tail_sampling"]
    assert set(tail) <= TAIL_SAMPLING
    kinds = {}
    for policy in tail["policies"]:
        kind = policy["type"]
        assert kind in POLICIES
        assert set(policy) <= {"name", "type", kind}
        assert set(policy.get(kind, {})) <= POLICIES[kind], policy
        kinds[kind] = policy.get(kind, {})
    assert kinds["status_code"]["status_codes"] == ["ERROR"]
    (condition,) = kinds["ottl_condition"]["span"]
    # The names spec-tracing puts on its roots (semconv.py), so a rename fails here.
    assert f'name == "{RequestStage.REQUEST.name}"' in condition
    assert f'attributes["{SpanAttr.ACCEPT_RATE}"] < ' in condition
    assert 0 < kinds["probabilistic"]["sampling_percentage"] <= 100
    assert config["service"]["pipelines"]["traces"]["processors"][0] == "tail_sampling"
