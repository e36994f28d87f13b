"""Every count the plugin keeps, declared once: its stats() key, what it counts, which outcome
of a span it is, its metric name and its doc line. stats() starts from it, the spec_tracing.*
metric counters, the demo's "not exported" line and docs/reference/metrics.md's table come from
it (tests/test_ledger.py holds the docs to it), and `gap()` is the one check of the contract:

    spans offered = exported + dropped + failed + rejected + lost + unmatched + sampled out

Every output's tests call it (tests/export/test_contract.py, tests/test_ledger.py).
"""

from __future__ import annotations

from dataclasses import dataclass

# Outcomes of a span offered to an output; "event" and "info" counts are not spans.
EXPORTED, DROPPED, FAILED, REJECTED, LOST, UNMATCHED, SAMPLED_OUT = (
    "exported", "dropped", "failed", "rejected", "lost", "unmatched", "sampled_out",
)  # fmt: skip
SPAN_OUTCOMES = (EXPORTED, DROPPED, FAILED, REJECTED, LOST, UNMATCHED, SAMPLED_OUT)
EVENT = "event"  # engine events or values refused before they could become spans
INFO = "info"  # a figure about the run, no loss


@dataclass(frozen=True)
class Count:
    key: str  # in stats()
    outcome: str
    counted_by: str  # where it is counted
    doc: str
    metric: str | None = None  # the spec_tracing.* counter, if exported as a metric
    unit: str = "{span}"


COUNTS: tuple[Count, ...] = (
    Count("spans", EXPORTED, "the output (the receiver took them)",
          "spans the receiver took and kept"),
    Count("export_dropped_spans", DROPPED, "the exporter's buffers",
          "spans the exporter process dropped, its buffer full (collector slow or down)",
          "spec_tracing.export_dropped_spans"),
    Count("export_failed_spans", FAILED, "the export threads",
          "spans whose export failed after the exporter's retries",
          "spec_tracing.export_failed_spans"),
    Count("export_rejected_spans", REJECTED, "the collector's partial_success",
          "spans the collector took and refused through OTLP partial_success (its limits or "
          "validation)", "spec_tracing.export_rejected_spans"),
    Count("export_lost_spans", LOST, "the engine's process, for an exporter that went away",
          "spans an exporter process held when it died (killed, OOM) or when shutdown's time ran "
          "out (collector down or slow), and never reported on; a dead exporter process is "
          "replaced", "spec_tracing.export_lost_spans"),
    Count("unmatched_ends", UNMATCHED, "the span assembler",
          "stage ends without a start (the start was dropped, or the request forgotten)"),
    Count("sampled_out_spans", SAMPLED_OUT, "the step sampler",
          "step spans left out by step-detail sampling (not a loss)"),
    Count("dropped_events", EVENT, "the hot path and the recorder",
          "trace events dropped because the plugin's buffer was full",
          "spec_tracing.dropped_events", "{event}"),
    Count("dropped_finishes", EVENT, "the hot path",
          "request ends dropped even past the reserve the buffer keeps for them (a request's "
          "root is otherwise never dropped)", "spec_tracing.dropped_finishes", "{event}"),
    Count("invalid_events", EVENT, "the hot path and the compactor",
          "events dropped as bad input (never raised into the engine)",
          "spec_tracing.invalid_events", "{event}"),
    Count("consumer_errors", EVENT, "the recorder",
          "drains whose events could not be turned into compact events"),
    Count("metric_errors", EVENT, "the signals stage",
          "verify batches or request ends a metric instrument refused"),
    Count("capped_metric_labels", INFO, "the metric instruments",
          "metric recordings whose worker, gen_ai.request.model or gen_ai.provider.name was past "
          "the 100 distinct values a label keeps, recorded as _OTHER"),
    Count("limited_attributes", INFO, "the span assembler",
          "attribute values cut or left out by the OTel attribute limits"),
    Count("evicted_requests", EVENT, "the span assembler",
          "open requests forgotten past SPEC_TRACING_MAX_OPEN_REQUESTS",
          "spec_tracing.evicted_requests", "{request}"),
    Count("steps_kept_requests", INFO, "the step sampler",
          "requests whose step spans were kept"),
    Count("steps_dropped_requests", INFO, "the step sampler",
          "requests whose step spans were left out"),
    Count("steps_refused_requests", INFO, "the step sampler",
          "requests a keep rule picked past SPEC_TRACING_STEP_KEEP_MAX (their steps went by the "
          "ratio)"),
    Count("step_sampling_early_decisions", INFO, "the step sampler",
          "requests decided by the ratio alone before they ended (held spans over the bound)"),
    Count("prometheus_endpoints_not_served", EVENT, "the metrics setup",
          "Prometheus endpoints not served because the port was taken"),
    Count("exporter_restarts", INFO, "the engine's process",
          "exporter processes started to replace one that died"),
)  # fmt: skip

BY_KEY = {c.key: c for c in COUNTS}
LOSSES = tuple(c.key for c in COUNTS if c.outcome in (DROPPED, FAILED, REJECTED, LOST))
# What an exporter process reports on for each span it was sent (the rest it never saw).
REPORTED_BY_EXPORTER = tuple(
    c.key for c in COUNTS if c.outcome in SPAN_OUTCOMES and c.outcome != LOST
)


def zeros() -> dict[str, int]:
    return dict.fromkeys(BY_KEY, 0)


def span_outcomes(stats: dict) -> int:
    """Spans accounted for: exported, lost in each way, unmatched or sampled out."""
    return sum(stats.get(c.key, 0) for c in COUNTS if c.outcome in SPAN_OUTCOMES)


def gap(stats: dict, offered: int) -> int:
    """offered - accounted: 0 when the ledger holds (every span offered has one outcome)."""
    return offered - span_outcomes(stats)


def not_exported(stats: dict) -> dict[str, int]:
    """The losses and refusals a run had (the demo's "not exported" line)."""
    return {
        c.key: stats[c.key]
        for c in COUNTS
        if stats.get(c.key) and c.outcome not in (EXPORTED, SAMPLED_OUT, UNMATCHED, INFO)
    }
