"""Per-request signals, computed where spans are assembled (the exporter process, or the thread
that runs the pipeline in-process): a root's acceptance and time figures, and every metric
instrument's input.

The engine's process ships facts, not figures (record/compactor.py): per verify batch a ROUNDS
event with every traced request's counts, per request end a FINISH event whose `facts` hold its
acceptance totals, its time in the spec stages and when its first token was out. Here they
become the root's attributes (accept rate and length, draft time share, tokens per step) and the
metrics (SpecMetrics), so none of that costs the engine's interpreter lock.
"""

from __future__ import annotations

import math

from ..acceptance import Acceptance
from ..semconv import SpanAttr
from ..wire import FINISH, ROUNDS, Facts


def figures(facts: Facts, t0: float | None = None) -> dict:
    """The request's acceptance and time figures, for its root and its histograms; `t0`, its
    arrival, for its time in the queue."""
    (_, (rounds, accepted, proposed, rate_accepted, next_offset), stage_s, _, verify_seen,
     prefill_start) = facts  # fmt: skip
    acceptance = Acceptance(rounds, accepted, proposed, rate_accepted, next_offset)
    out: dict = {}
    # Below level 2 verify is not recorded: the acceptance is unknown, not zero.
    # SPEC_TRACING_STEP_SAMPLE_RATIO=0 gives roots with their acceptance and no step spans.
    if rounds or verify_seen:
        out[SpanAttr.VERIFY_ROUNDS] = rounds
        out[SpanAttr.TOTAL_ACCEPTED] = accepted
        out[SpanAttr.TOTAL_PROPOSED] = proposed
    rate, length = acceptance.accept_rate, acceptance.accept_length
    if rate is not None:
        out[SpanAttr.ACCEPT_RATE] = rate
    if length is not None:
        out[SpanAttr.ACCEPT_LENGTH] = length
    draft, verify, extend = stage_s
    total = draft + verify + extend
    if total > 0 and math.isfinite(total):
        out[SpanAttr.DRAFT_TIME_SHARE] = (draft + extend) / total
    if rounds and next_offset > accepted:
        # output tokens: the first one's, then the rounds'
        out[SpanAttr.TOKENS_PER_STEP] = next_offset / (next_offset - accepted)
    if prefill_start is not None and t0 is not None and math.isfinite(prefill_start - t0):
        out[SpanAttr.QUEUE_TIME] = max(0.0, prefill_start - t0)
    return out


class Signals:
    """Compact events in, compact events for the span assembler out: FINISH of a traced request
    with its figures added to the root's attributes; ROUNDS and untraced requests' FINISH
    consumed here. `metrics` (SpecMetrics, or None) records every request, traced or not."""

    def __init__(self, metrics=None):
        self.metrics = metrics
        self.metric_errors = 0

    def feed(self, events: list) -> list:
        return self._pass(events, spans=True)

    def observe(self, events: list) -> list:
        """Metrics only, for a pipeline whose spans are assembled elsewhere: the events that
        pipeline still needs (no ROUNDS, no untraced request's FINISH, which keeps its facts)."""
        return self._pass(events, spans=False)

    def _pass(self, events: list, spans: bool) -> list:
        out = []
        for event in events:
            kind = event[0]
            if kind == ROUNDS:
                self._rounds(event)
            elif kind == FINISH:
                if self._finish(event, spans):
                    out.append(event[:4] if spans else event)
            else:
                out.append(event)
        return out

    def _rounds(self, event: tuple) -> None:
        if self.metrics is None:
            return
        _, accepted, proposed, batch_attrs = event
        try:
            self.metrics.record_verify(accepted, proposed, batch_attrs)
        except Exception:  # a metric is not worth the rest of the batch
            self.metric_errors += 1

    def _finish(self, event: tuple, spans: bool = True) -> bool:
        """Record the request's metrics; True if its root span is to be made."""
        _, handle, t1, (_, t0, attrs, error), facts = event
        found = figures(facts, t0)
        sampled = facts[0]
        if sampled and spans:
            attrs.update(found)
        if self.metrics is not None:
            try:
                self.metrics.record_request(
                    handle, sampled, attrs, found, facts, t0, t1, error is not None
                )
            except Exception:
                self.metric_errors += 1
        return sampled

    def counts(self) -> dict:
        capped = self.metrics.capped_labels if self.metrics is not None else 0
        return {"metric_errors": self.metric_errors, "capped_metric_labels": capped}
