"""Speculative-decoding metrics, recorded off the hot path from verify events.

Accept rate and length are derived from the counters with the formulas in acceptance.py.
- accepted per position (as vLLM): the draft at position i (0-based) was accepted in that many
  rounds; position i counts only if positions 0..i-1 were accepted too.

Instrument names below are OpenTelemetry names; Prometheus shows dots as underscores and adds
`_total` to counters (see README, "Metrics").
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections import Counter

from ..acceptance import Acceptance, PositionCounts
from ..ledger import COUNTS
from ..semconv import INSTRUMENTATION_SCOPE, SpanAttr
from ..version import __version__


class MetricName:
    VERIFY_ROUNDS = "spec_decode.verify_rounds"
    PROPOSED = "spec_decode.proposed_drafts"
    ACCEPTED = "spec_decode.accepted_drafts"
    EMITTED = "spec_decode.emitted_tokens"
    ACCEPTED_PER_POSITION = "spec_decode.accepted_per_position"
    STEPS_BY_WIDTH = "spec_decode.steps_by_width"
    WIDTH_CHANGES = "spec_decode.width_changes"
    OFFERED_PER_POSITION = "spec_decode.offered_per_position"
    REACHED_PER_POSITION = "spec_decode.reached_per_position"
    ROUNDS_BY_ACCEPTED = "spec_decode.rounds_by_accepted"
    NUM_STEPS = "spec_decode.num_steps"
    NUM_DRAFT_TOKENS = "spec_decode.num_draft_tokens"
    BATCH_SIZE = "spec_decode.batch_size"
    REQUEST_ACCEPT_RATE = "spec_decode.request.accept_rate"
    REQUEST_ACCEPT_LENGTH = "spec_decode.request.accept_length"
    REQUEST_DRAFT_TIME_SHARE = "spec_decode.request.draft_time_share"
    GEN_AI_DURATION = "gen_ai.server.request.duration"
    GEN_AI_TTFT = "gen_ai.server.time_to_first_token"
    GEN_AI_TPOT = "gen_ai.server.time_per_output_token"
    DROPPED_EVENTS = "spec_tracing.dropped_events"
    INVALID_EVENTS = "spec_tracing.invalid_events"
    EXPORT_DROPPED = "spec_tracing.export_dropped_spans"
    EXPORT_FAILED = "spec_tracing.export_failed_spans"
    EXPORT_LOST = "spec_tracing.export_lost_spans"
    EXPORT_REJECTED = "spec_tracing.export_rejected_spans"
    DROPPED_FINISHES = "spec_tracing.dropped_finishes"


# Distinct values a metric label (worker, gen_ai.request.model, gen_ai.provider.name) keeps
# before the rest share OTHER_VALUE: each value is a series in every instrument it labels.
MAX_LABEL_VALUES = 100
OTHER_VALUE = "_OTHER"


class SpecMetrics:
    """The instruments, fed one verify event (a batch) at a time by the materializer.

    The counters are observable: a verify event adds to plain dicts here (a few microseconds
    under one lock), and the SDK reads the totals only when a reader collects. Synchronous
    counters cost ~11 SDK `add` calls per event (attribute hashing, locks), about a third of
    the recorder thread's time, which it spends holding the engine process's GIL.
    One SpecMetrics per meter provider (`for_provider`): the SDK hands back an instrument
    registered twice under a name with its first callbacks, so a second enable() on an
    application's provider must feed the same totals."""

    _by_provider: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @classmethod
    def for_provider(cls, meter_provider, stats_source=None) -> SpecMetrics:
        metrics = cls._by_provider.get(meter_provider)
        if metrics is None:
            metrics = cls._by_provider[meter_provider] = cls(meter_provider, stats_source)
        return metrics

    def __init__(self, meter_provider, stats_source=None):
        meter = meter_provider.get_meter(INSTRUMENTATION_SCOPE, __version__)
        self._lock = threading.Lock()
        # A fork while the recorder thread holds the lock would leave the child's copy locked.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (m := ref()) and m._new_lock())
        # name -> {attribute items: cumulative total}
        self._totals: dict[str, dict[tuple, int]] = {}
        for name, unit, doc in (
            (MetricName.VERIFY_ROUNDS, "{round}",
             "Verify rounds (one per request per decode step)"),
            (MetricName.PROPOSED, "{token}", "Draft tokens proposed for verification"),
            (MetricName.ACCEPTED, "{token}", "Draft tokens accepted (bonus token excluded)"),
            (MetricName.EMITTED, "{token}", "Tokens emitted by verify rounds (accepted + bonus)"),
            (MetricName.ACCEPTED_PER_POSITION, "{token}",
             "Accepted draft tokens by draft position (attribute position, 0-based)"),
            # With these two, acceptance per position stays right when the width changes:
            # accepted / offered (unconditional), accepted / reached (given the earlier ones).
            (MetricName.STEPS_BY_WIDTH, "{step}",
             "Verify batches by the draft width they ran with (attribute width)"),
            # Every change, however short-lived: the num_steps gauge, read once a scrape,
            # misses a width that flips and flips back between two scrapes.
            (MetricName.WIDTH_CHANGES, "{change}",
             "Changes of a worker's draft width from one verify batch to the next"),
            (MetricName.OFFERED_PER_POSITION, "{round}",
             "Verify rounds that offered a draft at this position (attribute position, 0-based)"),
            (MetricName.REACHED_PER_POSITION, "{round}",
             "Verify rounds that offered this position and accepted every earlier one"),
            # The histogram of accepted drafts per round, one bucket per exact count: an SDK
            # Histogram costs ~10 us per recorded round.
            (MetricName.ROUNDS_BY_ACCEPTED, "{round}",
             "Verify rounds by their accepted draft count (attribute accepted): the histogram "
             "of accepted drafts per round"),
        ):  # fmt: skip
            self._totals[name] = {}
            meter.create_observable_counter(
                name, [_observer(functools.partial(self._series, name))], unit, doc
            )
        self._num_steps = meter.create_gauge(
            MetricName.NUM_STEPS, "{token}", "Active draft width (chain length) per worker"
        )
        self._num_draft_tokens = meter.create_gauge(
            MetricName.NUM_DRAFT_TOKENS, "{token}", "Tokens scored per verify (width + 1)"
        )
        # Requests in each worker's last verify batch, read when a reader collects: a dict
        # store per event rather than an SDK call.
        self._batch_sizes: dict[tuple, int] = {}
        meter.create_observable_gauge(
            MetricName.BATCH_SIZE,
            [_observer(lambda: list(self._batch_sizes.items()))],
            "{request}",
            "Requests in the last verify batch, per worker",
        )
        self._widths: dict[str, tuple] = {}
        self._keys: dict = {}  # worker -> _SeriesKeys
        # The values each label has taken, at most MAX_LABEL_VALUES each: the rest are
        # OTHER_VALUE, counted in capped_metric_labels
        # (tests/metrics/test_metrics.py::test_label_values_are_bounded).
        self._label_values: dict[str, set] = {}
        self.capped_labels = 0
        # Per request, recorded when it ends (where spans are assembled), each with an exemplar
        # that carries the request's trace and root span ids: from an outlier bucket to its
        # trace. Bucket boundaries: fractions in tenths; GenAI's as its conventions advise.
        tenths = [i / 10 for i in range(11)]
        self._request = {
            name: meter.create_histogram(name, unit, doc, explicit_bucket_boundaries_advisory=b)
            for name, unit, doc, b in (
                (MetricName.REQUEST_ACCEPT_RATE, "1",
                 "Accept rate of each request (accepted / proposed drafts)", tenths),
                (MetricName.REQUEST_ACCEPT_LENGTH, "{token}",
                 "Accept length of each request (tokens per verify round, bonus included)",
                 [1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6, 8, 10, 16]),
                (MetricName.REQUEST_DRAFT_TIME_SHARE, "1",
                 "Share of each request's draft + verify + draft_extend time spent drafting",
                 tenths),
                (MetricName.GEN_AI_DURATION, "s", "GenAI server request duration",
                 [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                  40.96, 81.92]),
                (MetricName.GEN_AI_TTFT, "s", "Time to generate the first token",
                 [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                  5.0, 7.5, 10.0]),
                (MetricName.GEN_AI_TPOT, "s", "Time per output token after the first",
                 [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]),
            )
        }  # fmt: skip
        if stats_source is not None:
            for count in COUNTS:
                if count.metric is None:
                    continue
                name, key, unit, doc = count.metric, count.key, count.unit, count.doc
                read = functools.partial(_stat, stats_source, key)
                meter.create_observable_counter(name, [_observer(read)], unit, doc)

    def _new_lock(self) -> None:
        self._lock = threading.Lock()

    def _bounded(self, label: str, value):
        seen = self._label_values.setdefault(label, set())
        if value in seen:
            return value
        if len(seen) < MAX_LABEL_VALUES:
            seen.add(value)
            return value
        self.capped_labels += 1
        return OTHER_VALUE

    def _series(self, name: str) -> list[tuple[tuple, int]]:
        with self._lock:
            return list(self._totals[name].items())

    def record_verify(self, accepted: list[int], proposed: list, batch_attrs: dict) -> None:
        """One verify event: per-request accepted and proposed drafts (None: unknown, the
        round then counts for accept_length only) of the same batch. Runs where spans are
        assembled, once per verify batch: series keys are built once per worker and count."""
        worker = batch_attrs.get(SpanAttr.WORKER)
        if worker is not None:
            worker = self._bounded("worker", str(worker))
        keys = self._keys.get(worker)
        if keys is None:
            keys = self._keys[worker] = _SeriesKeys(
                (("worker", str(worker)),) if worker is not None else ()
            )
        n = len(accepted)
        self._batch_sizes[keys.base] = n
        total_accepted = sum(accepted)
        if None in proposed:  # rounds of unknown width count for accept_length only
            known = [(a, p) for a, p in zip(accepted, proposed, strict=True) if p is not None]
            proposed_sum, accepted_known = sum(p for _, p in known), sum(a for a, _ in known)
        else:
            proposed_sum, accepted_known = sum(proposed), total_accepted
        by_count = Counter(accepted)
        # Position i was accepted in every round that accepted more than i drafts.
        positions, rounds_above = [], 0
        for count in range(max(by_count), 0, -1):
            rounds_above += by_count.get(count, 0)
            positions.append(rounds_above)
        positions.reverse()
        offered = PositionCounts()
        for (a, p), rounds in Counter(zip(accepted, proposed, strict=True)).items():
            offered.add(a, p, rounds)
        totals, base = self._totals, keys.base
        with self._lock:
            for name, value in (
                (MetricName.VERIFY_ROUNDS, n),
                (MetricName.PROPOSED, proposed_sum),
                (MetricName.ACCEPTED, accepted_known),
                (MetricName.EMITTED, total_accepted + n),
            ):
                series = totals[name]
                series[base] = series.get(base, 0) + value
            series = totals[MetricName.ROUNDS_BY_ACCEPTED]
            for a, rounds in by_count.items():
                key = keys.of("accepted", a)
                series[key] = series.get(key, 0) + rounds
            series = totals[MetricName.ACCEPTED_PER_POSITION]
            for position, count in enumerate(positions):
                key = keys.of("position", position)
                series[key] = series.get(key, 0) + count
            width = batch_attrs.get(SpanAttr.NUM_STEPS)
            if type(width) is int:
                series = totals[MetricName.STEPS_BY_WIDTH]
                key = keys.of("width", self._bounded("width", width))
                series[key] = series.get(key, 0) + 1
                if keys.width is not None and keys.width != width:
                    series = totals[MetricName.WIDTH_CHANGES]
                    series[base] = series.get(base, 0) + 1
                keys.width = width
            for name, counts in ((MetricName.OFFERED_PER_POSITION, offered.offered),
                                 (MetricName.REACHED_PER_POSITION, offered.reached)):  # fmt: skip
                series = totals[name]
                for position, count in enumerate(counts):
                    key = keys.of("position", position)
                    series[key] = series.get(key, 0) + count
        self.set_width(
            str(worker) if worker is not None else "",
            batch_attrs.get(SpanAttr.NUM_STEPS),
            batch_attrs.get(SpanAttr.NUM_DRAFT_TOKENS),
        )

    def record_request(
        self, handle, sampled: bool, attrs: dict, figures: dict, facts: tuple,
        t0: float, t1: float, failed: bool,
    ) -> None:  # fmt: skip
        """One request ended: its acceptance and GenAI timings, with exemplars on its trace
        when it was traced (the SDK's trace-based exemplar filter skips the others). `facts`
        as wire.Facts."""
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

        flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        context = trace.set_span_in_context(NonRecordingSpan(
            SpanContext(handle[0], handle[1], False, flags)
        ))  # fmt: skip
        record = self._request
        for name, attr in (
            (MetricName.REQUEST_ACCEPT_RATE, SpanAttr.ACCEPT_RATE),
            (MetricName.REQUEST_ACCEPT_LENGTH, SpanAttr.ACCEPT_LENGTH),
            (MetricName.REQUEST_DRAFT_TIME_SHARE, SpanAttr.DRAFT_TIME_SHARE),
        ):
            value = figures.get(attr)
            if value is not None:
                record[name].record(value, context=context)
        labels = (SpanAttr.GEN_AI_MODEL, SpanAttr.GEN_AI_PROVIDER)
        gen_ai = {k: self._bounded(k, attrs[k]) for k in labels if k in attrs}
        if failed:
            gen_ai["error.type"] = "_OTHER"
        record[MetricName.GEN_AI_DURATION].record(t1 - t0, gen_ai, context=context)
        first = facts[3]
        if first is not None and t0 <= first <= t1:
            record[MetricName.GEN_AI_TTFT].record(first - t0, gen_ai, context=context)
            tokens = facts[1][4]  # output tokens so far (the next round's offset)
            if tokens > 1:
                per_token = (t1 - first) / (tokens - 1)
                record[MetricName.GEN_AI_TPOT].record(per_token, gen_ai, context=context)

    def set_width(self, worker: str, num_steps, num_draft_tokens) -> None:
        """Update the width gauges for `worker` if they changed."""
        if num_steps is None and num_draft_tokens is None:
            return
        if self._widths.get(worker) == (num_steps, num_draft_tokens):
            return
        self._widths[worker] = (num_steps, num_draft_tokens)
        attrs = {"worker": worker} if worker else {}
        if num_steps is not None:
            self._num_steps.set(int(num_steps), attrs)
        if num_draft_tokens is not None:
            self._num_draft_tokens.set(int(num_draft_tokens), attrs)


