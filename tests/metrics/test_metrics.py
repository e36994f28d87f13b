"""Metrics right by construction: hand-computed formulas, widths, Prometheus over HTTP."""

import os
import socket
import subprocess
import sys
import urllib.request

import pytest
from conftest import Req, clean_env
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

import spec_tracing
from spec_tracing import ReqTimeStats, set_spec_verify_end_time_batch, set_time_batch
from spec_tracing.metrics.instruments import MetricName, acceptance_from, metric_sums
from spec_tracing.reference.engine import Engine, demo_prompts
from spec_tracing.semconv import SpanAttr


@pytest.fixture
def reader():
    """Metrics into an in-memory reader; spans into `reader.spans` (an in-memory exporter)."""
    reader = InMemoryMetricReader()
    reader.spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(reader.spans))
    spec_tracing.enable(tracer_provider=provider, metric_readers=[reader])
    return reader


def root_figures(reader, req) -> dict:
    """The request's own totals, from its root span (ends the request)."""
    req.time_stats.finish()
    spec_tracing.flush()
    rid = req.time_stats.rid
    spans = reader.spans.get_finished_spans()
    (root,) = [s for s in spans if s.attributes.get(SpanAttr.REQUEST_ID) == rid]
    return dict(root.attributes)


def verify_round(reqs, accepted, proposed, width=None):
    set_time_batch(reqs, ReqTimeStats.set_spec_verify_start_time)
    attrs = {SpanAttr.NUM_STEPS: width} if width is not None else None
    set_spec_verify_end_time_batch(reqs, accepted, proposed=proposed, attrs=attrs)


def totals(reader):
    spec_tracing.flush()
    out = {}
    for (name, attrs), value in metric_sums(reader.get_metrics_data()).items():
        out[(name, attrs)] = out.get((name, attrs), 0) + value
    return out


def test_fixed_width_rounds_match_hand_computed_rate_length_and_positions(reader):
    a, b = Req("a"), Req("b")
    verify_round([a, b], [0, 3], 3)
    verify_round([a, b], [2, 1], 3)
    spec_tracing.flush()
    acc = acceptance_from(reader.get_metrics_data())
    assert (acc.rounds, acc.accepted, acc.proposed) == (4, 6, 12)
    assert acc.accept_rate == pytest.approx(6 / 12)
    assert acc.accept_length == pytest.approx((6 + 4) / 4)
    t = totals(reader)
    per_position = {
        dict(k[1])["position"]: v for k, v in t.items() if k[0] == MetricName.ACCEPTED_PER_POSITION
    }
    assert per_position == {0: 3, 1: 2, 2: 1}  # rounds reaching each draft position
    assert t[(MetricName.EMITTED, ())] == 6 + 4  # bonus counted once per round
    by_accepted = {
        dict(k[1])["accepted"]: v for k, v in t.items() if k[0] == MetricName.ROUNDS_BY_ACCEPTED
    }
    assert by_accepted == {0: 1, 3: 1, 2: 1, 1: 1}  # one round each
    root = root_figures(reader, a)
    assert root[SpanAttr.ACCEPT_RATE] == pytest.approx(2 / 6)
    assert root[SpanAttr.ACCEPT_LENGTH] == pytest.approx(2.0)
    assert (root[SpanAttr.TOTAL_ACCEPTED], root[SpanAttr.TOTAL_PROPOSED]) == (2, 6)
    assert root[SpanAttr.VERIFY_ROUNDS] == 2


def test_width_changed_mid_request_uses_the_width_of_each_round(reader):
    r = Req("adaptive")
    verify_round([r], [2], None, width=2)  # proposed from the batch's active width
    verify_round([r], [1], None, width=4)
    root = root_figures(reader, r)
    assert root[SpanAttr.ACCEPT_RATE] == pytest.approx(3 / 6)  # a static 4 would say 3/8
    assert root[SpanAttr.ACCEPT_LENGTH] == pytest.approx(5 / 2)
    assert acceptance_from(reader.get_metrics_data()).accept_rate == pytest.approx(0.5)


