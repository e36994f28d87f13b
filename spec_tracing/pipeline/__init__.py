"""Everything computed from what the engine's process ships, built in one place (build.py):
per-request signals and metrics (signals.py), span assembly with attribute limits and step
sampling (export/), and where it runs (outputs.py): the exporter process (serve.py, started as
`python -m spec_tracing.pipeline`), a thread of this process, or an application's provider.

Imports nothing from record/ (the engine side): the exporter process loads none of it.
"""
