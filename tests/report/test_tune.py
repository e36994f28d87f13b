"""`spec-tracing tune` against traces whose best width has a closed form, and on the demo."""

import json
import subprocess
import sys

import pytest
from conftest import clean_env

from spec_tracing.report.otlp_json import OtlpSpan
from spec_tracing.report.tune import accept_length, bucket_of, tune
from spec_tracing.semconv import SpanAttr

BATCH = 8
DRAFT_MS_PER_TOKEN, VERIFY_MS = 0.2, 3.0


def _rounds_of_width(width: int) -> list[int]:
    """64 rounds whose conditional acceptance is exactly 1/2 at every position: 64 / 2^(j+1)
    rounds accept j drafts (j < width), 64 / 2^width accept all."""
    out = []
    for j in range(width):
        out += [j] * (64 >> (j + 1))
    return out + [width] * (64 >> width)


def _synthetic_trace(widths=range(1, 7)) -> list[OtlpSpan]:
    """Batches of 8 requests at each width: draft 0.2 ms per drafted token, verify 3 ms."""
    spans, t, trace = [], 0, 0
    for width in widths:
        accepted = _rounds_of_width(width)
        for step in range(len(accepted) // BATCH):
            draft_ns, verify_ns = int(DRAFT_MS_PER_TOKEN * width * 1e6), int(VERIFY_MS * 1e6)
            batch_attrs = {SpanAttr.BATCH_SIZE: BATCH, SpanAttr.NUM_STEPS: width}
            for r in range(BATCH):
                trace += 1
                tid, sid = f"{trace:032x}", f"{trace:016x}"
                spans.append(OtlpSpan("spec_draft", tid, sid, "", t, t + draft_ns,
                                      dict(batch_attrs), 0))  # fmt: skip
                verify = {**batch_attrs, SpanAttr.ACCEPTED_TOKENS: accepted[step * BATCH + r],
                          SpanAttr.PROPOSED_TOKENS: width}  # fmt: skip
                spans.append(OtlpSpan("spec_verify", tid, sid, "", t + draft_ns,
                                      t + draft_ns + verify_ns, verify, 0))  # fmt: skip
            t += draft_ns + verify_ns + 1000
    return spans


def _closed_form(width: int) -> float:
    length = 2 - 0.5**width  # 1 + sum over k <= K of (1/2)^k
    return BATCH * length / (DRAFT_MS_PER_TOKEN * width + VERIFY_MS) * 1000


def test_tune_recovers_the_closed_form_best_width():
    (bucket,) = tune(_synthetic_trace())["buckets"]
    assert bucket["batch_size"] == [8, 15] and bucket["steps"] == 6 * 8
    assert bucket["conditional_acceptance"] == [0.5] * 6
    for k, figures in bucket["per_width"].items():
        width = int(k)
        assert figures["accept_length"] == pytest.approx(2 - 0.5**width, abs=1e-4)
        assert figures["step_ms"] == pytest.approx(DRAFT_MS_PER_TOKEN * width + VERIFY_MS)
        assert figures["tokens_per_s"] == pytest.approx(_closed_form(width), rel=1e-3)
    best = max(range(1, 7), key=_closed_form)
    assert best == 3 and bucket["best_width"] == best
    emitted = sum(a + 1 for w in range(1, 7) for a in _rounds_of_width(w))
    time_ms = sum(8 * (DRAFT_MS_PER_TOKEN * w + VERIFY_MS) for w in range(1, 7))
    assert bucket["observed_tokens_per_s"] == pytest.approx(emitted / time_ms * 1000, rel=1e-4)


def test_widths_past_what_ran_are_not_estimated():
    (bucket,) = tune(_synthetic_trace(widths=[2]))["buckets"]
    assert list(bucket["per_width"]) == ["1", "2"]  # nothing offered a third draft
    assert bucket["cost_model"]["spec_draft"]["how"].startswith("one width ran")


def test_batch_size_buckets():
    assert [bucket_of(b) for b in (1, 2, 3, 4, 15, 16, 300)] == [
        (1, 1), (2, 3), (2, 3), (4, 7), (8, 15), (16, 31), (256, 511)]  # fmt: skip
    assert accept_length([0.5, 0.5], 2) == 1.75


def test_tune_runs_on_the_demo_and_writes_json(tmp_path):
    pytest.importorskip("torch")
    cli = [sys.executable, "-m", "spec_tracing.cli"]
    trace = tmp_path / "run.jsonl"
    done = subprocess.run([*cli, "demo", "--adaptive", "--quiet", "--num-requests", "24",
                           "--max-new-tokens", "24", "--trace-file", str(trace)],
                          env=clean_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = tmp_path / "tune.json"
    done = subprocess.run([*cli, "tune", str(trace), "--json", str(out)], env=clean_env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["buckets"] and "<- best" in done.stdout
    for bucket in result["buckets"]:
        assert str(bucket["best_width"]) in bucket["per_width"]
        assert bucket["observed_tokens_per_s"] > 0
    bad = subprocess.run([*cli, "tune", str(tmp_path / "missing.jsonl")], env=clean_env(),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("spec-tracing tune: ")
