"""Requests, batches and the continuous-batching loop of the reference engine.

Each iteration admits waiting requests up to the batch size (prefill), runs one speculative step
(draft, verify, draft_extend) for the running batch, and retires finished requests. Requests carry
a ReqTimeStats as `time_stats`; the loop ends each request's trace when it retires.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..record.hotpath import record_batch_stage
from ..record.request_trace import ReqTimeStats
from ..semconv import SpanAttr
from ..stages import RequestStage
from .adaptive import AdaptiveController
from .build import build_models
from .tiny_lm import KVCache
from .workers import WORKERS, VerifyOutput

# The GenAI attributes of every request's root (the model is the tiny one build.py makes).
GEN_AI = {SpanAttr.GEN_AI_MODEL: "spec-tracing-reference-tiny-lm",
          SpanAttr.GEN_AI_PROVIDER: "spec-tracing-reference"}  # fmt: skip

_rids = itertools.count()


@dataclass
class Request:
    prompt: list[int]
    max_new_tokens: int
    rid: str = field(default_factory=lambda: f"req-{next(_rids)}")
    output: list[int] = field(default_factory=list)
    # Per decode step: (draft width of the batch, drafts offered, drafts accepted).
    steps: list[tuple[int, int, int]] = field(default_factory=list)
    time_stats: ReqTimeStats | None = None
    slot: int = -1
    n_cached: int = 0
    pending: int = 0
    feature: torch.Tensor | None = None

    @property
    def done(self) -> bool:
        return len(self.output) >= self.max_new_tokens


@dataclass
class ScheduleBatch:
    reqs: list[Request]


@dataclass
class EngineStats:
    decode_steps: int = 0
    generated_tokens: int = 0
    elapsed_s: float = 0.0
    widths: list[int] = field(default_factory=list)  # draft width of each decode step


class Engine:
    """`Engine(worker="eagle"|"ngram"|"multi-layer", ...)`; add requests, then `run()`."""

    def __init__(
        self,
        worker: str = "eagle",
        batch_size: int = 16,
        num_steps: int = 3,
        adaptive: dict | str | bool | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        on_width_change: Callable | None = None,
    ):
        if worker not in WORKERS:
            raise ValueError(f"worker {worker!r} is not allowed; use one of {', '.join(WORKERS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size} is not allowed; use >= 1")
        self.models = build_models(seed)
        self.controller = None
        if adaptive:
            self.controller = AdaptiveController(
                None if adaptive is True else adaptive, on_change=on_width_change
            )
            num_steps = max(max(s.candidate_steps) for s in self.controller.slots)
        self.max_steps = num_steps
        self.worker = WORKERS[worker](
            self.models, num_steps, batch_size, temperature=temperature, seed=seed
        )
        self.batch_size = batch_size
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.finished: list[Request] = []
        self.stats = EngineStats()

    def add_request(
        self, prompt: list[int], max_new_tokens: int, rid: str | None = None
    ) -> Request:
        self.check_request(prompt, max_new_tokens)
        req = Request(list(prompt), max_new_tokens, **({"rid": rid} if rid else {}))
        req.time_stats = ReqTimeStats(rid=req.rid, attributes=GEN_AI)
        self.waiting.append(req)
        return req

    def check_request(self, prompt: list[int], max_new_tokens: int) -> None:
        """The ValueError add_request would raise for these, without adding anything."""
        cfg = self.models.target.cfg
        if not prompt or any(not 0 <= t < cfg.vocab for t in prompt):
            raise ValueError(
                f"prompt {prompt!r:.60} is not allowed; use 1+ token ids in 0..{cfg.vocab - 1}"
            )
        if len(prompt) + max_new_tokens + self.max_steps + 1 > cfg.max_len or max_new_tokens < 1:
            room = cfg.max_len - len(prompt) - max_new_tokens - 1
            if max_new_tokens >= 1 and self.max_steps > max(room, 0) and room >= 1:
                # The draft width is what does not fit: say so, not max_new_tokens.
                raise ValueError(
                    f"draft width (num_steps) {self.max_steps} is not allowed with "
                    f"{max_new_tokens} new tokens for a prompt of {len(prompt)} tokens; "
                    f"use at most {room} (prompt + new tokens + draft width must fit in "
                    f"{cfg.max_len})"
                )
            raise ValueError(
                f"max_new_tokens {max_new_tokens} is not allowed for a prompt of "
                f"{len(prompt)} tokens; prompt + new tokens + draft width must fit "
                f"in {cfg.max_len}"
            )

    def step(self) -> None:
        """Admit, run one speculative step for the running batch, retire."""
        admitted = []
        while self.waiting and len(self.running) + len(admitted) < self.batch_size:
            admitted.append(self.waiting.popleft())
        if admitted:
            self.worker.prefill(ScheduleBatch(admitted))
            self.running.extend(admitted)
            self._retire()
        if not self.running:
            return
        batch = ScheduleBatch(list(self.running))
        if self.controller is not None:
            self.worker.num_steps = self.controller.steps_for(len(batch.reqs))
        draft = self.worker.draft(batch)
        out = self.worker.verify(batch, draft)
        if self.worker.has_draft_extend:
            self.worker.draft_extend(batch, out)
        self._account(batch, out)
        self._retire()

    def _account(self, batch: ScheduleBatch, out: VerifyOutput) -> None:
        width = self.worker.num_steps
        for req, prop, acc in zip(
            batch.reqs, out.proposed_tokens, out.accepted_tokens, strict=True
        ):
            req.steps.append((width, prop, acc))
        self.stats.decode_steps += 1
        self.stats.widths.append(width)
        if self.controller is not None:
            decision = self.controller.observe(len(batch.reqs), out.accepted_tokens)
            if decision is not None:
                self._record_decision(batch, decision)

    @staticmethod
    def _record_decision(batch: ScheduleBatch, decision) -> None:
        """The controller changed the width after this step: a spec_adapt span on each of the
        batch's requests, at the decision, with its inputs (semconv ADAPT_*)."""
        attrs = {
            SpanAttr.ADAPT_OLD_WIDTH: decision.old_width,
            SpanAttr.ADAPT_NEW_WIDTH: decision.new_width,
            SpanAttr.ADAPT_SLOT: decision.slot,
            SpanAttr.ADAPT_EMA_AFTER: decision.ema_after,
            SpanAttr.ADAPT_CANDIDATES: list(decision.candidates),
        }
        if decision.ema_before is not None:
            attrs[SpanAttr.ADAPT_EMA_BEFORE] = decision.ema_before
        now = time.perf_counter()
        record_batch_stage(batch.reqs, RequestStage.SPEC_ADAPT, now, now, attrs=attrs)

    def _retire(self) -> None:
        still = []
        for req in self.running:
            if req.done:
                self.worker.release(req)
                req.time_stats.finish()
                self.finished.append(req)
            else:
                still.append(req)
        self.running = still

    def run(self, progress: Callable[[int], None] | None = None) -> list[Request]:
        """Run until every added request finished; `progress(n)` gets newly finished counts."""
        start = time.perf_counter()
        while self.waiting or self.running:
            before = len(self.finished)
            self.step()
            if progress is not None and len(self.finished) > before:
                progress(len(self.finished) - before)
        self.stats.elapsed_s += time.perf_counter() - start
        self.stats.generated_tokens = sum(len(r.output) for r in self.finished)
        return self.finished


