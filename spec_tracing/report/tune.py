"""`spec-tracing tune FILE`: which fixed draft width would have served this trace's traffic best,
per batch-size bucket, from its verify rounds and stage spans.

- Accept length per width K: from the conditional acceptance per position
  (acceptance.PositionCounts), c_k = P(accept k | k-1 accepted, k offered). A width-K round
  emits 1 + sum over k <= K of c_1 * ... * c_k tokens on average. Widths wider than any round
  offered cannot be estimated and are not reported.
- Cost per decode step: the batch's draft, verify and draft-extend times (one span per request
  and stage shares its batch's times: each batch stage counts once), per bucket and width: the
  mean of the batches that ran at that width; interpolated between widths that ran, and past
  them extrapolated along the nearest two. Where one width ran, the draft is taken as
  proportional to K (K sequential draft forwards) and verify and extend as flat in K (one
  forward over K+1 tokens, bound by memory at decode batch sizes); the output says so.
- Predicted tokens/s per K = mean batch size x accept length / step time; observed tokens/s =
  the bucket's emitted tokens / its steps' stage time. Time outside the three stages (the
  engine's scheduling, sampling outside verify) is in neither, so the two compare like with like.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable

from ..acceptance import PositionCounts
from ..semconv import SpanAttr
from ..stages import RequestStage

DRAFT, VERIFY, EXTEND = (RequestStage.SPEC_DRAFT.name, RequestStage.SPEC_VERIFY.name,
                         RequestStage.SPEC_DRAFT_EXTEND.name)  # fmt: skip


def bucket_of(batch_size: int) -> tuple[int, int]:
    """Powers of two: [1, 1], [2, 3], [4, 7], [8, 15], ..."""
    lo = 1 << (max(1, batch_size).bit_length() - 1)
    return lo, 2 * lo - 1


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _cost(points: list[tuple[int, float]], proportional: bool) -> tuple[Callable, str]:
    """A stage's batch time at width K: the mean of the batches that ran at that width;
    between widths that ran, interpolated; past them, extrapolated along the nearest two (with
    one width: proportional to K for the draft, flat otherwise), never below 0.
    Returns (K -> ms, how)."""
    by_width: dict = defaultdict(list)
    for k, ms in points:
        by_width[k].append(ms)
    ran = sorted((k, sum(v) / len(v)) for k, v in by_width.items())
    if len(ran) == 1:
        ((k0, m0),) = ran
        if proportional and k0:
            return (lambda k: m0 * k / k0), "one width ran: taken as proportional to it"
        return (lambda k: m0), "one width ran: taken as flat in it"
    widths = [k for k, _ in ran]

    def cost(k: int) -> float:
        # The two widths that ran around k; below or past them all, the nearest two.
        j = min(max(bisect.bisect_left(widths, k) - 1, 0), len(ran) - 2)
        (k1, m1), (k2, m2) = ran[j], ran[j + 1]
        return max(0.0, m1 + (m2 - m1) * (k - k1) / (k2 - k1))

    return cost, "measured at the widths that ran, interpolated between them"


def accept_length(conditional: list[float], width: int) -> float:
    """Mean tokens per round (bonus included) at `width`, from conditional acceptance."""
    total, kept = 1.0, 1.0
    for c in conditional[:width]:
        kept *= c
        total += kept
    return total


def tune(spans) -> dict:
    """{"buckets": [...]} as documented in docs/view.md ("Tuning the draft width")."""
    positions: dict = defaultdict(PositionCounts)
    emitted: dict = defaultdict(int)
    batches: dict = defaultdict(dict)  # bucket -> {(name, start, end): (width, batch, ms)}
    for s in spans:
        if s.name not in (DRAFT, VERIFY, EXTEND):
            continue
        a = s.attributes
        batch = _int(a.get(SpanAttr.BATCH_SIZE))
        if not batch:
            continue
        bucket = bucket_of(batch)
        width = _int(a.get(SpanAttr.NUM_STEPS))
        if s.name == VERIFY:
            accepted, proposed = (
                _int(a.get(SpanAttr.ACCEPTED_TOKENS)),
                a.get(SpanAttr.PROPOSED_TOKENS),
            )
            if accepted is None:
                continue
            positions[bucket].add(accepted, _int(proposed))
            emitted[bucket] += accepted + 1
            if width is None:
                width = _int(proposed)
        if width is None:
            continue
        key = (s.name, s.start_ns, s.end_ns)
        batches[bucket][key] = (width, batch, (s.end_ns - s.start_ns) / 1e6)
    out = []
    for bucket in sorted(positions):
        conditional = []  # up to the first position no round reached: not estimable past it
        for _, _, reached, _, _, given in positions[bucket].rows():
            if not reached:
                break
            conditional.append(given)
        if not conditional:
            continue
        stage_points: dict = defaultdict(list)
        batch_sizes, stage_ms, widths_ran = [], 0.0, defaultdict(int)
        for (name, _, _), (width, batch, ms) in batches[bucket].items():
            stage_points[name].append((width, ms))
            stage_ms += ms
            if name == VERIFY:
                batch_sizes.append(batch)
                widths_ran[width] += 1
        if not stage_points.get(VERIFY):
            continue
        costs = {name: _cost(points, proportional=name == DRAFT)
                 for name, points in stage_points.items()}  # fmt: skip
        mean_batch = sum(batch_sizes) / len(batch_sizes)
        per_width = {}
        for k in range(1, len(conditional) + 1):
            step_ms = sum(cost(k) for cost, _ in costs.values())
            length = accept_length(conditional, k)
            per_width[str(k)] = {
                "accept_length": round(length, 4),
                "step_ms": round(step_ms, 4),
                "tokens_per_s": round(mean_batch * length / step_ms * 1000, 2) if step_ms else None,
            }
        scored = {int(k): v["tokens_per_s"] for k, v in per_width.items() if v["tokens_per_s"]}
        best = max(scored, key=scored.get) if scored else None
        observed = emitted[bucket] / stage_ms * 1000 if stage_ms else None
        out.append({
            "batch_size": list(bucket),
            "steps": len(batch_sizes),
            "mean_batch_size": round(mean_batch, 3),
            "conditional_acceptance": [round(c, 4) for c in conditional],
            "cost_model": {name: {"how": how} for name, (_, how) in costs.items()},
            "per_width": per_width,
            "best_width": best,
            "widths_ran": {str(k): n for k, n in sorted(widths_ran.items())},
            "observed_tokens_per_s": None if observed is None else round(observed, 2),
            "gain": (round(scored[best] / observed - 1, 4)
                     if best is not None and observed else None),
        })  # fmt: skip
    return {"buckets": out}


def render(result: dict) -> str:
    lines = []
    for b in result["buckets"]:
        lo, hi = b["batch_size"]
        ran = ", ".join(f"{k}: {n}" for k, n in b["widths_ran"].items())
        lines.append(f"batch size {lo}-{hi}: {b['steps']} steps (widths that ran {ran})")
        lines.append(f"  {'width':>5} {'accept len':>10} {'step ms':>9} {'tokens/s':>10}")
        for k, v in b["per_width"].items():
            mark = "  <- best" if int(k) == b["best_width"] else ""
            lines.append(f"  {k:>5} {v['accept_length']:>10.3f} {v['step_ms']:>9.3f} "
                         f"{v['tokens_per_s'] or 0:>10,.0f}{mark}")  # fmt: skip
        if b["observed_tokens_per_s"] is not None:
            gain = "" if b["gain"] is None else f" (best fixed width: {b['gain']:+.1%})"
            lines.append(f"  observed {b['observed_tokens_per_s']:,.0f} tokens/s{gain}")
        notes = {v["how"] for v in b["cost_model"].values() if "one width" in v["how"]}
        if notes:
            lines.append("  cost model: " + "; ".join(sorted(notes)))
    return "\n".join(lines) if lines else "no verify rounds with batch size and counts"
