"""The reliability contract, each clause against a real OTLP receiver (or a black hole) on
127.0.0.1: bounded shutdown in every mode, a supervised exporter process, forks that leave the
parent alone, one root per request, memory that the exporter cannot pin. No timing thresholds:
bounds are asserted as "returned while the stall was still holding"."""

import gc
import multiprocessing
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref

import pytest
from conftest import Req, clean_env

import spec_tracing
from spec_tracing import ReqTimeStats, lifecycle, record_batch_stage
from spec_tracing.stages import RequestStage
from spec_tracing.testing.otlp_receiver import OtlpReceiver

STALL_S = 30  # how long a stall holds; every bounded call must return well before it ends


class BlackHole:
    """A 'collector' that accepts TCP connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def _otlp(monkeypatch, port, protocol="grpc"):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    if protocol == "http":
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")


def _load(n=200, steps=3, tag="r"):
    reqs = [ReqTimeStats(rid=f"{tag}{i}") for i in range(n)]
    for _ in range(steps):
        t = time.perf_counter()
        record_batch_stage(reqs, RequestStage.SPEC_DRAFT, t - 0.001, t)
    for r in reqs:
        r.finish()
    return n * (steps + 1)


def _returns_during_stall(call, **kwargs) -> bool:
    t = threading.Thread(target=call, kwargs=kwargs, daemon=True)
    t.start()
    t.join(STALL_S / 2)
    return not t.is_alive()


@pytest.mark.parametrize("export_process", [True, False], ids=["process", "thread"])
@pytest.mark.parametrize("metrics", [True, False], ids=["metrics", "nometrics"])
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_shutdown_returns_while_the_collector_black_holes_everything(
    monkeypatch, export_process, metrics, protocol
):
    hole = BlackHole()
    try:
        _otlp(monkeypatch, hole.port, protocol)
        spec_tracing.enable(exporter="otlp", export_process=export_process, metrics=metrics,
                            shutdown_timeout_ms=1000)  # fmt: skip
        _load()
        assert _returns_during_stall(spec_tracing.flush, timeout_ms=1000)
        assert _returns_during_stall(spec_tracing.shutdown)
    finally:
        hole.close()


@pytest.mark.parametrize("timeout_ms", [0, 1])
def test_zero_and_tiny_timeouts_never_raise(monkeypatch, timeout_ms):
    hole = BlackHole()
    try:
        _otlp(monkeypatch, hole.port)
        spec_tracing.enable(exporter="otlp", shutdown_timeout_ms=timeout_ms)
        _load(10)
        assert spec_tracing.flush(0) in (True, False)
        spec_tracing.flush(timeout_ms)
        spec_tracing.shutdown(timeout_ms)
        spec_tracing.shutdown(0)  # again: a no-op
    finally:
        hole.close()


def test_shutdown_returns_while_the_exporter_process_is_stopped(monkeypatch):
    with OtlpReceiver("grpc") as receiver:
        _otlp(monkeypatch, receiver.port)
        spec_tracing.enable(exporter="otlp", metrics=False, shutdown_timeout_ms=1000)
        _load(20)
        pid = lifecycle._active.output.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            _load(2000, tag="s")  # fills the pipe: the sender thread blocks, not the recorder
            assert _returns_during_stall(spec_tracing.shutdown)
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass  # killed by the bounded shutdown, as intended


def test_a_killed_exporter_process_is_replaced_and_every_span_is_accounted_for(monkeypatch):
    with OtlpReceiver("grpc") as receiver:
        _otlp(monkeypatch, receiver.port)
        spec_tracing.enable(exporter="otlp", metrics=False)
        offered = _load(50, tag="a")
        assert spec_tracing.flush(10000)
        first = lifecycle._active.output.process.pid
        os.kill(first, signal.SIGKILL)
        time.sleep(0.2)
        offered += _load(50, tag="b")  # arrives while none runs: a new one is started for it
        spec_tracing.flush(10000)
        offered += _load(50, tag="c")
        assert spec_tracing.flush(10000)
        assert lifecycle._active.output.process.pid != first
        assert lifecycle._active.output.restarts == 1
        stats = spec_tracing.stats()
        delivered = len(receiver.spans())
        roots = {s.attributes["spec_request.id"] for s in receiver.spans()
                 if s.name == "spec_request"}  # fmt: skip
        # The death shows on the pipe at the next drain (POLLHUP), so the requests recorded
        # after it go to the new exporter rather than being counted lost.
        assert {f"b{i}" for i in range(50)} <= roots
        assert {f"c{i}" for i in range(50)} <= roots  # the new exporter works
        accounted = (stats["spans"] + stats["export_dropped_spans"] + stats["export_failed_spans"]
                     + stats["export_lost_spans"])  # fmt: skip
        assert delivered == stats["spans"]
        assert accounted == offered, stats


_FORK_CHILD_EXITS = """
import os, sys, time
import spec_tracing
from spec_tracing import ReqTimeStats
spec_tracing.enable(exporter="otlp", metrics=False)
pid = os.fork()
if pid == 0:
    sys.exit(0)  # a normal exit runs atexit in the child
