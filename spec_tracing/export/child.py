"""The bounded buffer of span records and its export threads (Writer), used by the exporter
process (pipeline/serve.py) and by in-thread export; imports nothing from the engine side
(record/)."""

from __future__ import annotations

import logging
import pickle
import threading
import time

from opentelemetry.sdk.trace.export import SpanExportResult

from ..threadname import name_this_thread
from ..wire import ROOT_RECORD, record_span_count
from .buffer import SpanBuffer

logger = logging.getLogger(__name__)


class Writer:
    """The exporter process's bounded buffer and export threads. Records wait here while the
    exporter is slow or the collector is down; past `capacity` spans, new records are dropped
    and counted (one warning), so memory stays bounded and the pipe keeps draining."""

    BATCH_SPANS = 4096
    # Past this many waiting spans (export is behind: the collector is slow or down), chunks wait
    # pickled: ~55 bytes a span instead of ~110 as Python objects, for ~1 us of this process's
    # CPU per span (pickled and unpickled). Below it, nothing is paid.
    PACK_ABOVE_SPANS = 4 * BATCH_SPANS
    # Export threads: while one waits on the collector (the GIL released), the next encodes its
    # batch. One thread alternated encoding and waiting and topped out near 210k spans/s into a
    # receiver on the other core (benchmark 4); batches may then arrive out of order, which OTLP
    # allows (every span carries its trace and parent ids).
    THREADS = 2

    def __init__(self, exporter, encode, build, capacity: int, on_loss=None):
        self.on_loss = on_loss  # called (from any thread) when drops or failures grow
        self.exporter, self.encode, self.build = exporter, encode, build
        self.buffer = SpanBuffer(capacity)
        self.exported = 0
        self.failed = 0  # spans whose export the exporter reported failed
        self.failing = False
        self._warned_at = -1e9  # when "export failing" was last said
        self._warned_failing = False  # it was said for the outage in progress
        self._start_threads()

    def _start_threads(self) -> None:
        self.threads = [
            threading.Thread(target=self._run, name=f"spec-tracing-export-{i}", daemon=True)
            for i in range(self.THREADS)
        ]
        for thread in self.threads:
            thread.start()

    def after_fork_in_child(self) -> None:
        """In a forked child (exporting in the engine's process): the parent's threads are not
        here, its queue is the parent's to export; this process starts with its own."""
        self.buffer.after_fork()
        self.exported = self.failed = 0
        self.failing = False
        self._start_threads()

    @property
    def dropped(self) -> int:
        return self.buffer.dropped

    @property
    def left_unexported(self) -> int:
        """Spans a stopped Writer will never export: counted lost (0 while running)."""
        buffer = self.buffer
        return buffer.lost + buffer.in_flight if buffer.closed else 0

    def put(self, records: list) -> None:
        if sum(map(record_span_count, records)) > self.buffer.room():
            # More than fits: roots first, in chunks of their own, so that what is dropped is
            # steps (tests/export/test_resilience.py::test_a_drain_larger_than_the_queue_*).
            self._put_chunks([r for r in records if r[0] == ROOT_RECORD])
            self._put_chunks([r for r in records if r[0] != ROOT_RECORD])
        else:
            self._put_chunks(records)

    def _put_chunks(self, records: list) -> None:
        # Chunks of at most BATCH_SPANS spans, so one export request stays ~1 MB (gRPC
        # receivers refuse messages over 4 MB by default).
        chunk: list = []
        count = 0
        for record in records:
            n = record_span_count(record)
            if chunk and count + n > self.BATCH_SPANS:
                self._put_chunk(chunk, count)
                chunk, count = [], 0
            chunk.append(record)
            count += n
        if chunk:
            self._put_chunk(chunk, count)

    def _put_chunk(self, records: list, count: int) -> None:
        # The buffer's fill is read without its lock: it only picks the form a chunk waits in,
        # and pickling a chunk (a few ms) must not hold up the export threads.
        buffer = self.buffer
        if self.PACK_ABOVE_SPANS <= buffer.queued <= buffer.capacity - count:
            records = pickle.dumps(records, pickle.HIGHEST_PROTOCOL)
        if buffer.put(records, count):
            return
        if buffer.dropped == count:
            logger.warning("spec-tracing exporter: export is behind; dropping spans (counted)")
        if self.on_loss is not None:
            self.on_loss()

    def _run(self) -> None:
        name_this_thread()
        while True:
            taken = self.buffer.take(self.BATCH_SPANS)
            if not taken:  # closed: stop's time is up, what is still queued is not exported
                return
            records: list = []
            count = 0
            for chunk, n in taken:
                records.extend(pickle.loads(chunk) if type(chunk) is bytes else chunk)
                count += n
            try:
                failed = self._export(records, count)
            except Exception as exc:
                failed, why = count, f"{type(exc).__name__}: {exc}"
            else:
                why = "the collector did not accept it"
            ok = not failed
            self._note_outcome(ok, why)
            with self.buffer.cond:  # counted before done(): a flush that returns sees them
                self.exported += count - failed
                self.failed += failed
                self.buffer.done(count)
            if not ok and self.on_loss is not None:
                self.on_loss()

    # One warning per outage, and at most one a minute: a collector down for an hour, or one
    # that flaps between 200 and 500 (161 lines in 10 s), must not flood the engine's log.
    # The counts say how much was lost.
    WARN_EVERY_S = 60.0

    def _note_outcome(self, ok: bool, why: str) -> None:
        if ok == (not self.failing):
            return
        self.failing = not ok
        now = time.monotonic()
        if not ok and now - self._warned_at >= self.WARN_EVERY_S:
            self._warned_at = now
            self._warned_failing = True
            logger.warning("spec-tracing exporter: export failing (%s); counting losses", why)
        elif ok and self._warned_failing:
            self._warned_failing = False
            logger.warning("spec-tracing exporter: export resumed")

    def _export(self, records: list, count: int) -> int:
        """Export one batch; the number of its spans that failed."""
        if self.exporter is None:
            return 0
        if not self.encode:
            return (
                0
                if self.exporter.export(self.build(records)) == SpanExportResult.SUCCESS
                else count
            )
        failed = 0
        for part in self.encode(records):  # requests of at most MAX_REQUEST_BYTES each
            if self.exporter.export(part) != SpanExportResult.SUCCESS:
                failed += part.count
        return failed

    def flush(self, timeout_s: float) -> bool:
        return self.buffer.wait_empty(timeout_s)

    def abandon(self) -> None:
        """Stop without waiting: what is queued or in flight, and what is put from here on, is
        left unexported (counted lost by its owner through left_unexported)."""
        self.buffer.close()

    def stop(self, timeout_s: float) -> None:
        """Export what is queued within `timeout_s` in all (flush, then the threads' last
        batches); what is left then is not exported and not counted here: the engine's process
        counts what was never reported on as lost."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        self.flush(timeout_s)
        self.buffer.close()
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def rejected(self) -> int:
        """Spans the collector rejected through partial_success (inside `exported` so far). A
        collector's count is untrusted: never more than were sent to it."""
        return min(getattr(self.exporter, "rejected_spans", 0), self.exported)

    @property
    def accepted(self) -> int:
        """Spans the receiver took and kept: "exported" in stats()."""
        return self.exported - self.rejected

    def counts(self) -> dict:
        return {
            "exported_spans": self.accepted,
            "dropped_spans": self.dropped,
            "failed_spans": self.failed,
            "rejected_spans": self.rejected,
        }


