"""Hugging Face transformers: assisted generation (a draft model) and prompt lookup (n-gram
drafts), traced from outside with wrapt; transformers' code is not changed.

What is wrapped (transformers 5.x, tested with 5.23.0):
- `GenerationMixin._assisted_decoding`, the loop every speculating `generate` call runs: its
  request root span (`spec_request`), one per call. Calls that do not speculate never reach it.
- `get_candidates` of every candidate generator class that defines it (assistant model, prompt
  lookup, early exit, MTP, ... whatever the installed version has): `spec_draft`.
- The target's verification has no method of its own (it is inline in `_assisted_decoding`), so
  `spec_verify` runs from the end of `get_candidates` to the call of `update_candidate_strategy`,
  which every round makes with the round's matches: it covers the target's forward over the
  candidates, the acceptance test and the cache crop. `update_candidate_strategy` is wrapped
  where the base class defines it (prompt lookup inherits that no-op) and on every override.
  `accepted_tokens` is transformers' `num_matches` (bonus token excluded, already cut at EOS and
  at the length limit); `spec_decode.proposed_tokens` is the candidates offered (0 when the
  generator had nothing to propose, as in the last round of a length-limited call).
- The draft width: `num_assistant_tokens` (which transformers adapts per round with the
  "heuristic" schedule) or prompt lookup's `num_output_tokens`, as `spec_decode.num_steps` on
  the round's spans and in the `spec_decode.num_steps` gauge; `spec_decode.next_num_steps` on
  spec_verify is the width chosen for the next round.
transformers has no draft-extend step (the assistant re-reads accepted tokens inside its next
`get_candidates`), so no `spec_draft_extend` spans are made.

Nested generate calls are handled: the assistant's own `generate` does not speculate, and a
generator calling its parent's `get_candidates` (super()) is counted once.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import logging
import threading
from collections.abc import Collection
from time import perf_counter

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from ..record import hotpath
from ..record.request_trace import ReqTimeStats
from ..semconv import SpanAttr
from ..stages import RequestStage
from ._wrapping import WrapTable
from .auto import enable_from_environment

logger = logging.getLogger(__name__)

SUPPORTED = ("transformers >= 5.0, < 6",)
NEXT_NUM_STEPS = "spec_decode.next_num_steps"
ENGINE = "spec_decode.engine"

_DRAFT = RequestStage.SPEC_DRAFT
_VERIFY = RequestStage.SPEC_VERIFY
_WIDTH_FIELDS = ("num_assistant_tokens", "num_output_tokens")
_ids = itertools.count()
_local = threading.local()


class _Call:
    """One speculating generate call on this thread."""

    __slots__ = ("req", "draft_end", "proposed", "width", "worker", "in_draft", "in_update")

    def __init__(self, req: ReqTimeStats):
        self.req = req
        self.draft_end: float | None = None
        self.proposed = 0
        self.width = None
        self.worker = ""
        self.in_draft = False
        self.in_update = False


def _stack() -> list[_Call]:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def _current() -> _Call | None:
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


def _width(generator):
    for field in _WIDTH_FIELDS:
        value = getattr(generator, field, None)
        if isinstance(value, int):
            return value
    return None


def _arg(args, kwargs, index: int, name: str):
    return args[index] if len(args) > index else kwargs[name]


def _assisted_decoding(wrapped, instance, args, kwargs):
    if not hotpath.LEVEL:
        return wrapped(*args, **kwargs)
    try:
        attrs = {ENGINE: "transformers", SpanAttr.GEN_AI_PROVIDER: "transformers"}
        model = getattr(getattr(instance, "config", None), "name_or_path", None)
        if isinstance(model, str) and model:
            attrs[SpanAttr.GEN_AI_MODEL] = model
        call = _Call(ReqTimeStats(rid=f"transformers-{next(_ids)}", attributes=attrs))
        call.req.output_base = 0  # no prefill step: the first round emits the first
    except Exception:  # never fail the user's generate because of tracing
        logger.debug("spec-tracing: request not traced", exc_info=True)
        return wrapped(*args, **kwargs)
    stack = _stack()
    stack.append(call)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        call.req.abort(type(exc).__name__)
        raise
    finally:
        stack.remove(call)
    call.req.finish()
    return result


def _get_candidates(wrapped, instance, args, kwargs):
    call = _current()
    if call is None or call.in_draft:
        return wrapped(*args, **kwargs)
    call.in_draft = True
    width = _width(instance)
    t0 = perf_counter()
    try:
        result = wrapped(*args, **kwargs)
    finally:
        call.in_draft = False
    t1 = perf_counter()
    try:
        input_ids = _arg(args, kwargs, 0, "input_ids")
        call.proposed = int(result[0].shape[-1] - input_ids.shape[-1])
        call.width = width
        call.worker = type(instance).__name__
        call.draft_end = t1
        attrs = {SpanAttr.WORKER: call.worker}
        if width is not None:
            attrs[SpanAttr.NUM_STEPS] = width
        hotpath.record_batch_stage((call.req,), _DRAFT, t0, t1, attrs=attrs)
    except Exception:
        call.draft_end = None
        logger.debug("spec-tracing: draft not recorded", exc_info=True)
    return result


def _update_candidate_strategy(wrapped, instance, args, kwargs):
    call = _current()
    if call is None or call.in_update or call.draft_end is None:
        return wrapped(*args, **kwargs)
    verify_end = perf_counter()
    call.in_update = True
    try:
        result = wrapped(*args, **kwargs)
    finally:
        call.in_update = False
    try:
        accepted = int(_arg(args, kwargs, 2, "num_matches"))
        attrs = {
            SpanAttr.WORKER: call.worker,
            SpanAttr.NUM_DRAFT_TOKENS: call.proposed + 1,
        }
        if call.width is not None:
            attrs[SpanAttr.NUM_STEPS] = call.width
        next_width = _width(instance)
        if next_width is not None:
            attrs[NEXT_NUM_STEPS] = next_width
        hotpath.record_batch_stage(
            (call.req,),
            _VERIFY,
            call.draft_end,
            verify_end,
            accepted=(accepted,),
            proposed=(call.proposed,),
            attrs=attrs,
        )
    except Exception:
        logger.debug("spec-tracing: verify not recorded", exc_info=True)
    call.draft_end = None
    return result


def _targets():
    """(owner, attribute, wrapper) for everything wrapped in the installed transformers."""
    from transformers.generation import candidate_generator
    from transformers.generation.utils import GenerationMixin

    targets = [(GenerationMixin, "_assisted_decoding", _assisted_decoding)]
    base = candidate_generator.CandidateGenerator
    for _, cls in inspect.getmembers(candidate_generator, inspect.isclass):
        if not issubclass(cls, base) or cls.__module__ != candidate_generator.__name__:
            continue
        if "get_candidates" in vars(cls) and cls is not base:  # the base only raises
            targets.append((cls, "get_candidates", _get_candidates))
        if "update_candidate_strategy" in vars(cls):
            targets.append((cls, "update_candidate_strategy", _update_candidate_strategy))
    return targets


_table = WrapTable(_targets)


class TransformersInstrumentor(BaseInstrumentor):
    """spec_draft / spec_verify spans and acceptance metrics for transformers' assisted
    generation and prompt lookup. `instrument()` wraps; `uninstrument()` restores the original
    methods. Tracing itself is switched on by `spec_tracing.enable()` or SPEC_TRACING_ENABLED=1."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return SUPPORTED

    def _instrument(self, **kwargs) -> None:
        # opentelemetry-instrument calls every installed instrumentor (skip_dep_check); where
        # transformers is not installed there is nothing to wrap and nothing to say
        # (tests/instrumentation/test_auto_instrument.py, empty stderr).
        if importlib.util.find_spec("transformers") is None:
            return
        enable_from_environment(kwargs.get("tracer_provider"))
        _table.wrap()

    def _uninstrument(self, **kwargs) -> None:
        _table.unwrap()
