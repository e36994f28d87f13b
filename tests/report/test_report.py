"""`spec-tracing report` on a captured demo run: the summary, per-request lines and Jaeger's upload
JSON; bad files get clear errors. The HTML page is tested in test_view.py."""

import json
import subprocess
import sys

import pytest
from conftest import clean_env

from spec_tracing.report.otlp_json import OtlpSpan, read_spans
from spec_tracing.semconv import SpanAttr


def _cli(*args, cwd=None):
    env = clean_env()
    return subprocess.run(
        [sys.executable, "-m", "spec_tracing.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """A trace file of a small demo run."""
    pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("run") / "run.jsonl"
    done = _cli(
        "demo", "--quiet", "--num-requests", "6", "--max-new-tokens", "24", "--trace-file", path
    )
    assert done.returncode == 0, done.stderr
    return path


def test_report_prints_per_request_lines(captured):
    done = _cli("report", str(captured), "--requests")
    assert done.returncode == 0, done.stderr
    roots = [s for s in read_spans(str(captured)) if s.name == "spec_request"]
    lines = done.stdout.splitlines()
    for root in roots:
        rid = root.attributes[SpanAttr.REQUEST_ID]
        (line,) = [x for x in lines if x.startswith(rid + " ")]
        fields = line.split()
        assert int(fields[2]) == root.attributes[SpanAttr.VERIFY_ROUNDS]
        assert int(fields[3]) == root.attributes[SpanAttr.TOTAL_ACCEPTED]
        assert fields[-1] == "stop"
        # Under it, its output tokens by origin: the prefill's, then per round the accepted
        # drafts and the bonus token.
        tokens = lines[lines.index(line) + 1].split()
        assert tokens[0] == "tokens"
        assert tokens[1].count("a") == root.attributes[SpanAttr.TOTAL_ACCEPTED]
        assert tokens[1].count("B") == root.attributes[SpanAttr.VERIFY_ROUNDS]
        assert tokens[1].startswith(".|")


def test_jaeger_json_keeps_traces_parents_times_and_counts(captured, tmp_path):
    out = tmp_path / "jaeger.json"
    done = _cli("report", str(captured), "--jaeger-json", str(out))
    assert done.returncode == 0, done.stderr
    spans = read_spans(str(captured))
    doc = json.loads(out.read_text())
    traces = doc["data"]
    assert {t["traceID"] for t in traces} == {s.trace_id for s in spans}
    assert sum(len(t["spans"]) for t in traces) == len(spans)
    by_id = {s.span_id: s for s in spans}
    jaeger_accepted = 0
    for trace in traces:
        ids = {s["spanID"] for s in trace["spans"]}
        for js in trace["spans"]:
            original = by_id[js["spanID"]]
            assert js["traceID"] == trace["traceID"] == original.trace_id
            assert js["operationName"] == original.name
            assert js["startTime"] == original.start_ns // 1000
            assert js["duration"] == (original.end_ns - original.start_ns) // 1000
            assert js["processID"] in trace["processes"]
            if original.parent_span_id:
                (ref,) = js["references"]
                assert ref == {
                    "refType": "CHILD_OF",
                    "traceID": trace["traceID"],
                    "spanID": original.parent_span_id,
                }
                assert ref["spanID"] in ids  # the request root is in the same trace
            else:
                assert js["references"] == []
            tags = {t["key"]: t for t in js["tags"]}
            if js["operationName"] == "spec_verify":
                tag = tags[SpanAttr.ACCEPTED_TOKENS]
                assert tag["type"] == "int64"
                jaeger_accepted += tag["value"]
        services = {p["serviceName"] for p in trace["processes"].values()}
        assert services == {spans[0].resource["service.name"]}
    assert jaeger_accepted == sum(
        s.attributes[SpanAttr.ACCEPTED_TOKENS] for s in spans if s.name == "spec_verify"
    )


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_files_name_the_line(captured, tmp_path):
    # The exporter may batch the whole run into one line, so only good[0] is sure to exist.
    good = [line for line in captured.read_text().splitlines() if line.strip()]

    not_json = _write(tmp_path / "a.jsonl", [good[0], "oops", good[0]])
    done = _cli("report", str(not_json))
    assert done.returncode == 2
    assert f"{not_json}:2: not JSON" in done.stderr

    wrong_shape = _write(tmp_path / "b.jsonl", [good[0], json.dumps({"spans": []})])
    done = _cli("report", str(wrong_shape))
    assert done.returncode == 2
    assert f"{wrong_shape}:2: not an OTLP trace export request" in done.stderr

    missing = _cli("report", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "cannot be read" in missing.stderr


def test_truncated_last_line_is_skipped_with_a_warning(captured, tmp_path):
    good = [line for line in captured.read_text().splitlines() if line.strip()]
    cut = _write(tmp_path / "cut.jsonl", good + [good[0][: len(good[0]) // 2]])
    done = _cli("report", str(cut))
    assert done.returncode == 0, done.stderr
    assert f"{cut}:{len(good) + 1}: truncated last line skipped" in done.stderr
    whole = _cli("report", str(_write(tmp_path / "whole.jsonl", good)))
    assert done.stdout == whole.stdout  # everything before the cut was read


def test_files_of_other_producers_are_read(tmp_path, caplog):
    # What the OpenTelemetry Collector's file exporter writes: uppercase-insensitive hex ids,
    # default fields omitted, every AnyValue kind, and metrics lines in the same file.
    span = {
        "traceId": "0AF7651916CD43DD8448EB211C80319C", "spanId": "B7AD6B7169203331",
        "attributes": [
            {"key": "kv", "value": {"kvlistValue": {"values": [
                {"key": "a", "value": {"intValue": "1"}}]}}},
            {"key": "b", "value": {"bytesValue": "AAE="}},
            {"key": "nan", "value": {"doubleValue": "NaN"}},
        ],
        "status": {"code": "STATUS_CODE_ERROR"},
    }  # fmt: skip
    child = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "00000000000000aa",
             "parentSpanId": "B7AD6B7169203331", "name": "spec_verify",
             "startTimeUnixNano": "5", "endTimeUnixNano": "9"}  # fmt: skip
    lines = [
        {"resourceSpans": [{"scopeSpans": [{"spans": [span, child]}]}]},
        {"resourceMetrics": [{"scopeMetrics": []}]},
    ]
    path = tmp_path / "collector.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    spans = read_spans(str(path))
    root, verify = spans
    assert root.name == "" and root.start_ns == 0 and root.status_code == 2
    assert root.trace_id == verify.trace_id  # one trace, not two
    assert verify.parent_span_id == root.span_id
    assert root.attributes["kv"] == {"a": 1} and root.attributes["b"] == "AAE="
    assert root.attributes["nan"] != root.attributes["nan"]  # a real NaN
    assert "not traces (resourceMetrics); skipped" in caplog.text


def test_binary_and_empty_files_are_one_line_errors(tmp_path):
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(256)))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for path, says in ((binary, "not a text file"), (empty, "empty")):
        out = _cli("report", str(path))
        assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr


def test_jaeger_json_keeps_scope_kind_status_events_links_and_typed_resource(tmp_path):
    from spec_tracing.report.jaeger import to_jaeger

    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
        "name": "llm_request", "kind": 2,
        "startTimeUnixNano": "1000000", "endTimeUnixNano": "3000000",
        "status": {"code": 2, "message": "client went away"},
        "events": [{"name": "first_token", "timeUnixNano": "2000000",
                    "attributes": [{"key": "n", "value": {"intValue": "1"}}]}],
        "links": [{"traceId": "1" * 32, "spanId": "2" * 16}],
    }  # fmt: skip
    doc = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}},
                                    {"key": "pid", "value": {"intValue": "42"}}]},
        "scopeSpans": [{"scope": {"name": "spec_tracing", "version": "0.1.0"}, "spans": [span]}],
    }]}  # fmt: skip
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(doc) + "\n")
    (trace,) = to_jaeger(read_spans(str(path)))["data"]
    (out,) = trace["spans"]
    tags = {t["key"]: t["value"] for t in out["tags"]}
    assert tags["otel.library.name"] == "spec_tracing" and tags["otel.library.version"] == "0.1.0"
    assert tags["span.kind"] == "server"
    assert tags["error"] is True and tags["otel.status_description"] == "client went away"
    (log,) = out["logs"]
    assert log["timestamp"] == 2000 and {"key": "n", "type": "int64", "value": 1} in log["fields"]
    assert {"refType": "FOLLOWS_FROM", "traceID": "1" * 32, "spanID": "2" * 16} in out["references"]
    process = trace["processes"][out["processID"]]
    assert process["serviceName"] == "svc"
    assert {"key": "pid", "type": "int64", "value": 42} in process["tags"]


@pytest.mark.parametrize(
    "outputs, says",
    [
        (["--html", "{input}"], "is the input file"),
        (["--html", "{tmp}/a", "--jaeger-json", "{tmp}/a"], "both name"),
        (["--html", "{tmp}"], "is a directory"),
        (["--perfetto", "{input}"], "is the input file"),
        (["--perfetto", "{tmp}/a", "--jaeger-json", "{tmp}/a"], "both name"),
    ],
)
def test_report_refuses_outputs_over_its_input_or_each_other_before_reading(
    captured, tmp_path, outputs, says
):
    before = captured.read_bytes()
    args = [a.format(input=captured, tmp=tmp_path) for a in outputs]
    done = _cli("report", str(captured), *args)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""  # refused before the input was parsed and summarized
    assert captured.read_bytes() == before


def test_a_trace_without_verify_spans_takes_acceptance_from_its_request_spans():
    # Roots carry each request's acceptance summary; a trace whose step spans were not kept
    # still has the run's figures.
    from spec_tracing.report.summary import TraceSummary

    with_steps, roots_only = TraceSummary(), TraceSummary()
    for accepted, proposed in ((2, 3), (0, 3), (3, 3)):
        with_steps.add("spec_verify", 0, 1, {SpanAttr.ACCEPTED_TOKENS: accepted,
                                             SpanAttr.PROPOSED_TOKENS: proposed})  # fmt: skip
    root = {SpanAttr.VERIFY_ROUNDS: 3, SpanAttr.TOTAL_ACCEPTED: 5, SpanAttr.TOTAL_PROPOSED: 9}
    for summary in (with_steps, roots_only):
        summary.add("spec_request", 0, 10, root)

    def figures(summary):
        lines = summary.render().splitlines()
        return [line for line in lines if line.startswith(("accept rate", "accept len"))]

    assert figures(roots_only) == figures(with_steps)
    assert figures(roots_only)[0].startswith("accept rate       0.556  (5 of 9 drafts)")
    # Step spans sampled (SPEC_TRACING_STEP_SAMPLE_RATIO): the roots count more rounds than the
    # verify spans left, and the summary is the whole run's.
    sampled = TraceSummary()
    sampled.add("spec_verify", 0, 1, {SpanAttr.ACCEPTED_TOKENS: 0, SpanAttr.PROPOSED_TOKENS: 3})
    sampled.add("spec_request", 0, 10, root)
    assert figures(sampled) == figures(with_steps)
    # Below level 2 the roots say nothing of verify: not recorded, rather than "no drafts".
    level_1 = TraceSummary()
    level_1.add("spec_request", 0, 10, {SpanAttr.REQUEST_ID: "r"})
    assert "n/a (not recorded: the requests ran below level 2)" in level_1.render()


def test_the_stage_table_keeps_its_columns_apart_past_100_seconds():
    from spec_tracing.report.summary import TraceSummary

    summary = TraceSummary()
    summary.add("spec_request", 0, 130_599_530_000, {})  # a 130.6 s request
    header, row = summary.render().splitlines()[:2]
    assert row.split() == ["spec_request", "1", "130599.530", "130599.530"]
    assert len(header) == len(row)


def test_a_reader_that_leaves_early_gets_no_traceback(captured):
    # `spec-tracing report FILE --requests | head -1`
    cmd = [sys.executable, "-m", "spec_tracing.cli", "report", str(captured), "--requests"]
    with subprocess.Popen(cmd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:  # fmt: skip
        proc.stdout.readline()
        proc.stdout.close()  # the reader is gone
        err = proc.stderr.read()
        proc.wait(60)
    assert "Traceback" not in err and "BrokenPipe" not in err


def _span(name, attrs, span_id="0000000000000001", parent=""):
    return {"traceId": "0" * 31 + "1", "spanId": span_id, "parentSpanId": parent, "name": name,
            "startTimeUnixNano": "1", "endTimeUnixNano": "2",
            "attributes": [{"key": k, "value": v} for k, v in attrs.items()]}  # fmt: skip


def _doc(spans, resource=()):
    return json.dumps({"resourceSpans": [{"resource": {"attributes": list(resource)},
                                          "scopeSpans": [{"spans": spans}]}]})  # fmt: skip


_ROUNDS = "spec_decode.verify_rounds"
_HOSTILE = {
    "rounds-text": _doc([_span("spec_request", {_ROUNDS: {"stringValue": "x"}})]),
    "rounds-nan": _doc([_span("spec_request", {_ROUNDS: {"doubleValue": "NaN"}})]),
    "rounds-infinity": _doc([_span("spec_request", {_ROUNDS: {"doubleValue": "Infinity"}})]),
    "name-a-dict": _doc([{**_span("x", {}), "name": {"a": 1}}]),
    "service-name-a-list": _doc(
        [_span("spec_request", {})],
        [{"key": "service.name", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}}],
    ),
    "nested-100k-deep": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("name", sorted(_HOSTILE))
def test_hostile_values_are_one_line_and_exit_2(tmp_path, name):
    path = tmp_path / "t.jsonl"
    path.write_text(_HOSTILE[name] + "\n")
    outputs = ("--html", tmp_path / "v.html", "--perfetto", tmp_path / "p.json",
               "--jaeger-json", tmp_path / "j.json")  # fmt: skip
    done = _cli("report", str(path), "--requests", *map(str, outputs))
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith("spec-tracing report: ") and done.stderr.count("\n") == 1
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.html"))


def test_no_allocation_is_sized_by_a_count_in_the_file(tmp_path):
    huge = {"intValue": str(1_500_000_000)}
    path = tmp_path / "t.jsonl"
    path.write_text(_doc([
        _span("spec_request", {}),
        _span("spec_verify", {"spec_decode.output_offset": huge,
                              "spec_decode.num_accepted_tokens": huge},
              span_id="0000000000000002", parent="0000000000000001"),
    ]) + "\n")  # fmt: skip
    # VmHWM: this process's own peak (ru_maxrss keeps the forking pytest process's across exec).
    code = ("import re, sys; from spec_tracing.cli import main; rc = main(sys.argv[1:]); "
            "status = open('/proc/self/status').read(); "
            "print(re.search(r'VmHWM:\\s+(\\d+)', status)[1])")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, "report", str(path), "--requests"],
                          env=clean_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    peak_kib = int(done.stdout.strip().splitlines()[-1])
    assert peak_kib < 400 * 1024  # a 1.5e9-character line would be 1.5 GB at least
    assert "  tokens  " in done.stdout


def test_non_finite_values_are_written_as_strict_json(tmp_path):
    path = tmp_path / "t.jsonl"
    odd = {"x": {"doubleValue": "NaN"}, "y": {"doubleValue": "-Infinity"}}
    path.write_text(_doc([_span("spec_request", odd)]) + "\n")
    outputs = ("--html", tmp_path / "v.html", "--perfetto", tmp_path / "p.json",
               "--jaeger-json", tmp_path / "j.json")  # fmt: skip
    done = _cli("report", str(path), *map(str, outputs))
    assert done.returncode == 0, done.stderr

    def refuse(constant):
        raise ValueError(f"bare {constant} in the output")

    for out in ("p.json", "j.json"):
        text = (tmp_path / out).read_text()
        json.loads(text, parse_constant=refuse)
        assert '"NaN"' in text and '"-Infinity"' in text
    page = (tmp_path / "v.html").read_text()
    data = page.split("<script id='spec-data' type='application/json'>")[1].split("</script>")[0]
    json.loads(data, parse_constant=refuse)


def test_line_separators_inside_strings_are_part_of_the_line(tmp_path):
    path = tmp_path / "t.jsonl"
    text = _doc([_span("spec_request", {"x": {"stringValue": "a\u2028b\u0085c\u2029d"}})])
    path.write_text(text.replace("\\u2028", "\u2028").replace("\\u0085", "\u0085")
                    .replace("\\u2029", "\u2029") + "\n", encoding="utf-8")  # fmt: skip
    (span,) = read_spans(str(path))
    assert span.attributes["x"] == "a\u2028b\u0085c\u2029d"


def test_an_output_is_replaced_whole_never_written_through_a_link(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(_doc([_span("spec_request", {})]) + "\n")
    before = path.read_text()
    link = tmp_path / "link.json"
    link.hardlink_to(path)  # an output name that is another name of the input
    done = _cli("report", str(path), "--perfetto", str(link))
    assert done.returncode == 0, done.stderr
    assert path.read_text() == before  # the input is as it was
    assert "traceEvents" in link.read_text()
    # A render that fails leaves the output that was there.
    link.write_text("previous")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_HOSTILE["rounds-nan"] + "\n")
    assert _cli("report", str(bad), "--perfetto", str(link)).returncode == 2
    assert link.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _selection_trace():
    """1,200 requests (req-i starts at i s; req-1100 is the slowest; accept rate falls with i
    modulo 100) and 700 traces whose root is not in the file."""

    spans = []
    for i in range(1200):
        start = i * 10**9
        dur = 10**9 * (1316 if i == 1100 else 1)
        attrs = {SpanAttr.REQUEST_ID: f"req-{i}", SpanAttr.ACCEPT_RATE: 1 - (i % 100) / 100}
        spans.append(OtlpSpan("spec_request", f"{i:032x}", f"{i + 1:016x}", "", start,
                              start + dur, attrs, 0))  # fmt: skip
    for j in range(700):
        start = j * 10**9
        spans.append(OtlpSpan("spec_draft", f"{10**6 + j:032x}", f"{10**6 + j:016x}",
                              "ffffffffffffffff", start, start + 1000, {}, 0))  # fmt: skip
    return spans


def _ids(payload):
    return [r["id"] for r in payload["requests"] if not r["id"].startswith("trace ")]


def test_select_reaches_any_request_and_caps_rootless_lanes_alike():
    from spec_tracing.report.html import build_payload, parse_select

    spans = _selection_trace()

    def page(text):
        return build_payload(spans, "", "t", parse_select(text))

    default = page("first:500")
    assert _ids(default) == [f"req-{i}" for i in range(500)]
    assert default["shown_orphans"] == 500 and default["total_orphans"] == 700
    assert default["chosen_by"] == "the first 500 by start"
    assert _ids(page("slowest:1")) == ["req-1100"]
    assert _ids(page("ids:req-1100,req-7")) == ["req-7", "req-1100"]
    lowest = _ids(page("lowest_accept:12"))
    assert len(lowest) == 12 and all(int(i[4:]) % 100 == 99 for i in lowest)
    window = page("window:1000-1002.5")
    assert _ids(window) == ["req-999", "req-1000", "req-1001", "req-1002"]
    everything = page("all")
    assert len(_ids(everything)) == 1200 and everything["shown_orphans"] == 700


@pytest.mark.parametrize("bad", ["slowest:0", "first:x", "window:5-2", "ids:", "every", "all:3"])
def test_a_bad_select_names_the_value_and_what_is_allowed(bad):
    done = _cli("report", "missing.jsonl", "--select", bad)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert f"{bad!r}" in last and "slowest:N" in last and "window:START-END" in last


def test_appended_runs_made_only_of_traces_without_a_root_are_told_apart():
    """Three processes' spans, one after another, none with its root in the file: three runs,
    each on its own axis, not one axis stretched over all three."""
    from spec_tracing.report.html import build_payload

    spans = []
    for run in range(3):
        resource = {"service.name": "engine", "service.instance.id": f"i{run}"}
        for j in range(4):
            start = run * 1000 * 10**9 + j * 10**9
            spans.append(OtlpSpan("spec_draft", f"{run * 100 + j + 1:032x}", f"{j + 1:016x}",
                                  "ffffffffffffffff", start, start + 10**6, {}, 0,
                                  resource))  # fmt: skip
    payload = build_payload(spans, "", "t")
    assert payload["runs"] == 3
    by_run: dict = {}
    for lane in payload["requests"]:
        by_run.setdefault(lane["run"], set()).add(int(lane["trace"], 16) // 100)
    assert by_run == {0: {0}, 1: {1}, 2: {2}}


def test_report_memory_per_span(tmp_path):
    """Every output of `report` at once holds at most 1 KB of memory per span of the file
    (peak memory against the same command on a one-request file; benchmarks/report_memory.py),
    whatever the file holds: the same run ten times over (the same ids) costs what its spans
    read once cost."""
    from benchmarks.report_memory import measure

    got = measure(tmp_path, requests=800)
    assert got["bytes_per_span"] <= 1024, got
    assert got["repeated_x10_bytes_per_distinct_span"] <= 1.5 * 1024, got
