"""The HTML trace view in real headless Chromium (Debian's, driven by Playwright): what it draws,
zoom down to one step, click for attributes, sort and filter, checked against the trace file as
read_spans reads it and against screenshots."""

import io
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import clean_env

from benchmarks.html_view import synthetic_spans
from spec_tracing.report.html import MAX_REQUESTS, render_html
from spec_tracing.report.otlp_json import OtlpSpan, read_spans
from spec_tracing.semconv import SpanAttr

HERE = Path(__file__).parent
VERIFY_RGB = (0x2E, 0x8B, 0x57)


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("REQUIRE_CHROMIUM"):
            pytest.fail("REQUIRE_CHROMIUM is set but chromium is not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real reference-engine trace (view_run.py), its spans, and its page."""
    pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("view")
    trace = folder / "run.jsonl"
    done = subprocess.run(
        [sys.executable, str(HERE / "view_run.py"), str(trace)],
        env=clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = folder / "run.html"
    done = subprocess.run(
        [sys.executable, "-m", "spec_tracing.cli", "report", str(trace), "--html", str(page)],
        env=clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spans = read_spans(str(trace))
    roots = {s.span_id: s for s in spans if s.name == "spec_request"}
    return {"page": page, "spans": spans, "roots": roots, "aborted": _aborted(roots)}


def _aborted(roots) -> str:
    (rid,) = [r.attributes[SpanAttr.REQUEST_ID] for r in roots.values() if r.status_code == 2]
    return rid


@pytest.fixture(scope="module")
def browser():
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield b
        b.close()


def _open(browser, path, requests=None, width=1700, height=1200):
    page = browser.new_page(viewport={"width": width, "height": height})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    if requests is not None:
        page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_function("window.specTrace !== undefined")
    assert errors == []
    return page


def _picture(png: bytes):
    image = pytest.importorskip("PIL.Image")
    return image.open(io.BytesIO(png)).convert("RGB")


def _children(run, name=None):
    return [
        s for s in run["spans"]
        if s.parent_span_id in run["roots"] and (name is None or s.name == name)
    ]  # fmt: skip


def test_page_fetches_nothing_and_draws_every_span(browser, run):
    requests = []
    page = _open(browser, run["page"], requests)
    assert requests == [run["page"].as_uri()]  # the file itself, nothing else
    drawn = page.evaluate("specTrace.stats.drawn")
    assert drawn == dict(Counter(s.name for s in _children(run))) != {}
    by_start = sorted(run["roots"].values(), key=lambda r: r.start_ns)
    assert page.evaluate("specTrace.order()") == [_rid(r) for r in by_start]

    colours = {c for _, c in _picture(page.screenshot(full_page=True)).getcolors(1 << 24)}
    assert (0x4C, 0x78, 0xA8) in colours  # draft bars
    assert VERIFY_RGB in colours  # a verify bar that accepted all its drafts, or a chart bar
    assert (0xE0, 0xA0, 0x30) in colours  # prefill
    assert (0xB0, 0x7A, 0xA1) in colours  # draft_extend
    # Half the requests waited for a batch slot: their queue wait is hatched in its colour.
    assert (0xE8, 0xA1, 0x5E) in colours


def test_acceptance_charts_add_up_to_the_file(browser, run):
    page = _open(browser, run["page"])
    verify = _children(run, "spec_verify")
    buckets = page.evaluate("specTrace.buckets()")
    assert sum(b["acc"] for b in buckets) == sum(
        s.attributes[SpanAttr.ACCEPTED_TOKENS] for s in verify
    )
    assert sum(b["prop"] for b in buckets) == sum(
        s.attributes[SpanAttr.PROPOSED_TOKENS] for s in verify
    )
    assert sum(b["rounds"] for b in buckets) == len(verify)
    # Time with no rounds (prefill, queue) is told apart from rounds that accepted nothing.
    assert any(b["rounds"] == 0 for b in buckets)
    positions = page.evaluate("specTrace.stats.positions")
    for k, accepted, proposed, reached in positions:
        assert proposed == sum(1 for s in verify if s.attributes[SpanAttr.PROPOSED_TOKENS] >= k)
        assert accepted == sum(1 for s in verify if s.attributes[SpanAttr.ACCEPTED_TOKENS] >= k)
        assert reached == sum(1 for s in verify if s.attributes[SpanAttr.PROPOSED_TOKENS] >= k
                              and s.attributes[SpanAttr.ACCEPTED_TOKENS] >= k - 1)  # fmt: skip
    assert len(positions) == max(s.attributes[SpanAttr.PROPOSED_TOKENS] for s in verify)


def _drag(page, x0, x1, y):
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, y, steps=3)
    page.mouse.move(x1, y, steps=3)
    page.mouse.up()


def test_zoom_to_a_single_step_and_back(browser, run):
    page = _open(browser, run["page"])
    rid = page.evaluate("specTrace.order()[0]")
    bars = page.evaluate("id => specTrace.bars(id)", rid)
    verify = [(i, b) for i, b in enumerate(bars) if b["name"] == "spec_verify"]
    # A typical step: in a run this short (~0.1 s) the odd step stalls for tens of ms.
    index, bar = sorted(verify, key=lambda item: item[1]["dur"])[len(verify) // 2]
    full = page.evaluate("specTrace.view()")
    # Drag across the acceptance chart from just before that verify span to just after it.
    margin = bar["dur"] // 4
    x0 = page.evaluate("a => specTrace.xOf('acceptance', a)", bar["start"] - margin)
    x1 = page.evaluate("a => specTrace.xOf('acceptance', a)", bar["start"] + bar["dur"] + margin)
    box = page.locator("#acceptance").bounding_box()
    assert x1 - x0 < 40  # one step is a few pixels wide at full view
    _drag(page, x0, x1 + 6, box["y"] + box["height"] / 2)
    view = page.evaluate("specTrace.view()")
    per_px = (full["t1"] - full["t0"]) / 1000
    assert abs(view["t0"] - (bar["start"] - margin)) <= per_px
    assert view["t1"] - view["t0"] < (full["t1"] - full["t0"]) / 20
    assert page.evaluate("specTrace.stats.drawn.spec_verify") < len(_children(run, "spec_verify"))

    # That one step now spans much of the plot: a long run of verify-coloured pixels on its row.
    point = page.evaluate("([id, i]) => specTrace.barPoint(id, i)", [rid, index])
    picture = _picture(page.screenshot())
    row = [picture.getpixel((x, int(point["y"]))) for x in range(picture.width)]
    greenish = sum(1 for r, g, b in row if g > r + 15 and g > b + 8)
    assert greenish > 200, greenish

    page.dblclick("#acceptance")
    assert page.evaluate("specTrace.view()") == full


def _click_last_verify_bar(page, rid, scroll=False) -> dict:
    """Zoom so the request's last verify bar is wide enough to aim at, then click its middle
    (the waterfall scrolled into view first with `scroll`); the bar."""
    bars = page.evaluate("id => specTrace.bars(id)", rid)
    index = max(i for i, b in enumerate(bars) if b["name"] == "spec_verify")
    bar = bars[index]
    x0 = page.evaluate("a => specTrace.xOf('axis', a)", bar["start"] - bar["dur"])
    x1 = page.evaluate("a => specTrace.xOf('axis', a)", bar["start"] + 2 * bar["dur"])
    box = page.locator("#axis").bounding_box()
    _drag(page, x0 - 3, x1 + 3, box["y"] + 10)
    if scroll:
        page.locator("#waterfall").scroll_into_view_if_needed()
    point = page.evaluate("([id, i]) => specTrace.barPoint(id, i)", [rid, index])
    page.mouse.click(point["x"], point["y"])
    return bar


def test_click_a_bar_for_all_its_attributes(browser, run):
    page = _open(browser, run["page"])
    rid = page.evaluate("specTrace.order()[2]")
    bar = _click_last_verify_bar(page, rid)
    details = dict(
        row.split("\t", 1) for row in page.inner_text("#details table").splitlines()
    )  # fmt: skip
    (span,) = [s for s in run["spans"] if s.span_id == bar["span"]]
    assert details["span"] == "spec_verify" and details["request"] == rid
    assert details["span id"] == span.span_id and details["trace id"] == span.trace_id
    assert details["step"] == str(span.attributes[SpanAttr.STEP])
    for key, value in span.attributes.items():
        if key != SpanAttr.STEP:
            assert details[key] == str(value), key

    # Clicking a lane where it waited in the queue (no bar there) shows the request.
    page.dblclick("#axis")
    rid = page.evaluate("specTrace.order().at(-1)")
    request = page.evaluate("id => specTrace.request(id)", rid)
    assert request["queueEnd"] > request["start"]  # it waited for a batch slot
    x = page.evaluate(
        "a => specTrace.xOf('waterfall', a)", (request["start"] + request["queueEnd"]) / 2
    )
    page.mouse.click(x, page.evaluate("id => specTrace.laneY(id, 1)", rid))
    details = dict(
        row.split("\t", 1) for row in page.inner_text("#details table").splitlines()
    )  # fmt: skip
    (root,) = [r for r in run["roots"].values() if _rid(r) == rid]
    assert details["span"] == "spec_request" and details["request"] == rid
    assert details["span id"] == root.span_id
    assert details[SpanAttr.ACCEPT_RATE] == str(root.attributes[SpanAttr.ACCEPT_RATE])
    # Times to the microsecond, in the unit their size calls for.
    assert _ns(details["queue wait"]) == pytest.approx(request["queueEnd"] - request["start"],
                                                       abs=1000)  # fmt: skip
    assert _ns(details["duration"]) == pytest.approx(root.end_ns - root.start_ns, abs=1000)
    assert _ns(details["end"]) - _ns(details["start"]) == pytest.approx(
        root.end_ns - root.start_ns, abs=2000
    )
    assert page.evaluate("specTrace.selected()") == {"id": rid, "bar": -1}


def _ns(text: str) -> float:
    value, unit = text.split()
    return float(value) * {"s": 1e9, "ms": 1e6, "µs": 1e3, "ns": 1}[unit]


def _rid(span: OtlpSpan) -> str:
    return span.attributes[SpanAttr.REQUEST_ID]


def test_sort_and_filter_requests(browser, run):
    page = _open(browser, run["page"])
    roots = sorted(run["roots"].values(), key=lambda r: r.start_ns)

    page.select_option("#sort-key", "rate")
    by_rate = sorted(roots, key=lambda r: r.attributes[SpanAttr.ACCEPT_RATE])  # stable: by start
    assert page.evaluate("specTrace.order()") == [_rid(r) for r in by_rate]
    page.check("#sort-desc")
    by_rate_desc = sorted(roots, key=lambda r: -r.attributes[SpanAttr.ACCEPT_RATE])
    assert page.evaluate("specTrace.order()") == [_rid(r) for r in by_rate_desc]

    page.select_option("#sort-key", "dur")
    by_dur = sorted(roots, key=lambda r: -(r.end_ns - r.start_ns))
    assert page.evaluate("specTrace.order()") == [_rid(r) for r in by_dur]

    page.select_option("#filter-outcome", "error")
    assert page.evaluate("specTrace.order()") == [run["aborted"]]
    assert page.inner_text("#status").startswith("Showing 1 of 8 requests")
    page.select_option("#filter-outcome", "")

    page.fill("#filter-rate", "0.5")
    low = [_rid(r) for r in by_dur if r.attributes[SpanAttr.ACCEPT_RATE] <= 0.5]
    assert 0 < len(low) < len(roots)
    assert page.evaluate("specTrace.order()") == low
    # The charts follow the filter: only the shown requests' rounds are counted.
    verify = [
        s for s in _children(run, "spec_verify")
        if _rid(run["roots"][s.parent_span_id]) in low
    ]  # fmt: skip
    buckets = page.evaluate("specTrace.buckets()")
    assert sum(b["rounds"] for b in buckets) == len(verify)

    page.fill("#filter-rate", "")
    # Duration and verify rounds, as lower bounds.
    durations = sorted((r.end_ns - r.start_ns) / 1e6 for r in roots)
    cut = durations[len(durations) // 2]
    page.fill("#filter-dur", str(cut))
    assert page.evaluate("specTrace.order()") == [
        _rid(r) for r in by_dur if (r.end_ns - r.start_ns) >= cut * 1e6
    ]
    page.fill("#filter-dur", "")
    rounds = {_rid(r): r.attributes[SpanAttr.VERIFY_ROUNDS] for r in roots}
    page.fill("#filter-rounds", "9")
    assert page.evaluate("specTrace.order()") == [_rid(r) for r in by_dur if rounds[_rid(r)] >= 9]
    assert 0 < len(page.evaluate("specTrace.order()")) < len(roots)
    page.fill("#filter-rounds", "")
    page.fill("#filter-id", "req-")
    assert len(page.evaluate("specTrace.order()")) == len(roots)
    page.fill("#filter-id", "nothing-like-this")
    assert page.evaluate("specTrace.order()") == []
    assert page.evaluate("specTrace.stats.drawn") == {}


def test_per_request_axis_stretches_every_lane(browser, run):
    page = _open(browser, run["page"])
    plot = page.locator("#waterfall").bounding_box()
    order = page.evaluate("specTrace.order()")

    # On the shared axis the earliest-ending request stops well short of the right edge ...
    def last_bar_end_x(rid):
        bars = page.evaluate("id => specTrace.bars(id)", rid)
        point = page.evaluate("([id, i]) => specTrace.barPoint(id, i)", [rid, len(bars) - 1])
        return point["x1"]  # its right end: the last step may be a long one

    assert last_bar_end_x(order[0]) < plot["x"] + 170 + 1000 * 0.9
    page.select_option("#axis-mode", "request")
    # ... on its own axis, every request's last step is at the end of its lane.
    for rid in order:
        assert last_bar_end_x(rid) > plot["x"] + 170 + 1000 * 0.95
    assert "%" in page.evaluate("document.getElementById('status').textContent")


def test_a_hundred_requests_of_two_hundred_steps(browser, tmp_path):
    # Scale, not engine behaviour: spans shaped like a long run, made here.
    spans = synthetic_spans(requests=100, steps=200)
    page_file = tmp_path / "big.html"
    page_file.write_text(render_html(spans, "synthetic", "big"))
    page = _open(browser, page_file)
    drawn = page.evaluate("specTrace.stats.drawn")
    assert drawn == {"spec_draft": 20_000, "spec_verify": 20_000, "spec_draft_extend": 20_000}
    assert len(page.evaluate("specTrace.order()")) == 100 <= MAX_REQUESTS


def test_the_page_says_what_it_carries_and_how_to_choose_others(browser, tmp_path):
    from spec_tracing.report.html import parse_select

    spans = synthetic_spans(requests=30, steps=2)
    page_file = tmp_path / "slowest.html"
    page_file.write_text(render_html(spans, "synthetic", "t", parse_select("slowest:5")))
    page = _open(browser, page_file)
    status = page.inner_text("#status")
    assert "the 5 slowest: 5 of 30 requests" in status
    assert "report --select first:N | slowest:N" in status
    assert len(page.evaluate("specTrace.order()")) == 5


@pytest.mark.parametrize("width", [1100, 1366, 1920, 2560])
def test_the_page_fits_common_widths_and_a_clicked_bar_shows_its_details(browser, run, width):
    """No sideways scroll; Details beside the plots where they fit (1366 and up), below them in
    a narrower window; either way a clicked bar's Details are on screen."""
    page = _open(browser, run["page"], width=width, height=900)
    assert page.evaluate("document.documentElement.scrollWidth") == page.evaluate(
        "document.documentElement.clientWidth"
    )
    plots, side = page.locator("#plots").bounding_box(), page.locator("#side").bounding_box()
    beside = side["x"] >= plots["x"] + plots["width"]
    assert beside == (width >= 1366), (plots, side)
    rid = page.evaluate("specTrace.order()[1]")
    _click_last_verify_bar(page, rid, scroll=True)
    assert "spec_verify" in page.inner_text("#details")
    shown = page.evaluate(
        "(() => { const r = document.getElementById('details').getBoundingClientRect();"
        " return r.top >= 0 && r.top < window.innerHeight && r.height > 0; })()"
    )
    assert shown


def test_the_width_chart_marks_each_controller_decision(browser, tmp_path):
    pytest.importorskip("torch")
    trace, page_file = tmp_path / "ad.jsonl", tmp_path / "ad.html"
    cli = [sys.executable, "-m", "spec_tracing.cli"]
    for args in (["demo", "--adaptive", "--quiet", "--num-requests", "24",
                  "--max-new-tokens", "32", "--trace-file", str(trace)],
                 ["report", str(trace), "--html", str(page_file)]):  # fmt: skip
        done = subprocess.run([*cli, *args], env=clean_env(), capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
    decisions = {}
    for s in read_spans(str(trace)):
        if s.name == "spec_adapt":
            a = s.attributes
            decisions[s.start_ns] = f"{a[SpanAttr.ADAPT_OLD_WIDTH]}→{a[SpanAttr.ADAPT_NEW_WIDTH]}"
    assert decisions
    page = _open(browser, page_file)
    marked = page.evaluate("specTrace.stats.changes")
    assert sorted(label for _, label in marked) == sorted(decisions.values())


def test_filtering_hides_a_tooltip_that_described_what_it_removed(browser, run):
    page = _open(browser, run["page"])
    rid = page.evaluate("specTrace.order()[0]")
    point = page.evaluate("([id, i]) => specTrace.barPoint(id, i)", [rid, 0])
    page.mouse.move(point["x"], point["y"])
    assert page.evaluate("getComputedStyle(document.getElementById('tooltip')).display") != "none"
    page.fill("#filter-id", "no-such-request")
    page.dispatch_event("#filter-id", "input")
    assert page.evaluate("getComputedStyle(document.getElementById('tooltip')).display") == "none"


def test_the_comparison_page_opens_cleanly_and_fits_1366_px(browser, tmp_path):
    from spec_tracing.report.compare import render_compare

    spans = synthetic_spans(requests=20, steps=10)
    page_file = tmp_path / "ab.html"
    page_file.write_text(render_compare(spans, spans[: len(spans) // 2], "a.jsonl", "b.jsonl"))
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_file.as_uri())
    assert errors == []
    assert page.evaluate("document.documentElement.scrollWidth") == 1366 - page.evaluate(
        "window.innerWidth - document.documentElement.clientWidth"
    )
    assert page.locator("#acceptance tr").count() == 5  # a header and four figures
