"""Hot-path and per-request calls never raise, tracing on or off, whatever they are given; bad
input is counted per request in stats()["invalid_events"]. SGLang's own call forms work."""

import math

import pytest
from conftest import Batch, Req

import spec_tracing
from spec_tracing import (
    ReqTimeStats,
    RequestStage,
    record_batch_stage,
    set_spec_verify_end_time_batch,
    set_time_batch,
)

BAD_CALLS = {
    "setter by unknown name": lambda r: set_time_batch(r, "set_no_such_time", trace_only=True),
    "setter by name, trace_only=False": lambda r: set_time_batch(
        r, "set_no_such_time", trace_only=False
    ),
    "None as reqs": lambda r: set_time_batch(None, ReqTimeStats.set_spec_draft_start_time),
    "None as reqs, by name": lambda r: set_time_batch(None, "set_spec_draft_start_time"),
    "None as reqs, verify end": lambda r: set_spec_verify_end_time_batch(None, [1]),
    "None as reqs, slice": lambda r: record_batch_stage(None, RequestStage.SPEC_DRAFT, 1.0, 2.0),
    "an int as reqs": lambda r: set_time_batch(3, ReqTimeStats.set_spec_draft_start_time),
    "unknown stage name": lambda r: record_batch_stage(r, "no_such_stage", 1.0, 2.0),
    "stage as an int": lambda r: record_batch_stage(r, 7, 1.0, 2.0),
    "string carrier": lambda r: ReqTimeStats(carrier="str"),
    "int traceparent": lambda r: ReqTimeStats(carrier={"traceparent": 123}),
    "list carrier": lambda r: ReqTimeStats(carrier=[1, 2]),
    "trace_slice of an unknown stage": lambda r: r[0].time_stats.trace_slice("nope", 1.0, 2.0),
    "string timestamp": lambda r: r[0].time_stats.set_spec_draft_start_time("x"),
    "slice ending at None": lambda r: record_batch_stage(r, RequestStage.SPEC_DRAFT, 1.0, None),
    "nan timestamp": lambda r: record_batch_stage(r, RequestStage.SPEC_DRAFT, math.nan, 2.0),
    "huge accepted count": lambda r: set_spec_verify_end_time_batch(r, [2**40] * len(r)),
    "float accepted count": lambda r: set_spec_verify_end_time_batch(r, [1e8] * len(r)),
    "unpicklable attribute": lambda r: record_batch_stage(
        r, RequestStage.SPEC_DRAFT, 1.0, 2.0, attrs={"lock": __import__("threading").Lock()}
    ),
    "attrs not a dict": lambda r: record_batch_stage(r, RequestStage.SPEC_DRAFT, 1.0, 2.0, attrs=5),
    "finish at a string time": lambda r: r[1].time_stats.finish(ts="x"),
    "abort with an object reason": lambda r: r[2].time_stats.abort(object()),
}


@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
def test_no_hot_path_or_per_request_call_raises(on, spec_spans):
    if not on:
        spec_tracing.shutdown()
    reqs = [Req(i) for i in range(3)]
    for name, call in BAD_CALLS.items():
        try:
            call(reqs)
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{name} raised {type(exc).__name__}: {exc} (tracing {on=})")
    spec_tracing.flush()
    if on:
        assert spec_tracing.stats()["invalid_events"] >= len(BAD_CALLS) - 4


def test_one_bad_request_costs_only_its_own_spans(spec_spans):
    good = [Req(i) for i in range(4)]
    bad = object()  # no time_stats
    record_batch_stage([*good[:2], bad, *good[2:]], RequestStage.SPEC_DRAFT, 1.0, 2.0)
    set_time_batch([good[0], None], ReqTimeStats.set_spec_verify_start_time)
    set_spec_verify_end_time_batch([good[0], None], [1, 1])
    record_batch_stage(good, RequestStage.SPEC_DRAFT, 3.0, "x")  # a bad time: this batch only
    for r in good:
        r.time_stats.finish()
    spec_tracing.flush()
    assert len(spec_spans.spans("spec_draft")) == 4
    assert [s.attributes["accepted_tokens"] for s in spec_spans.spans("spec_verify")] == [1]
    assert len(spec_spans.roots()) == 4
    # bad request, None at start, None at end; the bad time counts once per request it cost
    assert spec_tracing.stats()["invalid_events"] == 1 + 1 + 1 + 4


def test_sglangs_own_hook_lines_work(spec_spans):
    batch = Batch([Req(0), Req(1)])
    # Verbatim from SGLang's scheduler and speculative workers:
    set_time_batch(batch.reqs, "set_spec_draft_start_time", trace_only=True)
    set_time_batch(batch.reqs, "set_spec_draft_end_time", trace_only=True)
    set_time_batch(batch.reqs, "set_spec_verify_start_time", trace_only=True, attrs={"k": 1})
    for req, n in zip(batch.reqs, (2, 0), strict=True):
        req.time_stats.set_spec_verify_end_time(num_correct_drafts=n)
    for req in batch.reqs:
        req.time_stats.finish()
    spec_tracing.flush()
    assert len(spec_spans.spans("spec_draft")) == 2
    verify = sorted(spec_spans.spans("spec_verify"), key=lambda s: s.attributes["accepted_tokens"])
    assert [s.attributes["accepted_tokens"] for s in verify] == [0, 2]
    assert [s.attributes["num_correct_drafts"] for s in verify] == [0, 2]
    assert spec_tracing.stats()["invalid_events"] == 0


def test_setters_take_sglangs_positional_attrs(spec_spans):
    # sglang.srt.observability.req_time_stats.set_time_batch calls `method(ts, attrs)`.
    req = Req(0)
    req.time_stats.set_spec_draft_start_time(1.0, {"k": "v"})
    req.time_stats.set_spec_draft_end_time(2.0, {"k": "v"})
    req.time_stats.finish()
    spec_tracing.flush()
    (draft,) = spec_spans.spans("spec_draft")
    assert draft.attributes["k"] == "v"


def test_num_correct_drafts_raises_nothing_when_off():
    spec_tracing.shutdown()
    stats = ReqTimeStats()
    stats.set_spec_verify_end_time(num_correct_drafts=3)
    assert "spec_verify.end" in stats.last_times


def test_control_plane_calls_raise_one_clear_error():
    with pytest.raises(ValueError, match="set_trace_level"):
        spec_tracing.set_trace_level(9)
    with pytest.raises(spec_tracing.ConfigError, match="level"):
        spec_tracing.enable(level=7)


def test_an_unreadable_count_getter_is_counted_per_request(spec_spans):
    from spec_tracing import trace_stage

    class Worker:
        k = 3

        @trace_stage(RequestStage.SPEC_VERIFY, accepted="result.accept_lens", proposed="self.k")
        def verify(self, batch):
            return None  # the count cannot be read from this

    before = spec_tracing.stats()["invalid_events"]
    Worker().verify(Batch([Req(0), Req(1), Req(2)]))
    spec_tracing.flush()
    assert spec_tracing.stats()["invalid_events"] == before + 3  # was 0: silently no counts
    verify = [s for s in spec_spans.spans() if s.name == "spec_verify"]
    assert len(verify) == 3 and all("accepted_tokens" not in s.attributes for s in verify)
