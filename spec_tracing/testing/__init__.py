"""For users' tests and ours: the pytest plugin with the `spec_spans` fixture (pytest_plugin.py,
loaded through the pytest11 entry point) and a real OTLP receiver for 127.0.0.1
(otlp_receiver.py).

Kept empty of imports: pytest loads the plugin into every run where spec-tracing is installed."""