def test_ngram_rounds_with_no_proposal_count_as_rounds_with_nothing_proposed(reader):
    r = Req("ngram")
    verify_round([r], [0], [0])
    verify_round([r], [2], [3])
    verify_round([r], [0], [0])
    spec_tracing.flush()
    acc = acceptance_from(reader.get_metrics_data())
    assert (acc.rounds, acc.proposed, acc.rate_accepted) == (3, 3, 2)
    assert acc.accept_rate == pytest.approx(2 / 3)
    assert acc.accept_length == pytest.approx((2 + 3) / 3)


def test_a_request_of_a_single_round(reader):
    r = Req("one")
    verify_round([r], [2], [3])
    root = root_figures(reader, r)
    assert root[SpanAttr.ACCEPT_RATE] == pytest.approx(2 / 3)
    assert root[SpanAttr.ACCEPT_LENGTH] == 3.0


def test_rounds_without_a_proposed_count_never_push_the_rate_above_one(reader):
    r = Req("unknown")
    verify_round([r], [3], None)
    verify_round([r], [1], [2])
    spec_tracing.flush()
    acc = acceptance_from(reader.get_metrics_data())
    assert acc.accept_rate == pytest.approx(1 / 2)
    assert acc.accept_length == pytest.approx((4 + 2) / 2)


def test_root_span_carries_the_request_summary(spec_spans):
    r = Req("root")
    verify_round([r], [1], [4])
    verify_round([r], [3], [4])
    r.time_stats.finish()
    (root,) = spec_spans.roots()
    assert root.attributes[SpanAttr.ACCEPT_RATE] == pytest.approx(4 / 8)
    assert root.attributes[SpanAttr.ACCEPT_LENGTH] == pytest.approx(3.0)
    assert root.attributes[SpanAttr.VERIFY_ROUNDS] == 2


def test_width_gauges_follow_the_adaptive_controller(reader):
    engine = Engine(
        "eagle",
        batch_size=4,
        adaptive={"1": {"candidate_steps": [1, 2, 4], "warmup": 1, "update_interval": 1}},
    )
    for p in demo_prompts(8):
        engine.add_request(p, 24)
    engine.run()
    t = totals(reader)
    gauge = t[(MetricName.NUM_STEPS, (("worker", "eagle"),))]
    assert len(set(engine.stats.widths)) > 1
    assert gauge == engine.stats.widths[-1]
    assert t[(MetricName.NUM_DRAFT_TOKENS, (("worker", "eagle"),))] == gauge + 1


def test_dropped_events_are_a_metric():
    reader = InMemoryMetricReader()
    spec_tracing.enable(exporter="none", metric_readers=[reader], queue_size=2)
    recorder = spec_tracing.lifecycle._active.recorder
    req = Req(0)
    with recorder._lock:
        before = spec_tracing.record.hotpath.dropped
        for _ in range(5):
            set_time_batch([req], ReqTimeStats.set_spec_draft_start_time)
    t = totals(reader)
    assert t[(MetricName.DROPPED_EVENTS, ())] == before + 3


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if not k.startswith("otel_scope")}
            key = (sample.name, tuple(sorted(labels.items())))
            values[key] = sample.value
    return values


@pytest.mark.parametrize("worker", ["eagle", "ngram"])
def test_prometheus_endpoint_reports_the_engines_own_counts(monkeypatch, worker):
    port = _free_port()
    monkeypatch.setenv("SPEC_TRACING_PROMETHEUS_PORT", str(port))
    spec_tracing.enable(exporter="none")
    engine = Engine(worker, batch_size=6, num_steps=3)
    reqs = [engine.add_request(p, 20) for p in demo_prompts(10)]
    engine.run()
    spec_tracing.flush()
    scraped = _scrape(port)
    spec_tracing.shutdown()

    label = (("worker", worker),)
    rounds = sum(len(r.steps) for r in reqs)
    proposed = sum(p for r in reqs for _, p, _ in r.steps)
    accepted = sum(a for r in reqs for _, _, a in r.steps)
    assert scraped[("spec_decode_verify_rounds_total", label)] == rounds
    assert scraped[("spec_decode_proposed_drafts_total", label)] == proposed
    assert scraped[("spec_decode_accepted_drafts_total", label)] == accepted
    assert scraped[("spec_decode_emitted_tokens_total", label)] == accepted + rounds
    # Every request's output is its prefill token plus what its verify rounds emitted.
    assert sum(len(r.output) for r in reqs) == accepted + rounds + len(reqs)
    position0 = sum(1 for r in reqs for _, _, a in r.steps if a >= 1)
    assert (
        scraped[
            ("spec_decode_accepted_per_position_total", (("position", "0"), ("worker", worker)))
        ]
        == position0
    )
    by_accepted = {
        dict(k[1])["accepted"]: v
        for k, v in scraped.items()
        if k[0] == "spec_decode_rounds_by_accepted_total"
    }
    assert sum(by_accepted.values()) == rounds
    assert sum(int(a) * n for a, n in by_accepted.items()) == accepted
    assert scraped[("spec_decode_num_steps", label)] == 3


