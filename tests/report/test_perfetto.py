"""`spec-tracing report --perfetto`: Chrome trace-event JSON (the JSON Object Format of the
Trace Event Format document, which Perfetto and chrome://tracing read), checked against that
format's rules, and every span of the file present exactly once."""

import json
import subprocess
import sys
from collections import defaultdict

import pytest
from conftest import clean_env

from spec_tracing.report.otlp_json import OtlpSpan, read_spans
from spec_tracing.report.perfetto import to_trace_events
from spec_tracing.semconv import SpanAttr

METADATA = {"process_name": "name", "process_sort_index": "sort_index",
            "thread_name": "name", "thread_sort_index": "sort_index"}  # fmt: skip


def check_format(doc: dict) -> list[dict]:
    """The format's rules for the event types used; returns the complete events."""
    assert set(doc) <= {"traceEvents", "displayTimeUnit", "otherData"}
    assert doc["displayTimeUnit"] in ("ms", "ns")
    json.dumps(doc, allow_nan=False)  # plain JSON: no NaN or Infinity, which parsers refuse
    slices = []
    for e in doc["traceEvents"]:
        assert isinstance(e["pid"], int)
        if e["ph"] == "M":
            assert e["name"] in METADATA and METADATA[e["name"]] in e["args"]
            continue
        assert isinstance(e["name"], str) and e["name"]
        assert isinstance(e["ts"], int | float) and e["ts"] >= 0
        if e["ph"] == "X":
            assert isinstance(e["tid"], int)
            assert isinstance(e["dur"], int | float) and e["dur"] >= 0
            slices.append(e)
        elif e["ph"] == "C":  # counters: every arg a number (one series each)
            assert e["args"] and all(isinstance(v, int | float) for v in e["args"].values())
        elif e["ph"] == "i":
            assert e["s"] in ("g", "p", "t") and isinstance(e["tid"], int)
        else:
            raise AssertionError(f"unexpected phase {e['ph']!r}")
    # Complete events on one thread must nest: each starts after the one before ends, or lies
    # inside it.
    by_thread = defaultdict(list)
    for e in slices:
        by_thread[(e["pid"], e["tid"])].append(e)
    for events in by_thread.values():
        stack = []
        for e in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
            while stack and e["ts"] >= stack[-1]["ts"] + stack[-1]["dur"] - 1e-6:
                stack.pop()
            if stack:
                assert e["ts"] + e["dur"] <= stack[-1]["ts"] + stack[-1]["dur"] + 1e-6, (e, stack)
            stack.append(e)
    return slices


def _threads(doc):
    return {e["tid"]: e["args"]["name"] for e in doc["traceEvents"]
            if e["ph"] == "M" and e["name"] == "thread_name"}  # fmt: skip


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    pytest.importorskip("torch")
    tmp = tmp_path_factory.mktemp("run")
    trace, out = tmp / "run.jsonl", tmp / "run.perfetto.json"
    for args in (["demo", "--quiet", "--num-requests", "12", "--batch-size", "4",
                  "--max-new-tokens", "24", "--trace-file", str(trace)],
                 ["report", str(trace), "--perfetto", str(out)]):  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "spec_tracing.cli", *args], env=clean_env(),
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
    return read_spans(str(trace)), json.loads(out.read_text())


def test_every_span_is_one_complete_event_on_its_requests_track(captured):
    spans, doc = captured
    slices = check_format(doc)
    assert sorted(e["args"]["span_id"] for e in slices) == sorted(s.span_id for s in spans)
    by_id = {s.span_id: s for s in spans}
    t0 = doc["otherData"]["t0_unix_ns"]
    threads = _threads(doc)
    traces_on = defaultdict(set)
    for e in slices:
        span = by_id[e["args"]["span_id"]]
        assert e["name"] == span.name
        assert e["ts"] == pytest.approx((span.start_ns - t0) / 1000, abs=1e-3)
        assert e["dur"] == pytest.approx((span.end_ns - span.start_ns) / 1000, abs=1e-3)
        for key, value in span.attributes.items():
            assert e["args"][key] == value
        traces_on[e["tid"]].add(span.trace_id)
    assert all(len(traces) == 1 for traces in traces_on.values())  # one request per track
    roots = [s for s in spans if s.name == "spec_request"]
    assert sorted(threads.values()) == sorted(r.attributes[SpanAttr.REQUEST_ID] for r in roots)


