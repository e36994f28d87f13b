"""One self-contained HTML page for a captured trace: the run's summary, acceptance over time,
and a waterfall per request (draft / verify / draft_extend bars for every decode step).

Everything is drawn here as inline SVG: no script, no stylesheet or font from the network, so the
page opens anywhere, offline. Hover a bar for its step, duration and (verify) accepted/proposed.
Each request's lane has its own time scale (its whole life spans the plot's width), so 200 steps
stay about 5 px apart however long the run was.
"""

from __future__ import annotations

from collections import defaultdict
from html import escape

from ..semconv import SpanAttr
from ..stages import RequestStage
from .otlp_json import OtlpSpan

ROOT = RequestStage.REQUEST.name
# name -> (sub-row in a lane, colour)
STAGES = {
    RequestStage.SPEC_DRAFT.name: (0, "#4c78a8"),
    RequestStage.SPEC_VERIFY.name: (1, "#2e8b57"),
    RequestStage.SPEC_DRAFT_EXTEND.name: (2, "#b07aa1"),
}
OTHER_COLOUR = "#9c9c9c"  # prefill and user stages, drawn in the draft row's place
MAX_REQUESTS = 500
LABEL_W, PLOT_W, RIGHT_W = 170, 1000, 90
ROW_H, LANE_GAP = 5, 5
LANE_H = 3 * ROW_H + LANE_GAP
BUCKETS = 60
CHART_H = 120

_STYLE = """
body{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:18px;margin:0 0 8px} h2{font-size:15px;margin:18px 0 6px}
pre{background:#f6f6f6;padding:8px;display:inline-block}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:middle}
svg text{font:11px system-ui,sans-serif;fill:#333}
"""


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.2f} ms"


def _bar_title(span: OtlpSpan) -> str:
    attrs = span.attributes
    parts = [span.name]
    if SpanAttr.STEP in attrs:
        parts.append(f"step {attrs[SpanAttr.STEP]}")
    parts.append(_ms(span.end_ns - span.start_ns))
    if SpanAttr.ACCEPTED_TOKENS in attrs:
        proposed = attrs.get(SpanAttr.PROPOSED_TOKENS)
        of = "" if proposed is None else f" of {proposed}"
        parts.append(f"accepted {attrs[SpanAttr.ACCEPTED_TOKENS]}{of}")
    if SpanAttr.NUM_STEPS in attrs:
        parts.append(f"width {attrs[SpanAttr.NUM_STEPS]}")
    return " · ".join(str(p) for p in parts)


def _verify_opacity(span: OtlpSpan) -> float:
    # Darker the more of the round's drafts were accepted.
    proposed = span.attributes.get(SpanAttr.PROPOSED_TOKENS)
    accepted = span.attributes.get(SpanAttr.ACCEPTED_TOKENS)
    if not proposed or accepted is None:
        return 0.35
    return round(0.35 + 0.65 * min(1.0, accepted / proposed), 2)


