"""The ledger (spec_tracing/ledger.py): every count declared once, the docs' table taken from it,
and its identity (offered = exported + each loss + unmatched + sampled out) on every output."""

import re
import time
from pathlib import Path

import pytest

import spec_tracing
from spec_tracing import ledger, lifecycle
from spec_tracing.report.otlp_json import read_spans
from spec_tracing.testing.otlp_receiver import OtlpReceiver
from spec_tracing.wire import record_span_count

DOC = Path(__file__).parents[1] / "docs" / "reference" / "metrics.md"


def test_the_docs_table_of_plugin_counters_is_the_ledger():
    rows = re.findall(r"^\| `(spec_tracing\.[a-z_]+)` \| `([a-z_]+)` \| counter \| (.+) \|$",
                      DOC.read_text(), re.M)  # fmt: skip
    documented = {name: (prom, doc) for name, prom, doc in rows}
    declared = {c.metric: (c.metric.replace(".", "_") + "_total", c.doc)
                for c in ledger.COUNTS if c.metric}  # fmt: skip
    assert documented == declared


def test_stats_has_every_count_of_the_ledger_and_no_other():
    engines = {k for source in lifecycle._stats_sources for k in source()}  # their own counters
    assert set(spec_tracing.stats()) - engines == set(ledger.BY_KEY)


def _run(requests: int = 12, shutdown_ms: int | None = None) -> int:
    """A reference-engine run; the spans it offered, counted from the span records."""
    from spec_tracing.reference.engine import Engine, demo_prompts

    offered = [0]
    lifecycle.add_record_listener(
        lambda records: offered.__setitem__(0, offered[0] + sum(map(record_span_count, records)))
    )
    engine = Engine("eagle", batch_size=4, num_steps=3, seed=1)
    for prompt in demo_prompts(requests, seed=1):
        engine.add_request(prompt, 12)
    engine.run()
    spec_tracing.shutdown(shutdown_ms)
    return offered[0]


@pytest.mark.parametrize("export_process", [True, False], ids=["process", "thread"])
def test_the_identity_holds_with_step_sampling_on_the_file_outputs(tmp_path, export_process):
    pytest.importorskip("torch")
    trace = tmp_path / "t.jsonl"
    spec_tracing.enable(exporter="file", file=str(trace), export_process=export_process,
                        step_sample_ratio=0.5, step_keep="none")  # fmt: skip
    offered = _run()
    stats = lifecycle.last_stats()
    assert stats["sampled_out_spans"] > 0 and stats["spans"] > 0
    assert ledger.gap(stats, offered) == 0, stats
    assert len(read_spans(str(trace))) == stats["spans"]  # "exported" is what can be read


def test_the_identity_holds_on_an_application_provider():
    pytest.importorskip("torch")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spec_tracing.enable(tracer_provider=provider, step_sample_ratio=0.5, step_keep="none")
    offered = _run()
    stats = lifecycle.last_stats()
    assert ledger.gap(stats, offered) == 0, stats
    assert len(exporter.get_finished_spans()) == stats["spans"]


def test_the_identity_holds_with_the_collector_down(monkeypatch):
    pytest.importorskip("torch")
    with OtlpReceiver("http") as receiver:
        endpoint = receiver.endpoint
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)  # nobody listens there now
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    spec_tracing.enable(exporter="otlp", metrics=False, shutdown_timeout_ms=3000)
    offered = _run(4)
    stats = lifecycle.last_stats()
    assert stats["spans"] == 0 and offered > 0
    assert ledger.gap(stats, offered) == 0, stats


def test_a_late_flush_reply_never_answers_the_next_flush(monkeypatch):
    """flush(0) gives up at once; its reply comes later. The next flush, with spans held by a
    collector that answers only after a delay, returns only once they were exported."""
    from spec_tracing import ReqTimeStats

    with OtlpReceiver("http") as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        spec_tracing.enable(exporter="otlp", metrics=False)
        try:
            assert spec_tracing.flush(5000)  # the exporter process is up
            spec_tracing.flush(0)  # answered later, to nobody
            receiver.set_delay(2.0)
            time.sleep(0.5)  # the late reply is in the pipe before the next flush asks
            for i in range(5):
                ReqTimeStats(rid=f"late-{i}").finish()
            started = time.monotonic()
            assert spec_tracing.flush(10_000)
            # Bound, not timing: the collector held the spans 2 s; the flush saw them out.
            assert time.monotonic() - started >= 1.5
            assert receiver.span_count() == 5
        finally:
            spec_tracing.shutdown()


@pytest.mark.parametrize("export_process", [True, False], ids=["process", "thread"])
def test_shutdown_without_waiting_accounts_every_span(monkeypatch, export_process):
    """shutdown(0) returns at once; the snapshot it leaves (last_stats) already has every span
    the run offered in one counter, though the collector held them."""
    pytest.importorskip("torch")
    with OtlpReceiver("http") as receiver:
        receiver.set_delay(3.0)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        # Everything the run records is still in the engine's buffer when shutdown starts.
        spec_tracing.enable(exporter="otlp", metrics=False, export_process=export_process,
                            drain_interval_ms=10_000)  # fmt: skip
        assert spec_tracing.flush(5000)
        offered = [0]
        lifecycle.add_record_listener(
            lambda records: offered.__setitem__(
                0, offered[0] + sum(map(record_span_count, records))
            )
        )
        _run(40, shutdown_ms=0)
        stats = lifecycle.last_stats()
        time.sleep(1.0)  # anything still materializing in the background would count now
    assert offered[0] > 0
    assert ledger.gap(stats, offered[0]) == 0, (offered[0], {k: v for k, v in stats.items() if v})
