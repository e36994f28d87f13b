"""Seam contracts against engines' released sources: every vLLM release 0.30-0.34 and every
SGLang release 0.5.18-0.5.23, including those the engine tiers run (vLLM 0.30-0.32, SGLang
0.5.18 and 0.5.23: where the contract must hold too, or it would prove nothing). Every seam
spec-tracing wraps must exist as a module, class and method, with the parameters its wrapper
reads; plus the attributes the wrappers read on vLLM's objects.

The wheels come from scripts/test-contracts.sh (pip download --no-deps into .wheels/); without
them these tests skip, and with REQUIRE_CONTRACTS=1 (the script) they fail."""

import ast
import glob
import os

import pytest
from wheel_sources import WheelSource, parameters

WHEELS = os.environ.get("SPEC_TRACING_WHEELS", os.path.join(os.path.dirname(__file__), "..",
                                                            "..", ".wheels"))  # fmt: skip
VLLM = ["0.30.0", "0.31.0", "0.32.0", "0.33.0", "0.34.0"]
SGLANG = ["0.5.18", "0.5.19", "0.5.20", "0.5.21", "0.5.22", "0.5.23"]


def _wheel(pattern: str) -> WheelSource:
    found = sorted(glob.glob(os.path.join(WHEELS, pattern)))
    if not found:
        if os.environ.get("REQUIRE_CONTRACTS"):
            pytest.fail(f"no wheel {pattern} in {WHEELS}")
        pytest.skip(f"no wheel {pattern} in {WHEELS} (scripts/test-contracts.sh fetches them)")
    return WheelSource(found[0])


def _check_rows(src: WheelSource, rows) -> list[str]:
    missing = []
    for seam in rows:
        module, _, owner = seam.where.partition(":")
        if owner:
            if src.method(module, owner, seam.name) is None:
                missing.append(f"{seam.label} ({seam.stage})")
        elif not src.function(module, seam.name):
            missing.append(f"{seam.label} ({seam.stage})")
    return missing


def _vllm_rows(version: str):
    from spec_tracing.instrumentation.vllm import frontend, runner_v1, runner_v2, scheduler

    rows = [*scheduler.SEAMS, *runner_v2.seams(None), *frontend.SEAMS]
    if version < "0.32":
        rows += frontend.LEGACY_SEAMS
    return rows, runner_v1.SEAMS


@pytest.mark.parametrize("version", VLLM)
def test_every_vllm_seam_exists_in_the_released_sources(version):
    src = _wheel(f"vllm{'_cpu' if version == '0.32.0' else ''}-{version}-*.whl")
    rows, v1_rows = _vllm_rows(version)
    assert _check_rows(src, rows) == []
    # The V1 runner is gone from 0.34 (every method runs on V2 there); before, it is whole.
    v1_missing = _check_rows(src, v1_rows)
    assert v1_missing == ([] if version < "0.34" else [f"{s.label} ({s.stage})" for s in v1_rows])


@pytest.mark.parametrize("version", VLLM)
def test_vllm_signatures_and_attributes_the_wrappers_read(version):
    src = _wheel(f"vllm{'_cpu' if version == '0.32.0' else ''}-{version}-*.whl")
    sched = "vllm.v1.core.sched.scheduler"
    # The accounting row replaces vLLM's method with one of this exact signature.
    make = src.method(sched, "Scheduler", "make_spec_decoding_stats")
    assert parameters(make) == [
        "self",
        "spec_decoding_stats",
        "num_draft_tokens",
        "num_accepted_tokens",
        "num_invalid_spec_tokens",
        "request_id",
    ]
    assert parameters(src.method(sched, "Scheduler", "update_from_output"))[1:3] == [
        "scheduler_output",
        "model_runner_output",
    ]
    assert parameters(src.method(sched, "Scheduler", "add_request"))[1] == "request"
    assert parameters(src.method(sched, "Scheduler", "_free_request"))[1] == "request"
    runner = "vllm.v1.worker.gpu.model_runner"
    assert parameters(src.method(runner, "GPUModelRunner", "sample"))[1:3] == [
        "hidden_states",
        "input_batch",
    ]
    assert "dummy_run" in parameters(src.method(runner, "GPUModelRunner", "execute_model"))
    for speculator in ("vllm.v1.worker.gpu.spec_decode.speculator:BaseSpeculator",):
        module, _, cls = speculator.partition(":")
        assert "dummy_run" in parameters(src.method(module, cls, "propose")) or version < "0.33"
    # What the scheduler side reads on vLLM's objects.
    assert src.cls("vllm.v1.outputs", "ModelRunnerOutput") is not None
    assert "\nEMPTY_MODEL_RUNNER_OUTPUT = " in src.zip.read("vllm/v1/outputs.py").decode()
    assert src.method("vllm.v1.request", "Request", "get_finished_reason") is not None
    assert src.method("vllm.v1.worker.gpu.async_utils", "AsyncOutput", "get_output") is not None
    source = src.zip.read("vllm/v1/worker/gpu/model_runner.py").decode()
    assert "self.speculator.propose(" in source and "input_batch.num_draft_tokens" in source


