"""What may run in the exporter process: compact events -> span records (assembler.py) ->
SDK spans (sdk_spans.py) or OTLP protobuf bytes (otlp_proto.py) -> an exporter (exporters.py).
The engine's process talks to it through a SpanOutput (pipeline/outputs.py: in this process, or
the exporter process that process.py starts and pipeline/serve.py runs).

Imports nothing from record/ (the engine side), so `python -m spec_tracing.pipeline` loads none of
it; kept free of imports here so that starting that process costs only what it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from .sdk_spans import SpanSink


class SpanOutput(Protocol):
    """Where the recorder's compact events go. `sink` decides sampling per request (engine side);
    `spans` and `export_counts` feed stats() and the spec_tracing.* metrics."""

    sink: SpanSink
    provider: TracerProvider | None  # the in-process provider, if spans are built here

    def deliver(self, events: list) -> None: ...

    def flush(self, timeout_s: float) -> bool: ...

    def shutdown(self, timeout_s: float) -> None: ...

    @property
    def spans(self) -> int: ...

    @property
    def export_counts(self) -> dict[str, int]: ...
