"""Speculative workers with the stages SGLang's workers have: draft, verify, draft_extend.

The only tracing here is the plugin's decorators: the engine logic itself makes no tracing calls.
Verify returns each request's accepted draft count (bonus excluded) and the drafts it was offered,
which the decorator reads off the result; the active draft width is a span attribute.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..record.hooks import trace_stage
from ..semconv import SpanAttr
from ..stages import RequestStage
from .build import Models
from .tiny_lm import KVCache, run_layers

_WIDTH = {
    SpanAttr.NUM_STEPS: "self.num_steps",
    SpanAttr.NUM_DRAFT_TOKENS: "self.num_draft_tokens",
    SpanAttr.WORKER: "self.name",
}


@dataclass
class DraftOutput:
    tokens: torch.Tensor  # [B, k]; entries past a request's `proposed` are padding
    proposed: list[int]  # drafts offered to each request
    probs: torch.Tensor | None  # [B, k, vocab] draft distributions (sampling); None: one-hot


@dataclass
class VerifyOutput:
    accepted_tokens: list[int]  # accepted drafts per request, bonus excluded
    proposed_tokens: list[int]
    emitted: list[list[int]]  # accepted drafts + the bonus token
    commits: list[tuple[int, list[int], torch.Tensor]]  # (start, tokens, features) per request


class SpecWorker:
    """Target model, KV cache and verification shared by all workers."""

    name = "base"
    has_draft_extend = True

    def __init__(
        self, models: Models, num_steps: int, slots: int, temperature: float = 0.0, seed: int = 0
    ):
        if num_steps < 1:
            raise ValueError(f"num_steps {num_steps} is not allowed; use >= 1")
        self.models = models
        self.target = models.target
        self.num_steps = num_steps
        self.cache = KVCache(self.target.cfg, slots)
        self.temperature = temperature
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def num_draft_tokens(self) -> int:
        return self.num_steps + 1  # tokens verify scores: the pending one and the drafts

    def _choose(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Greedy argmax, or a sample at `temperature` with its distribution."""
        if self.temperature <= 0:
            return logits.argmax(-1), None
        probs = torch.softmax(logits / self.temperature, -1)
        flat = probs.reshape(-1, probs.shape[-1])
        picks = torch.multinomial(flat, 1, generator=self.generator).reshape(probs.shape[:-1])
        return picks, probs

    @trace_stage(RequestStage.PREFILL)
    def prefill(self, batch) -> None:
        """Run the new requests' prompts through the target and pick their first token."""
        reqs = batch.reqs
        for r in reqs:
            r.slot = self.cache.allocate()
        width = max(len(r.prompt) for r in reqs)
        tokens = torch.tensor([r.prompt + [0] * (width - len(r.prompt)) for r in reqs])
        slots = torch.tensor([r.slot for r in reqs])
        logits, hidden = self.target(
            tokens, self.cache, slots, torch.zeros(len(reqs), dtype=torch.long)
        )
        last = torch.tensor([len(r.prompt) - 1 for r in reqs])
        rows = torch.arange(len(reqs))
        first, _ = self._choose(logits[rows, last])
        commits = []
        for i, r in enumerate(reqs):
            n = len(r.prompt)
            r.n_cached, r.pending, r.feature = n, int(first[i]), hidden[i, n - 1]
            r.output.append(r.pending)
            feats = torch.cat([torch.zeros_like(hidden[i, :1]), hidden[i, : n - 1]])
            commits.append((0, list(r.prompt), feats))
        self._catch_up(reqs, commits)

    def release(self, req) -> None:
        self.cache.release(req.slot)

    def _catch_up(self, reqs, commits) -> None:
        """Feed committed tokens to the draft's own layers (none for model-free drafts)."""

    def draft(self, batch) -> DraftOutput:
        raise NotImplementedError

    def _proposed(self, reqs, k: int) -> list[int]:
        # Never draft past the request's token budget: the bonus token always fits.
        return [max(0, min(k, r.max_new_tokens - len(r.output) - 1)) for r in reqs]

    @trace_stage(RequestStage.SPEC_VERIFY, attrs=_WIDTH)
    def verify(self, batch, draft: DraftOutput) -> VerifyOutput:
        """One target forward over [pending, drafts]; keep the accepted prefix plus a bonus."""
        reqs = batch.reqs
        k = draft.tokens.shape[1]
        pending = torch.tensor([[r.pending] for r in reqs])
        inputs = torch.cat([pending, draft.tokens], 1)
        slots = torch.tensor([r.slot for r in reqs])
        lengths = torch.tensor([r.n_cached for r in reqs])
        logits, hidden = self.target(inputs, self.cache, slots, lengths)
        proposed = torch.tensor(draft.proposed)
        if self.temperature <= 0:
            preds = logits.argmax(-1)
            ok = (draft.tokens == preds[:, :k]) & (torch.arange(k)[None, :] < proposed[:, None])
            accepted = ok.long().cumprod(1).sum(1).tolist()
            bonus = preds[torch.arange(len(reqs)), torch.tensor(accepted)].tolist()
        else:
            accepted, bonus = self._rejection_sample(logits, draft)
        emitted, commits = [], []
        for i, r in enumerate(reqs):
            a = accepted[i]
            drafts = draft.tokens[i, :a].tolist()
            feats = torch.cat([r.feature[None], hidden[i, :a]])
            commits.append((r.n_cached, [r.pending] + drafts, feats))
            emitted.append(drafts + [bonus[i]])
            r.output.extend(emitted[-1])
            r.n_cached += a + 1
            r.pending, r.feature = bonus[i], hidden[i, a]
        return VerifyOutput(accepted, list(draft.proposed), emitted, commits)

    def _rejection_sample(self, logits, draft: DraftOutput):
        """Speculative sampling: accept draft d with prob min(1, p(d)/q(d)); on rejection draw
        from max(p - q, 0); if every draft is accepted, draw the bonus from p."""
        p = torch.softmax(logits / self.temperature, -1)
        accepted, bonus = [], []
        for i, n in enumerate(draft.proposed):
            a = 0
            token = None
            for j in range(n):
                d = int(draft.tokens[i, j])
                if draft.probs is not None:
                    q = draft.probs[i, j]
                else:
                    q = torch.zeros_like(p[i, j])
                    q[d] = 1.0
                u = torch.rand((), generator=self.generator, dtype=p.dtype)
                if u < torch.clamp(p[i, j, d] / q[d], max=1.0):
                    a += 1
                    continue
                residual = torch.clamp(p[i, j] - q, min=0)
                residual = residual if residual.sum() > 0 else p[i, j]
                token = int(
                    torch.multinomial(residual / residual.sum(), 1, generator=self.generator)
                )
                break
            if token is None:
                token = int(torch.multinomial(p[i, a], 1, generator=self.generator))
            accepted.append(a)
            bonus.append(token)
        return accepted, bonus

    def draft_extend(self, batch, verify: VerifyOutput) -> None:
        pass


