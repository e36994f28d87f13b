"""Span assertions against an in-memory exporter: names, levels, parents, attributes, batching."""

import subprocess
import sys
import time

import pytest
import torch
from conftest import Batch, Req, clean_env

import spec_tracing
from spec_tracing import (
    ReqTimeStats,
    RequestStage,
    instrument_method,
    record_batch_stage,
    set_spec_verify_end_time_batch,
    set_time_batch,
    set_trace_level,
    trace_stage,
    uninstrument_method,
)
from spec_tracing.semconv import SpanAttr


class VerifyOut:
    def __init__(self, accepted, proposed):
        self.accepted_tokens = accepted
        self.proposed_tokens = proposed


class Worker:
    num_steps = 3

    @trace_stage(RequestStage.SPEC_DRAFT, attrs={SpanAttr.NUM_STEPS: "self.num_steps"})
    def draft(self, batch):
        return [r.rid for r in batch.reqs]

    @trace_stage(RequestStage.SPEC_VERIFY)
    def verify(self, batch, accepted):
        return VerifyOut(accepted, self.num_steps)

    @trace_stage(RequestStage.SPEC_DRAFT_EXTEND)
    def draft_extend(self, batch):
        return None


def run_steps(worker, batch, accepted_per_step):
    for accepted in accepted_per_step:
        worker.draft(batch)
        worker.verify(batch, accepted)
        worker.draft_extend(batch)


def test_decorated_worker_gives_each_request_its_stage_spans_under_its_root(spec_spans):
    batch = Batch([Req(i) for i in range(3)])
    run_steps(Worker(), batch, [[0, 1, 3], [2, 2, 0]])
    for r in batch.reqs:
        r.time_stats.finish()

    spec_spans.assert_every_request_has_stages(["spec_draft", "spec_verify", "spec_draft_extend"])
    roots = {s.attributes[SpanAttr.REQUEST_ID]: s for s in spec_spans.roots()}
    assert sorted(roots) == ["0", "1", "2"]
    groups = spec_spans.by_request()
    for root in roots.values():
        children = groups[root.context.span_id]
        assert len(children) == 6
        spec_spans.assert_children_of(root, children)
        assert all(root.start_time <= c.start_time <= c.end_time <= root.end_time for c in children)
    assert len({r.context.trace_id for r in roots.values()}) == 3  # one trace per request


def test_verify_span_counts_drafts_without_bonus(spec_spans):
    batch = Batch([Req(i) for i in range(3)])
    run_steps(Worker(), batch, [[0, 1, 3], [2, 2, 0]])
    for r in batch.reqs:
        r.time_stats.finish()

    spec_spans.assert_accepted_sum(8)
    verify = spec_spans.spans("spec_verify")
    by_root = {s.context.span_id: s.attributes[SpanAttr.REQUEST_ID] for s in spec_spans.roots()}
    got = sorted(
        (
            by_root[s.parent.span_id],
            s.attributes[SpanAttr.STEP],
            s.attributes[SpanAttr.ACCEPTED_TOKENS],
            s.attributes[SpanAttr.EMITTED_TOKENS],
            s.attributes[SpanAttr.PROPOSED_TOKENS],
        )
        for s in verify
    )
    assert got == [
        ("0", 0, 0, 1, 3),
        ("0", 1, 2, 3, 3),
        ("1", 0, 1, 2, 3),
        ("1", 1, 2, 3, 3),
        ("2", 0, 3, 4, 3),
        ("2", 1, 0, 1, 3),
    ]
    root1 = next(s for s in spec_spans.roots() if s.attributes[SpanAttr.REQUEST_ID] == "1")
    assert root1.attributes[SpanAttr.ACCEPT_RATE] == pytest.approx(3 / 6)
    assert root1.attributes[SpanAttr.ACCEPT_LENGTH] == pytest.approx((3 + 2) / 2)
    assert root1.attributes[SpanAttr.VERIFY_ROUNDS] == 2


