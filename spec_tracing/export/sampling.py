"""Step-detail sampling, decided when a request ends, where spans are assembled (the exporter
process, or the export thread): every request's root is exported; its step spans (draft,
verify, draft_extend, prefill, ...) are exported for a share of requests chosen by trace id,
and for every request a keep rule picks out once its outcome is known (failed, slow, low
acceptance). The engine's process records exactly what it records without sampling: the
metrics and the roots' acceptance count every request and step.

Requests in the ratio pass straight through. With keep rules, the others' step spans are held
until their root arrives. A quantile rule (slowest, lowest_accept, highest_accept:F) judges a
request only against a window of at least TAIL/F requests (TAIL past the quantile; at most the
2,000 of the window): a request that ends before the window is that large, and that no other
rule keeps, waits with its root until it is, and is then judged against it (a flush or the
end of the run judges what waits against the window there is). Held spans are bounded
(SPEC_TRACING_EXPORT_QUEUE_SPANS, the exporter buffer's bound): past it, a waiting request is
judged at once, else the request held longest is decided early by the ratio alone (its steps
dropped); both count in `early_decisions`. Spans left out by sampling are `sampled_out`, apart
from the loss counters: every span offered is exported, dropped, failed, rejected, lost or
sampled out.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict, deque

from ..semconv import SpanAttr
from ..settings import _FRACTIONS, QUANTILE_WINDOW, parse_rules
from ..wire import ROOT_RECORD, STAGE_RECORD

STEPS_KEPT = "spec_tracing.steps_kept"
KEEP_REASON = "spec_tracing.keep_reason"
# Requests a quantile rule needs past its quantile before it judges anyone: "the slowest 10%"
# of 10 requests is one request, a guess (tests/export/test_sampling.py::
# test_quantile_rules_wait_for_a_window_large_enough).
TAIL = 10


def window_needed(fraction: float) -> int:
    """The window a quantile rule of this fraction judges against: TAIL/F, at most the whole
    window."""
    return min(QUANTILE_WINDOW, math.ceil(TAIL / fraction))


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
        self.durations = WindowQuantile()
        self.rates = WindowQuantile()
        self.max_held = max_held_spans
        self.held: OrderedDict = OrderedDict()  # handle -> [(name, batch_attrs, row)]
        self.held_spans = 0
        # Ended requests waiting for a quantile rule's window: handle -> (root record, its
        # duration, its rate, its held steps), oldest first.
        self.waiting: OrderedDict = OrderedDict()
        # (window, size needed) for each quantile rule.
        self.windows = [
            (self.durations if rule == "slowest" else self.rates, window_needed(arg))
            for rule, arg in self.rules if rule in _FRACTIONS and arg > 0
        ]  # fmt: skip
        self.early: OrderedDict = OrderedDict()  # handles decided early: dropped on arrival
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
                        if self.held_spans > self.max_held:
                            out += self._bound()
                    else:
                        self.sampled_out += 1
                if passing:
                    out.append((STAGE_RECORD, name, batch_attrs, passing))
            else:
                out += self._end(record)
        return out

    def _hold(self, handle, name, batch_attrs, row) -> None:
        held = self.held.get(handle)
        if held is None:
            held = self.held[handle] = []
        held.append((name, batch_attrs, row))
        self.held_spans += 1

    def _bound(self) -> list:
        """Held spans over the bound: judge waiting requests at once, then decide the requests
        held longest by the ratio alone."""
        out: list = []
        while self.held_spans > self.max_held and self.waiting:
            self.early_decisions += 1
            out += self._decide(*self.waiting.popitem(last=False)[1])
        while self.held_spans > self.max_held and self.held:
            old, spans = self.held.popitem(last=False)
            self.held_spans -= len(spans)
            self.sampled_out += len(spans)
            self.early_decisions += 1
            self.early[old] = None
            if len(self.early) > self.max_held:
                self.early.popitem(last=False)
        return out

    def _end(self, root: tuple) -> list:
        """A request's root arrived: decide it now, or let it wait for a quantile rule's
        window (and judge every waiting request once the windows are large enough)."""
        _, trace_id, span_id, _, t0, t1, attrs, error = root
        handle = (trace_id, span_id)
        held = self.held.pop(handle, ())
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
        waits = (
            self.windows and handle not in self.early and not self.in_ratio(trace_id)
            and not self._windows_ready()
            and self._rule(error, duration, rate, quantiles=False) is None
        )  # fmt: skip
        # Decided now: judged against the requests before it; waiting: against a window that
        # holds it and the requests after it.
        out = [] if waits else self._decide(root, duration, rate, held)
        self.durations.add(duration)
        if rate is not None:
            self.rates.add(rate)
        if waits:
            self.waiting[handle] = (root, duration, rate, held)  # its steps stay held
        if self.waiting and self._windows_ready():
            out += self.release()
        elif self.held_spans > self.max_held:
            out += self._bound()
        return out

    def _windows_ready(self) -> bool:
        return all(len(window.sorted) >= needed for window, needed in self.windows)

    def release(self) -> list:
        """Judge every waiting request against the windows as they are (a flush, the end of
        the run, or windows now large enough): their records, oldest first."""
        out: list = []
        while self.waiting:
            out += self._decide(*self.waiting.popitem(last=False)[1])
        return out

    def _decide(self, root: tuple, duration: float, rate, held) -> list:
        _, trace_id, span_id, parent, t0, t1, attrs, error = root
        handle = (trace_id, span_id)
        self.held_spans -= len(held)
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

    def _rule(self, error, duration: float, rate, quantiles: bool = True) -> str | None:
        for rule, arg in self.rules:
            if not quantiles and rule in _FRACTIONS:
                continue
            if rule == "error" and error is not None:
                return "error"
            if rule == "duration>" and duration * 1000 > arg:
                return "duration"
            if rule == "accept_rate<" and rate is not None and rate < arg:
                return "accept_rate"
            # Very high acceptance is a health signal too: a model looping on its own output.
            if rule == "accept_rate>" and rate is not None and rate > arg:
                return "high_accept_rate"
            # Against the window (TAIL/F requests when a request waited for it; at least 1/F
            # when a flush or the run's end judges it early): "the slowest 1%" of nothing is
            # no one.
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

    def drain(self) -> list:
        """At stop: waiting requests are judged (their records returned); requests still held
        never ended, and their steps go by the ratio alone."""
        out = self.release()
        for spans in self.held.values():
            self.sampled_out += len(spans)
            self.early_decisions += 1
        self.held.clear()
        self.held_spans = 0
        return out
