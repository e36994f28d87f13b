"""spec-tracing: OpenTelemetry spans and metrics for the stages of speculative decoding.

Switch it on with `spec_tracing.enable()` (or SPEC_TRACING_ENABLED=1 under
opentelemetry-instrument), give each request a `ReqTimeStats`, and mark stages with
`@trace_stage` or `set_time_batch`.
"""

# Before any TracerProvider exists: the SDK's TracerProvider at-fork handler submits to a thread
# pool in the child, which deadlocks on concurrent.futures' global lock (held across fork by that
# module's own at-fork hook) whenever concurrent.futures.thread was first imported after the
# provider was made (at-fork handlers run in registration order). Importing it first fixes order.
import concurrent.futures.thread  # noqa: F401, I001

from .hooks import instrument_method, trace_stage, uninstrument_method
from .hotpath import (
    get_global_tracing_enabled,
    get_trace_level,
    record_batch_stage,
    set_spec_verify_end_time_batch,
    set_time_batch,
    set_trace_level,
)
from .provider import enable, flush, shutdown, stats
from .settings import ConfigError, Settings
from .stages import RequestStage, StageConfig, register_stage
from .timestats import ReqTimeStats
from .version import __version__

__all__ = [
    "ConfigError",
    "ReqTimeStats",
    "RequestStage",
    "Settings",
    "StageConfig",
    "__version__",
    "enable",
    "flush",
    "get_global_tracing_enabled",
    "get_trace_level",
    "instrument_method",
    "record_batch_stage",
    "register_stage",
    "set_spec_verify_end_time_batch",
    "set_time_batch",
    "set_trace_level",
    "shutdown",
    "stats",
    "trace_stage",
    "uninstrument_method",
]
