"""Spans read from an OTLP JSON file -> Chrome trace-event JSON, which Perfetto
(ui.perfetto.dev, or its local trace_processor) and chrome://tracing open.

Format: the JSON Object Format of the Trace Event Format document (Chromium, "Trace Event
Format"): `traceEvents` holds complete events (`ph` "X", `ts`/`dur` in microseconds), metadata
events ("M": process and thread names, sort order), counter events ("C") and thread-scoped
instant events ("i", `s` "t").

Layout: one process "requests" with a thread (track) per request, its root slice and under it its
stage slices (args: every span attribute, the span and trace ids). Slices on one thread must nest;
stages that overlap on one request (an overlap scheduler) or fall outside its root go to an extra
track named after the request, so nothing is dropped or misdrawn. An instant event marks when a
request got its batch slot (its first stage), with how long it waited. Process "engine" has
counter tracks per verify batch: batch size, draft width and the batch's accept rate. Spans whose
root is not in the file get a track per trace.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from ..semconv import SpanAttr
from ..stages import RequestStage
from .otlp_json import OtlpSpan, by_root, dumps

ROOT = RequestStage.REQUEST.name
REQUESTS_PID, ENGINE_PID = 1, 2


def _us(ns: int) -> float:
    return ns / 1000.0


def _args(span: OtlpSpan) -> dict:
    args = {k: (v if isinstance(v, bool | int | float | str) else str(v))
            for k, v in span.attributes.items()}  # fmt: skip
    args.update(trace_id=span.trace_id, span_id=span.span_id)
    if span.status_code == 2:
        args["status"] = f"ERROR {span.status_message}".strip()
    return args


class _Tracks:
    """Threads of process "requests": a request's main track holds its root and the stages that
    nest in it; the rest go to the first extra track where they do not overlap."""

    def __init__(self, t0: int):
        self.t0 = t0
        self.events: list[dict] = []
        self._next_tid = 1

    def take(self) -> list[dict]:
        """The events made since the last take."""
        events, self.events = self.events, []
        return events

    def new(self, name: str, sort: int) -> int:
        tid, self._next_tid = self._next_tid, self._next_tid + 1
        self.events += [
            {"ph": "M", "name": "thread_name", "pid": REQUESTS_PID, "tid": tid,
             "args": {"name": name}},
            {"ph": "M", "name": "thread_sort_index", "pid": REQUESTS_PID, "tid": tid,
             "args": {"sort_index": sort}},
        ]  # fmt: skip
        return tid

    def slice(self, span: OtlpSpan, tid: int) -> None:
        self.events.append({
            "ph": "X", "name": span.name, "cat": "spec_tracing", "pid": REQUESTS_PID, "tid": tid,
            "ts": _us(span.start_ns - self.t0), "dur": _us(max(0, span.end_ns - span.start_ns)),
            "args": _args(span),
        })  # fmt: skip

    def request(self, name: str, sort: int, root: OtlpSpan | None, stages: list[OtlpSpan]):
        main = self.new(name, sort)
        # [tid, end of its last slice]; without a root the main track is an ordinary lane
        lanes: list[list] = [] if root is not None else [[main, 0]]
        main_end = root.start_ns if root is not None else 0
        if root is not None:
            self.slice(root, main)
        for s in sorted(stages, key=lambda s: (s.start_ns, s.end_ns)):
            fits_root = root is not None and root.start_ns <= s.start_ns and s.end_ns <= root.end_ns
            if fits_root and s.start_ns >= main_end:
                self.slice(s, main)
                main_end = max(s.end_ns, s.start_ns)
                continue
            lane = next((lane for lane in lanes if s.start_ns >= lane[1]), None)
            if lane is None:
                extra = len(lanes) + (2 if root is not None else 1)
                lane = [self.new(f"{name} ({extra})", sort), 0]
                lanes.append(lane)
            self.slice(s, lane[0])
            lane[1] = max(s.end_ns, s.start_ns)
        if root is not None and stages:
            first = min(s.start_ns for s in stages)
            if first >= root.start_ns:
                self.events.append({
                    "ph": "i", "s": "t", "name": "batch slot", "cat": "spec_tracing",
                    "pid": REQUESTS_PID, "tid": main, "ts": _us(first - self.t0),
                    "args": {"waited_ms": (first - root.start_ns) / 1e6},
                })  # fmt: skip


def _counts(span: OtlpSpan) -> tuple:
    return span.attributes.get(SpanAttr.ACCEPTED_TOKENS), span.attributes.get(
        SpanAttr.PROPOSED_TOKENS
    )


def _counters(spans: list[OtlpSpan], t0: int) -> list[dict]:
    """One sample per verify batch (the verify spans sharing start and end)."""
    batches: dict[tuple, list[OtlpSpan]] = defaultdict(list)
    for s in spans:
        if s.name == RequestStage.SPEC_VERIFY.name:
            batches[(s.start_ns, s.end_ns)].append(s)
    events = []
    for (start, _), batch in sorted(batches.items()):
        ts = _us(start - t0)
        first = batch[0].attributes
        size = first.get(SpanAttr.BATCH_SIZE, len(batch))
        events.append({"ph": "C", "name": "batch size", "pid": ENGINE_PID, "ts": ts,
                       "args": {"requests": size}})  # fmt: skip
        width = first.get(SpanAttr.NUM_STEPS)
        if isinstance(width, int | float):
            events.append({"ph": "C", "name": "draft width", "pid": ENGINE_PID, "ts": ts,
                           "args": {"tokens": width}})  # fmt: skip
        known = [(a, p) for a, p in (_counts(s) for s in batch)
                 if isinstance(a, int) and isinstance(p, int)]  # fmt: skip
        proposed = sum(p for _, p in known)
        if proposed:
            events.append({"ph": "C", "name": "accept rate", "pid": ENGINE_PID, "ts": ts,
                           "args": {"rate": sum(a for a, _ in known) / proposed}})  # fmt: skip
    return events


_META = [
    {"ph": "M", "name": "process_name", "pid": REQUESTS_PID, "args": {"name": "requests"}},
    {"ph": "M", "name": "process_sort_index", "pid": REQUESTS_PID, "args": {"sort_index": 1}},
    {"ph": "M", "name": "process_name", "pid": ENGINE_PID, "args": {"name": "engine"}},
    {"ph": "M", "name": "process_sort_index", "pid": ENGINE_PID, "args": {"sort_index": 0}},
]


def to_trace_events(spans: list[OtlpSpan]) -> dict:
    """The Chrome trace-event JSON object for `spans` (every span one complete event)."""
    t0 = min((s.start_ns for s in spans), default=0)
    events = [e for batch in _request_events(spans, t0) for e in batch]
    return {"traceEvents": _META + events + _counters(spans, t0), **_tail(t0)}


def trace_event_chunks(spans: list[OtlpSpan]) -> Iterator[str]:
    """to_trace_events's JSON text (as otlp_json.dumps writes it), a request at a time: the
    file is written without the whole document in memory."""
    t0 = min((s.start_ns for s in spans), default=0)
    yield '{"traceEvents":' + dumps(_META)[:-1]
    for batch in _request_events(spans, t0):
        if batch:
            yield "," + dumps(batch)[1:-1]
    counters = _counters(spans, t0)
    yield ("," + dumps(counters)[1:-1] if counters else "") + "]," + dumps(_tail(t0))[1:]


def _tail(t0: int) -> dict:
    return {"displayTimeUnit": "ms", "otherData": {"source": "spec-tracing", "t0_unix_ns": t0}}


def _request_events(spans: list[OtlpSpan], t0: int) -> Iterator[list[dict]]:
    """The requests' tracks and slices, a request at a time."""
    roots, stages, orphans = by_root(spans, ROOT)
    tracks = _Tracks(t0)
    for sort, root in enumerate(roots):
        name = str(root.attributes.get(SpanAttr.REQUEST_ID, root.span_id))
        tracks.request(name, sort, root, stages.get(root.span_id, []))
        yield tracks.take()
    for sort, (trace_id, lost) in enumerate(sorted(orphans.items()), start=len(roots)):
        tracks.request(f"trace {trace_id[:8]} (root not in file)", sort, None, lost)
        yield tracks.take()
