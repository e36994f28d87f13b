"""What every engine integration shares: the "did the user ask for tracing" check, and a table of
wrapped methods that instrument and uninstrument both walk (so the two cannot drift apart).

Kept free of heavy imports: vllm_plugin.py reads `tracing_requested()` in every vLLM process."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable


def tracing_requested() -> bool:
    """SPEC_TRACING_ENABLED, read as Settings reads it (ConfigError naming it when malformed)."""
    from ..settings import SPEC_VARS

    var = next(v for v in SPEC_VARS if v.field == "enabled")
    raw = os.environ.get(var.name)
    return var.default if raw is None else var.parse(var.name, raw)


class Inline:
    """A WrapTable row's wrapper given as `make(original) -> function or None` (None: leave it
    unwrapped), installed as a plain function: for a method an engine calls once per request
    per step, where a wrapt proxy (bound anew on each attribute access) costs ~0.7 us a call,
    most of what the wrapper adds."""

    def __init__(self, make: Callable[[Callable], Callable]):
        self.make = make


_ORIGINAL = "_spec_tracing_original"
_MISSING = object()


class WrapTable:
    """(owner, attribute, wrapper) rows, wrapped with wrapt (or, for Inline rows, replaced by a
    plain function) and undone exactly. A method already wrapped (by another instrumentor
    instance) is left alone, so a round is never traced twice."""

    def __init__(self, targets: Callable[[], Iterable[tuple[type, str, Callable | Inline]]]):
        self._targets = targets  # called at wrap time: the engine is imported only then
        # (owner, name, what vars(owner) held before: _MISSING if inherited, None for wrapt)
        self._wrapped: list[tuple[type, str, object]] = []

    def wrap(self) -> None:
        import wrapt

        for owner, name, wrapper in self._targets():
            current = vars(owner).get(name)
            if isinstance(current, wrapt.ObjectProxy) or hasattr(current, _ORIGINAL):
                continue
            if isinstance(wrapper, Inline):
                original = getattr(owner, name)
                replacement = wrapper.make(original)
                if replacement is None:  # make() declined (and said why)
                    continue
                functools.update_wrapper(replacement, original)
                setattr(replacement, _ORIGINAL, original)
                self._wrapped.append((owner, name, vars(owner).get(name, _MISSING)))
                setattr(owner, name, replacement)
            else:
                wrapt.wrap_function_wrapper(owner, name, wrapper)
                self._wrapped.append((owner, name, None))

    def unwrap(self) -> None:
        from opentelemetry.instrumentation.utils import unwrap

        while self._wrapped:
            owner, name, before = self._wrapped.pop()
            if before is None:
                unwrap(owner, name)
            elif before is _MISSING:  # it was inherited: remove what wrapping put on the class
                delattr(owner, name)
            else:
                setattr(owner, name, before)

    def __len__(self) -> int:
        return len(self._wrapped)
