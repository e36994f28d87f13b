"""Reading captured OTLP JSON trace files and presenting them: the reader (otlp_json.py), the
text summary (summary.py), the HTML view (html.py) and Jaeger's JSON (jaeger.py).

Works without the OpenTelemetry SDK: nothing here imports it."""