def test_counters_and_queue_waits_match_the_spans(captured):
    spans, doc = captured
    t0 = doc["otherData"]["t0_unix_ns"]
    batches = defaultdict(list)
    for s in spans:
        if s.name == "spec_verify":
            batches[(s.start_ns - t0) / 1000].append(s)
    counters = defaultdict(dict)
    for e in doc["traceEvents"]:
        if e["ph"] == "C":
            counters[e["name"]][e["ts"]] = next(iter(e["args"].values()))
    assert counters["batch size"].keys() == batches.keys()
    for ts, batch in batches.items():
        assert counters["batch size"][ts] == batch[0].attributes[SpanAttr.BATCH_SIZE] == len(batch)
        accepted = sum(s.attributes[SpanAttr.ACCEPTED_TOKENS] for s in batch)
        proposed = sum(s.attributes[SpanAttr.PROPOSED_TOKENS] for s in batch)
        assert counters["accept rate"][ts] == pytest.approx(accepted / proposed)
    # 12 requests, 4 slots: most wait for a slot, and each wait is root start -> first stage.
    waits = {e["tid"]: e["args"]["waited_ms"] for e in doc["traceEvents"] if e["ph"] == "i"}
    threads = _threads(doc)
    for root in (s for s in spans if s.name == "spec_request"):
        first = min(s.start_ns for s in spans if s.parent_span_id == root.span_id)
        (tid,) = [t for t, n in threads.items() if n == root.attributes[SpanAttr.REQUEST_ID]]
        assert waits[tid] == pytest.approx((first - root.start_ns) / 1e6)
    assert sum(w > 50 for w in waits.values()) >= 4


def _span(name, start, end, span_id, parent="", trace="t1", **attrs):
    return OtlpSpan(name, trace, span_id, parent, start, end, attrs, 0)


def test_overlapping_stages_and_orphans_get_their_own_tracks():
    spans = [
        _span("spec_request", 0, 100_000, "r", **{SpanAttr.REQUEST_ID: "req-a"}),
        _span("spec_draft", 10_000, 50_000, "a", "r"),
        _span("spec_verify", 40_000, 60_000, "b", "r"),  # overlaps a: an overlap scheduler
        _span("spec_verify", 90_000, 120_000, "c", "r"),  # ends after its root (clock skew)
        _span("spec_verify", 5_000, 6_000, "o", "gone", trace="t2"),  # root not in the file
    ]
    doc = to_trace_events(spans)
    slices = check_format(doc)
    threads = _threads(doc)
    where = {e["args"]["span_id"]: threads[e["tid"]] for e in slices}
    assert where == {"r": "req-a", "a": "req-a", "b": "req-a (2)", "c": "req-a (2)",
                     "o": "trace t2 (root not in file)"}  # fmt: skip


def test_an_empty_file_gives_an_empty_trace():
    doc = to_trace_events([])
    assert check_format(doc) == []


def test_the_format_check_refuses_slices_that_overlap_on_one_thread():
    def x(ts, dur):
        return {"ph": "X", "name": "s", "pid": 1, "tid": 1, "ts": ts, "dur": dur}

    check_format({"traceEvents": [x(0, 10), x(2, 3), x(10, 5)], "displayTimeUnit": "ms"})
    with pytest.raises(AssertionError):
        check_format({"traceEvents": [x(0, 10), x(5, 10)], "displayTimeUnit": "ms"})


def test_the_documented_jaeger_search_tag_is_an_integer_on_verify_spans(captured, tmp_path):
    from spec_tracing.report.jaeger import to_jaeger

    spans, _ = captured
    doc = to_jaeger(spans)
    zero = [span for trace in doc["data"] for span in trace["spans"]
            if {"key": "accepted_tokens", "type": "int64", "value": 0} in span["tags"]]  # fmt: skip
    verify = [s for s in spans if s.name == "spec_verify"]
    assert len(zero) == sum(s.attributes["accepted_tokens"] == 0 for s in verify) > 0
    assert {s["operationName"] for s in zero} == {"spec_verify"}


def test_the_streamed_files_are_the_documents_byte_for_byte(captured):
    """report writes Perfetto and Jaeger JSON a request (a trace) at a time: the text is what
    otlp_json.dumps makes of the whole document, for a demo run and for no spans at all."""
    from spec_tracing.report.jaeger import jaeger_chunks, to_jaeger
    from spec_tracing.report.otlp_json import dumps
    from spec_tracing.report.perfetto import trace_event_chunks

    run, doc = captured
    assert json.loads("".join(trace_event_chunks(run))) == doc  # what report wrote
    for spans in (run, []):
        assert "".join(trace_event_chunks(spans)) == dumps(to_trace_events(spans))
        assert "".join(jaeger_chunks(spans)) == dumps(to_jaeger(spans))
