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
