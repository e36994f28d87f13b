"""Every output against every collector fault (spec_tracing.testing.faulty_collector), spans and
metrics both exported to it, in a process of its own: the ledger's identity holds, a fault that
is not a receipt costs the spans (counted), and the engine's process stays within its bounds
(memory, threads, time). A new fault or output is one more row here."""

import json
import subprocess
import sys

import pytest
from conftest import clean_env

from spec_tracing.testing.faulty_collector import FaultyCollector

SPANS = 50
RUN = r"""
import json, logging, re, threading, time, sys
import spec_tracing
from spec_tracing import ReqTimeStats, lifecycle
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
spec_tracing.enable(exporter="otlp", export_process=sys.argv[1] == "process",
                    shutdown_timeout_ms=3000)
spec_tracing.flush(5000)
def peak_kb():  # VmHWM: this process's own (ru_maxrss keeps the forking pytest process's)
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read())[1])
peak0, threads0 = peak_kb(), threading.active_count()
started = time.monotonic()
for i in range(int(sys.argv[2])):
    ReqTimeStats(rid=f"r{i}").finish()
flushed = spec_tracing.flush(8000)
took = time.monotonic() - started
grew_kb = peak_kb() - peak0
threads = threading.active_count() - threads0
spec_tracing.shutdown()
print(json.dumps({"stats": lifecycle.last_stats(), "grew_kb": grew_kb, "took": took,
                  "threads": threads, "flushed": flushed}))
"""


# What each fault costs the spans: "failed" (the export is refused or never answered: no span
# is counted exported), "rejected" (partial_success, clamped to the request), "receipt" (a 200
# is the collector's receipt, whatever body follows).
EXPECTED = {
    "redirect": "failed", "permanent_redirect": "failed", "not_modified": "failed",
    "gzip_bomb": "receipt", "endless_body": "receipt", "overcount": "rejected",
    "reset": "failed", "trickle": "receipt", "hang": "failed", "grpc_unavailable": "failed",
    "grpc_overcount": "rejected", "grpc_hang": "failed", "grpc_big_reply": "failed",
}  # fmt: skip


