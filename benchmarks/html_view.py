"""`python -m benchmarks.html_view`: how fast Chromium shows `spec-tracing report --html` for a
run of 100 requests x 200 decode steps (60,000 stage bars), against the same page without the
view script (the payload parsed as HTML, nothing drawn), measured in the same run.

Times are from navigation start to the second animation frame after load (the frame that
shows the drawing); medians of 7 loads in alternating order. Needs Debian's chromium and
playwright (both installed by .ci/run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from spec_tracing.report.html import render_html
from spec_tracing.report.otlp_json import OtlpSpan
from spec_tracing.semconv import SpanAttr

STAGES = (
    ("spec_draft", 0, 600_000),
    ("spec_verify", 700_000, 900_000),
    ("spec_draft_extend", 1_700_000, 200_000),
)
FRAME = (
    "new Promise(r => requestAnimationFrame(() => requestAnimationFrame("
    "() => r(performance.now()))))"
)


def synthetic_spans(requests: int, steps: int, batch: int = 32, step_ns: int = 2_000_000):
    """Spans shaped like a long run: batches of `batch` requests decoding `steps` steps each,
    a draft, verify (0-3 of 3 drafts accepted) and draft_extend span per request and step."""
    spans = []
    for i in range(requests):
        start = (i // batch) * steps * step_ns
        root_id, trace_id = f"{i + 1:016x}", f"{i + 1:032x}"
        for step in range(steps):
            t = start + step * step_ns
            for k, (name, offset, duration) in enumerate(STAGES):
                attrs = {SpanAttr.STEP: step, SpanAttr.BATCH_SIZE: batch}
                if name == "spec_verify":
                    attrs[SpanAttr.ACCEPTED_TOKENS] = (i + step) % 4
                    attrs[SpanAttr.PROPOSED_TOKENS] = 3
                span_id = f"{i:08x}{step:05x}{k:03x}"
                begin = t + offset
                spans.append(
                    OtlpSpan(name, trace_id, span_id, root_id, begin, begin + duration, attrs, 0)
                )
        end = start + steps * step_ns
        attrs = {SpanAttr.REQUEST_ID: f"r{i}"}
        spans.append(OtlpSpan("spec_request", trace_id, root_id, "", start, end, attrs, 0))
    return spans


def _load_ms(browser, path: Path, drawn: bool) -> dict:
    page = browser.new_page(viewport={"width": 1700, "height": 1200})
    page.goto(path.as_uri())
    frame_ms = page.evaluate(FRAME)
    result = {"first_frame_ms": frame_ms}
    if drawn:
        result["script_ms"] = page.evaluate("specTrace.renderMs")
        box = page.locator("#acceptance").bounding_box()
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + 400, y)
        page.mouse.down()
        page.mouse.move(box["x"] + 420, y, steps=2)
        page.mouse.up()
        result["zoom_redraw_ms"] = page.evaluate("specTrace.stats.drawMs")
    page.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.html_view", description=__doc__)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default="benchmarks/results/html_view.json")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    spans = synthetic_spans(args.requests, args.steps)
    began = time.perf_counter()
    html = render_html(spans, "synthetic run", "benchmark")
    python_ms = (time.perf_counter() - began) * 1000
    folder = Path(tempfile.mkdtemp())
    view, bare = folder / "view.html", folder / "bare.html"
    view.write_text(html)
    bare.write_text(html[: html.rindex("<script>")] + "</body></html>")
    runs: dict[str, list[dict]] = {"view": [], "bare": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        for i in range(args.repeats):
            order = (
                (("view", view), ("bare", bare)) if i % 2 == 0 else (("bare", bare), ("view", view))
            )
            for name, path in order:
                runs[name].append(_load_ms(browser, path, name == "view"))
        browser.close()

    def med(name, key):
        return statistics.median(r[key] for r in runs[name])

    results = {
        "requests": args.requests,
        "steps": args.steps,
        "bars": sum(1 for s in spans if s.name != "spec_request"),
        "page_mb": len(html.encode()) / 1e6,
        "python_render_ms": python_ms,
        "first_frame_ms": med("view", "first_frame_ms"),
        "bare_first_frame_ms": med("bare", "first_frame_ms"),
        "script_ms": med("view", "script_ms"),
        "zoom_redraw_ms": med("view", "zoom_redraw_ms"),
    }
    results["view_over_bare"] = results["first_frame_ms"] / results["bare_first_frame_ms"]
    print(
        f"{args.requests} requests x {args.steps} steps ({results['bars']:,} bars), page "
        f"{results['page_mb']:.1f} MB, written by Python in {python_ms:.0f} ms\n"
        f"first frame with the drawing   {results['first_frame_ms']:7.0f} ms (median of "
        f"{args.repeats})\n"
        f"same page without view.js      {results['bare_first_frame_ms']:7.0f} ms "
        f"-> {results['view_over_bare']:.2f}x\n"
        f"view.js up to its first draw   {results['script_ms']:7.0f} ms since navigation\n"
        f"redraw after a zoom            {results['zoom_redraw_ms']:7.0f} ms"
    )
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
