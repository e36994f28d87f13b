"""Shared by the benchmarks: medians of repeats, the machine, a receiver in its own process."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time


def median_of(fn, repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def spread(values: list[float]) -> tuple[float, float, float]:
    """(lower quartile, median, upper quartile); one value is all three."""
    q = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return q[0], statistics.median(values), q[2]


def machine() -> dict:
    import torch

    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }


def _stat(pid) -> tuple[int, int]:
    """(parent pid, user + system clock ticks so far) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def cpu_s(pid) -> float:
    """User + system CPU seconds of a process so far."""
    return _stat(pid)[1] / os.sysconf("SC_CLK_TCK")


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def exporters_cpu_s() -> float:
    """CPU seconds so far of every spec-tracing exporter process on the machine (they run
    detached, outside the process tree of the program they serve)."""
    total = 0.0
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"spec_tracing.pipeline" in f.read():
                    total += cpu_s(pid)
        except OSError:  # gone meanwhile
            continue
    return total


def tree_cpu_s(root: int) -> float:
    """CPU seconds so far of a process and its living descendants."""
    stats = {}
    for pid in _pids():
        try:
            stats[pid] = _stat(pid)
        except OSError:  # gone meanwhile
            continue

    def under(pid):
        while pid > 1:
            if pid == root:
                return True
            pid = stats.get(pid, (0, 0))[0]
        return False

    return sum(t for pid, (_, t) in stats.items() if under(pid)) / os.sysconf("SC_CLK_TCK")


class ReceiverProcess:
    """A real OTLP receiver (spec_tracing.testing.otlp_receiver) in a child process, so decoding
    what arrives does not share the measured process's interpreter lock."""

    SCRIPT = """
import sys
from spec_tracing.testing.otlp_receiver import OtlpReceiver
r = OtlpReceiver(sys.argv[1]).start()
print(r.endpoint, flush=True)
for line in sys.stdin:
    print(r.span_count(), flush=True)
"""

    def __init__(self, protocol: str = "grpc"):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, protocol],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.endpoint = self.proc.stdout.readline().strip()

    def span_count(self) -> int:
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def wait_for(self, count: int, timeout_s: float) -> tuple[int, float]:
        """(spans received, seconds waited) once `count` arrived or the timeout passed."""
        start = time.perf_counter()
        got = self.span_count()
        while got < count and time.perf_counter() - start < timeout_s:
            time.sleep(0.05)
            got = self.span_count()
        return got, time.perf_counter() - start

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def otlp_env(endpoint: str) -> None:
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    os.environ["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
    os.environ.pop("OTEL_EXPORTER_OTLP_PROTOCOL", None)