def test_verify_counts_named_by_path_survive_a_result_without_the_other_count(spec_spans):
    # accepted is named; the result has no proposed_tokens: accepted is kept, proposed unknown
    # (before, the missing attribute discarded the round's counts altogether).
    class Out:
        def __init__(self, acc):
            self.acc = acc

    class PathWorker:
        @trace_stage(RequestStage.SPEC_VERIFY, accepted="result.acc")
        def verify(self, batch, accepted):
            return Out(accepted)

    batch = Batch([Req(i) for i in range(2)])
    PathWorker().verify(batch, [2, 1])
    for r in batch.reqs:
        r.time_stats.finish()
    verify = spec_spans.spans("spec_verify")
    assert sorted(s.attributes[SpanAttr.ACCEPTED_TOKENS] for s in verify) == [1, 2]
    assert all(SpanAttr.PROPOSED_TOKENS not in s.attributes for s in verify)


def test_batches_that_change_within_one_drain_keep_each_requests_counts(spec_spans):
    # The recorder reuses the last batch's resolution when the next event carries the same
    # requests in the same order; a reordered, shrunk or foreign batch must be resolved anew.
    a, b, c = Req("a"), Req("b"), Req("c")
    stages = spec_tracing.lifecycle._active.recorder
    with stages._lock:  # all in one drain
        for reqs, acc in (
            ([a, b, c], [1, 2, 3]),
            ([a, b, c], [0, 0, 1]),  # same batch again
            ([c, b, a], [2, 1, 0]),  # same requests, another order
            ([a, c], [3, 3]),  # one finished
            ([a, object(), c], [1, 5, 2]),  # a request without time stats: counted, skipped
        ):
            now = time.perf_counter()
            spec_tracing.record_batch_stage(
                reqs, RequestStage.SPEC_VERIFY, now - 0.001, now, acc, 3
            )
    for r in (a, b, c):
        r.time_stats.finish()
    got = {}
    roots = {s.context.span_id: s.attributes[SpanAttr.REQUEST_ID] for s in spec_spans.roots()}
    for s in spec_spans.spans("spec_verify"):
        got.setdefault(roots[s.parent.span_id], []).append(
            (s.attributes[SpanAttr.STEP], s.attributes[SpanAttr.ACCEPTED_TOKENS])
        )
    assert {k: sorted(v) for k, v in got.items()} == {
        "a": [(0, 1), (1, 0), (2, 0), (3, 3), (4, 1)],
        "b": [(0, 2), (1, 0), (2, 1)],
        "c": [(0, 3), (1, 1), (2, 2), (3, 3), (4, 2)],
    }
    assert spec_tracing.stats()["invalid_events"] == 1


def test_draft_span_carries_the_active_width(spec_spans):
    worker, batch = Worker(), Batch([Req(0)])
    worker.draft(batch)
    worker.num_steps = 7
    worker.draft(batch)
    widths = [
        s.attributes[SpanAttr.NUM_STEPS]
        for s in sorted(spec_spans.spans("spec_draft"), key=lambda s: s.start_time)
    ]
    assert widths == [3, 7]


@pytest.mark.parametrize(
    "level,expected",
    [
        (1, {"spec_request"}),
        (2, {"spec_request", "spec_draft", "spec_verify"}),
        (3, {"spec_request", "spec_draft", "spec_verify", "spec_draft_extend"}),
    ],
)
def test_stages_above_the_level_record_nothing(spec_spans, level, expected):
    set_trace_level(level)
    batch = Batch([Req(0), Req(1)])
    run_steps(Worker(), batch, [[1, 1]])
    for r in batch.reqs:
        r.time_stats.finish()
    assert {s.name for s in spec_spans.spans()} == expected
    spec_spans.assert_max_level(level)


