"""Step-detail sampling (SPEC_TRACING_STEP_SAMPLE_RATIO, SPEC_TRACING_STEP_KEEP): every root
exported and saying why its steps were kept or not, the steps of exactly the requests the ratio
and the keep rules pick, every span accounted for (sampled out is its own count), held spans
bounded, and the same on every output."""

import random
import subprocess
import sys

import pytest
from conftest import clean_env

import spec_tracing
from spec_tracing import ReqTimeStats, lifecycle, record_batch_stage
from spec_tracing.export.sampling import KEEP_REASON, STEPS_KEPT, StepSampler
from spec_tracing.record.hotpath import perf_counter
from spec_tracing.report.otlp_json import read_spans
from spec_tracing.semconv import SpanAttr
from spec_tracing.settings import parse_rules
from spec_tracing.stages import RequestStage
from spec_tracing.wire import ROOT_RECORD, STAGE_RECORD

SAMPLING = ("sampled_out_spans", "steps_kept_requests", "steps_dropped_requests")


def _in_ratio(trace_hex: str, ratio: float) -> bool:
    return (int(trace_hex, 16) & (2**64 - 1)) < int(ratio * 2**64)


def _run_requests(n: int, slow: str, aborted: str) -> int:
    """n requests of 3 drafts and a verify each (5 spans with the root); returns spans offered."""
    reqs = [ReqTimeStats(rid=f"r{i}") for i in range(n)]
    for _ in range(3):
        t = perf_counter()
        record_batch_stage(reqs, RequestStage.SPEC_DRAFT, t - 0.001, t)
    t = perf_counter()
    record_batch_stage(reqs, RequestStage.SPEC_VERIFY, t - 0.001, t,
                       accepted=[i % 4 for i in range(n)], proposed=[3] * n)  # fmt: skip
    for r in reqs:
        if r.rid == aborted:
            r.abort("client went away")
        elif r.rid == slow:
            r.finish(ts=r.start_ts + 0.5)  # 500 ms
        else:
            r.finish()
    return n * 5


@pytest.mark.parametrize("export_process", [True, False], ids=["process", "thread"])
def test_steps_of_the_ratio_and_the_rules_are_kept_every_root_says_why(tmp_path, export_process):
    trace = tmp_path / "sampled.jsonl"
    spec_tracing.enable(exporter="file", file=str(trace), metrics=False,
                        export_process=export_process, step_sample_ratio=0.3,
                        step_keep="error,duration>200ms")  # fmt: skip
    offered = _run_requests(60, slow="r7", aborted="r5")
    spec_tracing.shutdown(timeout_ms=10_000)
    stats = lifecycle.last_stats()
    spans = read_spans(str(trace))
    roots = {s.trace_id: s for s in spans if s.name == "spec_request"}
    assert len(roots) == 60  # every request's root, whatever the ratio
    steps = {}
    for s in spans:
        if s.name != "spec_request":
            steps[s.trace_id] = steps.get(s.trace_id, 0) + 1
    reasons = {}
    for trace_id, root in roots.items():
        rid, kept = root.attributes[SpanAttr.REQUEST_ID], root.attributes[STEPS_KEPT]
        reason = reasons[rid] = root.attributes[KEEP_REASON]
        assert steps.get(trace_id, 0) == (4 if kept else 0), rid  # all of its steps or none
        assert (reason == "ratio") == _in_ratio(trace_id, 0.3), rid
        assert kept == (reason != "sampled_out")
        # The acceptance is on every root, steps kept or not.
        assert root.attributes[SpanAttr.VERIFY_ROUNDS] == 1
    assert reasons["r5"] in ("ratio", "error") and reasons["r7"] in ("ratio", "duration")
    assert "error" in reasons.values() or _in_ratio(
        next(t for t, r in roots.items() if r.attributes[SpanAttr.REQUEST_ID] == "r5"), 0.3
    )
    assert 0 < sum(r == "sampled_out" for r in reasons.values()) < 60
    # Sampling is not loss: every span offered is exported or sampled out.
    assert stats["spans"] == len(spans)
    assert stats["spans"] + stats["sampled_out_spans"] == offered
    assert stats["export_dropped_spans"] == stats["export_lost_spans"] == 0
    kept = sum(r != "sampled_out" for r in reasons.values())
    assert (stats["steps_kept_requests"], stats["steps_dropped_requests"]) == (kept, 60 - kept)


