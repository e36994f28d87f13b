"""Test-only: the V2 runner's `sample` seam renamed, as a future vLLM might rename it, so that
spec-tracing's worker times are missing while vLLM's scheduler still counts (the V2 stand-in's
own sitecustomize is loaded first, from the path beside it)."""

import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
triton_cpu = os.path.join(os.path.dirname(here), "triton_cpu")
sys.path.insert(0, triton_cpu)
sys.modules.pop("sitecustomize", None)
import sitecustomize  # noqa: E402,F401  (the V2 stand-in)

sys.path.remove(triton_cpu)

if os.environ.get("SPEC_TRACING_TEST_HIDE") == "1":
    from spec_tracing.instrumentation.vllm import runner_v2

    _seams = runner_v2.seams

    def _renamed(table):
        return [s._replace(name="sample_renamed") if s.name == "sample" else s
                for s in _seams(table)]  # fmt: skip

    runner_v2.seams = _renamed
