"""API server process: one trace per request. `AsyncLLM.add_request` and
`InputProcessor.assign_request_id` put the caller's `traceparent` on the request even when vLLM's
own tracing is off (vLLM drops it then), and give a request that came without one a new trace
whose root span id `spec_request` takes, so vLLM's `llm_request` (a child of it) and the spec
spans share one trace. vLLM 0.30 and 0.31 drop the caller's headers earlier, in the serving layer
(`_get_trace_headers` returns None while vLLM's tracing is off): that method is wrapped too."""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging

from ...ids import random_id
from ...record import hotpath
from .._wrapping import Seam, tracing_requested

logger = logging.getLogger(__name__)

# The trace headers a request came with (or the ones made for it), for the request object vLLM
# builds from it in the same task.
_frontend_headers: contextvars.ContextVar = contextvars.ContextVar("spec_tracing_vllm_headers")
ROOT_MARK = "x-spec-tracing-root"  # the traceparent's span id is spec_request's own


def announced_root(headers) -> tuple[int, int] | None:
    """(trace id, span id) the front end chose for the request's root, if it chose them."""
    if not headers or headers.get(ROOT_MARK) != "1":
        return None
    _, trace_id, span_id, _ = headers["traceparent"].split("-")
    return int(trace_id, 16), int(span_id, 16)


def _headers_for(trace_headers) -> dict:
    """The caller's trace context; without one, a new trace whose root span id spec_request
    will use, so that vLLM's llm_request and spec_request share one trace."""
    if trace_headers and "traceparent" in trace_headers:
        return dict(trace_headers)
    trace_id, span_id = random_id(128), random_id(64)
    return {"traceparent": f"00-{trace_id:032x}-{span_id:016x}-01", ROOT_MARK: "1"}


def _wanted() -> bool:
    if hotpath.get_global_tracing_enabled():
        return True
    try:
        return tracing_requested()
    except Exception:
        return False


async def _frontend_add_request(wrapped, instance, args, kwargs):
    token = None
    if _wanted():
        try:
            bound = _signature(wrapped).bind(*args, **kwargs)
            token = _frontend_headers.set(_headers_for(bound.arguments.get("trace_headers")))
        except Exception:
            logger.debug("spec-tracing: trace headers not captured", exc_info=True)
    try:
        return await wrapped(*args, **kwargs)
    finally:
        if token is not None:
            _frontend_headers.reset(token)


def _assign_request_id(wrapped, instance, args, kwargs):
    result = wrapped(*args, **kwargs)
    headers = _frontend_headers.get(None)
    if headers is not None:
        try:
            request = args[0] if args else kwargs["request"]
            if not getattr(request, "trace_headers", None):  # vLLM dropped them, or had none
                request.trace_headers = headers
        except Exception:
            logger.debug("spec-tracing: trace headers not attached", exc_info=True)
    return result


async def _get_trace_headers(wrapped, instance, args, kwargs):
    """vLLM 0.30/0.31: the caller's trace context even while vLLM's tracing is off."""
    found = await wrapped(*args, **kwargs)
    if found or not _wanted():
        return found
    try:
        headers = args[0] if args else kwargs["headers"]
        carrier = {k: headers[k] for k in ("traceparent", "tracestate") if k in headers}
        return carrier if "traceparent" in carrier else found
    except Exception:
        logger.debug("spec-tracing: trace headers not read", exc_info=True)
        return found


@functools.cache
def _signature(fn):
    return inspect.signature(fn)


SEAMS = [
    Seam(
        "vllm.v1.engine.async_llm:AsyncLLM",
        "add_request",
        _frontend_add_request,
        "one trace per request, API server",
    ),  # fmt: skip
    Seam(
        "vllm.v1.engine.input_processor:InputProcessor",
        "assign_request_id",
        _assign_request_id,
        "one trace per request, API server",
    ),  # fmt: skip
]
# Where 0.30/0.31 keep the serving layer's header extraction (0.32+: it keeps them itself):
# completions and chat, and the pooling endpoints.
_LEGACY = "the caller's traceparent, API server (vLLM 0.30/0.31)"
LEGACY_SEAMS = [
    Seam("vllm.entrypoints.generate.base.serving:GenerateBaseServing", "_get_trace_headers",
         _get_trace_headers, _LEGACY),
    Seam("vllm.entrypoints.pooling.base.serving:PoolingBaseServing", "_get_trace_headers",
         _get_trace_headers, _LEGACY),
]  # fmt: skip