def test_a_prometheus_port_another_engine_holds_costs_the_endpoint_never_the_traces(
    monkeypatch, caplog
):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    with socket.socket() as busy:  # the other engine on this host
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("SPEC_TRACING_PROMETHEUS_PORT", str(busy.getsockname()[1]))
        with caplog.at_level("WARNING"):
            spec_tracing.enable(span_exporter=exporter)
        try:
            verify_round([Req("a"), Req("b")], [1, 2], 3)
            assert spec_tracing.flush(5000)
            assert spec_tracing.stats()["prometheus_endpoints_not_served"] >= 1
        finally:
            spec_tracing.shutdown()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "is taken" in warnings[0]
    assert [s.name for s in exporter.get_finished_spans()].count("spec_verify") == 2


def test_enable_again_with_the_collector_down_finds_its_prometheus_port_free(monkeypatch):
    hole = socket.socket()  # a collector that takes connections and never answers
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("SPEC_TRACING_PROMETHEUS_PORT", str(port))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{hole.getsockname()[1]}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    try:
        spec_tracing.enable(shutdown_timeout_ms=1000)
        verify_round([Req("a")], [1], 3)
        spec_tracing.enable(shutdown_timeout_ms=1000)  # the old setup's shutdown times out
        # The endpoint is served by the exporter process: up once it answered a flush.
        spec_tracing.flush(1000)
        assert spec_tracing.stats()["prometheus_endpoints_not_served"] == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert resp.status == 200
    finally:
        spec_tracing.shutdown(0)
        hole.close()


APP_PROVIDER = """
import logging
from conftest import Req
from test_metrics import verify_round
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import spec_tracing
from spec_tracing.metrics.instruments import MetricName, metric_sums

reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
logging.basicConfig(level=logging.WARNING)
spec_tracing.enable(exporter="none")
verify_round([Req("a"), Req("b")], [1, 2], 3)
spec_tracing.shutdown()
spec_tracing.enable(exporter="none")
verify_round([Req("c")], [3], 3)
spec_tracing.shutdown()
sums = metric_sums(reader.get_metrics_data())
print(sums[(MetricName.VERIFY_ROUNDS, ())], sums[(MetricName.ACCEPTED, ())])
"""


def test_metrics_keep_adding_up_on_the_applications_provider_across_enables():
    """The SDK returns an already registered instrument with its first callbacks, so a second
    enable() on the application's MeterProvider must feed the same totals, not new ones."""
    env = clean_env()
    here = os.path.dirname(__file__)  # test_metrics, and conftest one folder up
    env["PYTHONPATH"] = os.pathsep.join((here, os.path.dirname(here)))
    done = subprocess.run(
        [sys.executable, "-c", APP_PROVIDER], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "6"]
    assert "already been created" not in done.stderr  # no duplicate instrument registered


def test_label_values_are_bounded(reader):
    """A new model name and worker per request: at most MAX_LABEL_VALUES series per label, the
    rest as _OTHER, counted; every round and request still counted."""
    from spec_tracing.metrics.instruments import MAX_LABEL_VALUES, OTHER_VALUE

    n = MAX_LABEL_VALUES + 50
    for i in range(n):
        req = Req(f"r{i}")
        req.time_stats.attributes[SpanAttr.GEN_AI_MODEL] = f"model-{i}"
        set_time_batch([req], ReqTimeStats.set_spec_verify_start_time)
        set_spec_verify_end_time_batch([req], [1], proposed=3,
                                       attrs={SpanAttr.WORKER: f"w{i}"})  # fmt: skip
        req.time_stats.finish()
    sums = totals(reader)
    workers = {dict(a).get("worker") for (name, a) in sums if name == MetricName.VERIFY_ROUNDS}
    assert len(workers) == MAX_LABEL_VALUES + 1 and OTHER_VALUE in workers
    rounds = sum(v for (name, _), v in sums.items() if name == MetricName.VERIFY_ROUNDS)
    assert rounds == n
    models = set()
    for metric in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics:
        if metric.name == MetricName.GEN_AI_DURATION:
            models = {p.attributes.get(SpanAttr.GEN_AI_MODEL) for p in metric.data.data_points}
            assert sum(p.count for p in metric.data.data_points) == n
    assert len(models) == MAX_LABEL_VALUES + 1 and OTHER_VALUE in models
    assert spec_tracing.stats()["capped_metric_labels"] == 2 * 50  # worker and model