os.waitpid(pid, 0)
reqs = [ReqTimeStats(rid=f"p{i}") for i in range(100)]
for r in reqs:
    r.finish()
print(spec_tracing.flush(10000), spec_tracing.stats()["spans"])
"""


def test_a_forked_child_that_exits_leaves_the_parents_exporter_running(monkeypatch):
    with OtlpReceiver("grpc") as receiver:
        env = clean_env()
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
                   OTEL_EXPORTER_OTLP_INSECURE="true")  # fmt: skip
        out = subprocess.run([sys.executable, "-c", _FORK_CHILD_EXITS], env=env, timeout=120,
                             capture_output=True, text=True)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["True", "100"]
        assert len(receiver.wait_for_spans(100)) == 100


def _worker(tag):
    reqs = [ReqTimeStats(rid=f"{tag}{i}") for i in range(10)]
    t = time.perf_counter()
    for _ in range(4):
        record_batch_stage(reqs, RequestStage.SPEC_DRAFT, t - 0.001, t)
    for r in reqs:
        r.finish()  # and exit at once: nothing flushed explicitly


def test_a_multiprocessing_fork_workers_last_interval_is_delivered(monkeypatch):
    with OtlpReceiver("grpc") as receiver:
        _otlp(monkeypatch, receiver.port)
        spec_tracing.enable(exporter="otlp", metrics=False, drain_interval_ms=10000)
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_worker, args=(f"w{k}-",)) for k in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        spans = receiver.wait_for_spans(2 * 10 * 5, timeout_s=30)
        assert sum(s.name == "spec_request" for s in spans) == 20
        assert sum(s.name == "spec_draft" for s in spans) == 80


def test_finishes_are_never_dropped_when_the_buffer_overflows(spec_spans):
    spec_tracing.shutdown()
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    spec_tracing.enable(span_exporter=exporter, queue_size=50, drain_interval_ms=10000,
                        metrics=False)  # fmt: skip
    reqs = [ReqTimeStats(rid=i) for i in range(40)]
    for _ in range(500):  # stage events far past the bound
        record_batch_stage(reqs, RequestStage.SPEC_DRAFT, 1.0, 2.0)
    for r in reqs:
        r.finish()
    assert spec_tracing.flush(10000)
    roots = [s for s in exporter.get_finished_spans() if s.name == "spec_request"]
    assert len(roots) == 40
    assert spec_tracing.stats()["dropped_events"] > 0
    assert spec_tracing.stats()["dropped_finishes"] == 0
    spec_tracing.shutdown()
    spec_tracing.enable(span_exporter=exporter, metrics=False)
    assert spec_tracing.stats()["dropped_events"] == 0  # stats() counts from this enable()


def test_a_second_enable_leaves_requests_in_flight_alone(spec_spans):
    spec_tracing.shutdown()
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    spec_tracing.enable(span_exporter=exporter, metrics=False)
    reqs = [ReqTimeStats(rid=i) for i in range(5)]
    record_batch_stage(reqs, RequestStage.SPEC_DRAFT, 1.0, 2.0)
    spec_tracing.enable(span_exporter=exporter, metrics=False)  # reconfigure mid-run
    record_batch_stage(reqs, RequestStage.SPEC_DRAFT, 3.0, 4.0)
    for r in reqs:
        r.finish()
    spec_tracing.flush()
    roots = [s for s in exporter.get_finished_spans() if s.name == "spec_request"]
    assert len(roots) == 5 and all(s.status.is_ok for s in roots)
    drafts = [s for s in exporter.get_finished_spans() if s.name == "spec_draft"]
    assert {d.parent.span_id for d in drafts} == {r.span_id for r in reqs}
    assert len(drafts) == 10


@pytest.mark.parametrize("finisher", ["original", "copy"])
def test_a_pickled_request_has_exactly_one_root_whoever_finishes_it(spec_spans, finisher):
    original = ReqTimeStats(rid="x")
    copy = pickle.loads(pickle.dumps(original))  # what a spawned child would get
    (original if finisher == "original" else copy).finish()
    del copy, original
    gc.collect()
    spec_tracing.shutdown()  # nothing is left to end "unfinished" either
    assert len(spec_spans.roots()) == 1
    assert spec_spans.roots()[0].status.is_ok


def test_a_stalled_exporter_does_not_keep_the_engines_requests_alive(monkeypatch):
    with OtlpReceiver("grpc") as receiver:
        _otlp(monkeypatch, receiver.port)
        spec_tracing.enable(exporter="otlp", metrics=False, export_queue_spans=1000)
        pid = lifecycle._active.output.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            req = Req("pinned")
            gone = weakref.ref(req)
            payload = "x" * 20_000
            req.payload = payload
            for _ in range(3000):
                record_batch_stage([req], RequestStage.SPEC_DRAFT, 1.0, 2.0)
            req.time_stats.finish()
            assert _returns_during_stall(spec_tracing.flush, timeout_ms=500)
            del req
            gc.collect()
            assert gone() is None  # not pinned by the buffer while the exporter is stuck
            assert spec_tracing.stats()["export_dropped_spans"] > 0  # and the loss is counted
        finally:
            os.kill(pid, signal.SIGCONT)


_EXIT_WITHOUT_SHUTDOWN = """
import time, spec_tracing
from spec_tracing import ReqTimeStats
spec_tracing.enable(exporter="otlp")
for i in range(200):
    ReqTimeStats(rid=i).finish()
