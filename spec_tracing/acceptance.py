"""Acceptance totals with the documented formulas, shared by requests, metrics and summaries.

- accept_rate = accepted drafts / proposed drafts: bonus excluded; the denominator is what each
  round actually proposed (0 for an n-gram miss), never a static setting. A round whose proposed
  count is unknown counts for accept_length only, so the rate can never exceed 1.
- accept_length = (accepted drafts + 1) per verify round: bonus included.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Acceptance:
    rounds: int = 0
    accepted: int = 0  # all accepted drafts (accept_length)
    proposed: int = 0  # proposed drafts, in rounds where that is known
    rate_accepted: int = 0  # accepted drafts in those same rounds (accept_rate's numerator)
    # Where the next round's tokens start in the request's output: after the prefill's first
    # token (1; 0 for engines whose first round emits it) and every round's accepted + bonus.
    next_offset: int = 1

    def add(self, accepted: int, proposed: int | None) -> None:
        add_rounds((self,), (accepted,), (proposed,))

    @property
    def accept_rate(self) -> float | None:
        return self.rate_accepted / self.proposed if self.proposed else None

    @property
    def accept_length(self) -> float | None:
        return (self.accepted + self.rounds) / self.rounds if self.rounds else None


def add_rounds(acceptances, accepted, proposed) -> list[int]:
    """One verify round each: acceptances[i] gets accepted[i] of proposed[i] (None: unknown).
    A batch's rounds in one loop: the signals stage adds a whole verify batch at once, without a
    method call per request. Returns where each round's tokens start in its request's output."""
    offsets = []
    offset_of = offsets.append
    for acc, a, p in zip(acceptances, accepted, proposed, strict=True):
        offset = acc.next_offset
        offset_of(offset)
        acc.next_offset = offset + a + 1
        acc.rounds += 1
        acc.accepted += a
        if p is not None:
            acc.proposed += p
            acc.rate_accepted += a
    return offsets


MAX_POSITIONS = 64  # positions tracked per round: far above any chain's width


@dataclass(slots=True)
class PositionCounts:
    """Acceptance by draft position k (1-based), right under any width schedule: for each k,
    the rounds that offered a k-th draft, the rounds among them whose first k-1 drafts were all
    accepted (so the k-th was looked at), and the rounds that accepted it. A round whose width
    is unknown says nothing about positions.

    - unconditional(k) = accepted / offered: what share of the rounds that drafted k tokens
      kept the k-th (a shorter width is not a rejection: those rounds did not offer k);
    - conditional(k) = accepted / reached = P(accept k | accepted k-1, offered k): the draft's
      quality at depth k, whatever stopped earlier positions."""

    offered: list = field(default_factory=list)
    reached: list = field(default_factory=list)
    accepted: list = field(default_factory=list)

    def add(self, accepted: int, proposed: int | None, rounds: int = 1) -> None:
        if proposed is None:
            return
        width = min(proposed, MAX_POSITIONS)
        while len(self.offered) < width:
            self.offered.append(0)
            self.reached.append(0)
            self.accepted.append(0)
        for j in range(width):  # j = k - 1
            self.offered[j] += rounds
            if accepted >= j:
                self.reached[j] += rounds
                if accepted > j:
                    self.accepted[j] += rounds

    def rows(self) -> list[tuple[int, int, int, int, float, float | None]]:
        """(k, offered, reached, accepted, unconditional, conditional) for each k offered."""
        return [
            (j + 1, o, r, a, a / o, a / r if r else None)
            for j, (o, r, a) in enumerate(zip(self.offered, self.reached, self.accepted,
                                              strict=True))
            if o
        ]  # fmt: skip