class EagleWorker(SpecWorker):
    """EAGLE-style: one draft decoder layer fed the target's hidden states drafts a chain of
    `num_steps` tokens; draft_extend feeds it the accepted tokens to catch up."""

    name = "eagle"

    def __init__(self, models: Models, num_steps: int, slots: int, **kw):
        super().__init__(models, num_steps, slots, **kw)
        self.layers = self._draft_layers(models)
        # Same slot numbers as the target cache: a request's slot indexes both.
        self.draft_cache = KVCache(replace(self.target.cfg, layers=len(self.layers)), slots)

    def _draft_layers(self, models: Models) -> list:
        return [models.eagle_layer]

    def _layer_for(self, step: int) -> int:
        return 0

    @trace_stage(RequestStage.SPEC_DRAFT, attrs=_WIDTH)
    def draft(self, batch) -> DraftOutput:
        reqs, k = batch.reqs, self.num_steps
        slots = torch.tensor([r.slot for r in reqs])
        lengths = torch.tensor([r.n_cached for r in reqs])
        chain = torch.tensor([[r.pending] for r in reqs])
        feats = torch.stack([r.feature for r in reqs])[:, None]
        drafted, probs = [], []
        for step in range(k):
            layer = self._layer_for(step)
            # The whole chain is re-fed so each layer sees its own keys for every position.
            logits, hidden = run_layers(
                self.target,
                [self.layers[layer]],
                [layer],
                chain,
                self.draft_cache,
                slots,
                lengths,
                feats,
                self.models.feature_weight,
            )
            token, dist = self._choose(logits[:, -1])
            drafted.append(token)
            probs.append(dist)
            chain = torch.cat([chain, token[:, None]], 1)
            feats = torch.cat([feats, hidden[:, -1:]], 1)
        tokens = torch.stack(drafted, 1)
        stacked = torch.stack(probs, 1) if probs[0] is not None else None
        return DraftOutput(tokens, self._proposed(reqs, k), stacked)

    @trace_stage(RequestStage.SPEC_DRAFT_EXTEND, attrs=_WIDTH)
    def draft_extend(self, batch, verify: VerifyOutput) -> None:
        self._catch_up(batch.reqs, verify.commits)

    def _catch_up(self, reqs, commits) -> None:
        width = max(len(toks) for _, toks, _ in commits)
        tokens = torch.tensor([toks + [0] * (width - len(toks)) for _, toks, _ in commits])
        dim = commits[0][2].shape[-1]
        feats = torch.stack(
            [torch.cat([f, f.new_zeros(width - len(f), dim)]) for _, _, f in commits]
        )
        slots = torch.tensor([r.slot for r in reqs])
        starts = torch.tensor([start for start, _, _ in commits])
        for index, layer in enumerate(self.layers):
            run_layers(
                self.target,
                [layer],
                [index],
                tokens,
                self.draft_cache,
                slots,
                starts,
                feats,
                self.models.feature_weight,
            )


