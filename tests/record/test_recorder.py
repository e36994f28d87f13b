"""The recorder's own accounting: what shutdown could not drain in time is counted, not lost."""

import threading

from spec_tracing.record import hotpath
from spec_tracing.record.recorder import Recorder


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