def test_held_steps_are_bounded_and_decided_early_by_the_ratio(tmp_path):
    trace = tmp_path / "bounded.jsonl"
    # Ratio 0 and a rule no request meets: every request's steps are held until it ends; a
    # bound of 100 spans holds 25 requests' steps, so the other 25 are decided early. (In the
    # export thread: the exporter process's pipe has the same bound, and would refuse a batch
    # of 50 requests' events whole before sampling saw them.)
    spec_tracing.enable(exporter="file", file=str(trace), metrics=False, step_sample_ratio=0,
                        step_keep="duration>100000ms", export_queue_spans=100,
                        export_process=False)  # fmt: skip
    offered = _run_requests(50, slow="", aborted="")
    spec_tracing.shutdown(timeout_ms=10_000)
    stats = lifecycle.last_stats()
    spans = read_spans(str(trace))
    assert [s.name for s in spans] == ["spec_request"] * 50
    assert all(s.attributes[KEEP_REASON] == "sampled_out" for s in spans)
    assert stats["step_sampling_early_decisions"] == 25
    assert stats["spans"] + stats["sampled_out_spans"] == offered


def _root(trace_id: int, duration: float, rate=None, error=None) -> tuple:
    attrs = {} if rate is None else {SpanAttr.ACCEPT_RATE: rate}
    return (ROOT_RECORD, trace_id, 1, None, 100.0, 100.0 + duration, attrs, error)


def _step(trace_id: int) -> tuple:
    return (STAGE_RECORD, "spec_verify", {}, [(trace_id, 1, 0.0, 1.0, 0, 1, 3, 1)])


def _decide(sampler, trace_id, **root):
    out = sampler.filter([_step(trace_id)]) + sampler.filter([_root(trace_id, **root)])
    return out[-1][6][KEEP_REASON], len(out) - 1


OUT_OF_RATIO = 2**64 - 1  # low 64 bits all set: outside any ratio below 1


@pytest.mark.parametrize(
    "rules, history, this, reason",
    [
        ("slowest:0.1", [dict(duration=1.0)] * 100, dict(duration=5.0), "slow"),
        ("slowest:0.1", [dict(duration=1.0 + i) for i in range(100)], dict(duration=5.0), None),
        ("lowest_accept:0.1", [dict(duration=1, rate=0.8)] * 100, dict(duration=1, rate=0.2),
         "low_accept"),
        ("lowest_accept:0.1", [dict(duration=1, rate=0.8)] * 100, dict(duration=1, rate=0.9),
         None),
        ("highest_accept:0.1", [dict(duration=1, rate=0.5)] * 100, dict(duration=1, rate=0.99),
         "high_accept"),
        ("highest_accept:0.1", [dict(duration=1, rate=0.5)] * 100, dict(duration=1, rate=0.5),
         None),  # a tie with the quantile is not past it
        ("accept_rate>0.95", [], dict(duration=1, rate=0.99), "high_accept_rate"),
        ("accept_rate>0.95", [], dict(duration=1, rate=0.9), None),
        ("accept_rate<0.3", [], dict(duration=1, rate=0.2), "accept_rate"),
        ("accept_rate<0.3", [], dict(duration=1), None),  # no rounds: no rate to judge
        ("duration>2000ms", [], dict(duration=2.5), "duration"),
        ("error", [], dict(duration=1, error="boom"), "error"),
        ("none", [], dict(duration=1, error="boom"), None),
    ],
)  # fmt: skip
def test_keep_rules(rules, history, this, reason):
    sampler = StepSampler(0.0, parse_rules("X", rules), max_held_spans=1000)
    for i, root in enumerate(history):
        sampler.filter([_root(OUT_OF_RATIO - 1 - i, **root)])
    got, steps = _decide(sampler, OUT_OF_RATIO, **this)
    assert got == (reason or "sampled_out")
    assert steps == (1 if reason else 0)
    assert sampler.held_spans == 0


