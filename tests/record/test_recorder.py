"""The recorder's own accounting: what shutdown could not drain in time is counted, not lost."""

import threading
import time

import pytest

from spec_tracing.record import hotpath
from spec_tracing.record.recorder import DRAIN_AT_EVENTS, MIN_DRAIN_GAP_S, Recorder


def test_events_still_buffered_when_shutdown_runs_out_of_time_are_counted():
    busy, release = threading.Event(), threading.Event()
    consumed = []

    def slow_consumer(events):
        busy.set()
        release.wait(60)  # a consumer stuck on one batch (a huge one, a slow exporter)
        consumed.extend(events)

    recorder = Recorder(slow_consumer, capacity=1000, level=2, interval_s=0.01)
    try:
        recorder.queue.append("first")
        assert busy.wait(30)
        recorder.queue.extend(["a", "b", "c"])
        assert recorder.shutdown(0.2) is False
        assert recorder.undrained == 3
    finally:
        release.set()
        hotpath._deactivate()
    recorder._thread.join(30)
    assert consumed[:1] == ["first"]


def test_drain_soon_is_rate_limited():
    """An engine that asks for a drain at every step gets one at most every MIN_DRAIN_GAP_S; the
    asks still drain long before the interval (10 s here) would."""
    drains: list[float] = []
    recorder = Recorder(lambda events: drains.append(time.monotonic()), capacity=10_000,
                        level=2, interval_s=10.0)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while len(drains) < 4 and time.monotonic() < deadline:
            recorder.queue.append("step")
            recorder.drain_soon()
            time.sleep(0.001)
    finally:
        recorder.shutdown(1.0)
        hotpath._deactivate()
    assert len(drains) >= 4
    gaps = [b - a for a, b in zip(drains[:3], drains[1:4], strict=True)]
    assert min(gaps) >= MIN_DRAIN_GAP_S * 0.99, gaps


def test_a_filling_buffer_is_drained_before_the_interval():
    """The append that makes DRAIN_AT_EVENTS wait wakes the recorder: a busy engine's drain stays
    that size whatever the interval (an interval's worth at 300k spans/s outgrew the exporter's
    queue), while a quiet engine's events wait for the interval."""
    drained = threading.Event()
    sizes: list[int] = []

    def consume(events):
        sizes.append(len(events))
        drained.set()

    recorder = Recorder(consume, capacity=10_000, level=2, interval_s=3600.0)
    dropped_before = hotpath.dropped
    try:
        for _ in range(DRAIN_AT_EVENTS - 1):
            hotpath._push(("step",))
        assert not drained.wait(0.2)  # below the mark: left for the interval
        hotpath._push(("step",))
        hotpath._push(("step",))  # the one that finds DRAIN_AT_EVENTS waiting wakes it
        assert drained.wait(30)  # long before the hour's interval
        assert sum(sizes) >= DRAIN_AT_EVENTS
        assert hotpath.dropped == dropped_before
    finally:
        recorder.shutdown(1.0)
        hotpath._deactivate()


@pytest.mark.parametrize("level", [1, 2])
def test_below_level_2_roots_leave_acceptance_out_rather_than_say_zero(level):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import spec_tracing
    from spec_tracing import ReqTimeStats, record_batch_stage
    from spec_tracing.semconv import SpanAttr
    from spec_tracing.stages import RequestStage

    exporter = InMemorySpanExporter()
    spec_tracing.enable(span_exporter=exporter, level=level, metrics=False)
    try:
        req = ReqTimeStats(rid="r")
        record_batch_stage([req], RequestStage.SPEC_VERIFY, 1.0, 2.0, [2], [3])
        req.finish()
        assert spec_tracing.flush(10_000)
        (root,) = [s for s in exporter.get_finished_spans() if s.name == "spec_request"]
    finally:
        spec_tracing.shutdown()
    if level == 1:  # verify is not recorded: unknown, so absent (it said 0 rounds)
        assert SpanAttr.VERIFY_ROUNDS not in root.attributes
        assert SpanAttr.TOTAL_ACCEPTED not in root.attributes
    else:
        assert root.attributes[SpanAttr.VERIFY_ROUNDS] == 1
        assert root.attributes[SpanAttr.TOTAL_ACCEPTED] == 2