# Collectors refuse gRPC messages over 4 MiB by default: requests stay under 3 MiB, so that a
# batch with large attributes fails nowhere (one 5 MB value failed all 2,002 spans of its batch).
MAX_REQUEST_BYTES = 3 * 1024 * 1024


def split_by_size(spans: list[bytes], limit: int) -> list[list[bytes]]:
    parts, part, size = [], [], 0
    for span in spans:
        if part and size + len(span) > limit:
            parts.append(part)
            part, size = [], 0
        part.append(span)
        size += len(span)
    if part:
        parts.append(part)
    return parts


def make_writer(
    settings, version: str, on_loss=None, exporter=None, resource_attributes=None
) -> Writer:
    """A Writer around `exporter` (default: the one SPEC_TRACING_EXPORTER names), encoding OTLP
    by hand when the exporter takes pre-encoded spans."""
    from opentelemetry.sdk.resources import Resource

    from ..semconv import INSTRUMENTATION_SCOPE
    from .exporters import build_span_exporter
    from .otlp_proto import OtlpEncoder
    from .sdk_private import EncodedSpans, accepts_encoded
    from .sdk_spans import SpanBuilder

    resource = Resource.create(dict(resource_attributes or {}))
    if exporter is None:
        exporter = build_span_exporter(settings)
    encode = None
    if accepts_encoded(exporter):
        encoder = OtlpEncoder(resource.attributes, INSTRUMENTATION_SCOPE, version)

        def encode(records):
            parts = split_by_size(encoder.spans(records), MAX_REQUEST_BYTES)
            return [EncodedSpans(encoder.request(part), len(part)) for part in parts]

    builder = SpanBuilder(resource, version)
    return Writer(exporter, encode, builder.build, settings.export_queue_spans, on_loss)
