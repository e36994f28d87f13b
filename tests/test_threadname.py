"""spec-tracing's long-lived threads carry their names in the OS (`top -H`, `ps -T`, py-spy), so
a user can read what each costs the engine's process."""

import sys
import threading
import time
from pathlib import Path

import pytest

import spec_tracing
from spec_tracing.export.child import Writer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")


def _os_names() -> dict[str, str]:
    """Python thread name -> the OS's name for it, for this process's threads."""
    out = {}
    for thread in threading.enumerate():
        comm = Path(f"/proc/self/task/{thread.native_id}/comm")
        if thread.native_id and comm.exists():
            out[thread.name] = comm.read_text().strip()
    return out


def _wait_for(names: set[str]) -> dict[str, str]:
    deadline = time.monotonic() + 30
    while True:  # a thread names itself when it starts running
        found = _os_names()
        if all(found.get(n, "").startswith("spec-") for n in names) or time.monotonic() > deadline:
            return found


def test_the_engine_process_threads_are_named_in_the_os(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    spec_tracing.enable(exporter="otlp", metrics=False)
    try:
        found = _wait_for({"spec-tracing-recorder", "spec-tracing-send"})
    finally:
        spec_tracing.shutdown(timeout_ms=0)
    assert found["spec-tracing-recorder"] == "spec-recorder"
    assert found["spec-tracing-send"] == "spec-send"


def test_the_export_threads_are_named_in_the_os():
    writer = Writer(None, None, list, capacity=10)
    try:
        found = _wait_for({f"spec-tracing-export-{i}" for i in range(Writer.THREADS)})
    finally:
        writer.stop(1.0)
    for i in range(Writer.THREADS):
        assert found[f"spec-tracing-export-{i}"] == f"spec-export-{i}"
