"""Off the engine's thread: batch events -> per-request span records, acceptance and metrics.

Runs on the recorder's thread in the engine's process. It owns all per-request bookkeeping (stage
starts waiting for their end, step counters, acceptance totals) so that ReqTimeStats.summary() and
the metrics stay in the engine's process, and it hands compact span records (spans.py) to
`deliver`: the span sink directly, or the channel to the exporter process. Bad input (a request
without time stats, counts of the wrong length, negative or non-integer counts) drops that event
and is counted; a single warning says so.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from typing import Any

from .attributes import SpanAttr
from .hotpath import END, FINISH, START
from .spans import ROOT_RECORD, STAGE_RECORD
from .stages import RequestStage
from .timestats import ReqTimeStats

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


class Materializer:
    """The recorder's consumer: events in, span records out (to `deliver`)."""

    def __init__(self, deliver: Callable[[list], None]):
        self.deliver = deliver
        self.invalid = 0
        self.unmatched = 0
        self.metrics = None  # SpecMetrics, when metrics are on

    def __call__(self, events: list) -> None:
        records: list = []
        for event in events:
            try:
                self._process(event, records)
            except InvalidEvent as exc:
                self.invalid += 1
                if self.invalid == 1:
                    logger.warning(
                        "spec-tracing: dropped an event: %s (further bad events are "
                        "counted, not logged)",
                        exc,
                    )
        if records:
            self.deliver(records)

    def _process(self, event: tuple, records: list) -> None:
        kind, stage, t0, t1, reqs, accepted, proposed, attrs = event
        stats = [_time_stats(r) for r in reqs]
        if kind == FINISH:
            self._finish(stats[0], t0, attrs or {}, records)
            return
        n = len(stats)
        acc = _counts(accepted, n, "accepted counts")
        prop = _counts(proposed, n, "proposed counts")
        name = stage.name
        batch_attrs = {SpanAttr.BATCH_SIZE: n}
        if attrs:
            batch_attrs.update(attrs)
        is_verify = name == _VERIFY and acc is not None
        width = batch_attrs.get(SpanAttr.NUM_STEPS)
        round_accepted: list[int] = []
        round_proposed: list = []
        rows = []
        for i, st in enumerate(stats):
            if kind == START:
                st._open[name] = t0
                continue
            if kind == END:
                st.last_times[name + ".end"] = t0
                begin = st._open.pop(name, None)
                if begin is None:
                    self.unmatched += 1
                    continue
                end = t0
            else:
                begin, end = t0, t1
            step = st._steps.get(name, 0)
            st._steps[name] = step + 1
            a = p = None
            if is_verify:
                # The width actually offered this round; the batch's width if not given per
                # request; unknown otherwise (then it counts for accept_length only).
                a, p = acc[i], prop[i] if prop is not None else width
                st.acceptance.add(a, p)
                round_accepted.append(a)
                round_proposed.append(p)
            if st.sampled:
                rows.append((st.trace_id, st.span_id, begin, end, step, a, p))
        if rows:
            records.append((STAGE_RECORD, name, batch_attrs, rows))
        if round_accepted and self.metrics is not None:
            # Metrics count every request, sampled or not.
            self.metrics.record_verify(round_accepted, round_proposed, batch_attrs)

    def _finish(self, st: ReqTimeStats, ts: float, how: dict, records: list) -> None:
        st._open.clear()
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
        records.append(
            (
                ROOT_RECORD,
                st.trace_id,
                st.span_id,
                st.parent,
                st.start_ts,
                ts,
                attrs,
                how.get("error"),
            )
        )
