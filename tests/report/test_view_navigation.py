"""The trace view as a tool: a layout that follows the window, wheel zoom, panning, keys, hover
tips, the selected bar outlined and kept honest under filtering, readable axes, charts that stay
filled when zoomed to a few steps, and files the engine view never had to draw: appended runs,
requests cut short in the queue, spans without their root."""

import pytest
from test_view import _drag, _open, _picture, browser, run  # noqa: F401 - fixtures

from benchmarks.html_view import synthetic_spans
from spec_tracing.report.html import render_html
from spec_tracing.report.otlp_json import OtlpSpan
from spec_tracing.semconv import SpanAttr


def _page_of(browser, tmp_path, spans, **viewport):  # noqa: F811
    path = tmp_path / "view.html"
    path.write_text(render_html(spans, "synthetic", "view"))
    page = _open(browser, path)
    if viewport:
        page.set_viewport_size(viewport)
        page.wait_for_timeout(100)
    return page


def test_a_narrow_window_keeps_charts_and_details_on_screen(browser, tmp_path):  # noqa: F811
    page = _page_of(browser, tmp_path, synthetic_spans(requests=8, steps=20))
    assert page.evaluate("specTrace.layout().plotWidth") == 1000  # 1700 px: full width
    page.set_viewport_size({"width": 1100, "height": 900})
    page.wait_for_function("specTrace.layout().plotWidth < 1000")
    for element in ("#acceptance", "#width", "#waterfall", "#details"):
        box = page.locator(element).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 1100, (element, box)


def test_axis_labels_use_the_unit_their_size_calls_for(browser, tmp_path):  # noqa: F811
    # A 60 s run: ticks every 5 or 10 s read "25 s", never "25000 ms".
    spans = synthetic_spans(requests=8, steps=200, batch=4, step_ns=150_000_000)
    page = _page_of(browser, tmp_path, spans)
    labels = page.evaluate("specTrace.stats.axis")
    assert len(labels) >= 4 and all(label.endswith(" s") for label in labels[1:]), labels
    assert all(float(label.split()[0]) < 1000 for label in labels[1:])


def test_wheel_zooms_around_the_pointer_and_shift_wheel_pans(browser, run):  # noqa: F811
    page = _open(browser, run["page"])
    full = page.evaluate("specTrace.view()")
    box = page.locator("#acceptance").bounding_box()
    t = full["t0"] + (full["t1"] - full["t0"]) * 0.3
    x = page.evaluate("a => specTrace.xOf('acceptance', a)", t)
    page.mouse.move(x, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -300)
    zoomed = page.evaluate("specTrace.view()")
    assert zoomed["t1"] - zoomed["t0"] < (full["t1"] - full["t0"]) * 0.8
    # The time under the pointer stays under it.
    assert page.evaluate("a => specTrace.xOf('acceptance', a)", t) == pytest.approx(x, abs=2)
    page.keyboard.down("Shift")
    page.mouse.wheel(0, 200)
    page.keyboard.up("Shift")
    panned = page.evaluate("specTrace.view()")
    assert panned["t0"] > zoomed["t0"]
    assert panned["t1"] - panned["t0"] == pytest.approx(zoomed["t1"] - zoomed["t0"])
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("specTrace.view()")["t0"] < panned["t0"]
    page.keyboard.press("0")
    assert page.evaluate("specTrace.view()") == full
    page.keyboard.press("+")
    assert page.evaluate("specTrace.view()")["t1"] - page.evaluate("specTrace.view()")["t0"] == (
        pytest.approx((full["t1"] - full["t0"]) / 2)
    )


def test_hover_click_outline_keys_and_filtering(browser, run):  # noqa: F811
    page = _open(browser, run["page"])
    rid = page.evaluate("specTrace.order()[1]")
    bars = page.evaluate("id => specTrace.bars(id)", rid)
    index = next(i for i, b in enumerate(bars) if b["name"] == "spec_verify" and b["step"] == 2)
    bar = bars[index]
    x0 = page.evaluate("a => specTrace.xOf('axis', a)", bar["start"] - bar["dur"])
    x1 = page.evaluate("a => specTrace.xOf('axis', a)", bar["start"] + 2 * bar["dur"])
    _drag(page, x0 - 3, x1 + 3, page.locator("#axis").bounding_box()["y"] + 10)
    point = page.evaluate("([id, i]) => specTrace.barPoint(id, i)", [rid, index])

    page.mouse.move(point["x"], point["y"])
    tip = page.locator("#tooltip")
    assert tip.is_visible()
    assert tip.inner_text().startswith("spec_verify · step 2 · ") and rid in tip.inner_text()

    page.mouse.click(point["x"], point["y"])
    assert page.evaluate("specTrace.selected()") == {"id": rid, "bar": index}
    picture = _picture(page.screenshot())
    above = [picture.getpixel((int(x), int(point["y"] - 3.5)))
             for x in range(int(point["x0"]) + 1, int(point["x1"]) - 1)]  # fmt: skip
    assert sum(1 for p in above if max(p) < 100) > len(above) * 0.8  # the outline, in black

    page.keyboard.press("]")
    assert page.evaluate("specTrace.selected()") == {"id": rid, "bar": index + 1}
    details = page.inner_text("#details")
    assert bars[index + 1]["span"] in details and "end" in details

    # Filtered out, the selection goes and Details says why, instead of showing a hidden request.
    page.fill("#filter-id", "nothing-like-this")
    assert page.evaluate("specTrace.selected()") is None
    assert "filtered out" in page.inner_text("#details")


