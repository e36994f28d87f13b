"""The exporter process's buffer (export/child.py Writer): while export is behind, chunks past
PACK_ABOVE_SPANS wait pickled, and come out whole and once each."""

import pickle
import sys
import threading

from spec_tracing.export.child import Writer
from spec_tracing.wire import STAGE_RECORD


class _HeldExporter:
    """Accepts batches only once released; records what it was given."""

    def __init__(self):
        self.release = threading.Event()
        self.taken = threading.Event()  # an export thread holds a batch
        self.batches = []

    def export(self, payload):
        self.taken.set()
        self.release.wait(30)
        self.batches.append(payload)
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


# A request's ids are the same int objects in every record (the assembler keeps its handle).
HANDLES = [(2**100 + i, 2**60 + i) for i in range(256)]


def _record(step: int, width: int = 64):
    t0, t1 = 1.0 * step, 1.0 * step + 0.5  # one start and end for the batch
    rows = [(*HANDLES[i], t0, t1, step, i % 4, 3, step * 2 + 1) for i in range(width)]
    return (STAGE_RECORD, "spec_verify", {"spec_decode.batch_size": width}, rows)


def test_chunks_wait_pickled_past_the_threshold_and_come_out_whole():
    exporter = _HeldExporter()
    writer = Writer(exporter, None, lambda records: list(records), capacity=100_000)
    writer.PACK_ABOVE_SPANS = 640  # ten records of 64
    sent = [_record(step) for step in range(40)]
    writer.put([sent[0]])
    assert exporter.taken.wait(30)  # the first chunk is with the (held) exporter: a loaded
    for record in sent[1:]:  # machine could otherwise pack it before a thread took it
        writer.put([record])
    with writer.buffer.cond:
        kinds = [type(chunk) for chunk, _ in writer.buffer.items]
    # The first chunk may already be with the (held) exporter; the rest wait, the later ones packed.
    assert bytes in kinds and list in kinds
    assert kinds.index(bytes) > 0 and all(k is bytes for k in kinds[kinds.index(bytes) :])
    packed = sum(len(chunk) for chunk, _ in writer.buffer.items if type(chunk) is bytes)
    as_objects = sum(len(pickle.dumps(c)) for c, _ in writer.buffer.items if type(c) is list)
    assert packed and as_objects  # both forms present, sizes computed from the real queue

    exporter.release.set()
    assert writer.flush(30)
    got = [record for batch in exporter.batches for record in batch]
    # Every record once, rows intact; the export threads may deliver batches out of order.
    assert sorted(got, key=lambda r: r[3][0][4]) == sent
    assert writer.counts() == {
        "exported_spans": 40 * 64,
        "dropped_spans": 0,
        "failed_spans": 0,
        "rejected_spans": 0,
    }
    writer.stop(5)


def test_a_packed_span_costs_less_memory_than_the_same_span_as_objects():
    # What the buffer holds per span either way, measured on the same records.
    records = [_record(step, 256) for step in range(20)]
    spans = 20 * 256
    packed = len(pickle.dumps(records, pickle.HIGHEST_PROTOCOL)) / spans

    def deep(obj, seen):
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        size = sys.getsizeof(obj)
        if isinstance(obj, (list, tuple)):
            size += sum(deep(x, seen) for x in obj)
        elif isinstance(obj, dict):
            size += sum(deep(k, seen) + deep(v, seen) for k, v in obj.items())
        return size

    objects = deep(records, set()) / spans
    assert packed < 100 < objects, (packed, objects)
