"""Builds dashboards/spec-tracing.json, the Grafana dashboard docker-compose provisions, with
grafana-foundation-sdk (Grafana's own typed builders).

    pip install -c constraints.txt 'spec-tracing[dashboards]'
    python dashboards/build.py            # rewrites dashboards/spec-tracing.json

tests/metrics/test_prometheus_server.py checks that the committed JSON is what this builds and
that every panel's query returns data in a real Prometheus scraping a run.
"""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardLinkType,
    DataSourceRef,
    VariableRefresh,
)

OUT = Path(__file__).with_name("spec-tracing.json")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
# The service's Jaeger search. Through the OpenTelemetry Collector's Prometheus exporter, `job`
# is the service's OTEL_SERVICE_NAME, which is also its name in Jaeger.
JAEGER_SEARCH = "http://localhost:16686/search?service=${job}"

SEL = '{job=~"$job"}'
ROUNDS = f"sum(rate(spec_decode_verify_rounds_total{SEL}[$__rate_interval]))"


def _rate(metric: str, by: str = "") -> str:
    group = f" by ({by})" if by else ""
    return f"sum{group}(rate({metric}{SEL}[$__rate_interval]))"


# (title, unit, [(query, legend)], description)
PANELS: list[tuple[str, str, list[tuple[str, str]], str]] = [
    ("Accept rate", "percentunit",
     [(f"{_rate('spec_decode_accepted_drafts_total')} / "
       f"{_rate('spec_decode_proposed_drafts_total')}", "accept rate")],
     "Draft tokens accepted over proposed (bonus excluded)."),
    ("Accept length", "short",
     [(f"{_rate('spec_decode_emitted_tokens_total')} / {ROUNDS}", "tokens per round")],
     "Tokens emitted per verify round, bonus included."),
    ("Per-position acceptance", "percentunit",
     [(f"{_rate('spec_decode_accepted_per_position_total', 'position')} / scalar({ROUNDS})",
       "position {{position}}")],
     "Share of rounds whose draft at position i was accepted."),
    ("Rounds by accepted count", "percentunit",
     [(f"{_rate('spec_decode_rounds_by_accepted_total', 'accepted')} / scalar({ROUNDS})",
       "{{accepted}} accepted")],
     "Share of verify rounds that accepted exactly k drafts."),
    ("Draft width and batch size", "short",
     [(f"max(spec_decode_num_steps{SEL})", "draft width"),
      (f"max(spec_decode_batch_size{SEL})", "batch size")],
     "Active draft width (an adaptive controller changes it) against requests per verify batch."),
    ("Per-request accept rate (quantiles, with exemplars)", "percentunit",
     [(f"histogram_quantile({q}, {_rate('spec_decode_request_accept_rate_bucket', 'le')})",
       f"p{round(q * 100)} of requests") for q in (0.1, 0.5, 0.9)],
     "Accept rate of each request as it ends; an exemplar dot opens that request's trace."),
    ("Per-request draft time share (quantiles)", "percentunit",
     [(f"histogram_quantile({q}, "
       f"{_rate('spec_decode_request_draft_time_share_bucket', 'le')})",
       f"p{round(q * 100)} of requests") for q in (0.5, 0.9)],
     "Draft + draft_extend time over the request's draft, verify and draft_extend time."),
    ("Export health", "short",
     [(_rate("spec_tracing_dropped_events_total"), "events dropped (buffer full)"),
      (_rate("spec_tracing_export_dropped_spans_total"), "spans dropped (exporter buffer)"),
      (_rate("spec_tracing_export_failed_spans_total"), "spans failed"),
      (_rate("spec_tracing_export_rejected_spans_total"), "spans rejected by the collector"),
      (_rate("spec_tracing_export_lost_spans_total"), "spans lost")],
     "Per second; every line is 0 while nothing is lost."),
]  # fmt: skip


def _jaeger_link(title: str) -> db.DashboardLink:
    link = db.DashboardLink(title).type(DashboardLinkType.LINK).url(JAEGER_SEARCH)
    return link.target_blank(True)


def build() -> dict:
    board = (
        db.Dashboard("Speculative decoding (spec-tracing)")
        .uid("spec-tracing")
        .tags(["spec-tracing", "speculative-decoding"])
        .time("now-30m", "now")
        .refresh("10s")
        .with_variable(
            db.QueryVariable("job")
            .label("service")
            .datasource(DATASOURCE)
            .query("label_values(spec_decode_verify_rounds_total, job)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True)
            .all_value(".*")
        )
        .link(_jaeger_link("Traces in Jaeger"))
    )
    for title, unit, queries, description in PANELS:
        panel = (
            timeseries.Panel()
            .title(title)
            .description(description)
            .datasource(DATASOURCE)
            .unit(unit)
            .height(8)
            .span(12)
            .links(
                [
                    db.DashboardLink("Traces of this service in Jaeger")
                    .type(DashboardLinkType.LINK)
                    .url(JAEGER_SEARCH)
                    .target_blank(True)
                ]
            )  # fmt: skip
        )
        for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
            query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref)
            if "_bucket" in expr:  # histograms of requests: exemplars carry their trace ids
                query = query.exemplar(True)
            panel = panel.with_target(query)
        board = board.with_panel(panel)
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