def test_zoomed_to_a_few_steps_the_charts_show_a_bucket_per_step(browser, tmp_path):  # noqa: F811
    spans = synthetic_spans(requests=8, steps=100, batch=8)  # 2 ms steps
    page = _page_of(browser, tmp_path, spans)
    x0 = page.evaluate("a => specTrace.xOf('acceptance', a)", 40_000_000)
    x1 = page.evaluate("a => specTrace.xOf('acceptance', a)", 50_000_000)  # 5 steps
    _drag(page, x0, x1, page.locator("#acceptance").bounding_box()["y"] + 40)
    buckets = page.evaluate("specTrace.buckets()")
    assert 3 <= len(buckets) <= 6
    assert sum(b["rounds"] > 0 for b in buckets) >= len(buckets) - 1


def test_zoomed_in_the_requests_with_something_in_view_come_first(browser, tmp_path):  # noqa: F811
    spans = synthetic_spans(requests=8, steps=20, batch=4)  # two batches, one after the other
    page = _page_of(browser, tmp_path, spans)
    assert page.evaluate("specTrace.order()")[:4] == ["r0", "r1", "r2", "r3"]
    end = page.evaluate("specTrace.view()")["t1"]
    x0 = page.evaluate("a => specTrace.xOf('acceptance', a)", end * 0.7)
    x1 = page.evaluate("a => specTrace.xOf('acceptance', a)", end * 0.9)
    _drag(page, x0, x1, page.locator("#acceptance").bounding_box()["y"] + 40)
    assert sorted(page.evaluate("specTrace.order()")[:4]) == ["r4", "r5", "r6", "r7"]


def _root(rid, trace, span, start, end, instance="a", status=0, **attrs):
    return OtlpSpan("spec_request", trace, span, "", start, end,
                    {SpanAttr.REQUEST_ID: rid, **attrs}, status,
                    resource={"service.name": "svc", "service.instance.id": instance})  # fmt: skip


def test_appended_runs_cut_short_requests_and_orphan_spans(browser, tmp_path):  # noqa: F811
    first = synthetic_spans(requests=4, steps=10, batch=4)
    for s in first:
        s.resource = {"service.name": "svc", "service.instance.id": "a"}
    gap = 110 * 10**9  # the second run started 110 s after the first ended
    second = [
        _root("r0", "f" * 32, "e" * 16, gap, gap + 5_000_000, instance="b"),
        _root("queued", "d" * 32, "c" * 16, gap, gap + 3_000_000, instance="b", status=2),
        # A stage whose request's root is not in the file (the file was cut, say).
        OtlpSpan(
            "spec_verify",
            "9" * 32,
            "8" * 16,
            "7" * 16,
            gap + 1_000_000,
            gap + 2_000_000,
            {SpanAttr.ACCEPTED_TOKENS: 1, SpanAttr.PROPOSED_TOKENS: 3},
            0,
        ),  # fmt: skip
    ]
    page = _page_of(browser, tmp_path, first + second)
    assert page.is_visible("#run")
    assert sorted(page.evaluate("specTrace.order()")) == ["r0", "r1", "r2", "r3"]
    view = page.evaluate("specTrace.view()")
    assert view["t1"] - view["t0"] < 10**9  # run 1 alone on the axis, not the 110 s gap
    assert "of run 1" in page.inner_text("#status")

    page.select_option("#run", "1")
    order = page.evaluate("specTrace.order()")
    assert sorted(order) == sorted(["r0", "queued", "trace 99999999 · no root"])
    view = page.evaluate("specTrace.view()")
    assert view["t0"] >= gap and view["t1"] - view["t0"] < 10**9
    assert page.evaluate("specTrace.stats.drawn") == {"spec_verify": 1}  # the orphan is drawn
    queued = page.evaluate("specTrace.request('queued')")
    assert queued["queueEnd"] == queued["start"] + queued["dur"]  # never got a batch slot