@pytest.mark.parametrize("output", ["process", "thread"])
@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_every_output_against_every_collector_fault(output, mode):
    from spec_tracing import ledger

    with FaultyCollector(mode) as collector:
        env = clean_env()
        protocol = "grpc" if mode.startswith("grpc") else "http/protobuf"
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
                   OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
                   OTEL_EXPORTER_OTLP_TIMEOUT="5")  # fmt: skip
        out = subprocess.run([sys.executable, "-c", RUN, output, str(SPANS)], env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert collector.requests >= 1
    stats = result["stats"]
    assert ledger.gap(stats, SPANS) == 0, stats
    # The engine's process: whatever the collector sent, ≤10 MB more at its peak, no thread
    # left behind, and the flush back within its timeout (bounds, not timings).
    assert result["grew_kb"] <= 10 * 1024, result
    assert result["threads"] <= 1, result
    assert result["took"] < 8 + 1, result
    expected = EXPECTED[mode]
    if expected == "failed":
        assert stats["spans"] == 0, stats
    elif expected == "rejected":
        assert stats["export_rejected_spans"] == SPANS and stats["spans"] == 0
    else:  # the body beyond 64 KiB is never read
        assert stats["spans"] == SPANS, stats
    if mode in ("redirect", "permanent_redirect", "not_modified"):
        # One line of spec-tracing's names the redirect, per signal exported (spans, metrics);
        # in-thread, the SDK logs its own too.
        ours = [x for x in out.stderr.splitlines() if x.startswith("spec-tracing")]
        assert 1 <= sum("not redirected" in line for line in ours) <= 2, out.stderr


INPUT_RUN = r"""
import json, math, os, re, resource, signal, sys, threading, time
import spec_tracing
from spec_tracing import ReqTimeStats, lifecycle, record_batch_stage, set_spec_verify_end_time_batch
from spec_tracing.stages import RequestStage
from spec_tracing.wire import record_span_count
output, fault, path = sys.argv[1:4]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
if output == "provider":
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from spec_tracing.export.exporters import OtlpJsonFileExporter
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OtlpJsonFileExporter(path)))
    spec_tracing.enable(tracer_provider=provider)
else:
    spec_tracing.enable(exporter="file", file=path, export_process=output == "process")
spec_tracing.flush(5000)
offered = [0]
lifecycle.add_record_listener(
    lambda rs: offered.__setitem__(0, offered[0] + sum(map(record_span_count, rs))))
def peak_kb():
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read())[1])
peak0, threads0 = peak_kb(), threading.active_count()
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
limited = [os.getpid()]
if fault == "disk_full":
    if output == "process":
        limited.append(lifecycle._active.output.process.pid)
    for pid in limited:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (os.path.getsize(path) + 30_000, hard))
def run(tag, n):
    reqs = [ReqTimeStats(rid=f"{tag}-{i}") for i in range(n)]
    for step in range(3):
        t = time.perf_counter()
        record_batch_stage(reqs, RequestStage.SPEC_DRAFT, t - 0.001, t)
        spec_tracing.flush(5000)
    for r in reqs:
        r.finish()
    spec_tracing.flush(5000)
if fault == "disk_full":
    run("full", 100)
    for pid in limited:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))  # space freed
    run("freed", 20)
else:  # hostile values in every place the engine hands over
    odd = [float("nan"), float("inf"), "bad-\ud800", 2**70, -1, "x" * 100_000]
    reqs = [ReqTimeStats(rid=odd[i % len(odd)] if i % 2 else f"r{i}",
                         attributes={"a\udc00": odd[i % len(odd)], "n": float("nan")})
            for i in range(60)]
    t = time.perf_counter()
    record_batch_stage(reqs, RequestStage.SPEC_DRAFT, t, t - 5.0)  # ends before it starts
    record_batch_stage(reqs, RequestStage.SPEC_DRAFT, float("nan"), t)
    set_spec_verify_end_time_batch(reqs, [2**40] * 60, proposed=3)
    set_spec_verify_end_time_batch(reqs, [float("nan")] * 60, proposed=3)
    for i, r in enumerate(reqs):
        r.finish(r.start_ts - 10.0 if i % 3 == 0 else None)
    run("after", 10)  # what follows is untouched
grew_kb = peak_kb() - peak0
threads = threading.active_count() - threads0
spec_tracing.shutdown(10_000)
print(json.dumps({"stats": lifecycle.last_stats(), "offered": offered[0], "grew_kb": grew_kb,
                  "threads": threads}))
"""


@pytest.mark.parametrize("output", ["process", "thread", "provider"])
@pytest.mark.parametrize("fault", ["disk_full", "hostile_input"])
def test_every_output_against_every_input_fault(tmp_path, output, fault):
    """A filesystem that fills and frees (RLIMIT_FSIZE on the writing process), and hostile
    values in every place an engine hands them over: the file holds whole lines only, the
    ledger's identity holds, and the engine's process stays within its bounds."""
    from spec_tracing import ledger
    from spec_tracing.report.otlp_json import read_spans

    path = tmp_path / "t.jsonl"
    out = subprocess.run([sys.executable, "-c", INPUT_RUN, output, fault, str(path)],
                         env=clean_env(), capture_output=True, text=True, timeout=180)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    stats = result["stats"]
    spans = read_spans(str(path))  # every line whole: one cut short would be refused here
    assert result["grew_kb"] <= 10 * 1024 and result["threads"] <= 1, result
    assert ledger.gap(stats, result["offered"]) == 0, result
    roots = {s.attributes.get("spec_request.id") for s in spans if s.name == "spec_request"}
    if output != "provider":  # an application's exporter reports no failures to us
        assert stats["spans"] == len(spans), stats
    if fault == "disk_full":
        assert {f"freed-{i}" for i in range(20)} <= roots  # written once space was back
        if output != "provider":
            assert stats["export_failed_spans"] > 0, stats
    else:
        assert stats["invalid_events"] > 0
        assert {f"after-{i}" for i in range(10)} <= roots
        assert all(s.end_ns >= s.start_ns for s in spans)