"""


@pytest.mark.parametrize("export_process", ["true", "false"])
def test_interpreter_exit_returns_while_the_collector_black_holes(export_process):
    hole = BlackHole()
    try:
        env = clean_env()
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{hole.port}",
                   OTEL_EXPORTER_OTLP_INSECURE="true", SPEC_TRACING_SHUTDOWN_TIMEOUT_MS="1000",
                   SPEC_TRACING_EXPORT_PROCESS=export_process)  # fmt: skip
        out = subprocess.run([sys.executable, "-c", _EXIT_WITHOUT_SHUTDOWN], env=env,
                             timeout=STALL_S / 2, capture_output=True, text=True)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "Traceback" not in out.stderr
    finally:
        hole.close()


@pytest.mark.parametrize("what", ["create", "finish"])
def test_shutdown_never_raises_while_other_threads_start_and_end_requests(what):
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads interleave inside shutdown's walk of open requests
    try:
        _shutdown_under_churn(what)
    finally:
        sys.setswitchinterval(switch)


def _shutdown_under_churn(what):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    for _ in range(5):
        exporter = InMemorySpanExporter()
        spec_tracing.enable(span_exporter=exporter, export_process=False, metrics=False)
        reqs = [ReqTimeStats(rid=i) for i in range(20_000)]
        stop = threading.Event()

        def churn(reqs=reqs, stop=stop):
            i = 0
            while not stop.is_set() and reqs:
                if what == "finish":
                    try:
                        req = reqs.pop()
                    except IndexError:  # another churn thread took the last one
                        return
                    req.finish()
                else:
                    reqs.append(ReqTimeStats(rid=i))
                i += 1

        threads = [threading.Thread(target=churn, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.02)
        spec_tracing.shutdown(5000)  # raised RuntimeError: set changed size during iteration
        stop.set()
        for t in threads:
            t.join(10)
        roots = [s for s in exporter.get_finished_spans() if s.name == "spec_request"]
        assert roots, "shutdown flushed nothing"


def test_ids_do_not_follow_the_global_random_seed():
    import random

    def traceparent():
        random.seed(0)
        r = ReqTimeStats(rid="x")
        return r.trace_id, r.span_id

    spec_tracing.enable(span_exporter=_Discard(), export_process=False, metrics=False)
    try:
        assert traceparent() != traceparent()
    finally:
        spec_tracing.shutdown(0)


def test_a_forked_child_draws_other_ids_than_its_parent():
    from spec_tracing import ids

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then out
        os.write(write, ids.random_id(64).to_bytes(8, "big"))
        os._exit(0)
    os.waitpid(pid, 0)
    assert int.from_bytes(os.read(read, 8), "big") != ids.random_id(64)


class _Discard:
    def export(self, spans):
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis=0):
        return True


_EXIT_WHILE_A_DAEMON_SERVES = """
import sys, threading, spec_tracing
from spec_tracing import ReqTimeStats
sys.setswitchinterval(1e-5)
spec_tracing.enable(exporter="file")
open_reqs = [ReqTimeStats(rid=f"open{i}") for i in range(20000)]
for i in range(500):
    ReqTimeStats(rid=f"done{i}").finish()

