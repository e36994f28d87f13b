"""Off the engine's thread: batch events -> compact events (plain ids, times and counts).

Runs on the recorder's thread in the engine's process, and does there only what needs the
engine's objects: each batch's requests resolved to their handles (once per batch, not per
event), times and counts checked, attributes made OTLP-safe, and a request's end with the few
timestamps its request object holds. Everything computed from what it ships runs where spans are
assembled (pipeline/signals.py): each request's acceptance and output offsets, its time per
stage, the figures on its root and every metric, then the expansion into spans
(export/assembler.py), in the exporter process when there is one. Bad input (a request without
time stats, counts of the wrong length, negative or non-integer counts) drops that event and is
counted; a single warning says so.
"""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Callable
from time import perf_counter
from typing import Any

from ..semconv import SpanAttr
from ..stages import RequestStage
from ..wire import END, FINISH, SLICE, START
from . import hotpath
from .request_trace import ReqTimeStats

logger = logging.getLogger(__name__)

_VERIFY = RequestStage.SPEC_VERIFY.name
_PREFILL = RequestStage.PREFILL.name


class InvalidEvent(ValueError):
    pass


# Drafts a request can be offered or accept in one round. Far above any real width (EAGLE trees
# score ~64 tokens), low enough that a garbage count cannot make the per-position metrics loop
# run for minutes (a count of 2**40 once did).
MAX_DRAFTS = 1 << 16
_ATTR_TYPES = (str, bool, int, float)


def _count(value: Any) -> int | None:
    """A valid per-request count, or None."""
    try:
        value = operator.index(value)
    except TypeError:
        return None
    return value if 0 <= value <= MAX_DRAFTS else None


def _counts(values: Any, n: int, what: str) -> list | None:
    """Per-request counts (None for an entry that is not a count in 0..MAX_DRAFTS)."""
    if values is None:
        return None
    if type(values) not in (list, tuple):
        if hasattr(values, "tolist"):  # a tensor or array, read here, off the engine's thread
            values = values.tolist()
        if isinstance(values, int) and not isinstance(values, bool):
            return [_count(values)] * n
    # The usual case, at C speed: a list or tuple of counts 0..255, made plain ints (bytes()
    # refuses anything else); larger counts, up to MAX_DRAFTS, take the loop below.
    if type(values) in (list, tuple) and len(values) == n:
        try:
            return list(bytes(values))
        except (TypeError, ValueError):
            pass
    try:
        out = [_count(v) for v in values]
    except TypeError:
        raise InvalidEvent(f"{what} must be integers, got {values!r:.80}") from None
    if len(out) != n:
        raise InvalidEvent(f"{what} has {len(out)} entries for a batch of {n}")
    return out


def _is_time(value: Any) -> bool:
    return (type(value) is float or type(value) is int) and math.isfinite(value)


def _time(value: Any) -> float:
    if type(value) is not float and (type(value) is not int or isinstance(value, bool)):
        raise InvalidEvent(f"timestamp {value!r:.40} is not a perf_counter() float")
    if not math.isfinite(value):
        raise InvalidEvent(f"timestamp {value!r} is not finite")
    return value


def clean_attributes(attrs: Any) -> tuple[dict, int]:
    """The attributes an OTLP span can carry (str, bool, int64, float, or a list of one of
    those), and how many values were dropped. Anything else would fail the export (or the pipe
    to the exporter process) for every span sent with it."""
    if not attrs:
        return {}, 0
    if not isinstance(attrs, dict):
        return {}, 1
    out, bad = {}, 0
    for key, value in attrs.items():
        if type(value) in _ATTR_TYPES and (type(value) is not int or -(2**63) <= value < 2**63):
            out[str(key)] = value
        elif isinstance(value, (list, tuple)) and all(type(v) in _ATTR_TYPES for v in value):
            out[str(key)] = list(value) if len({type(v) for v in value}) <= 1 else None
            if out[str(key)] is None:
                del out[str(key)]
                bad += 1
        else:
            bad += 1
    return out, bad


