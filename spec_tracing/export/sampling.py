"""Step-detail sampling, decided when a request ends, where spans are assembled (the exporter
process, or the export thread): every request's root is exported; its step spans (draft,
verify, draft_extend, prefill, ...) are exported for a share of requests chosen by trace id,
and for every request a keep rule picks out once its outcome is known (failed, slow, low
acceptance). The engine's process records exactly what it records without sampling: the
metrics and the roots' acceptance count every request and step.

Requests in the ratio pass straight through. With keep rules, the others' step spans are held
until their root arrives; held spans are bounded (SPEC_TRACING_EXPORT_QUEUE_SPANS, the exporter
buffer's bound): past it, the request held longest is decided early by the ratio alone (its
steps dropped, `early_decisions` counted). Spans left out by sampling are `sampled_out`, apart
from the loss counters: every span offered is exported, dropped, failed, rejected, lost or
sampled out.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict, deque

from ..semconv import SpanAttr
from ..settings import QUANTILE_WINDOW, parse_rules
from ..wire import ROOT_RECORD, STAGE_RECORD

STEPS_KEPT = "spec_tracing.steps_kept"
KEEP_REASON = "spec_tracing.keep_reason"


class WindowQuantile:
    """The q-quantile of the last `size` values: a running estimate of where "the slowest 1%"
    or "the lowest 1%" starts, which follows the load as it changes."""

    def __init__(self, size: int = QUANTILE_WINDOW):
        self.values: deque = deque()
        self.sorted: list = []
        self.size = size

    def add(self, value: float) -> None:
        if not math.isfinite(value):  # a NaN in the sorted list breaks every later bisect
            return
        self.values.append(value)
        bisect.insort(self.sorted, value)
        if len(self.values) > self.size:
            old = self.values.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]

    def at(self, q: float) -> float:
        index = min(len(self.sorted) - 1, max(0, int(q * len(self.sorted))))
        return self.sorted[index]


class StepSampler:
    """Filters span records (wire.py) as the assembler makes them; see the module docstring."""

    def __init__(self, ratio: float, rules, max_held_spans: int, keep_max: float = 1.0):
        self.ratio = ratio
        # The rules' budget: of the last QUANTILE_WINDOW requests, at most keep_max kept by a
        # rule (tests/export/test_sampling.py::test_the_keep_budget_bounds_what_rules_keep).
        self.keep_max = keep_max
        self.recent_rule_keeps: deque = deque(maxlen=QUANTILE_WINDOW)
        self.rule_keeps_in_window = 0
        self.refused = 0
        self.bound = int(ratio * (1 << 64))
        self.rules = tuple(rules)
        self.max_held = max_held_spans
        self.held: OrderedDict = OrderedDict()  # handle -> [(name, batch_attrs, row)]
        self.held_spans = 0
        self.early: OrderedDict = OrderedDict()  # handles decided early: dropped on arrival
        self.durations = WindowQuantile()
        self.rates = WindowQuantile()
        self.kept_requests = 0
        self.dropped_requests = 0
        self.sampled_out = 0
        self.early_decisions = 0

    @classmethod
    def from_settings(cls, settings) -> StepSampler | None:
        """None when every request keeps its steps (the default: nothing to do)."""
        if settings is None or settings.step_sample_ratio >= 1.0:
            return None
        rules = parse_rules("SPEC_TRACING_STEP_KEEP", settings.step_keep)
        return cls(settings.step_sample_ratio, rules, settings.export_queue_spans,
                   settings.step_keep_max)  # fmt: skip

    def counts(self) -> dict:
        return {
            "steps_kept_requests": self.kept_requests,
            "steps_dropped_requests": self.dropped_requests,
            "sampled_out_spans": self.sampled_out,
            "step_sampling_early_decisions": self.early_decisions,
            "steps_refused_requests": self.refused,
        }

    def in_ratio(self, trace_id: int) -> bool:
        # As OpenTelemetry's TraceIdRatioBased sampler: the trace id's low 64 bits, so every
        # process of one request decides alike.
        return (trace_id & 0xFFFFFFFFFFFFFFFF) < self.bound

    def filter(self, records: list) -> list:
        out: list = []
        for record in records:
            if record[0] == STAGE_RECORD:
                _, name, batch_attrs, rows = record
                passing = []
                for row in rows:
                    if self.in_ratio(row[0]):
                        passing.append(row)
                    elif self.rules and (row[0], row[1]) not in self.early:
                        self._hold((row[0], row[1]), name, batch_attrs, row)
                    else:
                        self.sampled_out += 1
                if passing:
                    out.append((STAGE_RECORD, name, batch_attrs, passing))
            else:
                out += self._decide(record)
        return out

    def _hold(self, handle, name, batch_attrs, row) -> None:
        held = self.held.get(handle)
        if held is None:
            held = self.held[handle] = []
        held.append((name, batch_attrs, row))
        self.held_spans += 1
        while self.held_spans > self.max_held and self.held:
            old, spans = self.held.popitem(last=False)
            self.held_spans -= len(spans)
            self.sampled_out += len(spans)
            self.early_decisions += 1
            self.early[old] = None
            if len(self.early) > self.max_held:
                self.early.popitem(last=False)

    def _decide(self, root: tuple) -> list:
        _, trace_id, span_id, parent, t0, t1, attrs, error = root
        handle = (trace_id, span_id)
        held = self.held.pop(handle, ())
        self.held_spans -= len(held)
        # Judged on the request's own service time: its wait in the queue grows through an
        # overloaded run and is no property of the request (with it, each new request beats
        # the running quantile and `slowest` keeps nearly everything).
        duration = t1 - t0
        queued = attrs.get(SpanAttr.QUEUE_TIME)
        if type(queued) is float and 0.0 <= queued <= duration:
            duration -= queued
        rate = attrs.get(SpanAttr.ACCEPT_RATE)
        if not isinstance(rate, int | float) or isinstance(rate, bool) or not math.isfinite(rate):
            rate = None  # a request attribute of any value: only a finite number is judged
        reason = "ratio" if self.in_ratio(trace_id) else self._rule(error, duration, rate)
        by_rule = reason is not None and reason != "ratio"
        if by_rule and self.rule_keeps_in_window >= self.keep_max * QUANTILE_WINDOW:
            self.refused += 1  # over the budget: this one goes by the ratio (out of it)
            reason, by_rule = None, False
        if len(self.recent_rule_keeps) == QUANTILE_WINDOW:
            self.rule_keeps_in_window -= self.recent_rule_keeps[0]
        self.recent_rule_keeps.append(by_rule)
        self.rule_keeps_in_window += by_rule
        if handle in self.early:
            del self.early[handle]
            reason = reason if reason == "ratio" else None
        self.durations.add(duration)
        if rate is not None:
            self.rates.add(rate)
        attrs = dict(attrs)
        attrs[STEPS_KEPT] = reason is not None
        attrs[KEEP_REASON] = reason or "sampled_out"
        out: list = []
        if reason is None:
            self.dropped_requests += 1
            self.sampled_out += len(held)
        else:
            self.kept_requests += 1
            for name, batch_attrs, row in held:  # a record per span: held spans are few
                out.append((STAGE_RECORD, name, batch_attrs, [row]))
        out.append((ROOT_RECORD, trace_id, span_id, parent, t0, t1, attrs, error))
        return out

    def _rule(self, error, duration: float, rate) -> str | None:
        for rule, arg in self.rules:
            if rule == "error" and error is not None:
                return "error"
            if rule == "duration>" and duration * 1000 > arg:
                return "duration"
            if rule == "accept_rate<" and rate is not None and rate < arg:
                return "accept_rate"
            # Very high acceptance is a health signal too: a model looping on its own output.
            if rule == "accept_rate>" and rate is not None and rate > arg:
                return "high_accept_rate"
            # Against the requests that ended before this one, once there are 1/F of them: the
            # first requests of a run are not "the slowest 1%" of nothing.
            # Strictly past the quantile: where many requests tie (accept rate 0 in a stretch of
            # n-gram misses), "the lowest 1%" must not keep all of them.
            if rule == "slowest" and arg > 0 and len(self.durations.sorted) * arg >= 1:
                if duration > self.durations.at(1 - arg):
                    return "slow"
            if rule == "lowest_accept" and arg > 0 and len(self.rates.sorted) * arg >= 1:
                if rate is not None and rate < self.rates.at(arg):
                    return "low_accept"
            if rule == "highest_accept" and arg > 0 and len(self.rates.sorted) * arg >= 1:
                if rate is not None and rate > self.rates.at(1 - arg):
                    return "high_accept"
        return None

    def drain(self) -> None:
        """At stop: requests still held never ended; their steps go by the ratio alone."""
        for spans in self.held.values():
            self.sampled_out += len(spans)
            self.early_decisions += 1
        self.held.clear()
        self.held_spans = 0
