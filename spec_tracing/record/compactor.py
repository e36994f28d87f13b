"""Off the engine's thread: batch events -> compact events, acceptance and metrics.

Runs on the recorder's thread in the engine's process and keeps its per-request work to a few
attribute reads and, for verify, one acceptance update: the per-request expansion into spans is
the assembler's (assembler.py), in the exporter process when there is one. Bad input (a request
without time stats, counts of the wrong length, negative or non-integer counts) drops that event
and is counted; a single warning says so.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from typing import Any

from ..semconv import SpanAttr
from ..stages import RequestStage
from ..wire import END, FINISH, SLICE, START
from .request_trace import ReqTimeStats

logger = logging.getLogger(__name__)

_VERIFY = RequestStage.SPEC_VERIFY.name


class InvalidEvent(ValueError):
    pass


def _counts(values: Any, n: int, what: str) -> list[int] | None:
    if values is None:
        return None
    if isinstance(values, int) and not isinstance(values, bool):
        values = [values] * n
    elif hasattr(values, "tolist"):  # torch tensor / numpy array, read here, off the hot thread
        values = values.tolist()
    try:
        out = [operator.index(v) for v in values]
    except TypeError:
        raise InvalidEvent(f"{what} must be integers, got {values!r:.80}") from None
    if len(out) != n:
        raise InvalidEvent(f"{what} has {len(out)} entries for a batch of {n}")
    if any(v < 0 for v in out):
        raise InvalidEvent(f"{what} must be >= 0, got {out!r:.80}")
    return out


def _time_stats(req: Any) -> ReqTimeStats:
    stats = req if isinstance(req, ReqTimeStats) else getattr(req, "time_stats", None)
    if not isinstance(stats, ReqTimeStats):
        raise InvalidEvent(f"request {req!r:.60} has no ReqTimeStats (.time_stats)")
    return stats


def _handles(stats: list) -> tuple:
    return tuple(st.handle for st in stats if st.sampled)


class Materializer:
    """The recorder's consumer: engine events in, compact events (assembler.py) out to
    `deliver`. What stays here is what must stay in the engine's process: resolving requests,
    checking counts, per-request acceptance (ReqTimeStats.summary) and the metrics."""

    def __init__(self, deliver: Callable[[list], None]):
        self.deliver = deliver
        self.invalid = 0
        self.metrics = None  # SpecMetrics, when metrics are on

    def __call__(self, events: list) -> None:
        out: list = []
        for event in events:
            try:
                self._process(event, out)
            except InvalidEvent as exc:
                self.invalid += 1
                if self.invalid == 1:
                    logger.warning(
                        "spec-tracing: dropped an event: %s (further bad events are "
                        "counted, not logged)",
                        exc,
                    )
        if out:
            self.deliver(out)

    def _process(self, event: tuple, out: list) -> None:
        kind, stage, t0, t1, reqs, accepted, proposed, attrs = event
        stats = [_time_stats(r) for r in reqs]
        if kind == FINISH:
            self._finish(stats[0], t0, attrs or {}, out)
            return
        name = stage.name
        if kind == START:
            handles = _handles(stats)
            if handles:
                out.append((START, name, t0, handles))
            return
        n = len(stats)
        acc = _counts(accepted, n, "accepted counts")
        prop = _counts(proposed, n, "proposed counts")
        batch_attrs = {SpanAttr.BATCH_SIZE: n}
        if attrs:
            batch_attrs.update(attrs)
        if name == _VERIFY and acc is not None:
            if prop is None:
                # The width actually offered this round: the batch's, if not given per request;
                # unknown otherwise (the round then counts for accept_length only).
                prop = [batch_attrs.get(SpanAttr.NUM_STEPS)] * n
            for st, a, p in zip(stats, acc, prop, strict=True):
                st.acceptance.add(a, p)
            if self.metrics is not None:  # every request counts, sampled or not
                self.metrics.record_verify(acc, prop, batch_attrs)
        else:
            acc = prop = None
        handles = _handles(stats)
        if not handles:
            return
        if len(handles) < n and acc is not None:
            keep = [i for i, st in enumerate(stats) if st.sampled]
            acc, prop = [acc[i] for i in keep], [prop[i] for i in keep]
        if kind == END:
            out.append((END, name, t0, handles, acc, prop, batch_attrs))
        else:
            out.append((SLICE, name, t0, t1, handles, acc, prop, batch_attrs))

    def _finish(self, st: ReqTimeStats, ts: float, how: dict, out: list) -> None:
        if not st.sampled:
            return
        summary = st.acceptance.as_dict()
        attrs: dict[str, Any] = dict(st.attributes)
        if st.rid is not None:
            attrs[SpanAttr.REQUEST_ID] = str(st.rid)
        attrs[SpanAttr.FINISH_REASON] = how.get("reason", "stop")
        attrs[SpanAttr.VERIFY_ROUNDS] = summary["verify_rounds"]
        attrs[SpanAttr.TOTAL_ACCEPTED] = summary["accepted_drafts"]
        attrs[SpanAttr.TOTAL_PROPOSED] = summary["proposed_drafts"]
        for key, attr in (
            ("accept_rate", SpanAttr.ACCEPT_RATE),
            ("accept_length", SpanAttr.ACCEPT_LENGTH),
        ):
            if summary[key] is not None:
                attrs[attr] = summary[key]
        out.append((FINISH, st.handle, ts, (st.parent, st.start_ts, attrs, how.get("error"))))