def serve():
    i = 0
    while True:
        open_reqs.append(ReqTimeStats(rid=f"late{i}"))
        i += 1

threading.Thread(target=serve, daemon=True).start()
"""


def test_interpreter_exit_with_a_daemon_thread_serving_still_writes_finished_roots(tmp_path):
    path = tmp_path / "spans.jsonl"
    env = clean_env()
    env.update(SPEC_TRACING_FILE=str(path), SPEC_TRACING_SHUTDOWN_TIMEOUT_MS="5000",
               SPEC_TRACING_METRICS="false")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", _EXIT_WHILE_A_DAEMON_SERVES], env=env,
                         timeout=60, capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = path.read_text()
    assert sum(text.count(f'"done{i}"') for i in range(500)) == 500


_HUNDRED_ROOTS = """
import spec_tracing
from spec_tracing import ReqTimeStats
spec_tracing.enable(metrics=False)
for i in range(100):
    ReqTimeStats(rid=f"r{i}").finish()
spec_tracing.shutdown()
print("EXPORTED", spec_tracing.lifecycle.last_stats()["spans"], flush=True)
"""


@pytest.mark.parametrize("output", ["console", "/dev/stdout"])
def test_what_the_exporter_process_prints_reaches_the_engines_stdout(output):
    # The exporter process's stdout was /dev/null: 0 of 100 printed, 100 counted exported.
    env = clean_env()
    if output == "console":
        env.update(SPEC_TRACING_EXPORTER="console")
    else:
        env.update(SPEC_TRACING_EXPORTER="file", SPEC_TRACING_FILE=output)
    out = subprocess.run([sys.executable, "-c", _HUNDRED_ROOTS], env=env, timeout=60,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "EXPORTED 100" in out.stdout
    assert out.stdout.count('"spec_request"') == 100


_ENGINE_WITH_A_FORKED_WORKER = """
import os, sys, time
import spec_tracing
from spec_tracing import ReqTimeStats
spec_tracing.enable(exporter="file", metrics=False)
ReqTimeStats(rid="r").finish()
spec_tracing.flush(5000)
worker = os.fork()
if worker == 0:  # a worker that never traces, and outlives the engine
    time.sleep(60)
    os._exit(0)