def test_set_time_batch_uses_one_timestamp_for_the_whole_batch(spec_spans):
    reqs = [Req(i) for i in range(64)]
    set_time_batch(reqs, ReqTimeStats.set_spec_draft_start_time)
    time.sleep(0.001)
    set_time_batch(reqs, ReqTimeStats.set_spec_draft_end_time)
    drafts = spec_spans.spans("spec_draft")
    assert len(drafts) == 64
    assert len({(s.start_time, s.end_time) for s in drafts}) == 1
    assert drafts[0].end_time - drafts[0].start_time >= 1_000_000


def test_verify_end_batch_takes_a_tensor_of_accepted_counts(spec_spans):
    reqs = [Req(i) for i in range(4)]
    set_time_batch(reqs, ReqTimeStats.set_spec_verify_start_time)
    set_spec_verify_end_time_batch(reqs, torch.tensor([0, 1, 2, 3]), proposed=3)
    verify = spec_spans.spans("spec_verify")
    assert sorted(s.attributes[SpanAttr.ACCEPTED_TOKENS] for s in verify) == [0, 1, 2, 3]
    assert {s.attributes[SpanAttr.PROPOSED_TOKENS] for s in verify} == {3}


def test_bare_req_time_stats_are_accepted_as_batch_members(spec_spans):
    stats = [ReqTimeStats(rid=i) for i in range(2)]
    now = time.perf_counter()
    spec_tracing.record_batch_stage(stats, RequestStage.SPEC_DRAFT, now - 0.01, now)
    assert len(spec_spans.spans("spec_draft")) == 2


class _EngineReq:
    """A request of an engine whose own `time_stats` is not ours (SGLang's Req)."""

    def __init__(self, rid, traced: bool):
        self.time_stats = object()
        self._spec_tracing = ReqTimeStats(rid=rid) if traced else None


def test_engine_requests_carry_stats_at_spec_tracing_and_untraced_ones_are_skipped(spec_spans):
    # An engine passes its whole batch: requests created while tracing was off (None there)
    # are skipped without a count, and the counts of the others stay theirs.
    reqs = [_EngineReq("a", True), _EngineReq("b", False), _EngineReq("c", True)]
    now = time.perf_counter()
    record_batch_stage(reqs, RequestStage.SPEC_DRAFT, now - 0.02, now - 0.01)
    record_batch_stage(reqs, RequestStage.SPEC_VERIFY, now - 0.01, now, [1, 2, 3], 4)
    for req in reqs[::2]:
        req._spec_tracing.finish()
    spec_tracing.flush()
    assert len(spec_spans.spans("spec_draft")) == 2
    verify = {
        s.attributes[SpanAttr.ACCEPTED_TOKENS]: s.attributes[SpanAttr.BATCH_SIZE]
        for s in spec_spans.spans("spec_verify")
    }
    assert verify == {1: 3, 3: 3}  # b's count (2) went nowhere; the batch held three
    assert sorted(r.attributes[SpanAttr.TOTAL_ACCEPTED] for r in spec_spans.roots()) == [1, 3]
    assert spec_tracing.stats()["invalid_events"] == 0
    # Neither ours at `_spec_tracing` nor at `time_stats`: bad input, counted.
    odd = _EngineReq("d", True)
    del odd._spec_tracing
    record_batch_stage([odd], RequestStage.SPEC_DRAFT, now - 0.01, now)
    spec_tracing.flush()
    assert spec_tracing.stats()["invalid_events"] == 1


def test_per_request_setters_and_trace_slice(spec_spans):
    st = ReqTimeStats(rid="a")
    st.set_spec_verify_start_time()
    st.set_spec_verify_end_time(accepted_tokens=2, proposed_tokens=4)
    t = time.perf_counter()
    st.trace_slice("spec_draft_extend", t - 0.002, t, {"note": "x"})
    st.finish()
    (verify,) = spec_spans.spans("spec_verify")
    assert verify.attributes[SpanAttr.ACCEPTED_TOKENS] == 2
    (ext,) = spec_spans.spans("spec_draft_extend")
    assert ext.attributes["note"] == "x"
    assert ext.end_time - ext.start_time == pytest.approx(2_000_000, abs=1000)


