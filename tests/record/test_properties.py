"""Property test over random hook sequences: interleaved requests, aborts, level changes.

Invariants checked against a model of what the engine did:
- every sampled request has exactly one root span, with the status its ending implies;
- every stage span is a child of its request's root, in the root's trace, inside its time window;
- no stage span above the level that was in force when it was recorded;
- accepted_tokens on spec_verify spans sum to what sampled requests were given; the metrics and
  the per-request summaries count every verify round recorded, traced or not.
"""

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import spec_tracing
from spec_tracing import (
    ReqTimeStats,
    record_batch_stage,
    set_spec_verify_end_time_batch,
    set_time_batch,
)
from spec_tracing.metrics.instruments import acceptance_from
from spec_tracing.semconv import SpanAttr

WIDTH = 4  # drafts proposed per verify round

subset = st.lists(st.integers(0, 7), max_size=6, unique=True)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("new")),
        st.tuples(st.just("draft"), subset),
        st.tuples(st.just("verify"), subset, st.lists(st.integers(0, WIDTH), min_size=6)),
        st.tuples(st.just("extend"), subset),
        st.tuples(st.just("finish"), st.integers(0, 7)),
        st.tuples(st.just("abort"), st.integers(0, 7)),
        st.tuples(st.just("level"), st.integers(0, 3)),
        # Bad input: must change nothing but the invalid count.
        st.tuples(st.just("junk"), st.integers(0, 3)),
        # A verify where one request's count is garbage: only that request loses its round.
        st.tuples(
            st.just("badverify"), subset, st.integers(0, 5), st.sampled_from([-1, 2**40, "x", None])
        ),  # fmt: skip
    ),
    max_size=40,
)


@dataclass
class Model:
    """What a correct plugin must have recorded, per request id."""

    level: int = 3
    sampled: set = field(default_factory=set)
    ending: dict = field(default_factory=dict)  # rid -> "stop" | "abort" | "unfinished"
    accepted: dict = field(default_factory=dict)  # rid -> accepted drafts recorded
    rounds: dict = field(default_factory=dict)  # rid -> verify rounds recorded
    stage_spans: dict = field(default_factory=dict)  # stage name -> count recorded
    # Metrics count every verify round recorded, sampled into a trace or not.
    metric_accepted: int = 0
    metric_rounds: int = 0
    # So do the per-request totals on the roots (a property of the request, not of its trace).
    summary_accepted: dict = field(default_factory=dict)
    summary_rounds: dict = field(default_factory=dict)