print(spec_tracing.lifecycle._active.output.process._proc.pid, worker, flush=True)
time.sleep(60)
"""


def test_a_forked_worker_does_not_keep_the_exporter_of_a_killed_engine_alive(tmp_path):
    env = clean_env()
    env.update(SPEC_TRACING_FILE=str(tmp_path / "t.jsonl"))
    engine = subprocess.Popen([sys.executable, "-c", _ENGINE_WITH_A_FORKED_WORKER], env=env,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    exporter, worker = map(int, engine.stdout.readline().split())
    try:
        engine.kill()  # SIGKILL: no exit hook runs
        engine.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(exporter):
            time.sleep(0.1)
        assert not _alive(exporter), "the exporter outlived its engine (the worker held the pipe)"
    finally:
        for pid in (worker, exporter):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


_FORKED_CHILD_EXPORTING_IN_THREAD = """
import os, sys, spec_tracing
from spec_tracing import ReqTimeStats
spec_tracing.enable(export_process=False, metrics=False)
ReqTimeStats(rid="parent").finish()
child = os.fork()
if child == 0:
    for i in range(20):
        ReqTimeStats(rid=f"child{i}").finish()
    ok = spec_tracing.flush(10000)
    print("CHILD", ok, spec_tracing.stats()["spans"], flush=True)
    os._exit(0)