def test_timestamps_convert_from_perf_counter_to_epoch_ns(spec_spans):
    before = time.time_ns()
    st = ReqTimeStats()
    st.set_spec_draft_start_time()
    st.set_spec_draft_end_time()
    st.finish()
    after = time.time_ns()
    for s in spec_spans.spans():
        assert before - 2_000_000 <= s.start_time <= s.end_time <= after + 2_000_000


def test_abort_ends_the_root_with_an_error_status_once(spec_spans):
    st = ReqTimeStats(rid="x")
    st.abort("client went away")
    st.finish()
    (root,) = spec_spans.roots()
    assert root.status.status_code.name == "ERROR"
    assert root.status.description == "client went away"
    assert root.attributes[SpanAttr.FINISH_REASON] == "abort"


def test_carrier_makes_the_request_a_child_of_the_callers_trace(spec_spans):
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    st = ReqTimeStats(carrier={"traceparent": caller})
    st.set_spec_draft_start_time()
    st.set_spec_draft_end_time()
    st.finish()
    (root,) = spec_spans.roots()
    assert f"{root.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert f"{root.parent.span_id:016x}" == "b7ad6b7169203331"
    (draft,) = spec_spans.spans("spec_draft")
    assert draft.parent.span_id == root.context.span_id
    assert st.carrier()["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")


def test_disabled_path_records_nothing_and_allocates_no_trace():
    assert not spec_tracing.get_global_tracing_enabled()
    before = spec_tracing.stats()  # the last run's final counts, or zeros
    batch = Batch([Req(0)])
    assert batch.reqs[0].time_stats.trace_id == 0
    run_steps(Worker(), batch, [[1]])
    set_time_batch(batch.reqs, ReqTimeStats.set_spec_draft_start_time)
    assert (
        spec_tracing.record.hotpath._queue is not None
        and len(spec_tracing.record.hotpath._queue) == 0
    )
    assert spec_tracing.stats() == before


def test_trace_only_false_still_stamps_requests_when_tracing_is_off():
    reqs = [Req(0), Req(1)]
    set_time_batch(reqs, ReqTimeStats.set_spec_draft_start_time, trace_only=False)
    stamps = {r.time_stats.last_times["spec_draft.start"] for r in reqs}
    assert len(stamps) == 1


def test_bad_accepted_counts_are_dropped_and_counted_per_request_not_raised(spec_spans):
    reqs = [Req(0), Req(1)]
    # A list of the wrong length is bad for the whole batch (2 each); a bad entry only for its
    # own request (1 each), whose neighbour still gets its span.
    for bad in ([1], [1, 2, 3], [-1, 0], [0.5, 1], ["a", 1], [2**40, 1]):
        set_time_batch(reqs, ReqTimeStats.set_spec_verify_start_time)
        set_spec_verify_end_time_batch(reqs, bad)
    set_time_batch([object()], ReqTimeStats.set_spec_draft_start_time)
    verify = spec_spans.spans("spec_verify")
    assert sorted(s.attributes["accepted_tokens"] for s in verify) == [0, 1, 1, 1]
    assert {s.attributes["spec_request.id"] for s in spec_spans.roots()} <= {"0", "1"}
    assert {s.parent.span_id for s in verify} == {reqs[1].time_stats.span_id}
    assert spec_tracing.stats()["invalid_events"] == 2 + 2 + 1 + 1 + 1 + 1 + 1


def test_instrument_method_wraps_a_foreign_class_and_uninstrument_restores_it(spec_spans):
    class Foreign:
        def verify(self, batch):
            return VerifyOut([1] * len(batch.reqs), 2)

    original = Foreign.__dict__["verify"]
    assert instrument_method(Foreign, "verify", stage="spec_verify")
    assert not instrument_method(Foreign, "verify", stage="spec_verify")  # idempotent
    batch = Batch([Req(0)])
    Foreign().verify(batch)
    assert len(spec_spans.spans("spec_verify")) == 1  # not doubled
    assert uninstrument_method(Foreign, "verify")
    assert Foreign.__dict__["verify"] is original
    Foreign().verify(batch)
    assert len(spec_spans.spans("spec_verify")) == 1


