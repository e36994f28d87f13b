"""What runs on the engine's thread: a level check, a clock read and one bounded append per batch.

Everything here is written for the calling thread's cost. With tracing off, each entry point
runs an off body that does nothing (set_time_batch(trace_only=False) still stamps requests).
With tracing on, a batch costs one perf_counter read, one tuple of the request list (a C-level
copy) and one deque append, whatever the batch size; the per-request expansion into spans
happens in the recorder's consumer (recorder.py, compactor.py). Nothing here raises into the
engine: bad input is the consumer's to count.

The globals below are owned by this module and rebound only by provider.enable/shutdown and
set_trace_level, so the hot path reads them with a single LOAD_GLOBAL.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any

from ..stages import RequestStage, StageConfig, _check_level, get_stage
from ..wire import END, SLICE

LEVEL = 0  # current trace level; 0 means tracing is off
_requested_level = 3  # what set_trace_level asked for; applied while tracing is enabled
_queue: deque = deque()
_capacity = 0  # the buffer's bound (SPEC_TRACING_QUEUE_SIZE) while enabled; 0: off
# Below this many buffered events an append is all the hot path does; at it, the recorder is
# woken to drain early (record/recorder.py DRAIN_AT_EVENTS), past _capacity events are dropped.
_drain_at = 0
_wake: Callable[[], None] | None = None  # the recorder's drain_soon while enabled
_VERIFY = RequestStage.SPEC_VERIFY
SINK = None  # the materializer's span sink while enabled (sampling decisions need it)
dropped = 0  # events refused because the buffer was full (read by metrics and stats())
invalid = 0  # calls whose arguments could not be read here (not iterable, unknown setter name)
dropped_finishes = 0  # FINISH events refused even past the reserve (never seen in practice)
# Setter name -> (kind, stage), filled by request_trace.py: SGLang passes setters by name.
SETTERS: dict[str, tuple[int, StageConfig]] = {}


def _push(event: tuple) -> None:
    if len(_queue) < _drain_at:
        _queue.append(event)
    else:
        _push_past_drain_at(event)


def _push_past_drain_at(event: tuple) -> None:
    # The buffer holds _drain_at events or more: the one that reaches it wakes the recorder
    # (a drain of one interval would otherwise outgrow the exporter's queue on a busy engine:
    # tests/record/test_recorder.py::test_a_filling_buffer_is_drained_before_the_interval).
    global dropped
    n = len(_queue)
    if n < _capacity:
        _queue.append(event)
        if n == _drain_at:  # enabled (n < _capacity): _wake is the recorder's
            _wake()
    else:
        dropped += 1


def _push_finish(event: tuple) -> None:
    # A request's end must not be lost to a burst of stage events: finishes may use a reserve as
    # large as the buffer itself (one small tuple per request), so a full buffer loses steps,
    # not roots.
    global dropped_finishes
    if len(_queue) < 2 * _capacity:
        _queue.append(event)
    else:
        dropped_finishes += 1


def _resolve_stage(stage: Any) -> StageConfig | None:
    """A stage given by name (or a bad value, counted)."""
    global invalid
    try:
        return get_stage(stage)
    except Exception:
        invalid += 1
        return None


def _batch(reqs: Any) -> tuple | None:
    global invalid
    try:
        return tuple(reqs)
    except Exception:  # None, a number, an iterator that raises: counted, never raised
        invalid += 1
        return None


def _freeze(values: Any) -> Any:
    # Engines reuse lists; a tensor is kept by reference (no device->host copy here).
    return tuple(values) if type(values) is list else values


# Called with True/False when tracing goes on/off (hooks.py swaps decorated methods).
_toggle_listeners: list[Callable[[bool], None]] = []


def _body_when_off(fn: Callable) -> Callable[[Callable], Callable]:
    """Give the entry point `fn` the decorated function's body while the level is 0.

    Engines import the entry points by name (`from spec_tracing import set_time_batch`), so the
    function object they hold cannot be replaced; its code can. The off body is what the on body
    does after `if not LEVEL`, without that global read: a disabled call then costs what a plain
    function of the same signature costs. A call already running keeps the code it started with,
    and the on body still checks LEVEL, so a toggle during a call is harmless."""

    def install(off: Callable) -> Callable:
        on_code = fn.__code__
        off_code = off.__code__.replace(co_name=on_code.co_name, co_qualname=on_code.co_qualname)
        n = on_code.co_argcount
        if off_code.co_varnames[:n] != on_code.co_varnames[:n] or off_code.co_freevars:
            raise TypeError(f"{off.__name__} must take exactly the arguments of {fn.__name__}")

        def toggle(on: bool) -> None:
            fn.__code__ = on_code if on else off_code

        _toggle_listeners.append(toggle)
        toggle(LEVEL > 0)
        return off

    return install


def _set_level(level: int) -> None:
    global LEVEL
    was_on, LEVEL = LEVEL > 0, level
    if was_on != (level > 0):
        for listener in _toggle_listeners:
            listener(level > 0)


def set_trace_level(level: int) -> None:
    """Change the trace level at run time (0 off .. 3 all). Stages above it record nothing."""
    global _requested_level
    _requested_level = _check_level(level, "set_trace_level")
    if _capacity:  # enabled: apply now
        _set_level(level)


def get_trace_level() -> int:
    """The level in force now (0 while tracing is not enabled)."""
    return LEVEL


def recording() -> bool:
    """True while tracing is enabled, whatever the level: a request's root must still end after
    set_trace_level(0), or its already-recorded stage spans would have no parent."""
    return _capacity > 0


def get_global_tracing_enabled() -> bool:
    """True while tracing is enabled and the level is above 0."""
    return LEVEL > 0


def _activate(
    queue: deque, capacity: int, level: int, drain_at: int, wake: Callable[[], None]
) -> None:
    global _queue, _capacity, _drain_at, _wake, _requested_level
    _queue, _capacity, _requested_level = queue, capacity, level
    _drain_at, _wake = min(drain_at, capacity), wake
    _set_level(level)


def _deactivate() -> None:
    global _capacity, _drain_at, _wake
    _set_level(0)
    _capacity = _drain_at = 0
    _wake = None


def record_batch_stage(
    reqs: Iterable,
    stage: StageConfig,
    start_ts: float,
    end_ts: float,
    accepted: Any = None,
    proposed: Any = None,
    attrs: dict | None = None,
    output_offsets: Any = None,
) -> None:
    """Record that `stage` ran from start_ts to end_ts for every request in `reqs`.

    `reqs` holds engine request objects with our ReqTimeStats at `.time_stats` (or at
    `._spec_tracing`, None there for an untraced request), or bare ReqTimeStats. `accepted` and
    `proposed` are per-request counts (list, tuple or tensor) or one int for all; `attrs` are
    attributes shared by the whole batch (kept by reference and read off this thread: pass a
    dict you do not change afterwards). `output_offsets` (verify only, optional): per request,
    how many output tokens it had before this round, from the engine's own count (exact where
    some steps emit tokens without a verify round); without it each round's offset follows from
    the rounds before.
    """
    if not LEVEL:
        return
    if type(stage) is not StageConfig:
        stage = _resolve_stage(stage)
        if stage is None:
            return
    if LEVEL < stage.level:
        return
    batch = _batch(reqs)
    if batch is not None:
        event = (SLICE, stage, start_ts, end_ts, batch, _freeze(accepted), _freeze(proposed), attrs)
        _push(event if output_offsets is None else event + (_freeze(output_offsets),))


@_body_when_off(record_batch_stage)
def _record_batch_stage_off(
    reqs, stage, start_ts, end_ts, accepted=None, proposed=None, attrs=None, output_offsets=None
) -> None:
    return


def set_time_batch(
    reqs: Iterable,
    set_func: Callable | str,
    trace_only: bool = True,
    attrs: dict | None = None,
) -> None:
    """Apply a ReqTimeStats setter to a batch: the method (`ReqTimeStats.set_spec_draft_start_time`)
    or its name (`"set_spec_draft_start_time"`, as SGLang calls it). `attrs` go on the spans
    (kept by reference and read off this thread: pass a dict you do not change afterwards).

    One timestamp serves the whole batch. With tracing off and trace_only=True this returns after
    one flag read. With trace_only=False and tracing off, each request's `last_times` is still
    stamped (a per-request loop, for engines that read those stamps for their own metrics).
    Never raises: a batch or setter that cannot be used is counted in stats()["invalid_events"].
    """
    if not LEVEL:
        if not trace_only:
            _stamp_each(reqs, set_func, attrs)
        return
    mark = (
        SETTERS.get(set_func) if type(set_func) is str else getattr(set_func, "_spec_event", None)
    )
    if mark is None:  # a setter we do not know: call it per request
        _stamp_each(reqs, set_func, attrs)
        return
    kind, stage = mark
    if LEVEL < stage.level:
        return
    batch = _batch(reqs)
    if batch is not None:
        _push((kind, stage, perf_counter(), None, batch, None, None, attrs))


@_body_when_off(set_time_batch)
def _set_time_batch_off(reqs, set_func, trace_only=True, attrs=None) -> None:
    if not trace_only:
        _stamp_each(reqs, set_func, attrs)


def _stamp_each(reqs: Iterable, set_func: Callable | str, attrs: dict | None) -> None:
    global invalid
    ts = perf_counter()
    try:
        for req in reqs:
            stats = getattr(req, "time_stats", req)
            setter = getattr(stats, set_func) if type(set_func) is str else set_func.__get__(stats)
            if attrs is None:
                setter(ts)
            else:
                setter(ts, attrs)  # SGLang's calling convention
    except Exception:
        invalid += 1


def set_spec_verify_end_time_batch(
    reqs: Iterable,
    accepted: Any,
    proposed: Any = None,
    ts: float | None = None,
    attrs: dict | None = None,
) -> None:
    """End spec_verify for a batch, with each request's accepted draft count (bonus excluded).

    `accepted` is a list, tuple or torch tensor (any device; it is read off this thread, so do not
    modify it in place afterwards). `proposed` is the drafts each request was offered, as a
    sequence or one int.
    """
    if LEVEL < 2:
        return
    batch = _batch(reqs)
    if batch is not None:
        t = perf_counter() if ts is None else ts
        _push((END, _VERIFY, t, None, batch, _freeze(accepted), _freeze(proposed), attrs))


@_body_when_off(set_spec_verify_end_time_batch)
def _set_spec_verify_end_time_batch_off(reqs, accepted, proposed=None, ts=None, attrs=None) -> None:
    return


def make_stage_core(
    stage: StageConfig,
    get_reqs,
    get_accepted=None,
    get_proposed=None,
    get_attrs=None,
    *,
    default_reqs: bool = False,
    default_counts: bool = False,
):
    """The one function that records `stage` around a call: `core(fn, instance, args, kwargs,
    bound)` calls `fn(*args, **kwargs)` if `bound`, else `fn(instance, *args, **kwargs)`.

    Callers check the level first. Written for the engine thread's cost (~1 us a call): the
    common cases are inlined rather than delegated to getters, since each Python call costs
    ~60 ns here; so are _freeze (for the counts) and _push. `default_reqs`: try the first
    argument's `.reqs` before `get_reqs`; `default_counts`: counts are the result's
    `accepted_tokens` / `proposed_tokens` when it has them. A getter left None gives None."""

    def core(fn, instance, args, kwargs, bound):
        global dropped, invalid
        try:
            reqs = getattr(args[0], "reqs", None) if default_reqs and args else None
            reqs = tuple(get_reqs(instance, args, kwargs) if reqs is None else reqs)
        except Exception:  # no batch found: run untraced rather than fail
            return fn(*args, **kwargs) if bound else fn(instance, *args, **kwargs)
        t0 = perf_counter()
        try:
            result = fn(*args, **kwargs) if bound else fn(instance, *args, **kwargs)
        except BaseException as exc:
            _push((SLICE, stage, t0, perf_counter(), reqs, None, None,
                   {"error.type": type(exc).__name__}))  # fmt: skip
            raise
        t1 = perf_counter()
        try:
            if default_counts:
                acc = getattr(result, "accepted_tokens", None)
                prop = getattr(result, "proposed_tokens", None)
            else:
                acc = get_accepted and get_accepted(instance, args, kwargs, result)
                prop = get_proposed and get_proposed(instance, args, kwargs, result)
            event = (
                SLICE, stage, t0, t1, reqs,
                tuple(acc) if type(acc) is list else acc,  # _freeze, inlined
                tuple(prop) if type(prop) is list else prop,
                None if get_attrs is None else get_attrs(instance, args, kwargs, result),
            )  # fmt: skip
        except Exception:  # a getter that cannot be read: the stage without counts, counted
            invalid += len(reqs)
            event = (SLICE, stage, t0, t1, reqs, None, None, None)
        if len(_queue) < _drain_at:  # _push, inlined
            _queue.append(event)
        else:
            _push_past_drain_at(event)
        return result

    return core


def make_stage_wrapper(stage: StageConfig, core) -> Callable:
    """A wrapt-style wrapper around `core` (make_stage_core), for wrapping from outside."""

    level = stage.level

    def wrapper(wrapped, instance, args, kwargs):
        if LEVEL < level:
            return wrapped(*args, **kwargs)
        return core(wrapped, instance, args, kwargs, True)

    wrapper._spec_tracing_stage = stage
    return wrapper


def make_traced_function(fn: Callable, stage: StageConfig, core, is_method: bool) -> Callable:
    """A plain function around `fn` (so methods bind natively): with the stage's level not in
    force it costs one global read and the call; otherwise it defers to `core`."""
    level = stage.level
    if is_method:

        def traced(self, *args, **kwargs):
            if LEVEL < level:
                return fn(self, *args, **kwargs)
            return core(fn, self, args, kwargs, False)
    else:

        def traced(*args, **kwargs):
            if LEVEL < level:
                return fn(*args, **kwargs)
            return core(fn, None, args, kwargs, True)

    functools.update_wrapper(traced, fn)
    traced._spec_tracing_stage = stage
    return traced
