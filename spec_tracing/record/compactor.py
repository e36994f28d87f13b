"""Off the engine's thread: batch events -> compact events (plain ids, times and counts).

Runs on the recorder's thread in the engine's process and keeps its per-request work to a few
attribute reads and, for verify, one acceptance update (ReqTimeStats.summary() and each round's
output offset). Everything computed from what it ships runs where spans are assembled: the
figures on a root and every metric (pipeline/signals.py), the expansion into spans
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

from ..acceptance import add_rounds
from ..semconv import SpanAttr
from ..stages import RequestStage
from ..wire import END, FINISH, ROUNDS, SLICE, START
from . import hotpath
from .request_trace import ReqTimeStats

logger = logging.getLogger(__name__)

_VERIFY = RequestStage.SPEC_VERIFY.name
_PREFILL = RequestStage.PREFILL.name
# Stages whose time each request accumulates (ReqTimeStats.stage_s), for its draft time share.
_TIMED = {RequestStage.SPEC_DRAFT.name: 0, _VERIFY: 1, RequestStage.SPEC_DRAFT_EXTEND.name: 2}


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
    if hasattr(values, "tolist"):  # torch tensor / numpy array, read here, off the hot thread
        values = values.tolist()
    if isinstance(values, int) and not isinstance(values, bool):
        return [_count(values)] * n
    # The usual case, checked at C speed: a list or tuple of plain ints in range.
    if (
        type(values) in (list, tuple)
        and len(values) == n
        and (
            not n
            or set(map(type, values)) == {int}
            and 0 <= min(values) <= max(values) <= MAX_DRAFTS
        )
    ):
        return list(values)
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


def _handles(stats: list) -> tuple:
    return tuple([st.handle for st in stats if st.sampled])


class Materializer:
    """The recorder's consumer: engine events in, compact events (assembler.py) out to
    `deliver`. What stays here is what must stay in the engine's process: resolving requests,
    checking counts, per-request acceptance (ReqTimeStats.summary) and the metrics."""

    def __init__(
        self, deliver: Callable[[list], None], metrics: bool = False, level: int | None = None
    ):
        self.deliver = deliver
        self.invalid = 0
        # Metrics are on somewhere: every traced request's rounds and end are shipped (ROUNDS,
        # an unsampled FINISH), not only the sampled ones' spans.
        self.metrics = metrics
        # The level requests ran at: verify counts on a root mean "none recorded" only when
        # verify was recorded (shutdown's last drain runs with the hot path already off, and
        # may be the first drain: tests/record/test_spans.py::test_a_request_without_rounds_*).
        self.level = hotpath.LEVEL if level is None else level
        # The last batch resolved in this drain: (requests, then what _resolve returns). A
        # step's stages carry the same requests, so most events skip the per-request
        # resolution (~0.3 us a request).
        self._last: tuple | None = None

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
            self._settle_times()
            self._last = None  # engine objects are held for one drain at most
        if out:
            self.deliver(out)

    def _resolve(self, reqs: tuple) -> tuple:
        """(ReqTimeStats, their indices in reqs (None: all of them), requests without one,
        sampled handles, the batch's time in the spec stages not yet added to its requests)."""
        last = self._last
        if last is not None:
            try:
                same = reqs is last[0] or reqs == last[0]  # identical requests, in order
            except Exception:  # a request class whose == raises
                same = False
            if same:
                return last[1]
            self._settle_times()
        # The usual case first, without a call per request (a call costs as much as the rest):
        # every request is or holds its ReqTimeStats at .time_stats.
        stats = [req if type(req) is ReqTimeStats else getattr(req, "time_stats", None)
                 for req in reqs]  # fmt: skip
        keep, missing = None, []
        if set(map(type, stats)) != {ReqTimeStats} and stats:
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
        resolved = (stats, keep, missing, _handles(stats), [0.0, 0.0, 0.0, None, None, None])
        self._last = (reqs, resolved)
        return resolved

    def _settle_times(self) -> None:
        """Add the last batch's time in the spec stages to each of its requests: once per
        batch rather than once per stage event (a step's stages share their requests)."""
        last = self._last
        if last is None:
            return
        stats, spent = last[1][0], last[1][4]
        draft, verify, extend = spent[0], spent[1], spent[2]
        if draft or verify or extend:
            for st in stats:
                times = st.stage_s
                times[0] += draft
                times[1] += verify
                times[2] += extend
            spent[0] = spent[1] = spent[2] = 0.0

    def _invalid(self, count: int, why: object) -> None:
        self.invalid += count
        if self.invalid == count:
            logger.warning(
                "spec-tracing: dropped bad input: %s (further bad input is counted in "
                "stats()['invalid_events'], not logged)",
                why,
            )

    def _process(self, event: tuple, out: list) -> None:
        kind, stage, t0, t1, reqs, accepted, proposed, attrs = event
        if kind == FINISH:
            st = _time_stats(reqs[0])
            if st is None or st is _UNTRACED:
                raise InvalidEvent(f"request {reqs[0]!r:.60} has no ReqTimeStats")
            self._settle_times()  # it may be in the batch of the events just before
            self._finish(st, t0, attrs or {}, out)
            return
        t0 = _time(t0)
        if kind == SLICE:
            t1 = _time(t1)
            if t1 < t0:  # a slice that ends before it starts would be a negative span
                raise InvalidEvent(f"{stage.name} slice ends at {t1} before its start {t0}")
        # Requests are checked one by one: one bad request costs its own span, not the batch's.
        stats, keep, missing, handles, spent = self._resolve(reqs)
        for req in missing:
            self._invalid(1, f"request {req!r:.60} has no ReqTimeStats (.time_stats)")
        if not stats:
            return
        name = stage.name
        slot = _TIMED.get(name)
        if kind == START:
            if slot is not None:
                spent[3 + slot] = t0
            elif name == _PREFILL:  # the request left the queue
                for st in stats:
                    if st.prefill_start_ts is None:
                        st.prefill_start_ts = t0
            if handles:
                out.append((START, name, t0, handles))
            return
        if slot is not None:
            if kind == SLICE:
                spent[slot] += t1 - t0
            elif spent[3 + slot] is not None:  # END of the batch's START (another batch's: lost)
                spent[slot] += t0 - spent[3 + slot]
                spent[3 + slot] = None
        elif name == _PREFILL:
            end = t1 if kind == SLICE else t0
            for st in stats:
                if st.first_token_ts is None:
                    st.first_token_ts = end
                if kind == SLICE and st.prefill_start_ts is None:
                    st.prefill_start_ts = t0
        n = len(reqs)
        acc = _counts(accepted, n, "accepted counts")
        prop = _counts(proposed, n, "proposed counts")
        batch_attrs, bad_attrs = clean_attributes(attrs)
        if bad_attrs:
            self._invalid(bad_attrs, f"attribute values of {name} that OTLP cannot carry")
        batch_attrs[SpanAttr.BATCH_SIZE] = n
        if name == _VERIFY and acc is not None:
            if prop is None:
                # The width actually offered this round: the batch's, if not given per request;
                # unknown otherwise (the round then counts for accept_length only).
                prop = [_count(batch_attrs.get(SpanAttr.NUM_STEPS, -1))] * n
            if keep is not None:  # requests without stats left out
                acc = [acc[i] for i in keep]
                prop = [prop[i] for i in keep]
            if None in acc:  # counts out of range: only those requests' rounds are lost
                good = [j for j, a in enumerate(acc) if a is not None]
                self._invalid(len(acc) - len(good), f"accepted counts not in 0..{MAX_DRAFTS}")
                stats = [stats[j] for j in good]
                acc = [acc[j] for j in good]
                prop = [prop[j] for j in good]
                handles = _handles(stats)
            offsets = add_rounds([st.acceptance for st in stats], acc, prop)
            if self.metrics and acc:  # every request counts, sampled or not
                out.append((ROUNDS, acc, prop, batch_attrs))
        else:
            acc = prop = offsets = None
        if not handles:
            return
        if len(handles) < len(stats) and acc is not None:
            sampled = [i for i, st in enumerate(stats) if st.sampled]
            acc, prop = [acc[i] for i in sampled], [prop[i] for i in sampled]
            offsets = [offsets[i] for i in sampled]
        if kind == END:
            out.append((END, name, t0, handles, acc, prop, batch_attrs, offsets))
        else:
            out.append((SLICE, name, t0, t1, handles, acc, prop, batch_attrs, offsets))

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
        acc = st.acceptance
        facts = (
            st.sampled,
            (acc.rounds, acc.accepted, acc.proposed, acc.rate_accepted, acc.next_offset),
            tuple(st.stage_s),
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
