"""The main job: the demo's trace, read back from its OTLP JSON file, matches the engine."""

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from conftest import clean_env

import spec_tracing
from spec_tracing.reference.engine import Engine, demo_prompts
from spec_tracing.report.otlp_json import read_spans
from spec_tracing.semconv import SpanAttr

ROOT = Path(__file__).parents[2]


def _run_traced(tmp_path, worker, level, adaptive=None):
    path = tmp_path / f"{worker}.jsonl"
    spec_tracing.enable(exporter="file", file=str(path), level=level)
    engine = Engine(worker, batch_size=5, num_steps=3, adaptive=adaptive)
    reqs = [engine.add_request(p, 24) for p in demo_prompts(12)]
    engine.run()
    spec_tracing.shutdown()
    return reqs, read_spans(str(path))


@pytest.mark.parametrize("worker", ["eagle", "ngram", "multi-layer"])
def test_every_decode_step_of_every_request_has_its_stage_spans(tmp_path, worker):
    reqs, spans = _run_traced(tmp_path, worker, level=3)
    roots = {s.attributes[SpanAttr.REQUEST_ID]: s for s in spans if s.name == "spec_request"}
    assert sorted(roots) == sorted(r.rid for r in reqs)
    children = defaultdict(lambda: defaultdict(dict))
    for s in spans:
        if s.name != "spec_request":
            children[s.parent_span_id][s.name][s.attributes.get(SpanAttr.STEP)] = s
    stages = ["spec_draft", "spec_verify"] + (["spec_draft_extend"] if worker != "ngram" else [])
    for req in reqs:
        root = roots[req.rid]
        mine = children[root.span_id]
        assert all(
            c.trace_id == root.trace_id for by_step in mine.values() for c in by_step.values()
        )
        steps = list(range(len(req.steps)))
        for stage in stages:
            assert sorted(mine[stage]) == steps, f"{req.rid} {stage}"
        assert "spec_draft_extend" not in mine or worker != "ngram"
        for step, (width, proposed, accepted) in enumerate(req.steps):
            verify = mine["spec_verify"][step].attributes
            assert verify[SpanAttr.ACCEPTED_TOKENS] == accepted
            assert verify[SpanAttr.PROPOSED_TOKENS] == proposed
            assert verify[SpanAttr.EMITTED_TOKENS] == accepted + 1
            assert verify[SpanAttr.NUM_STEPS] == width
        assert len(mine["prefill"]) == 1


def test_level_2_drops_draft_extend_and_keeps_draft_and_verify(tmp_path):
    _, spans = _run_traced(tmp_path, "eagle", level=2)
    names = {s.name for s in spans}
    assert names == {"spec_request", "prefill", "spec_draft", "spec_verify"}


def test_adaptive_width_changes_show_on_the_spans(tmp_path):
    reqs, spans = _run_traced(
        tmp_path,
        "eagle",
        level=3,
        adaptive={"1": {"candidate_steps": [1, 2, 4], "warmup": 1, "update_interval": 1}},
    )
    seen = {s.attributes[SpanAttr.NUM_STEPS] for s in spans if s.name == "spec_verify"}
    used = {w for r in reqs for w, _, _ in r.steps}
    assert seen == used and len(seen) > 1


