"""Per-request signals, computed where spans are assembled (the exporter process, or the thread
that runs the pipeline in-process): each request's acceptance, output offsets and time per
stage, a root's figures, and every metric instrument's input.

The engine's process ships facts, not figures (record/compactor.py): per step the batch's
handles, times and counts; per request end the few timestamps its request object holds. Here
each request's rounds are folded into its totals (acceptance.py), each batch's time in the spec
stages is added to its requests, and a request's end becomes its root's attributes (accept rate
and length, draft time share, tokens per step, queue time) and its metrics (SpecMetrics), so
none of that costs the engine's interpreter lock. What goes on to the span assembler is the
sampled requests' part (wire.py's assembler events).

Requests are kept from their first step to their end; past `max_open` (the assembler's bound,
SPEC_TRACING_MAX_OPEN_REQUESTS) the oldest is forgotten and counted in `evicted_requests`.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from ..acceptance import Acceptance, add_rounds
from ..export.assembler import MAX_OPEN_REQUESTS
from ..semconv import SpanAttr
from ..stages import RequestStage
from ..wire import END, FINISH, SLICE, START, Facts

_VERIFY = RequestStage.SPEC_VERIFY.name
# Stages whose time each request accumulates, for its draft time share.
_TIMED = {RequestStage.SPEC_DRAFT.name: 0, _VERIFY: 1, RequestStage.SPEC_DRAFT_EXTEND.name: 2}


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


class _Request:
    """A request's totals so far: its acceptance (and next output offset), seconds in
    spec_draft, spec_verify, spec_draft_extend."""

    __slots__ = ("acceptance", "stage_s")

    def __init__(self, output_base: int = 1):
        self.acceptance = Acceptance(next_offset=output_base)
        self.stage_s = [0.0, 0.0, 0.0]


class Signals:
    """Compact events in, assembler events out (wire.py). `metrics` (SpecMetrics, or None)
    records every request, traced or not."""

    def __init__(self, metrics=None, max_open: int | None = MAX_OPEN_REQUESTS):
        self.metrics = metrics
        self.metric_errors = 0
        self.requests: OrderedDict = OrderedDict()  # handle -> _Request
        self.max_open = MAX_OPEN_REQUESTS if max_open is None else max_open
        self.evicted = 0
        # The batch of the last stage event: (keys, flags, its requests, indices of the
        # sampled ones (None: all), time per timed stage not yet added to its requests, open
        # starts per timed stage). A step's stages share their batch: its time is added to each
        # request once per batch, not once per event.
        self._batch: list | None = None

    def feed(self, events: list) -> list:
        return self._pass(events, spans=True)

    def observe(self, events: list) -> list:
        """Metrics only, for a pipeline whose spans are assembled elsewhere: the same compact
        events pass on unchanged (that pipeline keeps its own requests' totals)."""
        self._pass(events, spans=False)
        return events

    def _pass(self, events: list, spans: bool) -> list:
        out: list = []
        for event in events:
            kind = event[0]
            if kind == FINISH:
                self._settle()  # it may be in the batch of the events just before
                if self._finish(event, spans):
                    out.append(event[:4])
            else:
                self._stage(event, out)
        return out

    def _requests_of(self, keys: tuple, flags: tuple | None) -> list:
        if self._batch is not None:
            self._settle()
        requests = self.requests
        entries = []
        for i, key in enumerate(keys):
            entry = requests.get(key)
            if entry is None:
                entry = requests[key] = _Request(1 if flags is None else flags[i][1])
                if len(requests) > self.max_open:
                    requests.popitem(last=False)
                    self.evicted += 1
            entries.append(entry)
        sampled = None if flags is None else [i for i, f in enumerate(flags) if f[0]]
        self._batch = [keys, flags, entries, sampled, [0.0, 0.0, 0.0], [None, None, None]]
        return self._batch

    def _settle(self) -> None:
        """Add the last batch's time in the spec stages to each of its requests."""
        batch = self._batch
        if batch is None:
            return
        draft, verify, extend = spent = batch[4]
        if draft or verify or extend:
            for entry in batch[2]:
                times = entry.stage_s
                times[0] += draft
                times[1] += verify
                times[2] += extend
            spent[0] = spent[1] = spent[2] = 0.0

    def _stage(self, event: tuple, out: list) -> None:
        kind = event[0]
        if kind == SLICE:
            _, name, t0, t1, keys, flags, acc, prop, batch_attrs, positions = event
        elif kind == END:
            _, name, t1, keys, flags, acc, prop, batch_attrs, positions = event
            t0 = None
        else:
            _, name, t0, keys, flags = event
            t1 = acc = prop = batch_attrs = positions = None
        batch = self._batch
        if batch is None or not (
            (keys is batch[0] or keys == batch[0]) and (flags is batch[1] or flags == batch[1])
        ):
            batch = self._requests_of(keys, flags)
        slot = _TIMED.get(name)
        if slot is not None:
            spent, opened = batch[4], batch[5]
            if kind == START:
                opened[slot] = t0
            elif kind == SLICE:
                spent[slot] += t1 - t0
            elif opened[slot] is not None:  # END of the batch's START (another batch's: lost)
                spent[slot] += t1 - opened[slot]
                opened[slot] = None
        offsets = None
        if name == _VERIFY and acc is not None:
            acceptances = [entry.acceptance for entry in batch[2]]
            if positions is not None:  # the engine's own count: exact across rounds it skipped
                for acceptance, position in zip(acceptances, positions, strict=True):
                    acceptance.next_offset = position
            offsets = add_rounds(acceptances, acc, prop)
            if self.metrics is not None:
                try:
                    self.metrics.record_verify(acc, prop, batch_attrs)
                except Exception:  # a metric is not worth the rest of the batch
                    self.metric_errors += 1
        sampled = batch[3]
        if sampled is None:
            handles = keys
        elif not sampled:
            return
        else:
            handles = tuple([keys[i] for i in sampled])
            if acc is not None:
                acc, prop = [acc[i] for i in sampled], [prop[i] for i in sampled]
            if offsets is not None:
                offsets = [offsets[i] for i in sampled]
        if kind == START:
            out.append((START, name, t0, handles))
        elif kind == END:
            out.append((END, name, t1, handles, acc, prop, batch_attrs, offsets))
        else:
            out.append((SLICE, name, t0, t1, handles, acc, prop, batch_attrs, offsets))

    def _finish(self, event: tuple, spans: bool = True) -> bool:
        """Record the request's metrics; True if its root span is to be made."""
        _, handle, t1, (_, t0, attrs, error), (sampled, first, verify_seen, queued) = event
        entry = self.requests.pop(handle, None) or _Request()
        acc = entry.acceptance
        facts = (
            sampled,
            (acc.rounds, acc.accepted, acc.proposed, acc.rate_accepted, acc.next_offset),
            tuple(entry.stage_s), first, verify_seen, queued,
        )  # fmt: skip
        found = figures(facts, t0)
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
        return {
            "metric_errors": self.metric_errors,
            "capped_metric_labels": capped,
            "evicted_requests": self.evicted,
        }
