"""Worker side, vLLM's V2 model runner (`vllm/v1/worker/gpu/model_runner.py`; what a GPU install
runs for ngram, EAGLE/EAGLE3, MTP and draft models, and the CPU build's runner subclasses):

- `execute_model` starts the target forward that scores the drafts; `sample` ends with the
  rejection sampler when the batch had drafts (`spec_verify` = from the one to the other);
- the speculator's `propose` (called by `sample_tokens`) is `spec_draft`; where the speculator has
  a catch-up forward of the draft model over the verified tokens (`_prefill`: EAGLE, MTP, draft
  models), that part is `spec_draft_extend` and the draft starts when it ends;
- `sample_tokens` hands the times to the scheduler.

The speculator's class is known only when the runner builds it (`init_speculator`, one per
speculative method and version), so its methods are wrapped then, from the object itself. Dummy
and profile runs (`dummy_run=True`) are not steps."""

from __future__ import annotations

import logging
from time import perf_counter

from .._wrapping import Seam
from . import step_times
from .step_times import DRAFT_END, DRAFT_START, EXTEND_END, EXTEND_START, VERIFY_END

logger = logging.getLogger(__name__)

_STAMPS = "_spec_tracing_stamps"  # on the speculator: this step's [draft, extend] windows


def _execute_model(wrapped, instance, args, kwargs):
    if not kwargs.get("dummy_run", False):
        step_times.begin(instance, perf_counter())
        speculator = getattr(instance, "speculator", None)
        if speculator is not None:
            vars(speculator).pop(_STAMPS, None)
    return wrapped(*args, **kwargs)


def _sample(wrapped, instance, args, kwargs):
    result = wrapped(*args, **kwargs)
    step = step_times.current(instance)
    if step is not None:
        input_batch = args[1] if len(args) > 1 else kwargs.get("input_batch")
        if getattr(input_batch, "num_draft_tokens", 0):  # drafts were verified
            step[VERIFY_END] = perf_counter()
    return result


def _sample_tokens(wrapped, instance, args, kwargs):
    output = wrapped(*args, **kwargs)
    step = step_times.current(instance)
    speculator = getattr(instance, "speculator", None)
    stamps = vars(speculator).pop(_STAMPS, None) if speculator is not None else None
    if step is not None and stamps is not None:
        draft, extend = stamps
        if draft is not None:
            step[DRAFT_START], step[DRAFT_END] = extend[1] if extend else draft[0], draft[1]
        if extend is not None:
            step[EXTEND_START], step[EXTEND_END] = extend
    return step_times.attach(instance, output)


def _propose(wrapped, instance, args, kwargs):
    if kwargs.get("dummy_run", False):
        return wrapped(*args, **kwargs)
    stamps = vars(instance).setdefault(_STAMPS, [None, None])
    t0 = perf_counter()
    result = wrapped(*args, **kwargs)
    stamps[0] = (t0, perf_counter())
    return result


def _catch_up(wrapped, instance, args, kwargs):
    t0 = perf_counter()
    result = wrapped(*args, **kwargs)
    stamps = vars(instance).get(_STAMPS)
    if stamps is not None:  # inside a step's propose
        stamps[1] = (t0, perf_counter())
    return result


def _init_speculator(table):
    """Wraps what `init_speculator` returns: the class of this run's speculator."""

    def wrapper(wrapped, instance, args, kwargs):
        speculator = wrapped(*args, **kwargs)
        try:
            cls = type(speculator)
            if not hasattr(cls, "propose"):
                logger.warning(
                    "spec-tracing: vLLM's %s has no propose(): spec_draft is not timed", cls
                )
            else:
                table.wrap_one(_owner(cls, "propose"), "propose", _propose)
                if hasattr(cls, "_prefill"):
                    table.wrap_one(_owner(cls, "_prefill"), "_prefill", _catch_up)
        except Exception:
            logger.warning("spec-tracing: vLLM's speculator not wrapped", exc_info=True)
        return speculator

    return wrapper


def _owner(cls: type, name: str) -> type:
    """The class in cls's MRO that defines `name` (wrapping it there serves every subclass that
    inherits it, and is undone there)."""
    return next(c for c in cls.__mro__ if name in vars(c))


_MODULE = "vllm.v1.worker.gpu.model_runner"
_RUNNER = f"{_MODULE}:GPUModelRunner"


def seams(table) -> list[Seam]:
    return [
        Seam(_RUNNER, "execute_model", _execute_model, "spec_verify start, V2 runner"),
        Seam(_RUNNER, "sample", _sample, "spec_verify end, V2 runner"),
        Seam(_RUNNER, "sample_tokens", _sample_tokens, "stage times to the scheduler, V2 runner"),
        Seam(
            _MODULE,
            "init_speculator",
            _init_speculator(table),
            "spec_draft and spec_draft_extend, V2 runner",
        ),  # fmt: skip
    ]