def _run(sequence):
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    spec_tracing.enable(tracer_provider=tracer_provider, metric_readers=[reader], level=3)
    model, open_reqs, keep = Model(), [], []

    def picked(indices):  # indices wrap around the open requests; duplicates collapse
        n = len(open_reqs)
        return [open_reqs[i] for i in dict.fromkeys(i % n for i in indices)] if n else []

    def count_stage(name, level, reqs):
        if model.level >= level:
            sampled = [r for r in reqs if r.rid in model.sampled]
            model.stage_spans[name] = model.stage_spans.get(name, 0) + len(sampled)

    for op in sequence:
        kind = op[0]
        if kind == "new":
            req = ReqTimeStats(rid=f"r{len(keep)}")
            keep.append(req)
            open_reqs.append(req)
            if model.level >= 1:
                model.sampled.add(req.rid)
        elif kind == "draft":
            reqs = picked(op[1])
            set_time_batch(reqs, ReqTimeStats.set_spec_draft_start_time)
            set_time_batch(reqs, ReqTimeStats.set_spec_draft_end_time)
            count_stage("spec_draft", 2, reqs)
        elif kind == "verify":
            reqs = picked(op[1])
            accepted = op[2][: len(reqs)]
            set_time_batch(reqs, ReqTimeStats.set_spec_verify_start_time)
            set_spec_verify_end_time_batch(reqs, accepted, proposed=WIDTH)
            count_stage("spec_verify", 2, reqs)
            if model.level >= 2:
                model.metric_accepted += sum(accepted)
                model.metric_rounds += len(reqs)
                for r, a in zip(reqs, accepted, strict=True):
                    model.summary_accepted[r.rid] = model.summary_accepted.get(r.rid, 0) + a
                    model.summary_rounds[r.rid] = model.summary_rounds.get(r.rid, 0) + 1
                    if r.rid in model.sampled:
                        model.accepted[r.rid] = model.accepted.get(r.rid, 0) + a
                        model.rounds[r.rid] = model.rounds.get(r.rid, 0) + 1
        elif kind == "junk":
            [
                lambda: set_time_batch(None, ReqTimeStats.set_spec_draft_start_time),
                lambda: set_time_batch(picked([0, 1]), "set_no_such_time"),
                lambda: record_batch_stage(None, "spec_draft", 1.0, 2.0),
                lambda: set_spec_verify_end_time_batch(picked([0]), ["x"]),
            ][op[1]]()
        elif kind == "badverify":
            reqs = picked(op[1])
            if reqs:
                bad = op[2] % len(reqs)
                accepted = [1] * len(reqs)
                accepted[bad] = op[3]
                set_time_batch(reqs, ReqTimeStats.set_spec_verify_start_time)
                set_spec_verify_end_time_batch(reqs, accepted, proposed=WIDTH)
                good = [r for i, r in enumerate(reqs) if i != bad]
                count_stage("spec_verify", 2, good)
                if model.level >= 2:
                    model.metric_accepted += len(good)
                    model.metric_rounds += len(good)
                    for r in good:
                        model.summary_accepted[r.rid] = model.summary_accepted.get(r.rid, 0) + 1
                        model.summary_rounds[r.rid] = model.summary_rounds.get(r.rid, 0) + 1
                        if r.rid in model.sampled:
                            model.accepted[r.rid] = model.accepted.get(r.rid, 0) + 1
                            model.rounds[r.rid] = model.rounds.get(r.rid, 0) + 1
        elif kind == "extend":
            reqs = picked(op[1])
            set_time_batch(reqs, ReqTimeStats.set_spec_draft_extend_start_time)
            set_time_batch(reqs, ReqTimeStats.set_spec_draft_extend_end_time)
            count_stage("spec_draft_extend", 3, reqs)
        elif kind in ("finish", "abort") and open_reqs:
            req = open_reqs.pop(op[1] % len(open_reqs))
            req.finish() if kind == "finish" else req.abort("client went away")
            model.ending[req.rid] = "stop" if kind == "finish" else "abort"
        elif kind == "level":
            spec_tracing.set_trace_level(op[1])
            model.level = op[1]
    for req in open_reqs:
        model.ending[req.rid] = "unfinished"
    spec_tracing.flush()
    acceptance = acceptance_from(reader.get_metrics_data())
    spec_tracing.shutdown()  # ends what is still open
    spans = list(exporter.get_finished_spans())
    tracer_provider.shutdown()
    return model, spans, acceptance


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_random_hook_sequences_keep_the_invariants(sequence):
    model, spans, acceptance = _run(sequence)
    roots = [s for s in spans if s.name == "spec_request"]
    by_id = {s.context.span_id: s for s in roots}
    root_rids = [s.attributes[SpanAttr.REQUEST_ID] for s in roots]

    assert sorted(root_rids) == sorted(model.sampled)  # one root per sampled request
    for root in roots:
        rid = root.attributes[SpanAttr.REQUEST_ID]
        expected = model.ending[rid]
        assert root.attributes["spec_request.finish_reason"] == expected
        assert (root.status.status_code.name == "ERROR") == (expected != "stop")

    children = [s for s in spans if s.name != "spec_request"]
    for child in children:
        root = by_id.get(child.parent.span_id if child.parent else None)
        assert root is not None, f"{child.name} has no request root"
        assert child.context.trace_id == root.context.trace_id
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time

    counted = {}
    for child in children:
        counted[child.name] = counted.get(child.name, 0) + 1
    assert counted == {k: v for k, v in model.stage_spans.items() if v}

    verify = [s for s in children if s.name == "spec_verify"]
    span_accepted = sum(s.attributes.get(SpanAttr.ACCEPTED_TOKENS, 0) for s in verify)
    assert span_accepted == sum(model.accepted.values())
    assert len(verify) == sum(model.rounds.values())
    assert acceptance.accepted == model.metric_accepted
    assert acceptance.rounds == model.metric_rounds
    assert acceptance.proposed == WIDTH * acceptance.rounds
    for root in roots:  # each request's own totals, counted where spans are assembled
        rid = root.attributes[SpanAttr.REQUEST_ID]
        assert root.attributes.get(SpanAttr.TOTAL_ACCEPTED, 0) == model.summary_accepted.get(rid, 0)
        assert root.attributes.get(SpanAttr.VERIFY_ROUNDS, 0) == model.summary_rounds.get(rid, 0)