def test_idle_half_sent_connections_to_the_prometheus_port_are_bounded(monkeypatch, capfd):
    """100 connections that each send half a request line and wait: the process holds at most
    MAX_CONNECTIONS of them (a thread each), drops them at the read timeout, and scrapes are
    answered again once the idle ones are gone."""
    import threading
    import time

    from spec_tracing.metrics.readers import MAX_CONNECTIONS, READ_TIMEOUT_S

    port = _free_port()
    monkeypatch.setenv("SPEC_TRACING_PROMETHEUS_PORT", str(port))
    spec_tracing.enable(exporter="none")
    _scrape(port)  # served
    before = threading.active_count()
    idle = []
    try:
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /metr")
            idle.append(s)
        time.sleep(0.5)
        assert threading.active_count() - before <= MAX_CONNECTIONS + 1
        time.sleep(READ_TIMEOUT_S + 1.0)  # bound: the read timeout let the slots go
        assert threading.active_count() - before <= 1
        assert ("spec_decode_verify_rounds_total", ()) not in _scrape(port)  # answered
    finally:
        for s in idle:
            s.close()
        spec_tracing.shutdown()
    assert "Traceback" not in capfd.readouterr().err  # nothing printed per idle client


def test_acceptance_per_position_stays_right_when_the_width_changes(reader):
    """Rounds of width 3, 2 and 0 (an adaptive controller, an n-gram miss): offered and reached
    per position as counted by hand; a round too short for a position is not its rejection."""
    a, b = Req("a"), Req("b")
    verify_round([a, b], [0, 3], [3, 3])
    verify_round([a, b], [1, 2], [2, 2])
    verify_round([a, b], [0, 0], [0, 2])
    t = totals(reader)

    def by_position(name):
        return {dict(k[1])["position"]: v for k, v in t.items() if k[0] == name}

    # rounds (accepted, offered): (0,3) (3,3) (1,2) (2,2) (0,0) (0,2)
    assert by_position(MetricName.OFFERED_PER_POSITION) == {0: 5, 1: 5, 2: 2}
    assert by_position(MetricName.REACHED_PER_POSITION) == {0: 5, 1: 3, 2: 1}
    assert by_position(MetricName.ACCEPTED_PER_POSITION) == {0: 3, 1: 2, 2: 1}


def test_the_summary_shows_acceptance_by_offered_and_reached_position():
    from spec_tracing.report.summary import TraceSummary

    summary = TraceSummary()
    for acc, prop in [(0, 3), (3, 3), (1, 2), (2, 2), (0, 0), (0, 2)]:
        summary.add("spec_verify", 0, 1, {SpanAttr.ACCEPTED_TOKENS: acc,
                                           SpanAttr.PROPOSED_TOKENS: prop})  # fmt: skip
    text = summary.render()
    assert "1: 0.600 of 5, 0.600 of 5" in text
    assert "2: 0.400 of 5, 0.667 of 3" in text
    assert "3: 0.500 of 2, 1.000 of 1" in text


def test_every_change_of_width_is_counted(reader):
    """A width flipping between verify batches is counted each time, per worker, however
    short-lived (the num_steps gauge keeps only the last value)."""
    r = Req("w")
    for width in (2, 4, 2, 2, 4, 4, 0):
        verify_round([r], [0], [width], width=width)
    t = totals(reader)
    assert t[(MetricName.WIDTH_CHANGES, ())] == 4  # 2->4, 4->2, 2->4, 4->0
    assert t[(MetricName.NUM_STEPS, ())] == 0