# Where an engine whose own `time_stats` is taken (SGLang) keeps a request's ReqTimeStats. None
# there marks a request created while tracing was off: it has no trace, and is skipped without
# a count, so an engine can pass its whole batch and leave the sorting to this thread.
STATS_ATTR = "_spec_tracing"
_UNTRACED = object()


def _time_stats(req: Any) -> Any:
    """The request's ReqTimeStats (itself, at .time_stats, or at ._spec_tracing); _UNTRACED;
    or None when it has none (bad input)."""
    if isinstance(req, ReqTimeStats):
        return req
    stats = getattr(req, "time_stats", None)
    if isinstance(stats, ReqTimeStats):
        return stats
    stats = getattr(req, STATS_ATTR, _UNTRACED)  # a missing attribute fails the check below
    if stats is None:
        return _UNTRACED
    return stats if isinstance(stats, ReqTimeStats) else None


_TIME_STATS = operator.attrgetter("time_stats")
_STATS_ATTR = operator.attrgetter(STATS_ATTR)
_HANDLE = operator.attrgetter("handle")
_WIRE_FLAG = operator.attrgetter("wire_flag")


def _all_stats(reqs: tuple) -> list | None:
    """Every request's ReqTimeStats when each has one in the same place, else None."""
    if not reqs:
        return None
    if type(reqs[0]) is ReqTimeStats:
        stats = list(reqs)
    else:
        try:
            stats = list(map(_TIME_STATS, reqs))
            if type(stats[0]) is not ReqTimeStats:  # the engine's own time stats: ours apart
                stats = list(map(_STATS_ATTR, reqs))
        except Exception:  # some request has neither
            return None
    return stats if set(map(type, stats)) == {ReqTimeStats} else None


def _flags(stats: list) -> tuple | None:
    """Per request (sampled, output_base), or None for the usual batch: every request sampled,
    its first round after a prefill (wire.py)."""
    flags = list(map(_WIRE_FLAG, stats))
    return tuple([flag or (True, 1) for flag in flags]) if any(flags) else None


def _shipped(stats: list) -> tuple:
    """What a compact event names these requests by: (keys, flags) (wire.py)."""
    return tuple(map(_HANDLE, stats)), _flags(stats)


