"""The tuples that cross thread and process boundaries, typed in one place.

Three shapes, one per hop of the pipeline:

- Engine events (record/hotpath.py -> the recorder's thread): flat tuples
  ``(kind, stage, t0, t1, reqs, accepted, proposed, attrs)``, where `reqs` are the engine's own
  request objects (or ReqTimeStats) and the counts are whatever the engine passed (a tensor is
  kept by reference and read off the engine's thread).
- Compact events (record/compactor.py -> export/assembler.py, possibly over a pipe): the engine's
  objects replaced by handles ``(trace_id, root_span_id)``, counts checked and made lists of ints.
- Span records (export/assembler.py -> export/sdk_spans.py or export/otlp_proto.py): one per
  stage occurrence batch or per request root; plain ints, floats and strings, cheap to pickle.

Tuples rather than classes: the engine's thread builds one per batch and stage, and a tuple is
the cheapest object Python makes (a dataclass instance costs ~4x as much to create).
"""

from __future__ import annotations

from typing import Any, TypeAlias

# Event kinds (the first field of an engine event and of a compact event).
START = 0  # stage began at t0 for reqs
END = 1  # stage ended at t0 for reqs (paired with the request's last START of that stage)
SLICE = 2  # stage ran t0..t1 for reqs
FINISH = 3  # request reqs[0] finished at t0; attrs may hold {"reason":..., "error":...}

# Span record kinds (the first field of a span record).
STAGE_RECORD = 0
ROOT_RECORD = 1

Handle: TypeAlias = tuple[int, int]  # (trace_id, root span_id) of a request
Parent: TypeAlias = tuple[int, int, int] | None  # remote parent (trace_id, span_id, flags)

# (kind, stage: StageConfig, t0, t1 | None, reqs, accepted, proposed, attrs | None)
EngineEvent: TypeAlias = tuple[int, Any, float, float | None, tuple, Any, Any, dict | None]

# (START, name, t, handles)
# (END, name, t, handles, accepted | None, proposed | None, batch_attrs, offsets | None)
# (SLICE, name, t0, t1, handles, accepted | None, proposed | None, batch_attrs, offsets | None)
#   offsets: per request, where in its output the verify round's first token is
# (FINISH, handle, t, (parent, t0, attrs, error | None))
CompactEvent: TypeAlias = tuple

# A row of a stage record:
# (trace_id, root_id, t0, t1, step, accepted | None, proposed | None, output_offset | None)
StageRow: TypeAlias = tuple[int, int, float, float, int, int | None, int | None, int | None]
# (STAGE_RECORD, name, batch_attrs, rows)
StageRecord: TypeAlias = tuple[int, str, dict, list[StageRow]]
# (ROOT_RECORD, trace_id, span_id, parent, t0, t1, attrs, error | None)
RootRecord: TypeAlias = tuple[int, int, int, Parent, float, float, dict, str | None]
SpanRecord: TypeAlias = StageRecord | RootRecord


def record_span_count(record: SpanRecord) -> int:
    """How many spans a span record stands for."""
    return len(record[3]) if record[0] == STAGE_RECORD else 1