os.waitpid(child, 0)
spec_tracing.shutdown()
"""


def test_a_forked_child_exporting_in_thread_exports_its_own_requests():
    with OtlpReceiver("http") as receiver:
        env = clean_env()
        env.update(OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=receiver.traces_endpoint)  # fmt: skip
        out = subprocess.run([sys.executable, "-c", _FORKED_CHILD_EXPORTING_IN_THREAD], env=env,
                             timeout=60, capture_output=True, text=True)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "CHILD True 20" in out.stdout
        spans = receiver.wait_for_spans(21, timeout_s=20)
    ids = sorted(s.attributes["spec_request.id"] for s in spans)
    assert ids == sorted(["parent"] + [f"child{i}" for i in range(20)])


def test_spans_still_queued_when_in_thread_shutdown_times_out_are_counted_lost(monkeypatch):
    hole = BlackHole()
    try:
        _otlp(monkeypatch, hole.port)
        # 3 s: time for the recorder to hand every span to the export threads on a loaded
        # machine, while the black hole keeps them from exporting any.
        spec_tracing.enable(export_process=False, metrics=False, shutdown_timeout_ms=3000)
        offered = _load(n=5000, steps=3)  # 5 export batches: 2 in flight, the rest queued
        spec_tracing.shutdown()
        s = spec_tracing.lifecycle.last_stats()
        accounted = (s["spans"] + s["export_dropped_spans"] + s["export_failed_spans"]
                     + s["export_lost_spans"])  # fmt: skip
        assert accounted == offered, s
        assert s["export_lost_spans"] > 0, s
    finally:
        hole.close()


@pytest.mark.parametrize("export_process", [True, False], ids=["process", "thread"])
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_spans_the_collector_rejects_through_partial_success_are_not_counted_exported(
    monkeypatch, protocol, export_process
):
    with OtlpReceiver(protocol) as receiver:
        receiver.reject_spans()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.traces_endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        if protocol == "http":
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        spec_tracing.enable(export_process=export_process, metrics=False)
        offered = _load(n=300, steps=3)
        assert spec_tracing.flush(10000)
        spec_tracing.shutdown()
        assert receiver.spans() == []
    s = spec_tracing.lifecycle.last_stats()
    assert s["spans"] == 0 and s["export_rejected_spans"] == offered, s


@pytest.mark.parametrize("output", ["process-otlp", "thread-otlp", "file"])
def test_attribute_limits_apply_on_every_path_and_cost_only_the_oversized_value(
    monkeypatch, tmp_path, output
):
    from spec_tracing.report.otlp_json import read_spans

    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "16")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "10")
    with OtlpReceiver("grpc") as receiver:
        if output == "file":
            spec_tracing.enable(exporter="file", file=str(tmp_path / "t.jsonl"), metrics=False)
        else:
            _otlp(monkeypatch, receiver.port)
            spec_tracing.enable(export_process=output.startswith("process"), metrics=False)
        big = ReqTimeStats(rid="big")
        big.attributes["prompt.tag"] = "x" * 10_000
        for i in range(50):
            big.attributes[f"extra.{i}"] = i
        small = [ReqTimeStats(rid=f"small{i}") for i in range(20)]
        for r in [big, *small]:
            r.finish()
        assert spec_tracing.flush(10000)
        limited = spec_tracing.stats()["limited_attributes"]
        spec_tracing.shutdown()
        spans = read_spans(str(tmp_path / "t.jsonl")) if output == "file" else receiver.spans()
    roots = {s.attributes["spec_request.id"]: s for s in spans}
    assert len(roots) == 21  # the neighbours are all there
    (tag,) = [v for k, v in roots["big"].attributes.items() if k == "prompt.tag"] or [None]
    assert tag is None or len(tag) <= 16
    assert len(roots["big"].attributes) <= 10
    assert limited >= 1 + 41  # the long value, and the attributes past ten


def test_a_batch_of_large_spans_is_split_below_the_collectors_message_limit(monkeypatch):
    # gRPC receivers refuse messages over 4 MiB: 300 roots with 30 kB each (under the value
    # length limit) were one ~9 MB request, and every span of it failed.
    with OtlpReceiver("grpc") as receiver:
        _otlp(monkeypatch, receiver.port)
        spec_tracing.enable(export_process=False, metrics=False)
        for i in range(300):
            r = ReqTimeStats(rid=f"r{i}")
            r.attributes["note"] = "x" * 30_000
            r.finish()
        assert spec_tracing.flush(20000)
        stats = spec_tracing.stats()
        spec_tracing.shutdown()
        assert stats["export_failed_spans"] == 0 and stats["spans"] == 300
        assert len(receiver.spans()) == 300


class _Flapping:
    """An OTLP/HTTP 'collector' that answers 200 and 500 in turn."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        turn = [0]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                turn[0] += 1
                self.send_response(200 if turn[0] % 2 else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_flapping_collector_is_one_warning_not_one_per_batch(monkeypatch, caplog):
    flapping = _Flapping()
    try:
        _otlp(monkeypatch, flapping.port, "http")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                           f"http://127.0.0.1:{flapping.port}/v1/traces")  # fmt: skip
        with caplog.at_level("WARNING"):
            spec_tracing.enable(export_process=False, metrics=False)
            for _ in range(30):
                _load(n=5, steps=1)
                spec_tracing.flush(5000)
            stats = spec_tracing.stats()
            spec_tracing.shutdown()
    finally:
        flapping.close()
    assert stats["export_failed_spans"] > 0 and stats["spans"] > 0  # it did flap
    lines = [r for r in caplog.records if "spec-tracing exporter" in r.getMessage()]
    assert len([r for r in lines if "failing" in r.getMessage()]) == 1, lines


def test_stats_after_shutdown_are_the_runs_final_counts():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spec_tracing.enable(span_exporter=InMemorySpanExporter(), metrics=False)
    offered = _load(n=10, steps=2)
    spec_tracing.shutdown()
    assert spec_tracing.stats()["spans"] == offered  # zeros before
    assert spec_tracing.stats() == spec_tracing.lifecycle.last_stats()
