"""spec-tracing: OpenTelemetry spans and metrics for the stages of speculative decoding.

Switch it on with `spec_tracing.enable()` (or SPEC_TRACING_ENABLED=1 under
opentelemetry-instrument), give each request a `ReqTimeStats`, and mark stages with
`@trace_stage` or `set_time_batch`.

The names below are imported on first use (PEP 562): the pytest plugin and the vLLM plugin are
loaded into every pytest run and every vLLM process of an environment where spec-tracing is
installed, so `import spec_tracing` alone must not pull in the OpenTelemetry SDK (~140 ms).
"""

# Before any TracerProvider exists: the SDK's TracerProvider at-fork handler submits to a thread
# pool in the child, which deadlocks on concurrent.futures' global lock (held across fork by that
# module's own at-fork hook) whenever concurrent.futures.thread was first imported after the
# provider was made (at-fork handlers run in registration order). Importing it first fixes order.
import concurrent.futures.thread  # noqa: F401, I001

import importlib
from typing import TYPE_CHECKING

from . import _moved
from .version import __version__

_moved.install()

_EXPORTS = {
    "record.hooks": ("instrument_method", "trace_stage", "uninstrument_method"),
    "record.hotpath": (
        "get_global_tracing_enabled",
        "get_trace_level",
        "record_batch_stage",
        "set_spec_verify_end_time_batch",
        "set_time_batch",
        "set_trace_level",
    ),
    "lifecycle": ("enable", "flush", "shutdown", "stats"),
    "settings": ("ConfigError", "Settings"),
    "stages": ("RequestStage", "StageConfig", "register_stage"),
    "record.request_trace": ("ReqTimeStats",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [  # a literal, for linters and IDEs; test_stages checks it against _EXPORTS
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


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if not name.startswith("_"):  # a submodule, as `import spec_tracing.<name>` would give
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module 'spec_tracing' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from .lifecycle import enable, flush, shutdown, stats
    from .record.hooks import instrument_method, trace_stage, uninstrument_method
    from .record.hotpath import (
        get_global_tracing_enabled,
        get_trace_level,
        record_batch_stage,
        set_spec_verify_end_time_batch,
        set_time_batch,
        set_trace_level,
    )
    from .record.request_trace import ReqTimeStats
    from .settings import ConfigError, Settings
    from .stages import RequestStage, StageConfig, register_stage