def test_uninstrument_of_an_inherited_method_leaves_the_subclass_as_it_was():
    class Base:
        def draft(self, batch):
            return None

    class Child(Base):
        pass

    instrument_method(Child, "draft", stage="spec_draft")
    assert "draft" in Child.__dict__
    uninstrument_method(Child, "draft")
    assert "draft" not in Child.__dict__


def test_instrument_method_by_import_path(spec_spans):
    import json

    assert instrument_method(
        "json.JSONEncoder.encode",
        stage="spec_draft",
        reqs=lambda instance, args, kwargs: [ReqTimeStats(rid="j")],
    )
    try:
        assert __import__("json").JSONEncoder().encode([1]) == "[1]"
        assert len(spec_spans.spans("spec_draft")) == 1
    finally:
        assert uninstrument_method("json:JSONEncoder.encode")
    assert "encode" in json.JSONEncoder.__dict__
    assert not hasattr(json.JSONEncoder.__dict__["encode"], "__wrapped__")


def test_a_path_naming_no_parameter_is_a_clear_error():
    with pytest.raises(ValueError, match="'bacth' is not self, result or a parameter"):
        trace_stage("spec_draft", reqs="bacth.reqs")(lambda batch: None)


def test_exception_in_a_stage_is_reraised_and_marked_on_the_span(spec_spans):
    class Boom:
        @trace_stage("spec_draft")
        def draft(self, batch):
            raise RuntimeError("oom")

    with pytest.raises(RuntimeError, match="oom"):
        Boom().draft(Batch([Req(0)]))
    (span,) = spec_spans.spans("spec_draft")
    assert span.attributes[SpanAttr.ERROR_TYPE] == "RuntimeError"


def test_full_buffer_drops_and_counts_instead_of_growing():
    spec_tracing.enable(exporter="none", queue_size=4)
    recorder = spec_tracing.lifecycle._active.recorder
    with recorder._lock:  # hold the consumer so the buffer fills
        before = spec_tracing.record.hotpath.dropped
        reqs = [Req(0)]
        for _ in range(10):
            set_time_batch(reqs, ReqTimeStats.set_spec_draft_start_time)
        assert len(recorder.queue) == 4
        assert spec_tracing.record.hotpath.dropped - before == 6


def test_a_disabled_decorated_method_is_the_plain_function_and_enable_swaps_it():
    plain = Worker.__dict__["draft"]
    assert not hasattr(plain, "_spec_tracing_stage")  # off: exactly the undecorated method
    spec_tracing.enable(exporter="none")
    traced = Worker.__dict__["draft"]
    assert traced._spec_tracing_stage == RequestStage.SPEC_DRAFT
    assert traced.__wrapped__ is plain
    spec_tracing.shutdown()
    assert Worker.__dict__["draft"] is plain
    set_trace_level(2)  # a level change while off swaps nothing in
    assert Worker.__dict__["draft"] is plain


def test_level_zero_at_run_time_swaps_the_plain_methods_back(spec_spans):
    assert hasattr(Worker.__dict__["verify"], "_spec_tracing_stage")
    set_trace_level(0)
    assert not hasattr(Worker.__dict__["verify"], "_spec_tracing_stage")
    set_trace_level(3)
    assert hasattr(Worker.__dict__["verify"], "_spec_tracing_stage")


