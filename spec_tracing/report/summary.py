"""The run summary a person reads at a glance: per-stage p50/p95, acceptance, widths.

Built from spans, so the same numbers come out of a live run (span records, `add_records`)
and of a captured file (`spec-tracing report`, which feeds spans read from OTLP JSON).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from ..acceptance import Acceptance, PositionCounts
from ..semconv import SpanAttr
from ..stages import RequestStage
from ..wire import STAGE_RECORD

_ORDER = [
    RequestStage.PREFILL.name,
    RequestStage.SPEC_DRAFT.name,
    RequestStage.SPEC_VERIFY.name,
    RequestStage.SPEC_DRAFT_EXTEND.name,
    RequestStage.REQUEST.name,
]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


@dataclass
class TraceSummary:
    durations_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    acceptance: Acceptance = field(default_factory=Acceptance)
    widths: Counter = field(default_factory=Counter)  # num_steps -> verify spans
    positions: PositionCounts = field(default_factory=PositionCounts)
    requests: int = 0
    # Summed from the roots' acceptance summary: what a level-1 trace (no verify spans) has.
    root_acceptance: Acceptance = field(default_factory=Acceptance)
    roots_without_rounds: int = 0  # roots that say nothing of verify (below level 2)
    first_ns: int | None = None
    last_ns: int | None = None

    @classmethod
    def from_spans(cls, spans) -> TraceSummary:
        """The summary of spans read back (OtlpSpans): what `report` prints."""
        summary = cls()
        for s in spans:
            summary.add(s.name, s.start_ns, s.end_ns, s.attributes)
        return summary

    def add(self, name: str, start_ns: int, end_ns: int, attrs: dict) -> None:
        self.durations_ms[name].append((end_ns - start_ns) / 1e6)
        self.first_ns = start_ns if self.first_ns is None else min(self.first_ns, start_ns)
        self.last_ns = end_ns if self.last_ns is None else max(self.last_ns, end_ns)
        if name == RequestStage.REQUEST.name:
            self.requests += 1
            rounds = attrs.get(SpanAttr.VERIFY_ROUNDS)
            if rounds is None:
                self.roots_without_rounds += 1
            if rounds:
                root = self.root_acceptance
                root.rounds += int(rounds)
                root.accepted += int(attrs.get(SpanAttr.TOTAL_ACCEPTED, 0))
                if SpanAttr.TOTAL_PROPOSED in attrs:
                    root.proposed += int(attrs[SpanAttr.TOTAL_PROPOSED])
                    root.rate_accepted += int(attrs.get(SpanAttr.TOTAL_ACCEPTED, 0))
        elif name == RequestStage.SPEC_VERIFY.name and SpanAttr.ACCEPTED_TOKENS in attrs:
            proposed = attrs.get(SpanAttr.PROPOSED_TOKENS)
            accepted = int(attrs[SpanAttr.ACCEPTED_TOKENS])
            proposed = None if proposed is None else int(proposed)
            self.acceptance.add(accepted, proposed)
            self.positions.add(accepted, proposed)
            if SpanAttr.NUM_STEPS in attrs:
                self.widths[int(attrs[SpanAttr.NUM_STEPS])] += 1

    def render(self, level: int | None = None) -> str:
        """The summary; `level` (when known) explains missing acceptance below level 2."""
        # A space between columns: a 100 s request's p95 filled the column and ran into p50.
        lines = [f"{'stage':<20}{'spans':>8} {'p50 ms':>10} {'p95 ms':>10}"]
        names = [n for n in _ORDER if n in self.durations_ms]
        names += sorted(set(self.durations_ms) - set(names))
        for name in names:
            values = self.durations_ms[name]
            lines.append(
                f"{name:<20}{len(values):>8} {percentile(values, 50):>10.3f} "
                f"{percentile(values, 95):>10.3f}"
            )
        acc, whence = self.acceptance, ""
        # The roots count every round of their requests; verify spans only those exported
        # (all of them, unless step spans were sampled: SPEC_TRACING_STEP_SAMPLE_RATIO).
        if self.root_acceptance.rounds > acc.rounds:
            acc, whence = self.root_acceptance, " (from the request spans)"
        rate, length = acc.accept_rate, acc.accept_length
        lines.append("")
        lines.append(f"requests          {self.requests}")
        lines.append(f"verify rounds     {acc.rounds} (request x decode step){whence}")
        lines.append(
            f"accept rate       {rate:.3f}  ({acc.rate_accepted} of {acc.proposed} drafts)"
            if rate is not None
            else f"accept rate       n/a (not traced: verify is level 2, this ran at level {level})"
            if level is not None and level < 2
            else "accept rate       n/a (not recorded: the requests ran below level 2)"
            if self.requests and self.roots_without_rounds == self.requests
            else "accept rate       n/a (no drafts proposed)"
        )
        lines.append(
            f"accept length     {length:.3f}  tokens per verify round, bonus included"
            if length is not None
            else "accept length     n/a"
        )
        if self.widths:
            shown = ", ".join(f"{w}: {n}" for w, n in sorted(self.widths.items()))
            lines.append(f"draft width used  {shown}  (num_steps: verify rounds)")
        rows = self.positions.rows()
        if rows:
            # Rounds that offered position k, and of those whose first k-1 drafts held.
            lines.append("by position       k: accepted / offered, accepted / reached (k-1 held)")
            for k, offered, reached, _, rate, given in rows[:8]:
                cond = "n/a" if given is None else f"{given:.3f}"
                lines.append(f"                  {k}: {rate:.3f} of {offered}, {cond} of {reached}")
        return "\n".join(lines)


def add_records(summary: TraceSummary, records: list) -> None:
    """Feed span records (wire.py) into `summary`: a live run's spans, before export."""
    for record in records:
        if record[0] == STAGE_RECORD:
            _, name, batch_attrs, rows = record
            for _, _, t0, t1, _, acc, prop, _ in rows:
                attrs = dict(batch_attrs)
                if acc is not None:
                    attrs[SpanAttr.ACCEPTED_TOKENS] = acc
                    if prop is not None:
                        attrs[SpanAttr.PROPOSED_TOKENS] = prop
                summary.add(name, int(t0 * 1e9), int(t1 * 1e9), attrs)
        else:
            t0, t1 = record[4], record[5]
            summary.add(RequestStage.REQUEST.name, int(t0 * 1e9), int(t1 * 1e9), record[6])


