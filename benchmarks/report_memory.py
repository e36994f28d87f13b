"""`python -m benchmarks.report_memory`: the peak memory of `spec-tracing report` with every
output at once (--html, --perfetto, --jaeger-json), per span of the file, above the same command
on a one-request file: a synthetic run shaped like ours (requests in batches of 64, 60 verify
steps each), and the same run ten times over (the same ids, read once). Peak memory is the
report process's own VmHWM."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from spec_tracing.semconv import SpanAttr

# The peak RSS of this process's own memory (VmHWM, KiB): getrusage's ru_maxrss would also
# count the forking parent's size, which exec does not reset on Linux.
_PEAK = r"""
import sys
from spec_tracing.cli import main
try:
    main()
except SystemExit:
    pass
with open("/proc/self/status") as f:
    print(next(line.split()[1] for line in f if line.startswith("VmHWM:")), file=sys.stderr)
"""


def synthetic_trace(path, requests: int, steps: int, repeat: int = 1) -> int:
    """OTLP JSON lines shaped like a run of ours (requests in batches of 64, each a root with
    its figures and `steps` verify spans with theirs), `repeat` times over (the same ids
    again); the spans written."""

    def attr(key, value):
        kind = "intValue" if isinstance(value, int) else "doubleValue"
        return {"key": key, "value": {kind: str(value) if kind == "intValue" else value}}

    lines = []
    for r in range(requests):
        trace, root = f"{r + 1:032x}", f"{r + 1:016x}"
        t0 = 10**18 + (r // 64) * 10**8  # batches of 64: a step's spans share their times
        spans = [{"traceId": trace, "spanId": root, "name": "spec_request",
                  "startTimeUnixNano": str(t0), "endTimeUnixNano": str(t0 + 10**9),
                  "attributes": [{"key": SpanAttr.REQUEST_ID,
                                  "value": {"stringValue": f"req-{r}"}},
                                 attr(SpanAttr.VERIFY_ROUNDS, steps),
                                 attr(SpanAttr.ACCEPT_RATE, 0.5)]}]  # fmt: skip
        for k in range(steps):
            t = t0 + k * 10**6
            spans.append({"traceId": trace, "spanId": f"{(r + 1) * 1000 + k + 1:016x}",
                          "parentSpanId": root, "name": "spec_verify",
                          "startTimeUnixNano": str(t), "endTimeUnixNano": str(t + 5 * 10**5),
                          "attributes": [attr(SpanAttr.BATCH_SIZE, 64),
                                         attr(SpanAttr.NUM_STEPS, 3),
                                         attr(SpanAttr.STEP, k),
                                         attr(SpanAttr.ACCEPTED_TOKENS, k % 4),
                                         attr(SpanAttr.PROPOSED_TOKENS, 3),
                                         attr(SpanAttr.OUTPUT_OFFSET, 1 + 2 * k)]})  # fmt: skip
        resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "engine"}}]}
        lines.append(json.dumps({"resourceSpans": [
            {"resource": resource, "scopeSpans": [{"scope": {"name": "spec_tracing"},
                                                   "spans": spans}]}]}))  # fmt: skip
    path.write_text("\n".join(lines * repeat) + "\n")
    return requests * (steps + 1) * repeat


def peak_kib(*args) -> int:
    done = subprocess.run([sys.executable, "-c", _PEAK, "report", *map(str, args)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    return int(done.stderr.strip().splitlines()[-1])


def measure(folder: Path, requests: int = 800, steps: int = 60) -> dict:
    small, big, again = folder / "small.jsonl", folder / "big.jsonl", folder / "x10.jsonl"
    synthetic_trace(small, 1, steps)
    spans = synthetic_trace(big, requests, steps)
    synthetic_trace(again, requests // 10, steps, repeat=10)
    outputs = ["--html", folder / "o.html", "--perfetto", folder / "o.json",
               "--jaeger-json", folder / "j.json"]  # fmt: skip
    base = peak_kib(small, *outputs)
    return {
        "spans": spans,
        "bytes_per_span": round((peak_kib(big, *outputs) - base) * 1024 / spans),
        "repeated_x10_bytes_per_distinct_span": round(
            (peak_kib(again, *outputs) - base) * 1024 / (spans // 10)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2500, help="60 steps each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(measure(Path(folder), args.requests), indent=2))


if __name__ == "__main__":
    main()
