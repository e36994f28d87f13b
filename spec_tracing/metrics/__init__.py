"""The speculative-decoding metrics: instruments and their totals (instruments.py), and the
MeterProvider with its readers (readers.py: OTLP, Prometheus, the application's own)."""
