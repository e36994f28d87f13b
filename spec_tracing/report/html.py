"""One self-contained HTML page for a captured trace: the run's summary, acceptance and draft
width over time, acceptance per draft position, and a waterfall of every request's stages that
zooms down to single decode steps.

Python turns the spans into one compact JSON payload; a small inline script (view.js, beside
this module) draws it on canvases and handles zoom, clicks, sorting and filtering. Nothing is
fetched: no stylesheet, font or script from anywhere, so the file opens offline.

Payload (times are integer nanoseconds relative to the earliest request's start, which keeps
them exact in a JavaScript number for runs up to ~100 days):
- ``names``: span names; a bar's first field indexes it.
- ``keys`` / ``attrsets``: attribute keys, and every distinct attribute set without the step
  as ``[[key index, value], ...]``. Stage spans of one batch share all but their counts, so a
  run of 60,000 bars has a few hundred sets.
- ``requests``: one per root span, with its bars flattened as
  ``[name, start, duration, step, attrset, span id]`` repeated, and its ``run`` (runs appended
  to one file are told apart by their processes' resources and shown one at a time); then one
  per trace whose root is not in the file (outcome "no root"), so every span is drawn.
"""

from __future__ import annotations

import json
from collections import defaultdict
from html import escape
from importlib import resources

from ..semconv import SpanAttr
from ..stages import RequestStage
from .otlp_json import OtlpSpan, by_root, dumps

ROOT = RequestStage.REQUEST.name
MAX_REQUESTS = 500
BAR_FIELDS = 6


class _Interner:
    def __init__(self) -> None:
        self.items: list = []
        self._index: dict = {}

    def __call__(self, item) -> int:
        index = self._index.get(item)
        if index is None:
            index = self._index[item] = len(self.items)
            self.items.append(item)
        return index


def _json_safe(value):
    # Non-finite floats are not JSON; a list attribute must be hashable to intern its set.
    if isinstance(value, float) and (value != value or abs(value) == float("inf")):
        return str(value)
    if isinstance(value, list | tuple):
        return tuple(_json_safe(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _outcome(root: OtlpSpan) -> str:
    if root.status_code == 2:
        return "error"
    return str(root.attributes.get(SpanAttr.FINISH_REASON, "unknown"))


def _process(span: OtlpSpan) -> tuple:
    return span.resource.get("service.name"), span.resource.get("service.instance.id")


def _runs(units: list[tuple[tuple, int, int]]) -> list[int]:
    """Each unit's run, units being (process, start, end) of a request or of a trace without a
    root: the processes (service.name, service.instance.id) whose units overlap in time are one
    run (an engine's ranks); files that runs were appended to hold several, orphan-only ones
    included."""
    spans_of: dict[tuple, list[int]] = defaultdict(list)
    for i, (key, _, _) in enumerate(units):
        spans_of[key].append(i)
    groups = sorted(
        ([min(units[i][1] for i in idx), max(units[i][2] for i in idx), idx]
         for idx in spans_of.values()),
        key=lambda g: g[0],
    )  # fmt: skip
    runs: list[list] = []
    for start, end, idx in groups:
        if runs and start <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], end)
            runs[-1][2] += idx
        else:
            runs.append([start, end, list(idx)])
    out = [0] * len(units)
    for n, (_, _, idx) in enumerate(runs):
        for i in idx:
            out[i] = n
    return out


SELECT_FORMS = "first:N | slowest:N | lowest_accept:N | window:START-END (s) | ids:A,B | all"


def parse_select(text: str) -> tuple[str, object]:
    """`--select` as (kind, argument); ValueError naming what is allowed."""
    kind, _, arg = text.partition(":")
    try:
        if kind == "all" and not arg:
            return kind, None
        if kind in ("first", "slowest", "lowest_accept"):
            n = int(arg)
            if n < 1:
                raise ValueError
            return kind, n
        if kind == "window":
            lo, _, hi = arg.partition("-")
            bounds = (float(lo), float(hi))
            if not (0 <= bounds[0] < bounds[1] < float("inf")):
                raise ValueError
            return kind, bounds
        if kind == "ids" and arg.strip(","):
            return kind, {i for i in arg.split(",") if i}
    except ValueError:
        pass
    raise ValueError(f"--select {text!r}: expected {SELECT_FORMS}")


def _start(group: list[OtlpSpan]) -> int:
    return min(s.start_ns for s in group)


def select(roots: list, orphans: dict, how: tuple[str, object]) -> tuple[list, list, str]:
    """The roots (by start) and orphan traces (trace id, spans) the page carries, and how they
    were chosen, in words. At most MAX_REQUESTS of each unless `all` or `ids` says otherwise."""
    kind, arg = how
    lanes = sorted(orphans.items(), key=lambda kv: _start(kv[1]))
    if kind == "all":
        return roots, lanes, "all"
    if kind == "ids":
        chosen = [r for r in roots if str(r.attributes.get(SpanAttr.REQUEST_ID, r.span_id)) in arg]
        return chosen, [], f"the {len(chosen)} requests named by --select ids:"
    if kind == "window":
        t0 = min([r.start_ns for r in roots] + [_start(g) for _, g in lanes], default=0)
        lo, hi = (t0 + int(b * 1e9) for b in arg)
        chosen = [r for r in roots if r.end_ns >= lo and r.start_ns <= hi][:MAX_REQUESTS]
        lanes = [(t, g) for t, g in lanes if lo <= _start(g) <= hi][:MAX_REQUESTS]
        return chosen, lanes, f"those between {arg[0]:g} s and {arg[1]:g} s"
    n = arg
    if kind == "slowest":
        chosen = sorted(roots, key=lambda r: r.start_ns - r.end_ns)[:n]
        words = f"the {n} slowest"
    elif kind == "lowest_accept":

        def rate(r):
            value = r.attributes.get(SpanAttr.ACCEPT_RATE)
            ok = isinstance(value, int | float) and value == value
            return value if ok else float("inf")

        chosen = sorted(roots, key=rate)[:n]
        words = f"the {n} with the lowest accept rate"
    else:
        chosen, words = roots[:n], f"the first {n} by start"
    return sorted(chosen, key=lambda r: r.start_ns), lanes[:n], words


