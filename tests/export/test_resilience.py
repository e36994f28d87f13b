"""Never hurt the engine: collector outages, bounded buffers, forks, unfinished requests, bad use.

Every span is accounted for: delivered to the receiver, or counted as dropped or failed.
"""

import gc
import logging
import os
import socket
import threading
import time

import pytest
from conftest import Req

import spec_tracing
from spec_tracing import ReqTimeStats, lifecycle, record_batch_stage, set_time_batch
from spec_tracing.stages import RequestStage
from spec_tracing.testing.otlp_receiver import OtlpReceiver


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _otlp(monkeypatch, port, protocol="grpc"):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # seconds: fail fast when down
    if protocol == "http":
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")


def _phase(tag, n=4, steps=3):
    """Record `steps` draft slices for n requests and finish them: n * (steps + 1) spans."""
    reqs = [ReqTimeStats(rid=f"{tag}-{i}") for i in range(n)]
    for _ in range(steps):
        t = spec_tracing.record.hotpath.perf_counter()
        record_batch_stage(reqs, RequestStage.SPEC_DRAFT, t - 0.001, t)
    for r in reqs:
        r.finish()
    spec_tracing.flush(timeout_ms=5000)
    return {f"{tag}-{i}" for i in range(n)}, n * (steps + 1)


def _roots(receiver):
    return [
        s.attributes.get("spec_request.id") for s in receiver.spans() if s.name == "spec_request"
    ]


def _shutdown_returns(timeout_ms):
    """shutdown() in a thread; True if it returned within a generous liveness bound."""
    t = threading.Thread(target=spec_tracing.shutdown, kwargs={"timeout_ms": timeout_ms})
    t.start()
    t.join(60)
    return not t.is_alive()


def _until_delivered(receiver, tag, attempts=30):
    """Record phases until one arrives whole (the exporter reconnects with a backoff);
    returns (request ids of all phases, spans of all phases, the phase delivered)."""
    ids, spans = set(), 0
    for attempt in range(attempts):
        phase, n = _phase(f"{tag}{attempt}")
        ids |= phase
        spans += n
        if phase <= set(_roots(receiver)):
            return ids, spans, phase
        time.sleep(0.5)
    raise AssertionError(f"no {tag} phase was delivered in {attempts} attempts")


def test_collector_down_at_start_then_up_export_resumes(monkeypatch):
    port = _free_port()
    _otlp(monkeypatch, port)
    spec_tracing.enable(exporter="otlp", metrics=False)
    early, early_count = _phase("early")  # nobody listens: fails, counted, never raised
    stats = spec_tracing.stats()
    assert stats["export_failed_spans"] + stats["export_dropped_spans"] == early_count
    with OtlpReceiver("grpc", port=port) as receiver:
        later, later_count, delivered = _until_delivered(receiver, "late")
        spec_tracing.flush(timeout_ms=5000)
        stats = spec_tracing.stats()
        assert _shutdown_returns(10_000)
        spans = receiver.spans()
    lost = stats["export_failed_spans"] + stats["export_dropped_spans"]
    assert len(spans) + lost == early_count + later_count


def test_collector_killed_mid_run_and_restarted_loses_nothing_silently(monkeypatch):
    with OtlpReceiver("grpc") as receiver:
        _otlp(monkeypatch, receiver.port)
        spec_tracing.enable(exporter="otlp", metrics=False)
        first, n1 = _phase("first")
        receiver.wait_for_spans(n1)
        receiver.stop()
        second, n2 = _phase("second")
        receiver.start()
        _, n3, third = _until_delivered(receiver, "third")
        spec_tracing.flush(timeout_ms=10_000)
        stats = spec_tracing.stats()
        assert _shutdown_returns(10_000)
        roots = _roots(receiver)
        delivered = len(receiver.spans())
    assert first <= set(roots) and third <= set(roots)
    assert len(roots) == len(set(roots))  # nothing delivered twice
    lost = stats["export_failed_spans"] + stats["export_dropped_spans"]
    assert delivered + lost == n1 + n2 + n3


