"""Every PromQL query in docs/reference/metrics.md and in the Grafana dashboard, evaluated by a
real Prometheus (Debian's `prometheus`) scraping the plugin's endpoint during a reference-engine
run, against the same figure computed from the run's spans.

Two identical phases run: the first makes every series exist (Prometheus's `rate` ignores a
series' first sample), the second is measured. Each query is evaluated at the scrape that saw the
second phase whole, with its window set to end exactly at that scrape and start exactly at the
one that saw the first phase whole: no extrapolation, so the figures agree to float precision.
"""

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

import spec_tracing
from spec_tracing.reference.engine import Engine, demo_prompts
from spec_tracing.report.otlp_json import read_spans

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "reference" / "metrics.md"
ALERTS = ROOT / "dashboards" / "spec-tracing-alerts.yml"
PROMETHEUS = shutil.which("prometheus")

if PROMETHEUS is None and os.environ.get("REQUIRE_PROMETHEUS"):
    pytest.fail("REQUIRE_PROMETHEUS is set but prometheus is not installed", pytrace=False)
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="needs Debian's prometheus package")


def documented_queries() -> dict[str, str]:
    """figure -> PromQL, from the Queries table."""
    rows = re.findall(r"^\| ([a-z][a-z -]+) \| `([^`]+)` \|$", DOC.read_text(), re.M)
    return dict(rows)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, tmp: Path, target_port: int):
        self.port = _free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{ALERTS}']\n"
            "scrape_configs:\n"
            f"  - job_name: spec\n    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
        )
        self.log = open(tmp / "prometheus.log", "w")  # noqa: SIM115 - closed in stop
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        url = f"http://127.0.0.1:{self.port}/api/v1/query?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def scrape_showing(self, metric: str, value: float) -> float:
        """The timestamp (s) of the first scrape at which `metric` reads `value`."""
        for _ in range(600):  # a liveness bound: scrapes come every second
            try:
                samples = self.query(f"{metric}[1h]")
            except OSError:
                samples = []  # not listening yet
            for series in samples:
                for ts, v in series["values"]:
                    if float(v) == value:
                        return float(ts)
            time.sleep(0.1)
        raise AssertionError(f"Prometheus never scraped {metric} = {value}")

    def rules(self) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/rules"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def _phase(engine: Engine, tag: str) -> None:
    for i, prompt in enumerate(demo_prompts(24, seed=3)):
        engine.add_request(prompt, 24, rid=f"{tag}-{i}")
    engine.run()
    spec_tracing.flush(timeout_ms=10_000)


def _rounds_of(spans, tag: str) -> list[tuple[int, int]]:
    """(accepted, proposed) of every verify round of the phase's requests."""
    roots = [s for s in spans if s.name == "spec_request"]
    traces = {s.trace_id for s in roots if s.attributes["spec_request.id"].startswith(tag)}
    return [(s.attributes["accepted_tokens"], s.attributes["spec_decode.proposed_tokens"])
            for s in spans if s.name == "spec_verify" and s.trace_id in traces]  # fmt: skip


def _from_spans(rounds: list[tuple[int, int]], stats: dict) -> dict[str, dict[str, float]]:
    """figure -> {label value or "": value}, as each query would give it; `stats`: how much
    each of stats()' counters grew over the measured phase."""
    n = len(rounds)
    accepted = Counter(a for a, _ in rounds)
    widest = max(p for _, p in rounds)
    return {
        "accept rate": {"": sum(a for a, _ in rounds) / sum(p for _, p in rounds)},
        "accept length": {"": (sum(a for a, _ in rounds) + n) / n},
        "per-position acceptance": {
            str(i): sum(1 for a, _ in rounds if a > i) / n
            for i in range(widest)
            if any(a > i for a, _ in rounds)
        },  # fmt: skip
        "acceptance by offered position": {
            str(i): sum(1 for a, _ in rounds if a > i) / sum(1 for _, p in rounds if p > i)
            for i in range(widest)
            if any(a > i for a, _ in rounds)
        },  # fmt: skip
        "conditional acceptance by position": {
            str(i): sum(1 for a, _ in rounds if a > i)
            / sum(1 for a, p in rounds if p > i and a >= i)
            for i in range(widest)
            if any(a > i for a, _ in rounds)
        },  # fmt: skip
        "rounds by accepted count": {str(k): c / n for k, c in accepted.items()},
        "trace events dropped": {"": stats["dropped_events"]},
        "spans not exported": {
            "": sum(
                stats[k]
                for k in (
                    "export_dropped_spans",
                    "export_failed_spans",
                    "export_rejected_spans",
                    "export_lost_spans",
                )
            )
        },  # fmt: skip
    }


def _values(result: list[dict]) -> dict[str, float]:
    out = {}
    for series in result:
        labels = {k: v for k, v in series["metric"].items() if k not in ("job", "instance")}
        out[next(iter(labels.values()), "")] = float(series["value"][1])
    return out