def _waterfall(roots: list[OtlpSpan], children: dict[str, list[OtlpSpan]]) -> str:
    height = len(roots) * LANE_H + 20
    width = LABEL_W + PLOT_W + RIGHT_W
    out = [
        f'<svg id="waterfall" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">'
    ]
    for index, root in enumerate(roots):
        y = index * LANE_H + 10
        t0, span_ns = root.start_ns, max(1, root.end_ns - root.start_ns)
        scale = PLOT_W / span_ns
        rid = root.attributes.get(SpanAttr.REQUEST_ID, root.span_id)
        failed = root.status_code == 2
        label = escape(f"{rid}{'  (error)' if failed else ''}")
        out.append(
            f'<g class="request" data-request="{escape(str(rid))}">'
            f'<text x="4" y="{y + 2 * ROW_H + 1}">{label}</text>'
            f'<rect class="lifetime" x="{LABEL_W}" y="{y}" width="{PLOT_W}" height="{3 * ROW_H}"'
            f' fill="{"#fde0e0" if failed else "#f0f0f0"}"><title>{escape(_bar_title(root))}'
            f"</title></rect>"
        )
        for span in children.get(root.span_id, ()):
            row, colour = STAGES.get(span.name, (0, OTHER_COLOUR))
            x = LABEL_W + (span.start_ns - t0) * scale
            w = max(1.0, (span.end_ns - span.start_ns) * scale)
            opacity = _verify_opacity(span) if span.name == "spec_verify" else 1
            out.append(
                f'<rect class="{escape(span.name)}" x="{x:.1f}" y="{y + row * ROW_H}" '
                f'width="{w:.1f}" height="{ROW_H - 1}" fill="{colour}" fill-opacity="{opacity}">'
                f"<title>{escape(_bar_title(span))}</title></rect>"
            )
        out.append(
            f'<text x="{LABEL_W + PLOT_W + 6}" y="{y + 2 * ROW_H + 1}">{_ms(span_ns)}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


def _acceptance_chart(verify: list[OtlpSpan]) -> str:
    """Accept rate (accepted / proposed drafts) of the verify rounds ending in each time bucket."""
    rounds = [
        (s.end_ns, s.attributes[SpanAttr.ACCEPTED_TOKENS], s.attributes[SpanAttr.PROPOSED_TOKENS])
        for s in verify
        if SpanAttr.ACCEPTED_TOKENS in s.attributes and SpanAttr.PROPOSED_TOKENS in s.attributes
    ]
    if not rounds:
        return "<p>No verify spans with accepted and proposed counts.</p>"
    first = min(r[0] for r in rounds)
    last = max(r[0] for r in rounds)
    span_ns = max(1, last - first)
    accepted, proposed, count = [0] * BUCKETS, [0] * BUCKETS, [0] * BUCKETS
    for end, acc, prop in rounds:
        b = min(BUCKETS - 1, (end - first) * BUCKETS // span_ns)
        accepted[b] += acc
        proposed[b] += prop
        count[b] += 1
    width = LABEL_W + PLOT_W + RIGHT_W
    bar_w = PLOT_W / BUCKETS
    out = [
        f'<svg id="acceptance" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{CHART_H + 30}" viewBox="0 0 {width} {CHART_H + 30}">'
    ]
    for frac in (0, 0.5, 1):
        y = 10 + CHART_H * (1 - frac)
        out.append(
            f'<line x1="{LABEL_W}" x2="{LABEL_W + PLOT_W}" y1="{y}" y2="{y}" stroke="#ddd"/>'
            f'<text x="{LABEL_W - 30}" y="{y + 4}">{frac:.1f}</text>'
        )
    out.append(f'<text x="4" y="{10 + CHART_H / 2}">accept rate</text>')
    for b in range(BUCKETS):
        if not proposed[b]:
            continue
        rate = accepted[b] / proposed[b]
        h = CHART_H * rate
        out.append(
            f'<rect class="accept-bucket" x="{LABEL_W + b * bar_w + 1:.1f}" '
            f'y="{10 + CHART_H - h:.1f}" width="{bar_w - 2:.1f}" height="{max(h, 0.5):.1f}" '
            f'fill="#2e8b57"><title>{rate:.3f} ({accepted[b]} of {proposed[b]} drafts, '
            f"{count[b]} rounds)</title></rect>"
        )
    out.append(
        f'<text x="{LABEL_W}" y="{CHART_H + 26}">0</text>'
        f'<text x="{LABEL_W + PLOT_W - 60}" y="{CHART_H + 26}">{_ms(span_ns)}</text></svg>'
    )
    return "".join(out)


def render_html(spans: list[OtlpSpan], summary_text: str, title: str) -> str:
    roots = sorted((s for s in spans if s.name == ROOT), key=lambda s: s.start_ns)
    children: dict[str, list[OtlpSpan]] = defaultdict(list)
    for s in spans:
        if s.name != ROOT and s.parent_span_id:
            children[s.parent_span_id].append(s)
    shown = roots[:MAX_REQUESTS]
    more = (
        f"<p>Showing the first {MAX_REQUESTS} of {len(roots)} requests.</p>"
        if len(roots) > MAX_REQUESTS
        else ""
    )
    legend = "".join(
        f'<span><i style="background:{colour}"></i>{name}</span>'
        for name, (_, colour) in STAGES.items()
    )
    verify = [s for s in spans if s.name == RequestStage.SPEC_VERIFY.name]
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>spec-tracing report: {escape(title)}</h1>"
        f"<pre id='summary'>{escape(summary_text)}</pre>"
        "<h2>Acceptance over time</h2>"
        f"{_acceptance_chart(verify)}"
        f"<h2>Requests ({len(roots)})</h2>"
        f"<p class='legend'>{legend}<span>verify bars are darker the more drafts were accepted;"
        " hover a bar for its step, duration and counts; each lane is scaled to its request's"
        " duration (right)</span></p>"
        f"{more}{_waterfall(shown, children)}</body></html>"
    )