ENABLE_BEFORE_HOOKS = """
import sys
import spec_tracing
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
spec_tracing.enable(tracer_provider=provider)
assert "spec_tracing.record.hooks" not in sys.modules  # the lazy package has not loaded it yet
from spec_tracing import ReqTimeStats, RequestStage, trace_stage

class Worker:  # an engine module imported after enable()
    @trace_stage(RequestStage.SPEC_DRAFT)
    def draft(self, reqs):
        return None

req = ReqTimeStats(rid=1)
Worker().draft([req])
req.finish()
spec_tracing.flush()
print(sorted(s.name for s in exporter.get_finished_spans()))
spec_tracing.shutdown()
plain = spec_tracing.record.hooks._decorated[Worker]["draft"][0]
print(Worker.__dict__["draft"] is plain)
"""


def test_a_class_decorated_after_enable_is_traced_and_restored_at_shutdown():
    """The package loads hooks.py on first use, so an engine's classes may well be created
    after enable(): they must get the traced methods, and the plain ones back at shutdown."""
    env = clean_env()
    done = subprocess.run(
        [sys.executable, "-c", ENABLE_BEFORE_HOOKS],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["['spec_draft', 'spec_request']", "True"]


def test_entry_points_held_by_name_follow_the_level_and_read_no_global_when_off(spec_spans):
    held = set_time_batch  # as an engine holds it: imported once, before any enable
    reqs = [Req(0)]

    def drafts_after_one_step():
        held(reqs, ReqTimeStats.set_spec_draft_start_time)
        held(reqs, "set_spec_draft_end_time")
        return len(spec_spans.spans("spec_draft"))

    assert drafts_after_one_step() == 1
    set_trace_level(0)
    # Off, the body engines call is the off body: no LEVEL read, nothing recorded.
    assert "LEVEL" not in held.__code__.co_names
    assert held.__code__.co_name == "set_time_batch"
    assert "LEVEL" not in set_spec_verify_end_time_batch.__code__.co_names
    assert drafts_after_one_step() == 1
    set_trace_level(3)
    assert drafts_after_one_step() == 2
    spec_tracing.shutdown()
    assert "LEVEL" not in held.__code__.co_names
    held(reqs, ReqTimeStats.set_spec_draft_start_time)
    assert len(spec_tracing.record.hotpath._queue) == 0


class _EqRaises(Req):
    def __eq__(self, other):
        raise RuntimeError("engine objects may compare in odd ways")

    __hash__ = Req.__hash__


@pytest.mark.parametrize("via", ["decorator", "set_time_batch"])
def test_a_list_changed_in_place_between_stages_gets_each_stage_its_own_requests(spec_spans, via):
    # Stages of one step share one copy of an unchanged list; a list the engine changed in place
    # (same length, one request swapped; then extended, as SGLang's merge_batch does) must not.
    a, b, c, d = Req(0), Req(1), Req(2), Req(3)
    batch = Batch([a, b])
    worker = Worker()

    def stage():
        if via == "decorator":
            worker.draft(batch)
        else:
            set_time_batch(batch.reqs, ReqTimeStats.set_spec_draft_start_time)
            set_time_batch(batch.reqs, ReqTimeStats.set_spec_draft_end_time)

    stage()
    stage()
    batch.reqs[1] = c
    stage()
    batch.reqs.append(d)
    stage()
    parents = [s.parent.span_id for s in spec_spans.spans("spec_draft")]
    per_request = {r.rid: parents.count(r.time_stats.span_id) for r in (a, b, c, d)}
    assert per_request == {0: 4, 1: 2, 2: 2, 3: 1}


def test_requests_whose_eq_raises_are_still_recorded(spec_spans):
    # Two batches of the same length with different requests: telling them apart calls __eq__.
    first, second = [_EqRaises(0), _EqRaises(1)], [_EqRaises(2), _EqRaises(3)]
    worker = Worker()
    for reqs in (first, second, first):
        worker.draft(Batch(reqs))
    set_time_batch(second, ReqTimeStats.set_spec_draft_start_time)
    set_time_batch(first, ReqTimeStats.set_spec_draft_start_time)
    set_time_batch(first, ReqTimeStats.set_spec_draft_end_time)
    drafts = spec_spans.spans("spec_draft")
    assert len(drafts) == 8
    assert sorted(s.parent.span_id for s in drafts) == sorted(
        [r.time_stats.span_id for r in first] * 3 + [r.time_stats.span_id for r in second]
    )
    assert spec_tracing.stats()["invalid_events"] == 0


def test_an_end_before_its_start_is_counted_never_a_negative_span(spec_spans):
    from spec_tracing import lifecycle

    req = Req("backwards")
    t = time.perf_counter()
    req.time_stats.trace_slice("spec_draft", t, t - 5.0)  # a slice that ends 5 s early
    req.time_stats.finish(req.time_stats.start_ts - 10.0)  # a root that ends 10 s early
    spec_tracing.flush()
    assert spec_spans.spans("spec_draft") == []
    (root,) = spec_spans.roots()
    assert root.end_time >= root.start_time
    assert lifecycle.stats()["invalid_events"] == 2


def test_a_request_without_rounds_ended_by_shutdowns_drain_says_it_had_none(spec_spans):
    """Its end is still buffered when shutdown() turns the hot path off: the root still says
    0 rounds (verify was recorded), not nothing."""
    exporter = spec_spans.exporter
    Req("quiet").time_stats.finish()
    spec_tracing.shutdown()
    (root,) = [s for s in exporter.get_finished_spans() if s.name == "spec_request"]
    assert root.attributes[SpanAttr.VERIFY_ROUNDS] == 0
    assert root.attributes[SpanAttr.TOTAL_ACCEPTED] == 0


def test_stage_attributes_are_cleaned_per_event(spec_spans):
    """The compactor ships one dict for a run of events with equal attributes; an event whose
    value differs, or is equal but of another type (1 == True == 1.0), gets its own."""
    reqs = [ReqTimeStats(rid="a")]
    t = time.perf_counter()
    for i, value in enumerate([1, 1, 2, True, 1.0]):
        attrs = {"w": value}
        record_batch_stage(reqs, RequestStage.SPEC_DRAFT, t + i, t + i + 0.5, attrs=attrs)
    reqs[0].finish(ts=t + 10)
    drafts = sorted(spec_spans.spans("spec_draft"), key=lambda s: s.start_time)
    got = [s.attributes["w"] for s in drafts]
    assert got == [1, 1, 2, True, 1.0]
    assert [type(v) for v in got] == [int, int, int, bool, float]


def test_engine_output_offsets_are_exact_across_steps_without_a_round(spec_spans):
    """An engine that emits tokens in steps without a verify round (an n-gram miss) passes its
    own count of output tokens before each round: the verify spans' output offsets are those,
    not the sum of the rounds before; a count that is not one gives the derived offset, counted
    as bad input."""
    a, b = ReqTimeStats(rid="a"), ReqTimeStats(rid="b")
    t = time.perf_counter()
    rounds = [([2, 0], [1, 1]), ([1, 1], [5, 3]), ([0, 2], None), ([1, 0], ["x", 7])]
    for i, (accepted, before) in enumerate(rounds):
        record_batch_stage([a, b], RequestStage.SPEC_VERIFY, t + i, t + i + 0.1, accepted, 3,
                           output_offsets=before)  # fmt: skip
    a.finish(ts=t + 10)
    b.finish(ts=t + 10)
    offsets = {}
    for s in sorted(spec_spans.spans("spec_verify"), key=lambda s: s.start_time):
        rid = next(r for r in spec_spans.roots() if r.context.span_id == s.parent.span_id)
        offsets.setdefault(rid.attributes[SpanAttr.REQUEST_ID], []).append(
            s.attributes[SpanAttr.OUTPUT_OFFSET]
        )
    # a: 1, then the engine's 5 (a miss after the first round), then 5 + 2 = 7, then 7 + 1 = 8
    assert offsets == {"a": [1, 5, 7, 8], "b": [1, 3, 5, 8]}
    assert spec_tracing.stats()["invalid_events"] == 1
