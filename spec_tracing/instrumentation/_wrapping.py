"""What every engine integration shares: the "did the user ask for tracing" check, and a table of
wrapped methods that instrument and uninstrument both walk (so the two cannot drift apart).

Kept free of heavy imports: vllm_plugin.py reads `tracing_requested()` in every vLLM process."""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Callable, Iterable
from typing import NamedTuple

logger = logging.getLogger(__name__)


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


class Seam(NamedTuple):
    """A table row named by import path, resolved when wrapping: `where` is "module:Class" (or
    "module" for a module-level function), `stage` what is lost without it (for warnings and
    `spec-tracing doctor`). A row that does not resolve costs only itself."""

    where: str
    name: str
    wrapper: Callable | Inline
    stage: str

    @property
    def label(self) -> str:
        module, _, owner = self.where.partition(":")
        return f"{module}.{owner + '.' if owner else ''}{self.name}"

    def resolve(self) -> object:
        module, _, owner = self.where.partition(":")
        found = importlib.import_module(module)
        for part in filter(None, owner.split(".")):
            found = getattr(found, part)
        if not hasattr(found, self.name):
            raise AttributeError(f"{self.label} not found")
        return found


_ORIGINAL = "_spec_tracing_original"
_MISSING = object()


class WrapTable:
    """(owner, attribute, wrapper) rows, wrapped with wrapt (or, for Inline rows, replaced by a
    plain function) and undone exactly. A method already wrapped (by another instrumentor
    instance) is left alone, so a round is never traced twice."""

    def __init__(
        self,
        targets: Callable[[], Iterable[Seam | tuple[type, str, Callable | Inline]]],
        engine: str = "",
    ):
        self._targets = targets  # called at wrap time: the engine is imported only then
        self.engine = engine  # named in the warning about missing seams
        # (owner, name, what vars(owner) held before: _MISSING if inherited, None for wrapt)
        self._wrapped: list[tuple[object, str, object]] = []
        self.missing: list[tuple[Seam, str]] = []  # seams of the last wrap() that did not resolve

    def wrap(self) -> None:
        missing = []
        for row in self._targets():
            if isinstance(row, Seam):
                try:
                    owner = row.resolve()
                except Exception as exc:  # this seam's stage only; the others still wrap
                    missing.append((row, f"{type(exc).__name__}: {exc}"))
                    continue
                self.wrap_one(owner, row.name, row.wrapper)
            else:
                self.wrap_one(*row)
        if missing and missing != self.missing:
            logger.warning(
                "spec-tracing: %s: seams not found, so these stages are not timed where that "
                "code would run: %s",
                self.engine or "engine",
                "; ".join(f"{seam.label} ({seam.stage})" for seam, _ in missing),
            )
        self.missing = missing

    def wrap_one(self, owner: object, name: str, wrapper: Callable | Inline) -> bool:
        """Wrap one attribute (also for classes known only at run time); False when it was
        already wrapped or the Inline row declined."""
        import wrapt

        current = vars(owner).get(name)
        # wrapt 2's FunctionWrapper is a BaseObjectProxy and no longer an ObjectProxy: checking
        # only the latter let a second instrumentor wrap a method again.
        proxy = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)
        if isinstance(current, proxy) or hasattr(current, _ORIGINAL):
            return False
        if isinstance(wrapper, Inline):
            original = getattr(owner, name)
            replacement = wrapper.make(original)
            if replacement is None:  # make() declined (and said why)
                return False
            functools.update_wrapper(replacement, original)
            setattr(replacement, _ORIGINAL, original)
            self._wrapped.append((owner, name, vars(owner).get(name, _MISSING)))
            setattr(owner, name, replacement)
        else:
            wrapt.wrap_function_wrapper(owner, name, wrapper)
            self._wrapped.append((owner, name, None))
        return True

    def is_wrapped(self, owner: object, name: str) -> bool:
        return any(o is owner and n == name for o, n, _ in self._wrapped)

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