def test_slow_collector_bounds_the_buffer_and_counts_what_it_drops(monkeypatch):
    with OtlpReceiver("http") as receiver:
        _otlp(monkeypatch, receiver.port, "http")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "30")
        receiver.set_delay(1.0)  # every export answered after a second
        spec_tracing.enable(exporter="otlp", metrics=False, export_queue_spans=300)
        reqs = [ReqTimeStats(rid=i) for i in range(100)]
        offered = 0
        for _ in range(40):  # 4,000 spans offered far faster than 1 export/s drains them
            t = spec_tracing.record.hotpath.perf_counter()
            record_batch_stage(reqs, RequestStage.SPEC_DRAFT, t - 0.001, t)
            offered += len(reqs)
        spec_tracing.flush(timeout_ms=30_000)
        stats = spec_tracing.stats()
        receiver.set_delay(0.0)
        delivered = receiver.wait_for_spans(offered - stats["export_dropped_spans"])
        assert _shutdown_returns(5000)
    assert stats["export_dropped_spans"] > 0
    assert len(delivered) + stats["export_dropped_spans"] + stats["export_failed_spans"] == offered
    for r in reqs:
        r._disown()  # not the point of this test


def test_shutdown_is_bounded_when_the_collector_is_gone(monkeypatch):
    with OtlpReceiver("grpc") as receiver:
        _otlp(monkeypatch, receiver.port)
        spec_tracing.enable(exporter="otlp", metrics=False)
        receiver.set_delay(30.0)  # a collector that accepts and never answers in time
        _phase("stuck")
        assert _shutdown_returns(2000)
        receiver.set_delay(0.0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_its_own_exporter_and_nothing_is_duplicated(monkeypatch):
    with OtlpReceiver("http") as receiver:
        _otlp(monkeypatch, receiver.port, "http")
        spec_tracing.enable(exporter="otlp", metrics=False)
        before, n_before = _phase("parent-before")
        pid = os.fork()
        if pid == 0:  # the child: record, export through its own exporter process, leave
            code = 0
            try:
                _phase("child")
                spec_tracing.shutdown(timeout_ms=10_000)
            except BaseException:
                code = 1
            os._exit(code)
        after, n_after = _phase("parent-after")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert _shutdown_returns(10_000)
        receiver.wait_for_spans(n_before + n_after + 16)
        roots = _roots(receiver)
    expected = before | after | {f"child-{i}" for i in range(4)}
    assert sorted(roots) == sorted(expected)  # each exactly once


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_while_exporting_in_thread_with_step_sampling_starts_clean(tmp_path):
    """The parent's held steps and open requests stay the parent's: the child accounts for
    exactly the spans it offered, and the ledger's identity holds there."""
    from spec_tracing import ledger
    from spec_tracing.wire import record_span_count

    spec_tracing.enable(exporter="file", file=str(tmp_path / "t.jsonl"), export_process=False,
                        step_sample_ratio=0.5, step_keep="none", metrics=False)  # fmt: skip
    _phase("parent", n=20)  # the sampler holds decisions and counts of its own
    held = [ReqTimeStats(rid=f"open-{i}") for i in range(5)]  # open in the parent's assembler
    record_batch_stage(held, RequestStage.SPEC_DRAFT, 1.0, 1.001)
    spec_tracing.flush(timeout_ms=5000)
    assert lifecycle.stats()["sampled_out_spans"] > 0
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            offered = [0]
            lifecycle.add_record_listener(
                lambda rs: offered.__setitem__(0, offered[0] + sum(map(record_span_count, rs)))
            )
            _phase("child", n=4)
            spec_tracing.shutdown(timeout_ms=10_000)
            stats = lifecycle.last_stats()
            os.write(write, repr((offered[0], ledger.gap(stats, offered[0]),
                                  stats["sampled_out_spans"])).encode())  # fmt: skip
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read, 4096).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    offered, gap, sampled_out = eval(answer)
    assert offered == 16 and gap == 0 and sampled_out <= offered
    del held


