"""Old module paths (before the package was split into record/, export/, metrics/, report/,
testing/) keep importing, as the same module objects under their new names, with a
DeprecationWarning. Installed by spec_tracing/__init__.py; costs nothing until such an import."""

from __future__ import annotations

import functools
import importlib
import sys
from importlib.machinery import ModuleSpec

MOVED = {
    "attributes": "semconv",
    "provider": "lifecycle",
    "hotpath": "record.hotpath",
    "hooks": "record.hooks",
    "timestats": "record.request_trace",
    "recorder": "record.recorder",
    "materializer": "record.compactor",
    "export_process": "export.process",
    "exporter_child": "pipeline.__main__",
    "assembler": "export.assembler",
    "spans": "export.sdk_spans",
    "otlp_encode": "export.otlp_proto",
    "exporters": "export.exporters",
    "clock": "export.clock",
    "outputs": "pipeline.outputs",
    "meters": "metrics.readers",
    "otlp_json": "report.otlp_json",
    "summary": "report.summary",
    "html_report": "report.html",
    "jaeger_json": "report.jaeger",
    "receiver": "testing.otlp_receiver",
    "reference.model": "reference.tiny_lm",
    "reference.models": "reference.build",
}
_PREFIX = "spec_tracing."


class _Alias:
    """The old name is a thin module that forwards attribute reads to the new one, so classes and
    functions keep one identity (isinstance, pickling by the new name)."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(_PREFIX) or fullname[len(_PREFIX) :] not in MOVED:
            return None
        return ModuleSpec(fullname, self)

    def create_module(self, spec):
        return None  # the default: a plain module

    def exec_module(self, module) -> None:
        import warnings

        new_name = _PREFIX + MOVED[module.__name__[len(_PREFIX) :]]
        warnings.warn(
            f"{module.__name__} moved to {new_name}; the old path will go in a later release",
            DeprecationWarning,
            stacklevel=2,  # importlib's own frames are skipped
        )
        new = importlib.import_module(new_name)
        module.__getattr__ = functools.partial(getattr, new)
        module.__dir__ = lambda: dir(new)
        module.__doc__ = new.__doc__


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