def greedy_reference(prompt: list[int], max_new_tokens: int, seed: int = 0) -> list[int]:
    """Target-only greedy decoding, one token per forward: the ground truth for losslessness."""
    target = build_models(seed).target
    cache = KVCache(target.cfg, 1)
    slot = torch.tensor([0])
    logits, _ = target(torch.tensor([prompt]), cache, slot, torch.tensor([0]))
    out = [int(logits[0, -1].argmax())]
    length = len(prompt)
    while len(out) < max_new_tokens:
        logits, _ = target(torch.tensor([[out[-1]]]), cache, slot, torch.tensor([length]))
        length += 1
        out.append(int(logits[0, -1].argmax()))
    return out


def demo_prompts(count: int, seed: int = 0, vocab: int = 96) -> list[list[int]]:
    """Built-in prompts: deterministic token sequences of 6-24 tokens, some with repeated
    phrases (the case prompt lookup is for)."""
    gen = torch.Generator().manual_seed(seed + 1)
    prompts = []
    for i in range(count):
        n = int(torch.randint(6, 25, (1,), generator=gen))
        tokens = torch.randint(0, vocab, (n,), generator=gen).tolist()
        if i % 3 == 0:
            tokens = tokens + tokens[: n // 2]
        prompts.append(tokens)
    return prompts
