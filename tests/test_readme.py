"""Every code block of the README and of docs/ runs (filled in with the reference engine or tiny
models where it says "your engine"), so the documentation cannot drift from the code. A block
that appears on two pages (the README's enable blocks repeat the engines' pages) is one block.
Blocks that need what this machine lacks are accounted for by name: the Docker one is checked
by `docker compose config` (tests/reference/test_demo.py), the vLLM server line runs in the
vLLM tier's server test, and the install/test commands are what CI runs."""

import re
import subprocess
import sys
from pathlib import Path

from conftest import clean_env

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCKS = sorted(
    {block for page in PAGES for block in re.findall(r"```(\w*)\n(.*?)```", page.read_text(), re.S)}
)


def _block(language: str, marker: str) -> str:
    found = [body for lang, body in BLOCKS if lang == language and marker in body]
    assert len(found) == 1, f"README and docs/: {len(found)} {language} blocks contain {marker!r}"
    return found[0]


def _run(code: str, cwd: Path, env_extra: dict | None = None, args=()):
    env = {**clean_env(), **(env_extra or {})}
    path = cwd / "block.py"
    path.write_text(code)
    return subprocess.run([sys.executable, *args, str(path)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_every_block_is_accounted_for():
    runnable = {"python": 3, "bash": 5, "": 2}  # "" blocks are sample output and a diagram
    counts = {lang: sum(1 for l_, _ in BLOCKS if l_ == lang) for lang in runnable}
    assert counts == runnable, "a README block was added or removed: give it a test here"


def test_span_assertion_example_passes_in_a_users_pytest_at_level_2(tmp_path):
    prelude = """
import pytest
from spec_tracing.reference.engine import Engine, demo_prompts

prompts = demo_prompts(6, 0)

class Output:
    def __init__(self, req):
        self.accepted_drafts = sum(accepted for _, _, accepted in req.steps)

def run_my_engine(prompts):
    engine = Engine("eagle", batch_size=4, num_steps=3)
    for p in prompts:
        engine.add_request(p, 16)
    return [Output(r) for r in engine.run()]

"""
    code = prelude + _block("python", "def test_my_engine_traces_every_step")
    (tmp_path / "test_user_readme.py").write_text(code)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user_readme.py"],
        cwd=tmp_path, env={**clean_env(), "SPEC_TRACING_LEVEL": "2"}, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert "1 passed" in done.stdout, done.stdout[-3000:]


def test_instrumenting_example_runs(tmp_path):
    from spec_tracing.report.otlp_json import read_spans
    from spec_tracing.testing.schema import schema_problems

    code = _block("python", "class Worker:")
    code += "\nprint('INVALID', spec_tracing.lifecycle.last_stats()['invalid_events'])\n"
    done = _run(code, tmp_path)  # as written: no collector, no environment
    assert done.returncode == 0, done.stderr[-3000:]
    assert "INVALID 0" in done.stdout and done.stderr == ""
    spans = read_spans(str(tmp_path / "spec-traces.jsonl"))
    names = sorted(s.name for s in spans)
    assert (
        names
        == ["prefill"] * 2
        + ["spec_draft"] * 2
        + ["spec_draft_extend"] * 2
        + ["spec_request"] * 2
        + ["spec_verify"] * 2
    )
    assert schema_problems(spans) == []  # the attributes every engine's spans carry
    verify = [s for s in spans if s.name == "spec_verify"]
    assert {(s.attributes["accepted_tokens"], s.attributes["spec_decode.proposed_tokens"])
            for s in verify} == {(2, 3)}  # fmt: skip


def test_transformers_example_runs(tmp_path):
    prelude = f"""
import sys
sys.path.insert(0, {str(ROOT / "tests" / "instrumentation")!r})
from tiny_hf import tiny_models, prompt
model, draft = tiny_models()
ids = prompt(0)
"""
    code = prelude + _block("python", "TransformersInstrumentor().instrument()")
    done = _run(code, tmp_path)  # as written: no collector, no environment
    assert done.returncode == 0, done.stderr[-3000:]
    assert "spec-tracing" not in done.stderr  # no export failing, nothing lost
    assert '"spec_verify"' in (tmp_path / "spec-traces.jsonl").read_text()


def test_report_command_runs_on_a_demo_trace(tmp_path):
    demo = subprocess.run(["spec-tracing", "demo", "--num-requests", "4", "--quiet"],
                          cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-2000:]
    line = _block("bash", "spec-tracing report").strip()
    done = subprocess.run(line, shell=True, cwd=tmp_path, env=clean_env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run.html").stat().st_size > 0
    assert (tmp_path / "run-jaeger.json").stat().st_size > 0


def test_the_other_bash_blocks_are_the_ones_tested_elsewhere():
    quick = _block("bash", "spec-tracing demo ")
    assert "python -m pytest -q" in quick  # what .ci/run runs
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()
    vllm = _block("bash", "vllm.entrypoints.openai.api_server")
    assert "--otlp-traces-endpoint grpc://" in vllm  # the form the server test uses
    server_test = (ROOT / "tests" / "instrumentation" / "vllm_server.py").read_text()
    assert "vllm.entrypoints.openai.api_server" in server_test
    assert "docker compose up" in _block("bash", "docker compose")


def test_the_production_sampling_settings_are_accepted_as_written():
    block = _block("bash", "SPEC_TRACING_STEP_SAMPLE_RATIO")
    check = ("python -c 'from spec_tracing.settings import Settings; "
             "s = Settings.from_env(); print(s.step_sample_ratio, s.step_keep)'")  # fmt: skip
    done = subprocess.run(block + "\n" + check, shell=True, executable="/bin/bash",
                          env=clean_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0.01", "error,slowest:0.01,lowest_accept:0.01"]