@pytest.mark.parametrize("version", SGLANG)
def test_every_sglang_seam_exists_in_the_released_sources(version):
    from spec_tracing.instrumentation import sglang

    src = _wheel(f"sglang-{version}-*.whl")
    assert _check_rows(src, sglang._targets()) == []


@pytest.mark.parametrize("version", SGLANG)
def test_sglang_adaptive_controller_as_the_wrapper_reads_it(version):
    """_adaptive_decision reads on_verify_complete's arguments by position or name, and the
    slot it routes to (AdaptiveStepSlot's ema_accept_len, current_steps, candidate_steps)."""
    src = _wheel(f"sglang-{version}-*.whl")
    module = "sglang.srt.speculative.adaptive_spec_params"
    method = src.method(module, "AdaptiveSpeculativeParams", "on_verify_complete")
    assert parameters(method) == ["self", "num_correct_drafts_per_req", "batch_size"]
    for name in ("_find_closest_bs", "_pad_to_cuda_graph_bs"):
        assert src.method(module, "AdaptiveSpeculativeParams", name) is not None, name
    source = src.zip.read(module.replace(".", "/") + ".py").decode()
    for attribute in ("self._slots", "self.ema_accept_len", "self.current_steps",
                      "self.candidate_steps"):  # fmt: skip
        assert attribute in source, attribute


# Per release: the V2 speculators with a catch-up forward (`_prefill`, timed as
# spec_draft_extend by runner_v2) and the ones that run it inside propose().
CATCH_UP = {
    "0.30.0": ["autoregressive.speculator:AutoRegressiveSpeculator"],
    "0.31.0": ["autoregressive.speculator:AutoRegressiveSpeculator",
               "draft_model.speculator:PlainDraftModelSpeculator"],
    "0.32.0": ["target_dependent_ar.speculator:TargetDependentARSpeculator",
               "standalone_ar.speculator:StandaloneARSpeculator"],
    "0.33.0": ["target_dependent_ar.speculator:TargetDependentARSpeculator",
               "standalone_ar.speculator:StandaloneARSpeculator"],
    "0.34.0": ["target_dependent_ar.speculator:TargetDependentARSpeculator",
               "standalone_ar.speculator:StandaloneARSpeculator"],
}  # fmt: skip


@pytest.mark.parametrize("version", VLLM)
def test_vllm_draft_extend_is_the_catch_up_forward_inside_propose(version):
    src = _wheel(f"vllm{'_cpu' if version == '0.32.0' else ''}-{version}-*.whl")
    for where in CATCH_UP[version]:
        module, _, cls = where.partition(":")
        module = f"vllm.v1.worker.gpu.spec_decode.{module}"
        propose = src.method(module, cls, "propose")
        assert src.method(module, cls, "_prefill") is not None, where
        calls = {n.func.attr for n in ast.walk(propose) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Attribute)}  # fmt: skip
        assert "_prefill" in calls, f"{where}: propose() does not run _prefill"
