"""Worker side, both model runners: one decode step's stage times, taken on the runner (and its
speculator) with perf_counter, one system-wide monotonic clock, and carried to the scheduler on
the step's ModelRunnerOutput, where vLLM counts acceptance. The worker makes no spans."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

TIMES = "_spec_tracing_times"  # on the ModelRunnerOutput: the step's times, pickled with it
STEP = "_spec_tracing_step"  # on the runner: the step being timed
# Indices into a step's times (perf_counter seconds, None where the stage did not run).
VERIFY_START, VERIFY_END, DRAFT_START, DRAFT_END, EXTEND_START, EXTEND_END = range(6)


def begin(runner, t: float) -> None:
    """A step's target forward starts (it also scores the drafts scheduled for it)."""
    setattr(runner, STEP, [t, None, None, None, None, None])


def current(runner) -> list | None:
    return getattr(runner, STEP, None)


def attach(runner, output):
    """Put the step's times on what sample_tokens returned (now, or when an async output is
    made) and end the step. A step with neither a verify nor a draft carries nothing."""
    step = current(runner)
    setattr(runner, STEP, None)
    if step is None or (step[VERIFY_END] is None and step[DRAFT_START] is None):
        return output
    try:
        from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT, ModelRunnerOutput

        times = tuple(step)
        if isinstance(output, ModelRunnerOutput) and output is not EMPTY_MODEL_RUNNER_OUTPUT:
            setattr(output, TIMES, times)
        elif hasattr(output, "get_output"):  # async scheduling: the output is made later
            get_output = output.get_output

            def get_output_with_times():
                real = get_output()
                if real is not EMPTY_MODEL_RUNNER_OUTPUT:
                    setattr(real, TIMES, times)
                return real

            output.get_output = get_output_with_times
    except Exception:
        logger.debug("spec-tracing: step times not attached", exc_info=True)
    return output
