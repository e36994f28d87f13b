"""For users' tests and ours: the pytest plugin with the `spec_spans` fixture (pytest_plugin.py,
loaded through the pytest11 entry point), a real OTLP receiver for 127.0.0.1
(otlp_receiver.py) and a misbehaving one for fault tests (faulty_collector.py).

Kept empty of imports: pytest loads the plugin into every run where spec-tracing is installed."""


def __getattr__(name: str):
    # `from spec_tracing.testing import SpanCapture` (the pre-0.2 module path) still works; the
    # plugin module, and pytest with it, load only then.
    if name in ("SpanCapture", "describe", "spec_spans"):
        from . import pytest_plugin

        return getattr(pytest_plugin, name)
    raise AttributeError(f"module 'spec_tracing.testing' has no attribute {name!r}")
