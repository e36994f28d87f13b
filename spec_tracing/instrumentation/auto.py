"""`opentelemetry_instrumentor` entry point: under `opentelemetry-instrument`, switches
spec-tracing on when SPEC_TRACING_ENABLED=1, with no code change in the application.

It runs after the distro's configurator, so an SDK TracerProvider that the distro installed is the
one spans go to. A bad variable is logged (not raised: the application must still start).
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from .. import lifecycle
from ..record.hotpath import get_global_tracing_enabled
from ..settings import ConfigError
from ._wrapping import tracing_requested

logger = logging.getLogger(__name__)


_reported: set[str] = set()


def enable_from_environment(tracer_provider=None, **options) -> None:
    """Switch tracing on if SPEC_TRACING_ENABLED says so and it is not on already (each engine
    instrumentor calls this; the first one to run switches it on). A bad variable is logged once
    per process, never raised: the application must still run."""
    if get_global_tracing_enabled():
        return
    try:
        if tracing_requested():
            lifecycle.enable(tracer_provider=tracer_provider, **options)
    except ConfigError as exc:
        if str(exc) not in _reported:
            _reported.add(str(exc))
            logger.error("spec-tracing stays off: %s", exc)


class SpecTracingInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs) -> None:
        enable_from_environment(kwargs.get("tracer_provider"))

    def _uninstrument(self, **kwargs) -> None:
        lifecycle.shutdown()