PROVENANCE_WIDTH = 96


def provenance(rounds: list) -> str | None:
    """A request's output tokens by origin, from its verify spans (OtlpSpans): `.` for tokens
    before the first round (the prefill's), `a` for an accepted draft, `B` for a round's bonus
    token, `|` between rounds; None without output offsets (a trace that has none)."""
    rounds = sorted(
        (s for s in rounds if SpanAttr.OUTPUT_OFFSET in s.attributes),
        key=lambda s: s.attributes[SpanAttr.OUTPUT_OFFSET],
    )
    if not rounds:
        return None
    # Nothing longer than the line is built, whatever a count in the file says.
    text = "." * _at_most(rounds[0].attributes[SpanAttr.OUTPUT_OFFSET], PROVENANCE_WIDTH + 1)
    for span in rounds:
        if len(text) > PROVENANCE_WIDTH:
            break
        accepted = _at_most(span.attributes.get(SpanAttr.ACCEPTED_TOKENS, 0), PROVENANCE_WIDTH)
        text += "|" + "a" * accepted + "B"
    return text if len(text) <= PROVENANCE_WIDTH else text[: PROVENANCE_WIDTH - 1] + "…"


def _at_most(value: object, bound: int) -> int:
    return max(0, min(int(value), bound))


def render_requests(roots, spans=()) -> str:
    """One line per request root span (OtlpSpans): duration, rounds, acceptance, outcome; and
    under it, when `spans` hold its verify spans with output offsets, its tokens' provenance."""
    verify: dict = defaultdict(list)
    for s in spans:
        if s.name == RequestStage.SPEC_VERIFY.name:
            verify[s.parent_span_id].append(s)
    lines = [
        f"{'request':<24}{'ms':>10}{'rounds':>8}{'accepted':>10}{'proposed':>10}"
        f"{'rate':>8}{'length':>8}  outcome"
    ]
    for root in sorted(roots, key=lambda r: r.start_ns):
        a = root.attributes
        rate, length = a.get(SpanAttr.ACCEPT_RATE), a.get(SpanAttr.ACCEPT_LENGTH)
        outcome = a.get(SpanAttr.FINISH_REASON, "")
        lines.append(
            f"{str(a.get(SpanAttr.REQUEST_ID, root.span_id)):<24}"
            f"{(root.end_ns - root.start_ns) / 1e6:>10.1f}"
            f"{a.get(SpanAttr.VERIFY_ROUNDS, '-'):>8}{a.get(SpanAttr.TOTAL_ACCEPTED, '-'):>10}"
            f"{a.get(SpanAttr.TOTAL_PROPOSED, '-'):>10}"
            f"{'n/a' if rate is None else format(rate, '.3f'):>8}"
            f"{'n/a' if length is None else format(length, '.3f'):>8}  {outcome}"
        )
        tokens = provenance(verify.get(root.span_id, ()))
        if tokens is not None:
            lines.append(f"  tokens  {tokens}")
    return "\n".join(lines)
