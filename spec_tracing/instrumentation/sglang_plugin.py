"""SGLang's `sglang.srt.plugins` entry point. SGLang calls it in its engine and scheduler
processes whether tracing is wanted or not, so it reads one variable and imports the
instrumentation (sglang.py) only when SPEC_TRACING_ENABLED is set."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def register() -> None:
    """Wrap SGLang in this process when SPEC_TRACING_ENABLED is set. Tracing itself starts with
    the first request the scheduler sees."""
    try:
        from ._wrapping import tracing_requested

        if tracing_requested():
            from .sglang import wrap_all

            wrap_all()
    except Exception as exc:  # a plugin must never stop SGLang from starting
        logger.error("spec-tracing: SGLang not instrumented: %s", exc)