def build_payload(spans: list[OtlpSpan], summary_text: str, title: str,
                  how: tuple[str, object] = ("first", MAX_REQUESTS)) -> dict:  # fmt: skip
    roots, children, orphans = by_root(spans, ROOT)
    shown, lanes, chosen_by = select(roots, orphans, how)
    firsts = [r.start_ns for r in shown] + [_start(g) for _, g in lanes]
    t0 = min(firsts, default=0)
    names, keys, attrsets = _Interner(), _Interner(), _Interner()
    for name in (
        RequestStage.SPEC_DRAFT.name,
        RequestStage.SPEC_VERIFY.name,
        RequestStage.SPEC_DRAFT_EXTEND.name,
        RequestStage.PREFILL.name,
        RequestStage.DECODE.name,
    ):
        names(name)  # fixed indices for the stages view.js colours

    def attrset(attributes: dict, skip=()) -> int:
        return attrsets(
            tuple(
                (keys(k), _json_safe(v))
                for k, v in sorted(attributes.items())
                if k not in skip and v is not None
            )
        )

    def bars_of(stages: list[OtlpSpan]) -> list:
        bars: list = []
        for s in sorted(stages, key=lambda s: s.start_ns):
            step = s.attributes.get(SpanAttr.STEP)
            bars += (
                names(s.name),
                s.start_ns - t0,
                max(0, s.end_ns - s.start_ns),
                step if isinstance(step, int) else -1,
                attrset(s.attributes, (SpanAttr.STEP,)),
                s.span_id,
            )
        return bars

    units = [(_process(r), r.start_ns, r.end_ns) for r in shown]
    units += [(_process(g[0]), _start(g), max(x.end_ns for x in g)) for _, g in lanes]
    runs = _runs(units)
    requests = []
    for root, run in zip(shown, runs[: len(shown)], strict=True):
        attrs = root.attributes
        accepted, proposed = attrs.get(SpanAttr.TOTAL_ACCEPTED), attrs.get(SpanAttr.TOTAL_PROPOSED)
        rate = attrs.get(SpanAttr.ACCEPT_RATE)
        requests.append(
            {
                "id": str(attrs.get(SpanAttr.REQUEST_ID, root.span_id)),
                "trace": root.trace_id,
                "span": root.span_id,
                "run": run,
                "start": root.start_ns - t0,
                "dur": max(0, root.end_ns - root.start_ns),
                "outcome": _outcome(root),
                "status": root.status_message,
                "rounds": attrs.get(SpanAttr.VERIFY_ROUNDS),
                "accepted": accepted,
                "proposed": proposed,
                "rate": rate if isinstance(rate, int | float) and rate == rate else None,
                "attrs": attrset(attrs),
                "bars": bars_of(children.get(root.span_id, ())),
            }
        )
    # Spans whose root is not in the file (cut off, sampled, from another file): a lane per
    # trace, on its process's run.
    for (trace_id, stages), run in zip(lanes, runs[len(shown) :], strict=True):
        start = min(s.start_ns for s in stages) - t0
        end = max(s.end_ns for s in stages) - t0
        requests.append(
            {"id": f"trace {trace_id[:8]} · no root", "trace": trace_id, "span": "",
             "run": run, "start": start, "dur": end - start, "outcome": "no root",
             "status": "", "rounds": None, "accepted": None, "proposed": None, "rate": None,
             "attrs": attrset({}), "bars": bars_of(stages)}
        )  # fmt: skip
    return {
        "title": title,
        "summary": summary_text,
        "total_requests": len(roots),
        "total_orphans": len(orphans),
        "shown_orphans": len(lanes),
        "chosen_by": chosen_by,
        "select_forms": SELECT_FORMS,
        "runs": max((r["run"] for r in requests), default=0) + 1,
        "bar_fields": BAR_FIELDS,
        "names": names.items,
        "keys": keys.items,
        "attrsets": attrsets.items,
        "attr": {
            "accepted": SpanAttr.ACCEPTED_TOKENS,
            "proposed": SpanAttr.PROPOSED_TOKENS,
            "batch": SpanAttr.BATCH_SIZE,
            "width": SpanAttr.NUM_STEPS,
            "steps_kept": "spec_tracing.steps_kept",
            "old_width": SpanAttr.ADAPT_OLD_WIDTH,
            "new_width": SpanAttr.ADAPT_NEW_WIDTH,
        },
        "requests": requests,
    }


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def render_html(spans: list[OtlpSpan], summary_text: str, title: str,
                how: tuple[str, object] = ("first", MAX_REQUESTS)) -> str:  # fmt: skip
    payload = dumps(build_payload(spans, summary_text, title, how))
    # "</" or "<!--" inside a string would end or change the script element early.
    payload = payload.replace("</", "<\\/").replace("<!--", "<\\u0021--")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_asset('view.css')}</style></head><body>"
        f"{_asset('view.html')}"
        f"<script id='spec-data' type='application/json'>{payload}</script>"
        f"<script>{_asset('view.js')}</script></body></html>"
    )
