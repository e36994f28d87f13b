"""What every engine integration shares: the "did the user ask for tracing" check, and a table of
wrapped methods that instrument and uninstrument both walk (so the two cannot drift apart).

Kept free of heavy imports: vllm_plugin.py reads `tracing_requested()` in every vLLM process."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable


def tracing_requested() -> bool:
    """SPEC_TRACING_ENABLED, read as Settings reads it (ConfigError naming it when malformed)."""
    from ..settings import SPEC_VARS

    var = next(v for v in SPEC_VARS if v.field == "enabled")
    raw = os.environ.get(var.name)
    return var.default if raw is None else var.parse(var.name, raw)


class WrapTable:
    """(owner, attribute, wrapper) rows, wrapped with wrapt and undone exactly. A method that is
    already a wrapt proxy (wrapped by another instrumentor instance) is left alone, so a round is
    never traced twice."""

    def __init__(self, targets: Callable[[], Iterable[tuple[type, str, Callable]]]):
        self._targets = targets  # called at wrap time: the engine is imported only then
        self._wrapped: list[tuple[type, str]] = []

    def wrap(self) -> None:
        import wrapt

        for owner, name, wrapper in self._targets():
            if isinstance(vars(owner).get(name), wrapt.ObjectProxy):
                continue
            wrapt.wrap_function_wrapper(owner, name, wrapper)
            self._wrapped.append((owner, name))

    def unwrap(self) -> None:
        from opentelemetry.instrumentation.utils import unwrap

        while self._wrapped:
            owner, name = self._wrapped.pop()
            unwrap(owner, name)

    def __len__(self) -> int:
        return len(self._wrapped)
