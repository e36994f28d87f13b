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