def test_a_request_dropped_without_finishing_ends_with_an_error(spec_spans):
    req = Req("lost")
    req.time_stats.set_spec_draft_start_time()
    req.time_stats.set_spec_draft_end_time()
    # Events still buffered hold the request; once drained, the engine's reference is the last.
    spec_tracing.flush()
    del req
    gc.collect()
    (root,) = spec_spans.roots()
    assert root.status.status_code.name == "ERROR"
    assert root.attributes["spec_request.finish_reason"] == "abandoned"
    assert len(spec_spans.spans("spec_draft")) == 1


def test_shutdown_ends_open_requests_once(spec_spans):
    open_req, done = Req("open"), Req("done")
    done.time_stats.finish()
    exporter = spec_spans.exporter
    spec_tracing.shutdown()
    roots = {
        s.attributes["spec_request.id"]: s
        for s in exporter.get_finished_spans()
        if s.name == "spec_request"
    }
    assert set(roots) == {"open", "done"}
    assert roots["open"].attributes["spec_request.finish_reason"] == "unfinished"
    assert roots["done"].status.status_code.name == "UNSET"
    open_req.time_stats.finish()  # after shutdown: nothing, no error
    del open_req
    gc.collect()
    assert len([s for s in exporter.get_finished_spans() if s.name == "spec_request"]) == 2


def test_pickled_copy_owns_the_request_the_original_does_not_end_it(spec_spans):
    import pickle

    original = ReqTimeStats(rid="moved")
    copy = pickle.loads(pickle.dumps(original))
    del original
    gc.collect()
    assert spec_spans.roots() == []  # the original let go of it
    copy.finish()
    assert len(spec_spans.roots()) == 1


def test_calls_after_shutdown_record_nothing_and_never_raise():
    spec_tracing.enable(exporter="none")
    req = Req("late")
    spec_tracing.shutdown()
    set_time_batch([req], ReqTimeStats.set_spec_draft_start_time)
    spec_tracing.set_spec_verify_end_time_batch([req], [1, 2, 3])  # wrong length, ignored
    req.time_stats.trace_slice("spec_draft", 0.0, 1.0)
    req.time_stats.finish()
    spec_tracing.flush()
    spec_tracing.shutdown()
    assert len(spec_tracing.record.hotpath._queue) == 0


def test_an_outage_logs_one_warning_and_never_the_otlp_headers(monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    port = _free_port()  # nothing listens: the exporter logs its failures
    _otlp(monkeypatch, port)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20s3cret-token")
    spec_tracing.enable(exporter="otlp", metrics=False)
    for i in range(3):  # three failed exports
        _phase(f"private{i}")
    failed = spec_tracing.stats()["export_failed_spans"]
    spec_tracing.shutdown(timeout_ms=2000)
    out, err = capfd.readouterr()
    assert "s3cret" not in caplog.text + out + err
    assert failed == 3 * 16
    # one warning for the outage, not a line per failed batch
    assert err.count("export failing") == 1, err


@pytest.mark.parametrize("nice", [10, 0])
def test_exporter_process_yields_the_cpu_to_the_engine(monkeypatch, nice):
    with OtlpReceiver("grpc") as receiver:
        _otlp(monkeypatch, receiver.port)
        spec_tracing.enable(exporter="otlp", metrics=False, export_nice=nice)
        _, count = _phase("nice", n=2, steps=1)
        assert receiver.wait_for_spans(count)  # the process is up and exporting
        child = lifecycle._active.output.process.pid
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, child) == min(19, own + nice)


