"""Deterministic tiny models: the target and its draft layers, built in code (no download).

The target is a 2-layer TinyLM whose second layer is scaled down by TARGET_DEPTH_SCALE, so a draft
layer derived from its first layer predicts it often but not always: the EAGLE-style worker's
acceptance rate lands around 0.6-0.75 at 3-4 draft steps. Multi-layer (MTP-style) drafts get one
layer per future position, each a little noisier than the one before, so acceptance falls with
the position as it does for real MTP heads. `python -m spec_tracing.reference.build` prints the
acceptance these settings give.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache

import torch

from .tiny_lm import DTYPE, ModelConfig, TinyLM, init_weights

TARGET_DEPTH_SCALE = 0.3
MTP_NOISE_PER_POSITION = 0.004
FEATURE_WEIGHT = 0.05  # how strongly the draft input mixes in the target's hidden state


@dataclass
class Models:
    target: TinyLM
    eagle_layer: torch.nn.Module  # one draft decoder layer, reused for every draft step
    mtp_layers: list  # one draft layer per future position
    feature_weight: float


@lru_cache(maxsize=4)
def build_models(seed: int = 0, mtp_positions: int = 4) -> Models:
    """The target and drafts for `seed`; identical for the same seed on any machine."""
    cfg = ModelConfig()
    gen = torch.Generator().manual_seed(seed)
    target = TinyLM(cfg)
    init_weights(target, cfg.init_std, gen)
    with torch.no_grad():
        for name, p in target.blocks[1:].named_parameters():
            if "ln" not in name:
                p.mul_(TARGET_DEPTH_SCALE)
    target.eval()
    eagle = copy.deepcopy(target.blocks[0])
    mtp = []
    for position in range(mtp_positions):
        layer = copy.deepcopy(target.blocks[0])
        with torch.no_grad():
            for name, p in layer.named_parameters():
                if "ln" not in name:
                    noise = torch.randn(p.shape, generator=gen, dtype=DTYPE)
                    p.add_(noise * MTP_NOISE_PER_POSITION * position)
        mtp.append(layer)
    return Models(target, eagle, mtp, FEATURE_WEIGHT)
