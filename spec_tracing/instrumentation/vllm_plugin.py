"""vLLM's `vllm.general_plugins` entry point. vLLM calls it in every process it starts, whether
tracing is wanted or not, so it reads one variable and imports the instrumentation (vllm.py:
wrapt, OpenTelemetry, vLLM's scheduler and model runner) only when SPEC_TRACING_ENABLED is set."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def register() -> None:
    """Wrap vLLM in this process when SPEC_TRACING_ENABLED is set. Tracing itself starts with
    the first request (after vLLM has set up its own tracing)."""
    try:
        from ._wrapping import tracing_requested

        if tracing_requested():
            import vllm  # noqa: F401  (without it, one line saying so rather than every seam)

            from .vllm import wrap_all

            wrap_all()
    except Exception as exc:  # a plugin must never stop vLLM from starting
        logger.error("spec-tracing: vLLM not instrumented: %s", exc)