def test_exporter_process_exits_quietly_when_the_engine_stopped_waiting_for_it():
    """shutdown() gives up on a stuck exporter process after its timeout and closes the pipe;
    the process's late reply then has nowhere to go, which must end it without a traceback."""
    from multiprocessing.connection import Connection

    from spec_tracing.pipeline.serve import serve
    from spec_tracing.settings import Settings

    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    to_child = Connection(to_child_w, readable=False)
    to_child.send(("settings", Settings.from_env(exporter="none", export_nice=0), "test", {}, None))
    to_child.send([])
    to_child.send(("stop", 0, 1))
    os.close(from_child_r)  # the engine's process stopped listening
    serve(Connection(to_child_r, writable=False), Connection(from_child_w, readable=False))
    to_child.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_while_the_metrics_lock_is_held_leaves_the_child_a_free_lock():
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    spec_tracing.enable(exporter="none", metric_readers=[InMemoryMetricReader()])
    metrics = lifecycle._active.output.pipeline.signals.metrics
    with metrics._lock:  # the recorder thread adding a verify event at the moment of fork
        pid = os.fork()
        if pid == 0:
            os._exit(0 if metrics._lock.acquire(timeout=5) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_shutdown_with_the_collector_down_counts_every_span_it_could_not_export(monkeypatch):
    # Nobody listens and each export takes the SDK's retries up to 10 s: shutdown's 1 s budget
    # ends with spans still queued in, or on their way through, the exporter process. They are
    # lost, and must be counted as lost, not vanish (the demo with the collector down reported
    # 848 of 7,856 spans).
    _otlp(monkeypatch, _free_port())
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "10")
    spec_tracing.enable(exporter="otlp", metrics=False, shutdown_timeout_ms=1000)
    reqs = [ReqTimeStats(rid=f"down-{i}") for i in range(40)]
    for _ in range(50):
        t = spec_tracing.record.hotpath.perf_counter()
        record_batch_stage(reqs, RequestStage.SPEC_DRAFT, t - 0.001, t)
    for r in reqs:
        r.finish()
    offered = 40 * (50 + 1)
    assert _shutdown_returns(1000)
    stats = lifecycle.last_stats()
    assert stats["spans"] == 0
    not_exported = (stats["export_dropped_spans"] + stats["export_failed_spans"]
                    + stats["export_lost_spans"])  # fmt: skip
    assert not_exported == offered, stats


class _TricklingCollector:
    """Accepts OTLP/HTTP requests and answers each a byte every 0.2 s until released (a 100 kB
    body: hours): every single read succeeds, so only an overall deadline ends the request."""

    def __init__(self):
        self.released = threading.Event()
        self.requests = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.released.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn):
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(1 << 20)
                self.requests += 1
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000:
                    if self.released.wait(0.2):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                pass

    def release(self):
        self.released.set()
        self._server.close()


@pytest.mark.parametrize("export_process", [True, False], ids=["process", "thread"])
def test_a_trickling_http_collector_holds_an_export_no_longer_than_its_timeout(
    monkeypatch, export_process
):
    # Each read of a trickled response succeeds, so a per-read timeout never fires: the export
    # thread was held as long as the collector liked (30 s with a 2 s timeout).
    collector = _TricklingCollector()
    try:
        _otlp(monkeypatch, collector.port, "http")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
        spec_tracing.enable(exporter="otlp", metrics=False, export_process=export_process)
        _, offered = _phase("trickled", n=2, steps=2)
        stats = spec_tracing.stats()
        for _ in range(600):  # a liveness bound, not a timing one
            if stats["export_failed_spans"] >= offered:
                break
            time.sleep(0.1)
            stats = spec_tracing.stats()
        still_trickling = not collector.released.is_set()
        assert stats["export_failed_spans"] == offered, stats
        assert stats["spans"] == 0
        assert collector.requests >= 1
        assert still_trickling  # the export gave up while the collector was still answering
        assert _shutdown_returns(2000)
    finally:
        collector.release()