def test_the_demo_reports_the_same_acceptance_at_any_ratio(tmp_path):
    # The engine records every round whatever the ratio: the metrics (the demo's figures) and
    # the roots (the report's) agree with an unsampled run of the same seed.
    outputs = {}
    for ratio in ("1", "0.1"):
        trace = tmp_path / f"{ratio}.jsonl"
        env = clean_env() | {"SPEC_TRACING_STEP_SAMPLE_RATIO": ratio}
        demo = subprocess.run([sys.executable, "-m", "spec_tracing.cli", "demo", "--quiet",
                               "--num-requests", "24", "--trace-file", str(trace)],
                              env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        report = subprocess.run([sys.executable, "-m", "spec_tracing.cli", "report", str(trace)],
                                env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert demo.returncode == report.returncode == 0, demo.stderr + report.stderr
        outputs[ratio] = (demo.stdout, report.stdout, len(read_spans(str(trace))))

    def line(text, start):
        return next(x for x in text.splitlines() if x.startswith(start)).split("(from")[0].strip()

    (demo1, report1, spans1), (demo01, report01, spans01) = outputs["1"], outputs["0.1"]
    for start in ("accept rate", "accept length", "verify rounds"):
        assert line(demo01, start) == line(demo1, start)
        assert line(report01, start) == line(report1, start) == line(demo1, start)
    assert "step sampling" in demo01 and "step sampling" not in demo1
    left_out = int(line(demo01, "step sampling").split()[2].replace(",", ""))
    assert spans01 + left_out == spans1 and left_out > 0


def test_non_finite_accept_rates_never_reach_the_quantiles():
    """Roots whose accept rate is NaN or infinite (a request attribute can be anything): 15,000
    of them among finite ones never make the sampler raise, and the quantile is that of the
    finite rates alone."""
    sampler = StepSampler(0.0, parse_rules("X", "lowest_accept:0.1"), max_held_spans=1000)
    odd = (float("nan"), float("inf"), float("-inf"))
    for i in range(15_000):
        rate = odd[i % 3] if i % 2 else (i % 100) / 100
        sampler.filter([_root(OUT_OF_RATIO - 1 - i, duration=1.0, rate=rate)])
    finite = sorted(r for r in sampler.rates.sorted)
    assert len(finite) == 2000 and all(0 <= r < 1 for r in finite)
    assert _decide(sampler, OUT_OF_RATIO, duration=1.0, rate=0.0)[0] == "low_accept"
    assert _decide(sampler, OUT_OF_RATIO - 20_000, duration=1.0, rate=float("nan"))[0] == (
        "sampled_out"
    )


def test_requests_that_never_end_are_bounded_and_counted():
    from spec_tracing.export.assembler import SpanAssembler
    from spec_tracing.wire import START

    assembler = SpanAssembler(max_open=100)
    assembler.feed([(START, "spec_draft", 1.0, tuple((i, 1) for i in range(1, 351)))])
    assert len(assembler._state) == 100 and assembler.counts()["evicted_requests"] == 250


def test_the_open_request_bound_is_a_setting(monkeypatch):
    from spec_tracing import ConfigError

    monkeypatch.setenv("SPEC_TRACING_MAX_OPEN_REQUESTS", "0")
    with pytest.raises(ConfigError, match="SPEC_TRACING_MAX_OPEN_REQUESTS"):
        spec_tracing.enable(exporter="none")


def test_the_keep_budget_bounds_what_rules_keep():
    """An incident: every request has a low accept rate. With a budget of 1% the rule keeps 20
    of any 2,000 consecutive requests (the budget's window), refuses the rest and counts them."""
    sampler = StepSampler(0.0, parse_rules("X", "accept_rate<0.5"), max_held_spans=10_000,
                          keep_max=0.01)  # fmt: skip
    kept = []
    for i in range(5000):
        reason, _ = _decide(sampler, OUT_OF_RATIO - i, duration=1.0, rate=0.1)
        kept.append(reason == "accept_rate")
    for start in range(0, 5000 - 2000, 250):
        assert sum(kept[start : start + 2000]) <= 20
    assert sum(kept) >= 40  # the budget renews as the window moves
    assert sampler.counts()["steps_refused_requests"] == 5000 - sum(kept)


def test_the_keep_budget_is_a_setting():
    from spec_tracing.settings import ConfigError, Settings

    assert Settings.from_env({}).step_keep_max == 0.05
    with pytest.raises(ConfigError, match="SPEC_TRACING_STEP_KEEP_MAX"):
        Settings.from_env({"SPEC_TRACING_STEP_KEEP_MAX": "2"})


def test_slowest_is_judged_on_service_time_not_on_the_wait_in_the_queue():
    """In an overloaded run each new request waited longer than the last: with its wait counted
    it would beat the running quantile every time."""
    sampler = StepSampler(0.0, parse_rules("X", "slowest:0.1"), max_held_spans=1000)
    for i in range(100):
        sampler.filter([_root(OUT_OF_RATIO - 1 - i, duration=1.0)])
    queued = (ROOT_RECORD, OUT_OF_RATIO, 1, None, 100.0, 105.0,
              {SpanAttr.QUEUE_TIME: 4.5}, None)  # 5 s in all, 0.5 s of service  # fmt: skip
    (root,) = sampler.filter([queued])
    assert root[6][KEEP_REASON] == "sampled_out"
    slow = (ROOT_RECORD, OUT_OF_RATIO - 100, 1, None, 100.0, 105.0,
            {SpanAttr.QUEUE_TIME: 0.5}, None)  # 4.5 s of service  # fmt: skip
    (root,) = sampler.filter([slow])
    assert root[6][KEEP_REASON] == "slow"


def test_roots_say_how_long_the_request_waited_in_the_queue(spec_spans):
    from spec_tracing.reference.engine import Engine, demo_prompts

    engine = Engine("eagle", batch_size=2, num_steps=2, seed=1)
    for prompt in demo_prompts(6, seed=1):
        engine.add_request(prompt, 8)
    engine.run()
    spec_tracing.flush()
    roots = sorted(spec_spans.roots(), key=lambda r: r.start_time)
    prefill = {s.context.trace_id: s.start_time for s in spec_spans.spans("prefill")}
    for root in roots:
        waited = (prefill[root.context.trace_id] - root.start_time) / 1e9
        assert root.attributes[SpanAttr.QUEUE_TIME] == pytest.approx(waited, abs=1e-6)
    assert roots[-1].attributes[SpanAttr.QUEUE_TIME] > roots[0].attributes[SpanAttr.QUEUE_TIME]


def _kept(records) -> dict:
    """trace id -> keep reason, for the roots among span records."""
    return {r[1]: r[6][KEEP_REASON] for r in records if r[0] == ROOT_RECORD}


def test_quantile_rules_wait_for_a_window_large_enough():
    """lowest_accept:0.1 judges no one until 100 requests (TAIL/F) have ended: the first 99
    wait, roots and steps, and are then judged against all 100, so the ten lowest are kept
    and no others (a window of 10 would pick by a quantile of ten values)."""
    rates = random.Random(7).sample([i / 100 for i in range(100)], 100)
    sampler = StepSampler(0.0, parse_rules("X", "lowest_accept:0.1"), max_held_spans=1000)
    out: list = []
    for i, rate in enumerate(rates):
        out += sampler.filter([_step(OUT_OF_RATIO - i)])
        out += sampler.filter([_root(OUT_OF_RATIO - i, duration=1.0, rate=rate)])
        if i < 99:
            assert out == [] and len(sampler.waiting) == i + 1
    kept = _kept(out)
    assert len(kept) == 100 and not sampler.waiting and sampler.held_spans == 0
    low = {OUT_OF_RATIO - i for i, r in enumerate(rates) if r < 0.10}
    assert {t for t, why in kept.items() if why == "low_accept"} == low and len(low) == 10
    assert sum(r[0] == STAGE_RECORD for r in out) == 10  # the kept ones' steps, no others
    # Once the window is large enough, a request is judged when it ends.
    assert _decide(sampler, OUT_OF_RATIO - 500, duration=1.0, rate=0.0) == ("low_accept", 1)


def test_waiting_requests_are_judged_at_a_flush_and_past_the_held_bound():
    sampler = StepSampler(0.0, parse_rules("X", "slowest:0.1"), max_held_spans=1000)
    for i in range(30):
        sampler.filter([_root(OUT_OF_RATIO - i, duration=float(i))])
    assert len(sampler.waiting) == 30
    kept = _kept(sampler.release())  # a flush: against the 30 there are (at least 1/F)
    assert {t for t, why in kept.items() if why == "slow"} == {OUT_OF_RATIO - 29,
                                                               OUT_OF_RATIO - 28}  # fmt: skip
    # A bound of 5 held spans: the sixth waiting request's steps push the oldest out, judged.
    sampler = StepSampler(0.0, parse_rules("X", "slowest:0.1"), max_held_spans=5)
    out = []
    for i in range(6):
        out += sampler.filter([_step(OUT_OF_RATIO - i)])
        out += sampler.filter([_root(OUT_OF_RATIO - i, duration=1.0)])
    assert len(_kept(out)) == 1 and sampler.early_decisions == 1 and sampler.held_spans == 5


@pytest.mark.parametrize("export_process", [True, False], ids=["process", "thread"])
def test_a_flush_exports_every_request_that_ended_before_it(tmp_path, export_process):
    trace = tmp_path / "t.jsonl"
    spec_tracing.enable(exporter="file", file=str(trace), metrics=False, step_sample_ratio=0,
                        step_keep="lowest_accept:0.01", export_process=export_process)  # fmt: skip
    _run_requests(20, slow="", aborted="")  # 20 of the 1,000 the rule's window needs
    assert spec_tracing.flush(timeout_ms=10_000)
    roots = [s for s in read_spans(str(trace)) if s.name == "spec_request"]
    assert len(roots) == 20
    spec_tracing.shutdown()
