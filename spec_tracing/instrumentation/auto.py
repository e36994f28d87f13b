"""`opentelemetry_instrumentor` entry point: under `opentelemetry-instrument`, switches
spec-tracing on when SPEC_TRACING_ENABLED=1, with no code change in the application.

It runs after the distro's configurator, so an SDK TracerProvider that the distro installed is the
one spans go to. A bad variable is logged (not raised: the application must still start).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from .. import provider
from ..settings import ConfigError, parse_bool

logger = logging.getLogger(__name__)


class SpecTracingInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs) -> None:
        try:
            if not parse_bool("SPEC_TRACING_ENABLED", os.environ.get("SPEC_TRACING_ENABLED", "")):
                return
            provider.enable(tracer_provider=kwargs.get("tracer_provider"))
        except ConfigError as exc:
            logger.error("spec-tracing stays off: %s", exc)

    def _uninstrument(self, **kwargs) -> None:
        provider.shutdown()
