"""The tuples that cross thread and process boundaries, typed in one place.

Four shapes, one per hop of the pipeline:

- Engine events (record/hotpath.py -> the recorder's thread): flat tuples
  ``(kind, stage, t0, t1, reqs, accepted, proposed, attrs)``, where `reqs` are the engine's own
  request objects (or ReqTimeStats) and the counts are whatever the engine passed (a tensor is
  kept by reference and read off the engine's thread).
- Compact events (record/compactor.py -> pipeline/signals.py, possibly over a pipe): the
  engine's objects replaced by handles ``(trace_id, root_span_id)``, counts checked and made
  lists of ints; every traced request of a batch (its acceptance and times count), sampled or
  not.
- Assembler events (pipeline/signals.py -> export/assembler.py): the sampled requests only, with
  each verify round's output offsets, computed where the requests' acceptance is kept.
- Span records (export/assembler.py -> export/sdk_spans.py or export/otlp_proto.py): one per
  stage occurrence batch or per request root; plain ints, floats and strings, cheap to pickle.

Tuples rather than classes: the engine's thread builds one per batch and stage, and a tuple is
the cheapest object Python makes (a dataclass instance costs ~4x as much to create).
"""

from __future__ import annotations

from typing import TypeAlias

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

# (kind, stage: StageConfig, t0, t1 | None, reqs, accepted, proposed, attrs | None), and for a
# verify the engine's own output offsets may follow (a ninth field)
EngineEvent: TypeAlias = tuple

# Compact events:
# (START, name, t, keys, flags)
# (END, name, t, keys, flags, accepted | None, proposed | None, batch_attrs, positions | None)
# (SLICE, name, t0, t1, keys, flags, accepted | None, proposed | None, batch_attrs,
#  positions | None)
#   keys: the handles of the batch's traced requests (all of them when metrics are on, else the
#   sampled ones); flags: None when every one is sampled with output_base 1, else per key
#   (sampled, output_base); the counts are per key; positions: per key, the engine's count of
#   the request's output tokens before this verify round (None: follow from the rounds)
# (FINISH, handle, t, (parent, t0, attrs, error | None), EngineFacts)
#   every traced request, sampled or not (the metrics count them all); only a sampled one
#   becomes a root span (attrs then hold its attributes, else only its gen_ai.* ones)
CompactEvent: TypeAlias = tuple


def compact_span_count(event: CompactEvent) -> int:
    """Spans a compact event will make: a stage end or slice per sampled key; a root for a
    sampled request."""
    kind = event[0]
    if kind == FINISH:
        return event[4][0]
    if kind == SLICE or kind == END:
        keys, flags = (event[4], event[5]) if kind == SLICE else (event[3], event[4])
        return len(keys) if flags is None else sum([f[0] for f in flags])
    return 0


# What a request's end carries from the engine's process:
# (sampled, first_token_ts | None, verify_recorded, prefill_start_ts | None)
EngineFacts: TypeAlias = tuple[bool, float | None, bool, float | None]

# Assembler events (sampled requests only):
# (START, name, t, handles)
# (END, name, t, handles, accepted | None, proposed | None, batch_attrs, offsets | None)
# (SLICE, name, t0, t1, handles, accepted | None, proposed | None, batch_attrs, offsets | None)
#   offsets: per request, where in its output the verify round's first token is
# (FINISH, handle, t, (parent, t0, attrs, error | None))
AssemblerEvent: TypeAlias = tuple

# A request's figures' input, once its end is known (pipeline/signals.py):
# (sampled, (rounds, accepted, proposed, rate_accepted, next_offset),
#  (draft_s, verify_s, extend_s), first_token_ts | None, verify_recorded,
#  prefill_start_ts | None)
Facts: TypeAlias = tuple[bool, tuple[int, int, int, int, int], tuple[float, float, float],
                         float | None, bool, float | None]  # fmt: skip

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


# Messages between the engine's process and the exporter process (export/process.py ->
# pipeline/serve.py and back), besides lists of compact events:
#   (SETTINGS, settings, version, resource_attributes, metrics: {"otlp": bool} | None)
#   (ENGINE_COUNTS, {name: int})       the engine's process's part of the ledger
#   (FLUSH, timeout_ms, request_id)    answered (FLUSHED, counts, ok, request_id)
#   (STOP, timeout_ms, request_id)     answered (STOPPED, counts, ok, request_id)
# and, unasked, (COUNTS, counts, None, None) when losses grow. A reply names the request it
# answers: a flush that timed out and whose reply comes late never answers the next flush.
SETTINGS = "settings"
ENGINE_COUNTS = "engine_counts"
FLUSH = "flush"
FLUSHED = "flushed"
STOP = "stop"
STOPPED = "stopped"
COUNTS = "counts"
