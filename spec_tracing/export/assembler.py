"""Compact events -> span records, where spans are built (the exporter process, or the
recorder's thread when spans go to an in-process provider).

Per-request bookkeeping that only spans need lives here, keyed by the request's handle
(trace id, root span id): stage starts waiting for their end, and step counters. Nothing here
touches the engine's objects, so it runs in another process as well as in this one. Requests
that never finish are forgotten oldest-first past `max_open` (SPEC_TRACING_MAX_OPEN_REQUESTS),
counted in `evicted`, so state stays bounded.

Compact events (record/compactor.py makes them; typed in wire.py):
    (START, name, t, handles)
    (END, name, t, handles, accepted, proposed, batch_attrs, output_offsets)
    (SLICE, name, t0, t1, handles, accepted, proposed, batch_attrs, output_offsets)
    (FINISH, handle, t, root_tuple)     root_tuple: (parent, t0, attrs, error)
"""

from __future__ import annotations

from collections import OrderedDict

from ..wire import END, FINISH, ROOT_RECORD, SLICE, STAGE_RECORD, START
from .limits import AttributeLimits
from .sampling import StepSampler

MAX_OPEN_REQUESTS = 100_000


class SpanAssembler:
    def __init__(
        self, max_open: int | None = MAX_OPEN_REQUESTS, limits: AttributeLimits | None = None,
        sampler: StepSampler | None = None,
    ):  # fmt: skip
        self.sampler = sampler  # step-detail sampling (sampling.py), None: keep every step
        # handle -> [open starts by stage name, steps by stage name]
        self._state: OrderedDict = OrderedDict()
        self.limits = limits or AttributeLimits()
        self.max_open = MAX_OPEN_REQUESTS if max_open is None else max_open
        self.unmatched = 0
        self.evicted = 0

    def _of(self, handle):
        state = self._state.get(handle)
        if state is None:
            state = self._state[handle] = ({}, {})
            if len(self._state) > self.max_open:
                self._state.popitem(last=False)
                self.evicted += 1
        return state

    def feed(self, events: list) -> list:
        """Span records (wire.py) for a batch of compact events."""
        records: list = []
        for event in events:
            kind = event[0]
            if kind == FINISH:
                _, handle, t, (parent, t0, attrs, error) = event
                self._state.pop(handle, None)
                attrs = self.limits.apply(attrs)
                records.append((ROOT_RECORD, handle[0], handle[1], parent, t0, t, attrs, error))
                continue
            if kind == START:
                _, name, t, handles = event
                for handle in handles:
                    self._of(handle)[0][name] = t
                continue
            if kind == SLICE:
                _, name, t0, t1, handles, acc, prop, batch_attrs, offsets = event
            else:
                _, name, t1, handles, acc, prop, batch_attrs, offsets = event
            rows = []
            for i, handle in enumerate(handles):
                opened, steps = self._of(handle)
                if kind == END:
                    t0 = opened.pop(name, None)
                    if t0 is None:
                        self.unmatched += 1
                        continue
                step = steps.get(name, 0)
                steps[name] = step + 1
                rows.append((handle[0], handle[1], t0, t1, step,
                             None if acc is None else acc[i],
                             None if prop is None else prop[i],
                             None if offsets is None else offsets[i]))  # fmt: skip
            if rows:
                if batch_attrs:
                    batch_attrs = self.limits.apply(batch_attrs)
                records.append((STAGE_RECORD, name, batch_attrs, rows))
        return records if self.sampler is None else self.sampler.filter(records)

    def counts(self) -> dict:
        """What stats() reports from here: unmatched ends, limited attributes, sampling."""
        out = {
            "unmatched_ends": self.unmatched,
            "limited_attributes": self.limits.limited,
            "evicted_requests": self.evicted,
        }
        if self.sampler is not None:
            out.update(self.sampler.counts())
        return out

    def flush(self) -> list:
        """Span records of requests that ended and wait on a keep rule's window, judged now."""
        return [] if self.sampler is None else self.sampler.release()

    def stop(self) -> list:
        """Span records still to be made: requests waiting on a keep rule's window."""
        return [] if self.sampler is None else self.sampler.drain()
