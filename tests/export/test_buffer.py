"""The bounded buffer behind the engine's sender and the exporter's Writer (export/buffer.py):
capacity in spans, drop and count, a drain with a deadline, close, and a fresh start after fork."""

import os
import signal
import threading

from spec_tracing.export.buffer import SpanBuffer


def _accounted(buffer: SpanBuffer, offered: int, done: int) -> None:
    """Every span put is waiting, in flight, done, dropped or lost."""
    assert offered == buffer.queued + buffer.in_flight + done + buffer.dropped + buffer.lost


def test_what_does_not_fit_is_dropped_and_counted_and_control_messages_always_fit():
    buffer = SpanBuffer(capacity=10)
    assert buffer.put("a", 6) and buffer.put("b", 4)
    assert buffer.room() == 0
    assert not buffer.put("c", 1)
    assert buffer.put("flush", 0, bounded=False)  # a control message: no span, never dropped
    assert (buffer.queued, buffer.dropped) == (10, 1)
    _accounted(buffer, 11, 0)
    assert [item for item, _ in buffer.items] == ["a", "b", "flush"]


def test_take_gives_the_oldest_items_up_to_a_span_budget_and_done_empties_it():
    buffer = SpanBuffer(capacity=200)
    for name, spans in (("a", 30), ("b", 30), ("c", 50)):
        buffer.put(name, spans)
    first = buffer.take(max_spans=60)
    assert first == [("a", 30), ("b", 30)]
    assert (buffer.queued, buffer.in_flight) == (50, 60)
    assert buffer.take(max_spans=10) == [("c", 50)]  # at least one, whatever its size
    assert buffer.wait_empty(0.0) is False  # 110 spans in flight
    _accounted(buffer, 110, 0)
    buffer.done(60)
    buffer.done(50)
    assert buffer.wait_empty(0.0) is True
    _accounted(buffer, 110, 110)


def test_wait_empty_returns_when_the_consumer_is_done_not_before():
    buffer = SpanBuffer(capacity=100)
    buffer.put("a", 5)
    taken = threading.Event()
    release = threading.Event()

    def consumer():
        ((_, spans),) = buffer.take()
        taken.set()
        release.wait(30)
        buffer.done(spans)

    thread = threading.Thread(target=consumer)
    thread.start()
    assert taken.wait(30)
    assert buffer.wait_empty(0.05) is False  # in flight: the deadline passes
    release.set()
    assert buffer.wait_empty(30) is True
    thread.join(30)


def test_close_wakes_consumers_and_counts_what_waited_and_what_comes_after_as_lost():
    buffer = SpanBuffer(capacity=100)
    results = []
    consumers = [threading.Thread(target=lambda: results.append(buffer.take())) for _ in range(2)]
    for consumer in consumers:
        consumer.start()
    buffer.close()
    for consumer in consumers:
        consumer.join(30)
        assert not consumer.is_alive()
    assert results == [[], []]

    buffer = SpanBuffer(capacity=100)
    buffer.put("a", 7)
    buffer.close()
    assert buffer.take() == []
    assert not buffer.put("b", 3)
    assert (buffer.queued, buffer.lost, buffer.dropped) == (0, 10, 0)
    assert not buffer.items  # freed, not kept
    _accounted(buffer, 10, 0)


def test_a_forked_child_starts_empty_even_if_the_lock_was_held_at_the_fork():
    buffer = SpanBuffer(capacity=10)
    buffer.put("parent's", 4)
    held, release = threading.Event(), threading.Event()

    def hold():
        with buffer.cond:  # a thread of the parent holds the lock across the fork
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(30)
    pid = os.fork()
    if pid == 0:  # the child: without after_fork() this put would wait forever on the lock
        try:
            signal.alarm(30)  # a child stuck on the lock dies (SIGALRM) rather than hang the test
            buffer.after_fork()
            ok = buffer.put("child's", 10) and buffer.take() == [("child's", 10)]
            os._exit(0 if ok and buffer.dropped == buffer.lost == 0 else 1)
        finally:
            os._exit(2)
    release.set()
    holder.join(30)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [item for item, _ in buffer.items] == ["parent's"]  # the parent's is untouched