def test_a_trickling_http_collector_holds_a_metrics_export_no_longer_than_its_timeout(
    monkeypatch,
):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    from spec_tracing.metrics.readers import _otlp_metric_exporter

    collector = _TricklingCollector()
    try:
        otel = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}  # fmt: skip
        for name, value in otel.items():
            monkeypatch.setenv(name, value)
        reader = PeriodicExportingMetricReader(_otlp_metric_exporter(otel),
                                               export_interval_millis=10**9)  # fmt: skip
        provider = MeterProvider(metric_readers=[reader])
        provider.get_meter("trickle").create_counter("c").add(1)
        flush = threading.Thread(target=provider.force_flush, args=(60_000,))
        flush.start()
        flush.join(60)  # a liveness bound: the collector trickles for far longer
        assert not flush.is_alive()
        assert collector.requests == 1
        assert not collector.released.is_set()
        provider.shutdown(timeout_millis=1000)
    finally:
        collector.release()


@pytest.mark.parametrize("export_process", [True, False], ids=["process", "thread"])
def test_a_drain_larger_than_the_queue_keeps_roots_first(tmp_path, export_process):
    """One drain of 600 requests x (3 steps + a root) = 2,400 spans into a 1,000-span queue:
    every root is kept, steps fill what is left, and the rest is counted dropped."""
    from spec_tracing import ledger
    from spec_tracing.report.otlp_json import read_spans

    trace = tmp_path / "t.jsonl"
    spec_tracing.enable(exporter="file", file=str(trace), export_process=export_process,
                        export_queue_spans=1000, drain_interval_ms=10_000,
                        metrics=False)  # fmt: skip
    _phase("r", n=600)  # its flush is one drain: everything it recorded
    spec_tracing.shutdown(10_000)
    stats = lifecycle.last_stats()
    spans = read_spans(str(trace))
    assert sum(s.name == "spec_request" for s in spans) == 600
    assert stats["export_dropped_spans"] > 0 and stats["spans"] == len(spans)
    assert ledger.gap(stats, 2400) == 0, stats


@pytest.mark.parametrize("export_process", [True, False], ids=["process", "thread"])
def test_steps_dropped_for_room_still_count_on_their_roots(tmp_path, export_process):
    """A verify round whose spans do not fit the queue is dropped as spans, counted, and still
    folded into its requests' acceptance: every root says 1 round, 2 of 3 drafts accepted."""
    from spec_tracing import ledger, set_spec_verify_end_time_batch
    from spec_tracing.report.otlp_json import read_spans
    from spec_tracing.semconv import SpanAttr

    trace = tmp_path / "t.jsonl"
    spec_tracing.enable(exporter="file", file=str(trace), export_process=export_process,
                        export_queue_spans=1000, drain_interval_ms=10_000,
                        metrics=False)  # fmt: skip
    reqs = [ReqTimeStats(rid=f"v-{i}") for i in range(600)]
    set_time_batch(reqs, ReqTimeStats.set_spec_verify_start_time)
    set_spec_verify_end_time_batch(reqs, [2] * 600, proposed=3)
    for r in reqs:
        r.finish()
    spec_tracing.shutdown(10_000)
    stats = lifecycle.last_stats()
    spans = read_spans(str(trace))
    roots = [s for s in spans if s.name == "spec_request"]
    assert len(roots) == 600
    assert stats["export_dropped_spans"] > 0  # 600 verify spans did not fit beside the roots
    assert sum(s.name == "spec_verify" for s in spans) < 600
    assert {(r.attributes[SpanAttr.VERIFY_ROUNDS], r.attributes[SpanAttr.TOTAL_ACCEPTED],
             r.attributes[SpanAttr.TOTAL_PROPOSED]) for r in roots} == {(1, 2, 3)}  # fmt: skip
    assert ledger.gap(stats, 1200) == 0, stats
