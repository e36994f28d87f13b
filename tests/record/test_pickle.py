"""A ReqTimeStats pickled into a spawned process keeps its trace there."""

import json
import multiprocessing as mp
import pickle

import spec_tracing
from spec_tracing import ReqTimeStats, set_spec_verify_end_time_batch, set_time_batch


def _continue_in_child(payload: bytes, path: str) -> None:
    spec_tracing.enable(exporter="file", file=path)
    st = pickle.loads(payload)
    set_time_batch([st], ReqTimeStats.set_spec_verify_start_time)
    set_spec_verify_end_time_batch([st], [3], proposed=4)
    st.finish()
    spec_tracing.shutdown()


def test_req_time_stats_survives_pickling_into_a_spawned_process(tmp_path):
    path = tmp_path / "child.jsonl"
    spec_tracing.enable(exporter="none")
    st = ReqTimeStats(
        rid="moved",
        carrier={"traceparent": "00-11111111111111111111111111111111-2222222222222222-01"},
    )
    payload = pickle.dumps(st)
    spec_tracing.shutdown()

    proc = mp.get_context("spawn").Process(target=_continue_in_child, args=(payload, str(path)))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0

    spans = [
        s
        for line in path.read_text().splitlines()
        for rs in json.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    ]
    by_name = {s["name"]: s for s in spans}
    root, verify = by_name["spec_request"], by_name["spec_verify"]
    assert root["traceId"] == verify["traceId"] == "11111111111111111111111111111111"
    assert root["spanId"] == f"{st.span_id:016x}"
    assert root["parentSpanId"] == "2222222222222222"
    assert verify["parentSpanId"] == root["spanId"]


def test_an_unpicklable_value_stays_behind_counted_and_the_request_still_travels(spec_spans):
    import threading

    st = ReqTimeStats(rid="with-a-lock")
    st.attributes["engine.lock"] = threading.Lock()  # what an engine or a user might put there
    st.engine_handle = threading.Lock()
    before = spec_tracing.stats()["invalid_events"]
    copy = pickle.loads(pickle.dumps(st))  # raised TypeError into the engine
    assert spec_tracing.stats()["invalid_events"] == before + 2
    assert "engine.lock" not in copy.attributes and not hasattr(copy, "engine_handle")
    assert (copy.trace_id, copy.span_id) == (st.trace_id, st.span_id)
    copy.finish()
    spec_tracing.flush()
    (root,) = spec_spans.roots()
    assert root.attributes["spec_request.id"] == "with-a-lock"


def test_a_copy_from_a_process_without_a_newer_field_still_ends_with_its_root(spec_spans):
    """A request's state pickled where ReqTimeStats had fewer fields (another spec-tracing in
    another process of the engine): what it lacks reads as unknown, and its root is emitted."""
    st = ReqTimeStats(rid="older")
    state = st.__getstate__()
    state.pop("prefill_start_ts")
    copy = ReqTimeStats.__new__(ReqTimeStats)
    copy.__setstate__(state)
    copy.finish()
    spec_tracing.flush()
    (root,) = spec_spans.roots()
    assert root.attributes["spec_request.id"] == "older"
    assert spec_tracing.stats()["invalid_events"] == 0