def metric_sums(metrics_data) -> dict[tuple[str, tuple], float]:
    """Sum/gauge values of our instruments from a reader's MetricsData, keyed by
    (name, sorted attribute items)."""
    out: dict[tuple[str, tuple], float] = {}
    for rm in metrics_data.resource_metrics if metrics_data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:  # histogram: its count
                        value = point.count
                    out[(metric.name, tuple(sorted(point.attributes.items())))] = value
    return out


def acceptance_from(metrics_data) -> Acceptance:
    """The run's acceptance from the counters (all workers together)."""
    totals: Counter = Counter()
    for (name, _), value in metric_sums(metrics_data).items():
        totals[name] += value
    rounds = int(totals[MetricName.VERIFY_ROUNDS])
    return Acceptance(
        rounds=rounds,
        accepted=int(totals[MetricName.EMITTED]) - rounds,
        proposed=int(totals[MetricName.PROPOSED]),
        rate_accepted=int(totals[MetricName.ACCEPTED]),
    )


class _SeriesKeys:
    """A worker's series keys (sorted attribute items), made once per label value."""

    def __init__(self, base: tuple):
        self.base = base
        self._made: dict[tuple, tuple] = {}
        self.width: int | None = None  # the draft width of the worker's last verify batch

    def of(self, label: str, value) -> tuple:
        key = self._made.get((label, value))
        if key is None:
            key = self._made[(label, value)] = tuple(sorted((*self.base, (label, value))))
        return key


def _stat(stats_source, key: str) -> list[tuple[tuple, int]]:
    return [((), stats_source().get(key, 0))]


def _observer(read):
    """An observable instrument's callback; `read()` gives (attribute items, value) pairs."""
    from opentelemetry.metrics import Observation

    return lambda options: [Observation(value, dict(attrs)) for attrs, value in read()]
