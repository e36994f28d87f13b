"""`spec-tracing report A.jsonl B.jsonl --html OUT`: two runs side by side, the comparison people
tune with (width 3 against 5, n-gram against EAGLE): acceptance, accept length, acceptance per
position (of the rounds that offered it, and given the earlier ones), the draft widths that ran,
and the latency of each stage and of requests. A static page: no script, nothing fetched."""

from __future__ import annotations

from html import escape

from .summary import TraceSummary, percentile

ROOT = "spec_request"


def figures(spans) -> dict:
    """What the page compares, for one run."""
    summary = TraceSummary.from_spans(spans)
    acc = summary.acceptance
    if summary.root_acceptance.rounds > acc.rounds:  # step spans sampled: the roots count all
        acc = summary.root_acceptance
    rounds = sum(summary.widths.values())
    return {
        "requests": summary.requests,
        "verify rounds": acc.rounds,
        "accept rate": acc.accept_rate,
        "accept length": acc.accept_length,
        "positions": {k: (rate, given) for k, _, _, _, rate, given in summary.positions.rows()},
        "widths": {w: n / rounds for w, n in sorted(summary.widths.items())} if rounds else {},
        "latency_ms": {
            name: (len(v), percentile(v, 50), percentile(v, 95), percentile(v, 99))
            for name, v in summary.durations_ms.items()
            if v
        },
    }


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(a, b) -> str:
    return "-" if a in (None, 0) or b is None else f"{b / a:.3f}x"


def _bar(share: float | None) -> str:
    width = 0 if share is None else max(0.0, min(1.0, share)) * 100
    return f"<span class='bar'><i style='width:{width:.1f}%'></i></span>"


def render_compare(a_spans, b_spans, a_name: str, b_name: str) -> str:
    a, b = figures(a_spans), figures(b_spans)
    head = (
        f"<tr><th></th><th>A: {escape(a_name)}</th><th>B: {escape(b_name)}</th><th>B / A</th></tr>"
    )
    rows = []
    for key in ("requests", "verify rounds", "accept rate", "accept length"):
        va, vb = a[key], b[key]
        digits = 0 if key in ("requests", "verify rounds") else 3
        rows.append(f"<tr><td>{key}</td><td>{_num(va, digits)}</td><td>{_num(vb, digits)}</td>"
                    f"<td>{_ratio(va, vb)}</td></tr>")  # fmt: skip
    positions = []
    for k in sorted(set(a["positions"]) | set(b["positions"])):
        ua, ga = a["positions"].get(k, (None, None))
        ub, gb = b["positions"].get(k, (None, None))
        positions.append(
            f"<tr><td>k={k}</td><td>{_bar(ua)} {_num(ua)}</td><td>{_num(ga)}</td>"
            f"<td>{_bar(ub)} {_num(ub)}</td><td>{_num(gb)}</td></tr>"
        )
    widths = []
    for w in sorted(set(a["widths"]) | set(b["widths"])):
        sa, sb = a["widths"].get(w), b["widths"].get(w)
        widths.append(f"<tr><td>{w}</td><td>{_bar(sa)} {_num(sa)}</td>"
                      f"<td>{_bar(sb)} {_num(sb)}</td></tr>")  # fmt: skip
    latency = []
    order = ["prefill", "spec_draft", "spec_verify", "spec_draft_extend", ROOT]
    names = [n for n in order if n in a["latency_ms"] or n in b["latency_ms"]]
    names += sorted((set(a["latency_ms"]) | set(b["latency_ms"])) - set(names))
    for name in names:
        la, lb = a["latency_ms"].get(name), b["latency_ms"].get(name)
        cells = []
        for i in (1, 2, 3):
            cells.append(f"<td>{_num(la and la[i])}</td><td>{_num(lb and lb[i])}</td>"
                         f"<td>{_ratio(la and la[i], lb and lb[i])}</td>")  # fmt: skip
        latency.append(f"<tr><td>{escape(name)}</td>{''.join(cells)}</tr>")
    title = f"{a_name} against {b_name}"
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>spec-tracing: {escape(title)}</h1>"
        "<h2>Acceptance</h2>"
        f"<table id='acceptance'>{head}{''.join(rows)}</table>"
        "<h2>Acceptance per draft position</h2>"
        "<p class='hint'>Of the rounds that offered position k, the share that kept it; "
        '"given k-1": the same among the rounds whose first k-1 drafts were kept.</p>'
        "<table id='positions'><tr><th></th><th>A</th><th>A given k-1</th><th>B</th>"
        f"<th>B given k-1</th></tr>{''.join(positions)}</table>"
        "<h2>Draft widths that ran (share of verify rounds)</h2>"
        f"<table id='widths'><tr><th>width</th><th>A</th><th>B</th></tr>{''.join(widths)}</table>"
        "<h2>Latency (ms)</h2>"
        "<table id='latency'><tr><th></th><th>A p50</th><th>B p50</th><th>B / A</th>"
        "<th>A p95</th><th>B p95</th><th>B / A</th><th>A p99</th><th>B p99</th><th>B / A</th>"
        f"</tr>{''.join(latency)}</table>"
        "</body></html>"
    )


_CSS = """body{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:18px} h2{font-size:14px;margin:18px 0 4px}
table{border-collapse:collapse} td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #eee}
td:first-child,th:first-child{text-align:left}
.bar{display:inline-block;width:80px;height:9px;background:#eee;vertical-align:middle}
.bar i{display:block;height:9px;background:#2e8b57}
.hint{color:#666;font-size:12px;margin:2px 0}"""