class MultiLayerWorker(EagleWorker):
    """MTP-style: one draft layer per future position; step j of the chain uses layer j."""

    name = "multi-layer"

    def __init__(self, models: Models, num_steps: int, slots: int, **kw):
        if num_steps > len(models.mtp_layers):
            raise ValueError(
                f"num_steps {num_steps} is not allowed for the multi-layer worker; "
                f"it has {len(models.mtp_layers)} draft layers"
            )
        super().__init__(models, num_steps, slots, **kw)

    def _draft_layers(self, models: Models) -> list:
        return list(models.mtp_layers)

    def _layer_for(self, step: int) -> int:
        return step


class NgramWorker(SpecWorker):
    """Prompt lookup: propose what followed the latest earlier occurrence of the request's last
    n tokens (n from `max_ngram` down to 1). No draft model, so no draft_extend stage."""

    name = "ngram"
    has_draft_extend = False

    def __init__(self, models: Models, num_steps: int, slots: int, max_ngram: int = 3, **kw):
        super().__init__(models, num_steps, slots, **kw)
        self.max_ngram = max_ngram

    def _lookup(self, seq: list[int], k: int) -> list[int]:
        for n in range(min(self.max_ngram, len(seq) - 1), 0, -1):
            suffix = seq[-n:]
            for start in range(len(seq) - n - 1, -1, -1):
                if seq[start : start + n] == suffix:
                    return seq[start + n : start + n + k]
        return []

    @trace_stage(RequestStage.SPEC_DRAFT, attrs=_WIDTH)
    def draft(self, batch) -> DraftOutput:
        reqs, k = batch.reqs, self.num_steps
        budget = self._proposed(reqs, k)
        rows, proposed = [], []
        for r, limit in zip(reqs, budget, strict=True):
            found = self._lookup(r.prompt + r.output, k)[:limit]
            proposed.append(len(found))
            rows.append(found + [0] * (k - len(found)))
        return DraftOutput(torch.tensor(rows, dtype=torch.long), proposed, None)


WORKERS = {"eagle": EagleWorker, "ngram": NgramWorker, "multi-layer": MultiLayerWorker}
