"""A tiny decoder-only target language model with a slot-indexed KV cache.

Requests of different lengths share one batched forward: each request owns a cache slot and a
length; a step writes its `s` new tokens at positions length..length+s-1 and attends, under a
mask, to its own first length+i+1 positions. Rolling back rejected drafts is setting the length
back: whatever lies beyond it is masked and later overwritten. float64 keeps greedy argmaxes
identical across batch shapes, which the losslessness tests rely on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

DTYPE = torch.float64


@dataclass(frozen=True)
class ModelConfig:
    vocab: int = 96
    dim: int = 64
    layers: int = 2
    heads: int = 4
    max_len: int = 384
    init_std: float = 0.35


class KVCache:
    """Keys and values for `slots` requests: [layers, slots, heads, max_len, head_dim]."""

    def __init__(self, cfg: ModelConfig, slots: int):
        shape = (cfg.layers, slots, cfg.heads, cfg.max_len, cfg.dim // cfg.heads)
        self.k = torch.zeros(shape, dtype=DTYPE)
        self.v = torch.zeros(shape, dtype=DTYPE)
        self.free = list(range(slots - 1, -1, -1))

    def allocate(self) -> int:
        if not self.free:
            raise RuntimeError("KV cache has no free slot; lower the batch size")
        return self.free.pop()

    def release(self, slot: int) -> None:
        self.free.append(slot)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.heads
        self.ln1 = nn.LayerNorm(cfg.dim, dtype=DTYPE)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False, dtype=DTYPE)
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=False, dtype=DTYPE)
        self.ln2 = nn.LayerNorm(cfg.dim, dtype=DTYPE)
        self.fc1 = nn.Linear(cfg.dim, 4 * cfg.dim, dtype=DTYPE)
        self.fc2 = nn.Linear(4 * cfg.dim, cfg.dim, dtype=DTYPE)

    def forward(self, x, layer, cache, slots, positions, mask):
        t = mask.shape[-1]
        b, s, d = x.shape
        h, dh = self.heads, d // self.heads
        q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, h, dh).permute(2, 0, 3, 1, 4)
        # Write this step's keys/values at each request's own positions.
        rows = slots[:, None].expand(b, s)
        cache.k[layer, rows, :, positions] = k.transpose(1, 2)
        cache.v[layer, rows, :, positions] = v.transpose(1, 2)
        keys, values = cache.k[layer, slots, :, :t], cache.v[layer, slots, :, :t]
        att = (q @ keys.transpose(-1, -2)) / math.sqrt(dh)
        att = att.masked_fill(~mask[:, None], float("-inf")).softmax(-1)
        out = (att @ values).transpose(1, 2).reshape(b, s, d)
        x = x + self.proj(out)
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(x))))


class TinyLM(nn.Module):
    """The target model. `forward` returns (logits, hidden) for the new tokens of each request."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.dim, dtype=DTYPE)
        self.pos = nn.Embedding(cfg.max_len, cfg.dim, dtype=DTYPE)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.dim, dtype=DTYPE)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.embed.weight.T  # tied head

    def forward(self, tokens, cache: KVCache, slots, lengths):
        """tokens [B, s] written after each request's `lengths` [B] in its cache `slots` [B];
        returns (logits, hidden) for every new token."""
        return run_layers(self, self.blocks, range(len(self.blocks)), tokens, cache, slots, lengths)


@torch.no_grad()
def run_layers(
    model: TinyLM,
    blocks,
    cache_layers,
    tokens,
    cache,
    slots,
    lengths,
    features=None,
    feature_weight: float = 0.0,
):
    """Embed `tokens`, run them through `blocks` (block i keeps its keys in cache layer
    cache_layers[i]) and the model's head. `features` [B, s, dim], if given, are mixed into the
    input: how a draft layer is fed the target's hidden states."""
    b, s = tokens.shape
    positions = lengths[:, None] + torch.arange(s)[None, :]
    key_pos = torch.arange(int(positions.max()) + 1)  # only the filled part of the cache
    mask = key_pos[None, None, :] <= positions[:, :, None]  # [B, s, T]
    x = model.embed(tokens) + model.pos(positions)
    if features is not None:
        x = x + feature_weight * features
    for block, layer in zip(blocks, cache_layers, strict=True):
        x = block(x, layer, cache, slots, positions, mask)
    hidden = model.ln_f(x)
    return model.logits(hidden), hidden


def init_weights(model: nn.Module, std: float, generator: torch.Generator) -> None:
    """Deterministic random weights; a larger std than training inits gives the model enough
    context dependence that its greedy text is not a short loop."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name:
                continue
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)