def test_demo_command_prints_a_summary_and_writes_the_trace(tmp_path):
    env = clean_env()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "spec_tracing.cli",
            "demo",
            "--num-requests",
            "6",
            "--max-new-tokens",
            "16",
            "--batch-size",
            "3",
            "--quiet",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    for label in (
        "spec_draft",
        "spec_verify",
        "spec_draft_extend",
        "accept rate",
        "accept length",
        "decode steps",
        "tokens/s",
        "draft width used",
        "trace",
    ):
        assert label in out.stdout
    trace = tmp_path / "spec-traces.jsonl"
    assert str(trace) in out.stdout
    spans = read_spans(str(trace))
    assert sum(1 for s in spans if s.name == "spec_request") == 6
    report = subprocess.run(
        [sys.executable, "-m", "spec_tracing.cli", "report", str(trace)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0
    rate = next(line for line in out.stdout.splitlines() if line.startswith("accept rate"))
    assert rate in report.stdout  # the report of the file says what the live run said


def test_demo_rejects_a_bad_variable_with_a_clear_message(tmp_path):
    env = clean_env()
    env["SPEC_TRACING_LEVEL"] = "9"
    out = subprocess.run(
        [sys.executable, "-m", "spec_tracing.cli", "demo", "--quiet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "SPEC_TRACING_LEVEL='9'" in out.stderr


def test_compose_file_validates_and_the_collector_pipeline_reaches_jaeger():
    compose = Path(sys.executable).parent / "docker-compose"
    out = subprocess.run(
        [str(compose), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert {"jaeger", "otel-collector"} <= set(services)
    published = {p["published"] for p in services["otel-collector"]["ports"]}
    assert {"4317", "4318"} <= published
    assert any(p["published"] == "16686" for p in services["jaeger"]["ports"])
    collector = yaml.safe_load((ROOT / "collector-config" / "otel-collector.yaml").read_text())
    pipeline = collector["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"] and "batch" in pipeline["processors"]
    (exporter,) = pipeline["exporters"]
    assert collector["exporters"][exporter]["endpoint"] == "jaeger:4317"
    assert set(collector["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    # The plugin exports metrics over OTLP too: without a metrics pipeline the collector
    # answered UNIMPLEMENTED and the demo logged "Failed to export metrics".
    metrics = collector["service"]["pipelines"]["metrics"]
    assert metrics["receivers"] == ["otlp"]
    (scrape,) = metrics["exporters"]
    port = collector["exporters"][scrape]["endpoint"].rsplit(":", 1)[1]
    assert port in published
    # Prometheus scrapes that endpoint, keeping the collector's job label (the service name the
    # dashboard selects on and links to Jaeger with); Grafana gets it as the dashboard's source.
    mounts = {
        v["target"]: Path(v["source"]) for s in services.values() for v in s.get("volumes", [])
    }
    for source in mounts.values():
        assert source.exists(), source
    prometheus = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["honor_labels"] is True
    assert job["static_configs"][0]["targets"] == [f"otel-collector:{port}"]
    provisioning = mounts["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    dashboards = yaml.safe_load((provisioning / "dashboards" / "spec-tracing.yaml").read_text())
    folder = dashboards["providers"][0]["options"]["path"]
    board = json.loads(mounts[f"{folder}/spec-tracing.json"].read_text())
    assert {p["datasource"]["uid"] for p in board["panels"]} == {source["uid"]}


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--max-new-tokens", "1000"], "max_new_tokens 1000 is not allowed"),
        (["--temperature", "nan"], "--temperature: 'nan' is not allowed"),
        (["--temperature", "-1"], "--temperature: '-1' is not allowed"),
        (["--adaptive", "nosuchfile.json"], "'nosuchfile.json' cannot be read"),
        (["--trace-file", "/missing/dir/x"], "--trace-file '/missing/dir/x' is not allowed"),
        (["--batch-size", "x"], "--batch-size: 'x' is not allowed"),
        (["--num-steps", "400"], "draft width (num_steps) 400 is not allowed"),
        # An address that cannot be bound: one line, and the last trace left as it was.
        (["--num-requests", "2"], "SPEC_TRACING_PROMETHEUS_HOST='999.1.1.1' is not allowed"),
    ],
)
def test_a_bad_flag_is_one_line_exit_2_and_leaves_the_last_trace(tmp_path, flags, says):
    trace = tmp_path / "spec-traces.jsonl"
    trace.write_text('{"resourceSpans": []}\n')  # the previous run's trace
    env = clean_env()
    if "PROMETHEUS_HOST" in says:
        env.update(SPEC_TRACING_PROMETHEUS_PORT="9464", SPEC_TRACING_PROMETHEUS_HOST="999.1.1.1")
    out = subprocess.run(
        [sys.executable, "-m", "spec_tracing.cli", "demo", "--quiet", *flags],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert says in out.stderr and "Traceback" not in out.stderr
    assert trace.read_text() == '{"resourceSpans": []}\n'


def test_help_shows_every_flag_with_its_default():
    out = subprocess.run([sys.executable, "-m", "spec_tracing.cli", "demo", "--help"],
                         env=clean_env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    text = " ".join(out.stdout.split())
    for flag in ("--worker", "--batch-size", "--max-new-tokens", "--temperature", "--level",
                 "--trace-file", "--quiet", "--seed", "--num-steps", "--adaptive"):  # fmt: skip
        assert flag in text
    assert "(default: 16)" in text and "(default: 96)" in text


def test_ctrl_c_mid_run_keeps_the_trace_and_prints_no_traceback(tmp_path):
    import signal
    import time

    trace = tmp_path / "run.jsonl"
    demo = subprocess.Popen(
        [sys.executable, "-m", "spec_tracing.cli", "demo", "--num-requests", "256",
         "--quiet", "--trace-file", str(trace)],
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120  # a bound, not a timing goal: wait for the first export
    while not (trace.exists() and trace.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert demo.poll() is None, "the demo ended before it could be interrupted"
    demo.send_signal(signal.SIGINT)
    out, err = demo.communicate(timeout=120)
    assert demo.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert "interrupted" in out
    spans = read_spans(str(trace))
    roots = [s for s in spans if s.name == "spec_request"]
    # Every request has its root; those Ctrl-C cut short end as ERROR "unfinished".
    assert len(roots) == 256
    reasons = {r.attributes[SpanAttr.FINISH_REASON] for r in roots if r.status_code == 2}
    assert reasons == {"unfinished"}


def test_bare_command_prints_help_version_prints_it_and_no_flag_is_abbreviated():
    from spec_tracing.version import __version__

    def cli(*args):
        command = [sys.executable, "-m", "spec_tracing.cli", *args]
        return subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=60)

    bare = cli()
    assert bare.returncode == 0 and "demo" in bare.stdout and "report" in bare.stdout
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"spec-tracing {__version__}"
    prefix = cli("report", "x.jsonl", "--htm", "out.html")
    assert prefix.returncode == 2 and "--htm" in prefix.stderr
