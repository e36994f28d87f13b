"""`spec-tracing report A.jsonl B.jsonl --html OUT`: two runs side by side."""

import subprocess
import sys

import pytest
from conftest import clean_env

from spec_tracing.report.compare import figures, render_compare
from spec_tracing.report.otlp_json import OtlpSpan
from spec_tracing.semconv import SpanAttr


def _run(width: int, accepted: list[int], verify_ms: float) -> list[OtlpSpan]:
    spans, t = [], 0
    for i, a in enumerate(accepted):
        attrs = {SpanAttr.ACCEPTED_TOKENS: a, SpanAttr.PROPOSED_TOKENS: width,
                 SpanAttr.NUM_STEPS: width, SpanAttr.BATCH_SIZE: 1}  # fmt: skip
        spans.append(OtlpSpan("spec_verify", f"{i + 1:032x}", f"{i + 1:016x}", "", t,
                              t + int(verify_ms * 1e6), attrs, 0))  # fmt: skip
        t += 10**7
    return spans


def test_the_figures_compared_are_those_of_each_run():
    a = _run(2, [0, 1, 2, 2], 1.0)  # 5 of 8 drafts, 9 tokens in 4 rounds
    b = _run(4, [4, 4, 0, 1], 3.0)  # 9 of 16
    fa, fb = figures(a), figures(b)
    assert fa["accept rate"] == pytest.approx(5 / 8) and fb["accept rate"] == pytest.approx(9 / 16)
    assert fa["accept length"] == pytest.approx(9 / 4) and fb["accept length"] == pytest.approx(
        13 / 4
    )
    assert fa["widths"] == {2: 1.0} and fb["widths"] == {4: 1.0}
    # position 2 of A: offered 4 times, reached (first kept) 3 times, kept twice
    assert fa["positions"][2] == pytest.approx((2 / 4, 2 / 3))
    assert fb["latency_ms"]["spec_verify"][1] == pytest.approx(3.0)
    page = render_compare(a, b, "a.jsonl", "<b>.jsonl")
    assert "0.625" in page and "0.562" in page and "&lt;b&gt;.jsonl" in page and "<b>" not in page
    assert "3.000x" in page  # B's verify p50 over A's


def test_report_compares_two_demo_runs(tmp_path):
    pytest.importorskip("torch")
    cli = [sys.executable, "-m", "spec_tracing.cli"]
    traces = []
    for width in (2, 4):
        trace = tmp_path / f"w{width}.jsonl"
        demo = ["demo", "--quiet", "--num-requests", "8", "--num-steps", str(width),
                "--max-new-tokens", "16", "--trace-file", str(trace)]  # fmt: skip
        done = subprocess.run([*cli, *demo], env=clean_env(), capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        traces.append(str(trace))
    page = tmp_path / "ab.html"
    done = subprocess.run([*cli, "report", *traces, "--html", str(page)], env=clean_env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("A: ") and "\nB: " in done.stdout
    text = page.read_text()
    assert "w2.jsonl against w4.jsonl" in text and "<script" not in text
    for bad in ([*traces, traces[0], "--html", str(page)], [*traces, "--perfetto", "p.json"],
                [*traces]):  # fmt: skip
        refused = subprocess.run([*cli, "report", *bad], env=clean_env(), capture_output=True,
                                 text=True, timeout=120)  # fmt: skip
        assert refused.returncode == 2 and "two files compare two runs" in refused.stderr
