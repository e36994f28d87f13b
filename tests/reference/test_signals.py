"""Signals the engines do not give, on a real reference-engine run: where each verify round's
tokens sit in the output (token provenance), the draft time share and tokens per step on each
root, per-request histograms whose exemplars point at the request's trace, and the GenAI server
histograms."""

import pytest
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)

import spec_tracing
from spec_tracing.reference.engine import Engine, demo_prompts
from spec_tracing.report.otlp_json import read_spans
from spec_tracing.semconv import SpanAttr


class Exports(MetricExporter):
    """Every export a reader made, as an OTLP metrics exporter receives them: exemplars go out
    with the collection after their measurement, once."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis=10_000):
        return True

    def shutdown(self, timeout_millis=30_000, **kwargs):
        pass


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("torch")
    trace = tmp_path_factory.mktemp("signals") / "run.jsonl"
    exports = Exports()
    reader = PeriodicExportingMetricReader(exports, export_interval_millis=10**9)
    spec_tracing.enable(exporter="file", file=str(trace), metric_readers=[reader])
    engine = Engine("eagle", batch_size=4, num_steps=3, seed=2)
    emitted = {}  # rid -> the tokens each verify round emitted, in order, from the engine
    verify = engine.worker.verify

    def recording_verify(batch, *args, **kwargs):
        out = verify(batch, *args, **kwargs)
        for req, tokens in zip(batch.reqs, out.emitted, strict=True):
            emitted.setdefault(req.rid, []).append(list(tokens))
        return out

    engine.worker.verify = recording_verify
    requests = [engine.add_request(p, 20) for p in demo_prompts(8, seed=2)]
    engine.run()
    spec_tracing.flush()
    spec_tracing.shutdown()
    metrics = exports.batches
    spans = read_spans(str(trace))
    return {"spans": spans, "requests": {r.rid: r for r in requests}, "emitted": emitted,
            "metrics": metrics}  # fmt: skip


def _by_request(spans):
    roots = {s.span_id: s for s in spans if s.name == "spec_request"}
    children = {}
    for s in spans:
        if s.parent_span_id in roots:
            children.setdefault(s.parent_span_id, []).append(s)
    return [(root, children.get(root.span_id, [])) for root in roots.values()]


def test_each_output_token_is_placed_by_its_verify_round(run):
    for root, children in _by_request(run["spans"]):
        rid = root.attributes[SpanAttr.REQUEST_ID]
        output = run["requests"][rid].output
        rounds = sorted((s for s in children if s.name == "spec_verify"),
                        key=lambda s: s.attributes[SpanAttr.STEP])  # fmt: skip
        assert [s.attributes[SpanAttr.OUTPUT_OFFSET] for s in rounds][:1] == [1]  # after prefill's
        for span, tokens in zip(rounds, run["emitted"][rid], strict=True):
            at = span.attributes[SpanAttr.OUTPUT_OFFSET]
            accepted = span.attributes[SpanAttr.ACCEPTED_TOKENS]
            # The round's accepted drafts, then its bonus token, exactly where the engine put them.
            assert output[at : at + accepted + 1] == tokens
        last = rounds[-1]
        end = last.attributes[SpanAttr.OUTPUT_OFFSET] + last.attributes["accepted_tokens"] + 1
        assert end == len(output)


def test_roots_carry_the_draft_time_share_and_tokens_per_step(run):
    for root, children in _by_request(run["spans"]):
        spent = {name: sum(s.end_ns - s.start_ns for s in children if s.name == name)
                 for name in ("spec_draft", "spec_verify", "spec_draft_extend")}  # fmt: skip
        share = (spent["spec_draft"] + spent["spec_draft_extend"]) / sum(spent.values())
        assert root.attributes[SpanAttr.DRAFT_TIME_SHARE] == pytest.approx(share, rel=1e-4)
        rid = root.attributes[SpanAttr.REQUEST_ID]
        rounds = root.attributes[SpanAttr.VERIFY_ROUNDS]
        tokens = len(run["requests"][rid].output)
        assert root.attributes[SpanAttr.TOKENS_PER_STEP] == pytest.approx(tokens / (rounds + 1))


def _histograms(batches):
    """name -> its data points as last exported, with the exemplars of every export."""
    out, exemplars = {}, {}
    for batch in batches:
        for rm in batch.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name.startswith(("spec_decode.request.", "gen_ai.server.")):
                        out[metric.name] = metric.data.data_points
                        for point in metric.data.data_points:
                            exemplars.setdefault(metric.name, []).extend(point.exemplars)
    return out, exemplars


def test_request_histograms_have_exemplars_that_lead_to_the_request(run):
    roots = {(int(s.trace_id, 16), int(s.span_id, 16)): s
             for s in run["spans"] if s.name == "spec_request"}  # fmt: skip
    histograms, exemplars = _histograms(run["metrics"])
    for name, attr in (
        ("spec_decode.request.accept_rate", SpanAttr.ACCEPT_RATE),
        ("spec_decode.request.accept_length", SpanAttr.ACCEPT_LENGTH),
        ("spec_decode.request.draft_time_share", SpanAttr.DRAFT_TIME_SHARE),
    ):
        (point,) = histograms[name]
        assert point.count == len(roots)
        assert point.sum == pytest.approx(sum(r.attributes[attr] for r in roots.values()))
        assert exemplars[name]
        for exemplar in exemplars[name]:  # each names a root whose value it is
            root = roots[(exemplar.trace_id, exemplar.span_id)]
            assert exemplar.value == pytest.approx(root.attributes[attr])


def test_gen_ai_server_histograms_come_from_the_requests_own_times(run):
    roots = [s for s in run["spans"] if s.name == "spec_request"]
    histograms, _ = _histograms(run["metrics"])
    (duration,) = histograms["gen_ai.server.request.duration"]
    assert duration.count == len(roots)
    assert duration.sum == pytest.approx(sum((r.end_ns - r.start_ns) / 1e9 for r in roots),
                                         rel=1e-6)  # fmt: skip
    (ttft,) = histograms["gen_ai.server.time_to_first_token"]
    prefill_ends = {s.parent_span_id: s.end_ns for s in run["spans"] if s.name == "prefill"}
    assert ttft.sum == pytest.approx(
        sum((prefill_ends[r.span_id] - r.start_ns) / 1e9 for r in roots), rel=1e-6
    )
    (tpot,) = histograms["gen_ai.server.time_per_output_token"]
    assert tpot.count == len(roots)
    assert 0 < tpot.sum < duration.sum


def test_untraced_requests_count_in_the_histograms_without_exemplars(monkeypatch, tmp_path):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    exports = Exports()
    reader = PeriodicExportingMetricReader(exports, export_interval_millis=10**9)
    spec_tracing.enable(exporter="file", file=str(tmp_path / "none.jsonl"),
                        metric_readers=[reader])  # fmt: skip
    engine = Engine("ngram", batch_size=4, seed=3)
    for p in demo_prompts(5, seed=3):
        engine.add_request(p, 12)
    engine.run()
    spec_tracing.flush()
    spec_tracing.shutdown()
    histograms, exemplars = _histograms(exports.batches)
    (duration,) = histograms["gen_ai.server.request.duration"]
    assert duration.count == 5  # every request, none of them traced
    assert exemplars["gen_ai.server.request.duration"] == []  # no trace to point at
