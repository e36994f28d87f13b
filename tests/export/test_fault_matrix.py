"""Every output against every collector fault (spec_tracing.testing.faulty_collector), in a
process of its own: the ledger's identity holds, a fault that is not a receipt counts the spans
failed, and the engine's process stays within its bounds (memory, threads, time)."""

import json
import subprocess
import sys

import pytest
from conftest import clean_env

from spec_tracing.testing.faulty_collector import FaultyCollector

SPANS = 50
RUN = """
import json, logging, resource, threading, time, sys
import spec_tracing
from spec_tracing import ReqTimeStats, lifecycle
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
spec_tracing.enable(exporter="otlp", export_process=sys.argv[1] == "process",
                    shutdown_timeout_ms=8000)
spec_tracing.flush(5000)
peak0, threads0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, threading.active_count()
started = time.monotonic()
for i in range(int(sys.argv[2])):
    ReqTimeStats(rid=f"r{i}").finish()
flushed = spec_tracing.flush(8000)
took = time.monotonic() - started
grew_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak0
threads = threading.active_count() - threads0
spec_tracing.shutdown()
print(json.dumps({"stats": lifecycle.last_stats(), "grew_kb": grew_kb, "took": took,
                  "threads": threads, "flushed": flushed}))
"""


@pytest.mark.parametrize("output", ["process", "thread"])
@pytest.mark.parametrize("mode", ["redirect", "permanent_redirect", "not_modified",
                                  "gzip_bomb", "endless_body", "overcount"])  # fmt: skip
def test_every_output_against_every_collector_fault(output, mode):
    from spec_tracing import ledger

    with FaultyCollector(mode) as collector:
        env = clean_env()
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
                   OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_EXPORTER_OTLP_TIMEOUT="5",
                   SPEC_TRACING_METRICS="false")  # fmt: skip
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
    if mode in ("redirect", "permanent_redirect", "not_modified"):
        assert stats["export_failed_spans"] == SPANS and stats["spans"] == 0
        # One line of spec-tracing's names the redirect (in-thread, the SDK logs its own too).
        ours = [x for x in out.stderr.splitlines() if x.startswith("spec-tracing")]
        assert sum("not redirected" in line for line in ours) == 1, out.stderr
    elif mode == "overcount":
        assert stats["export_rejected_spans"] == SPANS and stats["spans"] == 0
    else:  # a 200 is the collector's receipt; the body beyond 64 KiB is never read
        assert stats["spans"] == SPANS, stats