class Materializer:
    """The recorder's consumer: engine events in, compact events (wire.py) out to `deliver`.
    What stays here is what must stay in the engine's process: resolving requests, checking
    times and counts, a request's end."""

    def __init__(
        self, deliver: Callable[[list], None], metrics: bool = False, level: int | None = None
    ):
        self.deliver = deliver
        self.invalid = 0
        # Metrics are on somewhere: every traced request's steps and end are shipped (its
        # acceptance and times count), not only the sampled ones'.
        self.metrics = metrics
        # The level requests ran at: verify counts on a root mean "none recorded" only when
        # verify was recorded (shutdown's last drain runs with the hot path already off, and
        # may be the first drain: tests/record/test_spans.py::test_a_request_without_rounds_*).
        self.level = hotpath.LEVEL if level is None else level
        # The last batch resolved in this drain: (requests, then what _resolve returns). A
        # step's stages carry the same requests, so most events skip the per-request
        # resolution, and ship the same keys object (pickled once a drain).
        self._last: tuple | None = None
        # The last stage attributes cleaned (as given, batch size, as shipped): the next event
        # with equal ones ships the same dict, never changed after (tests/record/test_spans.py::
        # test_stage_attributes_are_cleaned_per_event).
        self._last_attrs: tuple = (None, -1, None, None)

    def __call__(self, events: list) -> None:
        out: list = []
        if hotpath.LEVEL:
            self.level = hotpath.LEVEL
        try:
            for event in events:
                try:
                    self._process(event, out)
                except InvalidEvent as exc:
                    self._invalid(len(event[4]) if len(event) > 4 else 1, exc)
                except Exception as exc:  # a malformed event must not cost the rest of the drain
                    self._invalid(1, exc)
        finally:
            self._last = None  # engine objects are held for one drain at most
            self._last_attrs = (None, -1, None, None)
        if out:
            self.deliver(out)

    def _resolve(self, reqs: tuple) -> tuple:
        """(ReqTimeStats shipped, their indices in reqs (None: all of them), requests without
        one, their keys (handles), their flags (_flags))."""
        last = self._last
        if last is not None:
            try:
                same = reqs is last[0] or reqs == last[0]  # identical requests, in order
            except Exception:  # a request class whose == raises
                same = False
            if same:
                return last[1]
        # The usual cases first, in C loops (map, attrgetter) rather than a Python loop: every
        # request is a ReqTimeStats, or holds one at .time_stats, or at STATS_ATTR (SGLang).
        stats = _all_stats(reqs)
        keep, missing = None, []
        if stats is None:
            stats = list(reqs)
            found, keep = [], []
            for i, (req, st) in enumerate(zip(reqs, stats, strict=True)):
                if type(st) is not ReqTimeStats:
                    st = _time_stats(req)
                if st is None:
                    missing.append(req)
                elif st is not _UNTRACED:
                    found.append(st)
                    keep.append(i)
            stats = found
        keys, flags = _shipped(stats)
        if flags is not None and not self.metrics:
            # Without metrics an unsampled request needs nothing shipped: no root, no steps.
            sampled = [i for i, (s, _) in enumerate(flags) if s]
            keep = sampled if keep is None else [keep[i] for i in sampled]
            stats = [stats[i] for i in sampled]
            keys, flags = _shipped(stats)
        resolved = (stats, keep, missing, keys, flags)
        self._last = (reqs, resolved)
        return resolved

    def _batch_attrs(self, attrs: Any, n: int, name: str) -> dict:
        batch_attrs, bad_attrs = clean_attributes(attrs)
        if bad_attrs:
            self._invalid(bad_attrs, f"attribute values of {name} that OTLP cannot carry")
        batch_attrs[SpanAttr.BATCH_SIZE] = n
        if not bad_attrs and (attrs is None or type(attrs) is dict):
            self._last_attrs = (
                None if attrs is None else dict(attrs), n, batch_attrs,
                None if attrs is None else list(map(type, attrs.values())),
            )  # fmt: skip
        return batch_attrs

    def _invalid(self, count: int, why: object) -> None:
        self.invalid += count
        if self.invalid == count:
            logger.warning(
                "spec-tracing: dropped bad input: %s (further bad input is counted in "
                "stats()['invalid_events'], not logged)",
                why,
            )

    def _process(self, event: tuple, out: list) -> None:
        if len(event) == 8:
            kind, stage, t0, t1, reqs, accepted, proposed, attrs = event
            positions = None
        else:  # a verify with the engine's own output offsets
            kind, stage, t0, t1, reqs, accepted, proposed, attrs, positions = event
        if kind == FINISH:
            st = _time_stats(reqs[0])
            if st is None or st is _UNTRACED:
                raise InvalidEvent(f"request {reqs[0]!r:.60} has no ReqTimeStats")
            self._finish(st, t0, attrs or {}, out)
            return
        # perf_counter() floats pass without a call: x - x is 0.0 for a finite x only.
        if type(t0) is not float or t0 - t0 != 0.0:
            t0 = _time(t0)
        if kind == SLICE:
            if type(t1) is not float or t1 - t1 != 0.0:
                t1 = _time(t1)
            if t1 < t0:  # a slice that ends before it starts would be a negative span
                raise InvalidEvent(f"{stage.name} slice ends at {t1} before its start {t0}")
        # Requests are checked one by one: one bad request costs its own span, not the batch's.
        stats, keep, missing, keys, flags = self._resolve(reqs)
        for req in missing:
            self._invalid(1, f"request {req!r:.60} has no ReqTimeStats (.time_stats)")
        if not stats:
            return
        name = stage.name
        if kind == START:
            if name == _PREFILL:  # the request left the queue
                for st in stats:
                    if st.prefill_start_ts is None:
                        st.prefill_start_ts = t0
            out.append((START, name, t0, keys, flags))
            return
        if name == _PREFILL:
            end = t1 if kind == SLICE else t0
            for st in stats:
                if st.first_token_ts is None:
                    st.first_token_ts = end
                if kind == SLICE and st.prefill_start_ts is None:
                    st.prefill_start_ts = t0
        n = len(reqs)
        acc = None if accepted is None else _counts(accepted, n, "accepted counts")
        prop = None if proposed is None else _counts(proposed, n, "proposed counts")
        last = self._last_attrs
        try:  # a step's stages repeat their attributes: cleaned once, one dict shipped
            same = n == last[1] and (
                attrs is last[0] is None  # 1 == 1.0 == True: the types must match too
                or attrs == last[0]
                and list(map(type, attrs.values())) == last[3]
            )
        except Exception:  # a value whose == raises: cleaned (and counted) below
            same = False
        batch_attrs = last[2] if same else self._batch_attrs(attrs, n, name)
        if name == _VERIFY and acc is not None:
            if prop is None:
                # The width actually offered this round: the batch's, if not given per request;
                # unknown otherwise (the round then counts for accept_length only).
                prop = [_count(batch_attrs.get(SpanAttr.NUM_STEPS, -1))] * n
            if positions is not None:
                positions = self._positions(positions, n)
            if keep is not None:  # requests without stats (or not needed) left out
                acc = [acc[i] for i in keep]
                prop = [prop[i] for i in keep]
                if positions is not None:
                    positions = [positions[i] for i in keep]
            if None in acc:  # counts out of range: only those requests' rounds are lost
                good = [j for j, a in enumerate(acc) if a is not None]
                self._invalid(len(acc) - len(good), f"accepted counts not in 0..{MAX_DRAFTS}")
                stats = [stats[j] for j in good]
                acc = [acc[j] for j in good]
                prop = [prop[j] for j in good]
                if positions is not None:
                    positions = [positions[j] for j in good]
                keys, flags = _shipped(stats)
        else:
            acc = prop = positions = None
        if kind == END:
            out.append((END, name, t0, keys, flags, acc, prop, batch_attrs, positions))
        else:
            out.append((SLICE, name, t0, t1, keys, flags, acc, prop, batch_attrs, positions))

    def _positions(self, values: Any, n: int) -> list | None:
        """The engine's output offsets: n non-negative ints, else None (the round's offset then
        follows from the rounds before) and counted."""
        try:
            if hasattr(values, "tolist"):
                values = values.tolist()
            out = [operator.index(v) for v in values]
            if len(out) == n and (not out or min(out) >= 0):
                return out
        except TypeError:
            pass
        self._invalid(1, f"output offsets {values!r:.60} are not {n} non-negative integers")
        return None

    def _finish(self, st: ReqTimeStats, ts: Any, how: dict, out: list) -> None:
        # A root is never dropped: bad times or attributes are replaced and counted.
        t0, ts = st.start_ts, ts
        try:
            t0 = _time(t0)
        except InvalidEvent as exc:
            self._invalid(1, exc)
            t0 = _time(ts) if _is_time(ts) else perf_counter()
        if not _is_time(ts):
            self._invalid(1, f"finish timestamp {ts!r:.40}")
            ts = max(t0, perf_counter())
        elif ts < t0:  # a root that ends before it starts: kept, made empty, counted
            self._invalid(1, f"finish timestamp {ts} before the request's start {t0}")
            ts = t0
        error = how.get("error")
        if not (st.sampled or self.metrics):
            return
        facts = (
            st.sampled,
            st.first_token_ts,
            self.level >= RequestStage.SPEC_VERIFY.level,
            st.prefill_start_ts,
        )
        if st.sampled:
            attrs, bad = clean_attributes(st.attributes)
            if bad:
                self._invalid(bad, "request attribute values that OTLP cannot carry")
            if st.rid is not None:
                attrs[SpanAttr.REQUEST_ID] = str(st.rid)
            attrs[SpanAttr.FINISH_REASON] = how.get("reason", "stop")
        else:  # no root: what its metrics are labelled with
            attrs, _ = clean_attributes(
                {k: v for k, v in st.attributes.items() if k in _METRIC_ATTRS}
            )
        out.append(
            (FINISH, st.handle, ts,
             (st.parent, t0, attrs, None if error is None else str(error)), facts)
        )  # fmt: skip


_METRIC_ATTRS = (SpanAttr.GEN_AI_MODEL, SpanAttr.GEN_AI_PROVIDER)