class Run:
    """Both phases done: Prometheus, the two scrapes' times, and the measured phase's figures."""

    def __init__(self, prometheus, t1, t2, expected):
        self.prometheus, self.t1, self.t2, self.expected = prometheus, t1, t2, expected

    def query(self, expr: str) -> dict[str, float]:
        """`expr` at the second scrape, over exactly the measured phase."""
        window = f"{round((self.t2 - self.t1) * 1000)}ms"
        expr = expr.replace("[5m]", f"[{window}]").replace("$__rate_interval", window)
        return _values(self.prometheus.query(expr, at=self.t2))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prometheus")
    port = _free_port()
    trace = tmp / "trace.jsonl"
    spec_tracing.enable(exporter="file", file=str(trace), prometheus_port=port)
    prometheus = Prometheus(tmp, port)
    try:
        engine = Engine("eagle", batch_size=8, num_steps=3, seed=3)
        _phase(engine, "warm")
        before = spec_tracing.stats()
        first_total = len(_rounds_of(read_spans(str(trace)), "warm"))
        t1 = prometheus.scrape_showing("spec_decode_verify_rounds_total", first_total)
        _phase(engine, "measured")
        rounds = _rounds_of(read_spans(str(trace)), "measured")
        t2 = prometheus.scrape_showing("spec_decode_verify_rounds_total", first_total + len(rounds))
        stats = {k: v - before.get(k, 0) for k, v in spec_tracing.stats().items()}
        yield Run(prometheus, t1, t2, _from_spans(rounds, stats))
    finally:
        prometheus.stop()
        spec_tracing.shutdown()


def test_every_documented_query_gives_in_prometheus_what_the_spans_say(run):
    queries = documented_queries()
    assert set(queries) >= {"accept rate", "accept length", "per-position acceptance",
                            "acceptance by offered position",
                            "conditional acceptance by position", "rounds by accepted count",
                            "trace events dropped", "spans not exported"}  # fmt: skip
    for figure, expr in queries.items():
        got, expected = run.query(expr), run.expected[figure]
        assert got.keys() == expected.keys(), (figure, got, expected)
        for label, value in expected.items():
            assert got[label] == pytest.approx(value, rel=1e-9, abs=1e-12), (figure, label)


def _dashboard_targets() -> list[tuple[str, str]]:
    board = json.loads((ROOT / "dashboards" / "spec-tracing.json").read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"]
            for target in panel["targets"]]  # fmt: skip


def test_the_committed_dashboard_is_what_its_builder_builds():
    pytest.importorskip("grafana_foundation_sdk")
    sys.path.insert(0, str(ROOT / "dashboards"))
    try:
        import build
    finally:
        sys.path.pop(0)
    assert (ROOT / "dashboards" / "spec-tracing.json").read_text() == build.render()


@pytest.mark.parametrize("title, expr", _dashboard_targets())
def test_every_dashboard_query_returns_data_for_a_run(run, title, expr):
    got = run.query(expr.replace("$job", ".*"))
    assert got, (title, expr)
    assert all(math.isfinite(v) for v in got.values()), (title, got)
    if title == "Accept rate":  # the same figure as the documented query
        assert got[""] == pytest.approx(run.expected["accept rate"][""], rel=1e-9)
    if title == "Per-position acceptance":
        assert got == pytest.approx(run.expected["per-position acceptance"], rel=1e-9)


def test_the_alert_rules_pass_promtool_and_evaluate_quietly_on_a_healthy_run(run):
    """promtool checks the file and runs its unit tests (each alert fires on the series made to
    fire it and on no other); the real Prometheus scraping a healthy run evaluates every rule
    without error and fires none."""
    promtool = shutil.which("promtool")
    assert promtool, "Debian's prometheus package ships promtool"
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0 and "SUCCESS: 5 rules found" in checked.stdout, checked
    tested = subprocess.run([promtool, "test", "rules", "alert_rules_test.yml"],
                            cwd=Path(__file__).parent, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    for _ in range(300):  # a liveness bound: rules are evaluated every second
        rules = run.prometheus.rules()
        if len(rules) == 5 and all(r.get("lastEvaluation", "").startswith("2") for r in rules):
            break
        time.sleep(0.1)
    assert {r["name"] for r in rules} == {
        "SpecDecodeAcceptanceCollapse", "SpecDecodeAcceptanceDrop", "SpecDecodeAcceptanceTooHigh",
        "SpecDecodeWidthThrash", "SpecTracingLosingSpans"}  # fmt: skip
    states = {r["name"]: (r["health"], r["state"], r.get("lastError")) for r in rules}
    assert all(health == "ok" for health, _, _ in states.values()), states
    assert all(state == "inactive" for _, state, _ in states.values()), states
