"""Worker side, vLLM's V1 model runner (`vllm/v1/worker/gpu_model_runner.py`; what the CPU build
runs by default, and the GPU build for the proposers V2 does not take): `execute_model` starts the
target forward that scores the drafts, `_sample` ends with the rejection sampler (`spec_verify`
runs from the one to the other), `propose_draft_token_ids` runs the proposer for the next step
(`spec_draft`), `sample_tokens` hands the times to the scheduler."""

from __future__ import annotations

from time import perf_counter

from .._wrapping import Seam
from . import step_times
from .step_times import DRAFT_END, DRAFT_START, VERIFY_END


def _execute_model(wrapped, instance, args, kwargs):
    step_times.begin(instance, perf_counter())
    return wrapped(*args, **kwargs)


def _sample(wrapped, instance, args, kwargs):
    result = wrapped(*args, **kwargs)
    step = step_times.current(instance)
    spec_decode_metadata = args[1] if len(args) > 1 else kwargs.get("spec_decode_metadata")
    if step is not None and spec_decode_metadata is not None:  # drafts were verified
        step[VERIFY_END] = perf_counter()
    return result


def _propose(wrapped, instance, args, kwargs):
    t0 = perf_counter()
    result = wrapped(*args, **kwargs)
    step = step_times.current(instance)
    if step is not None:
        step[DRAFT_START], step[DRAFT_END] = t0, perf_counter()
    return result


def _sample_tokens(wrapped, instance, args, kwargs):
    return step_times.attach(instance, wrapped(*args, **kwargs))


_RUNNER = "vllm.v1.worker.gpu_model_runner:GPUModelRunner"
SEAMS = [
    Seam(_RUNNER, "execute_model", _execute_model, "spec_verify start, V1 runner"),
    Seam(_RUNNER, "_sample", _sample, "spec_verify end, V1 runner"),
    Seam(_RUNNER, "propose_draft_token_ids", _propose, "spec_draft, V1 runner"),
    Seam(_RUNNER, "sample_tokens", _sample_tokens, "stage times to the scheduler, V1 runner"),
]
