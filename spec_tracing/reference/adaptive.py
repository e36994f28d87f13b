"""Adaptive draft width by batch size, in the manner of SGLang's `--speculative-adaptive`.

The config is JSON keyed by batch-size lower bounds; the slot for a batch is the largest key not
above its size. Each slot keeps its own exponential moving average (EMA) of accepted drafts per
verify round and its own current width among `candidate_steps`:

- no decision during the first `warmup` rounds of a slot, then one every `update_interval` rounds;
- step up to the next candidate when  ema >= steps - 1 + up_hysteresis
  (the last draft position is usually accepted: a wider chain would likely pay);
- step down to the previous candidate when  ema <= lower + down_hysteresis
  (the smaller width would have held what was accepted);
- with ceiling_coeff > 0, the width never exceeds ceil(ceiling_coeff * (ema + 1)).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

DEFAULTS = {
    "candidate_steps": [1, 3, 5],
    "up_hysteresis": 0.0,
    "down_hysteresis": -0.25,
    "ceiling_coeff": 0.0,
    "ema_alpha": 0.2,
    "warmup": 8,
    "update_interval": 4,
}

DEFAULT_CONFIG = {
    "1": {"candidate_steps": [1, 3, 5], "up_hysteresis": 0.0, "down_hysteresis": -0.25},
    "8": {"candidate_steps": [1, 2, 4], "up_hysteresis": 0.0, "down_hysteresis": -0.25},
    "32": {"candidate_steps": [1, 2, 3], "up_hysteresis": 0.25, "down_hysteresis": -0.25},
}


@dataclass
class Slot:
    min_batch: int
    candidate_steps: list[int]
    up_hysteresis: float
    down_hysteresis: float
    ceiling_coeff: float
    ema_alpha: float
    warmup: int
    update_interval: int
    index: int = 0  # into candidate_steps
    ema: float | None = None
    rounds: int = 0
    history: list = field(default_factory=list)  # (round, old, new) for each change

    @property
    def steps(self) -> int:
        return self.candidate_steps[self.index]


def _bad(slot: str, fld: str, value: object, allowed: str) -> ValueError:
    return ValueError(
        f"adaptive config slot {slot!r}, field {fld!r}: {value!r} is not allowed; "
        f"expected {allowed}"
    )


def _number(slot: str, name: str, value: object, lo: float | None = None) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (lo is not None and value < lo)
    ):
        raise _bad(slot, name, value, "a number" + (f" >= {lo}" if lo is not None else ""))
    return float(value)


def _slot(key: str, raw: object) -> Slot:
    try:
        min_batch = int(key)
    except (TypeError, ValueError):
        raise _bad(key, "<key>", key, "an integer batch-size lower bound") from None
    if min_batch < 1:
        raise _bad(key, "<key>", key, "a batch size >= 1")
    if not isinstance(raw, dict):
        raise _bad(key, "<slot>", raw, "an object of fields")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise _bad(key, unknown[0], raw[unknown[0]], "one of the fields " + ", ".join(DEFAULTS))
    merged = {**DEFAULTS, **raw}
    steps = merged["candidate_steps"]
    if (
        not isinstance(steps, list)
        or not steps
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in steps)
    ):
        raise _bad(key, "candidate_steps", steps, "a non-empty list of positive integers")
    alpha = _number(key, "ema_alpha", merged["ema_alpha"], 0.0)
    if not 0.0 < alpha <= 1.0:
        raise _bad(key, "ema_alpha", merged["ema_alpha"], "a number in (0, 1]")
    for name in ("warmup", "update_interval"):
        v = merged[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "warmup" else 1):
            raise _bad(
                key, name, v, "a non-negative integer" if name == "warmup" else "a positive integer"
            )
    return Slot(
        min_batch=min_batch,
        candidate_steps=sorted(set(steps)),
        up_hysteresis=_number(key, "up_hysteresis", merged["up_hysteresis"]),
        down_hysteresis=_number(key, "down_hysteresis", merged["down_hysteresis"]),
        ceiling_coeff=_number(key, "ceiling_coeff", merged["ceiling_coeff"], 0.0),
        ema_alpha=alpha,
        warmup=merged["warmup"],
        update_interval=merged["update_interval"],
    )


def parse_config(config: dict | str | os.PathLike) -> list[Slot]:
    """Slots from a dict, a JSON string, or a path to a JSON file; ValueError names the slot
    and field at fault."""
    if isinstance(config, (str, os.PathLike)) and not str(config).lstrip().startswith("{"):
        try:
            with open(config, encoding="utf-8") as f:
                config = f.read()
        except OSError as exc:
            raise ValueError(
                f"adaptive config file {str(config)!r} cannot be read: {exc.strerror}"
            ) from None
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise ValueError(f"adaptive config is not JSON: {exc}") from None
    if not isinstance(config, dict) or not config:
        raise ValueError(
            f"adaptive config {config!r:.60} is not allowed; expected a non-empty "
            "object keyed by batch-size lower bounds"
        )
    slots = sorted((_slot(k, v) for k, v in config.items()), key=lambda s: s.min_batch)
    if slots[0].min_batch != 1:
        slots.insert(0, _slot("1", {**DEFAULTS, "candidate_steps": slots[0].candidate_steps}))
    return slots


@dataclass(frozen=True)
class Decision:
    """A width change and what it was decided from (the `spec_adapt` span's attributes)."""

    slot: int  # the batch-size slot's lower bound
    batch_size: int
    old_width: int
    new_width: int
    ema_before: float | None
    ema_after: float
    candidates: tuple[int, ...]


class AdaptiveController:
    """Chooses the draft width for each batch and learns from each verify round."""

    def __init__(self, config: dict | str | os.PathLike | None = None, on_change=None):
        self.slots = parse_config(DEFAULT_CONFIG if config is None else config)
        self.on_change = on_change  # callable(slot, old_steps, new_steps)

    def slot_for(self, batch_size: int) -> Slot:
        chosen = self.slots[0]
        for slot in self.slots:
            if slot.min_batch <= batch_size:
                chosen = slot
        return chosen

    def steps_for(self, batch_size: int) -> int:
        return self.slot_for(batch_size).steps

    def observe(self, batch_size: int, accepted: list[int]) -> Decision | None:
        """Feed one verify round: the accepted drafts of each request in the batch. Returns the
        decision when this round changed the slot's width."""
        if not accepted:
            return None
        slot = self.slot_for(batch_size)
        mean = sum(accepted) / len(accepted)
        ema_before = slot.ema
        slot.ema = (
            mean if slot.ema is None else (slot.ema_alpha * mean + (1 - slot.ema_alpha) * slot.ema)
        )
        slot.rounds += 1
        if slot.rounds <= slot.warmup or (slot.rounds - slot.warmup) % slot.update_interval:
            return None
        old = slot.steps
        new_index = _decide(slot)
        if new_index == slot.index:
            return None
        slot.index = new_index
        slot.history.append((slot.rounds, old, slot.steps))
        if self.on_change is not None:
            self.on_change(slot, old, slot.steps)
        return Decision(slot.min_batch, batch_size, old, slot.steps, ema_before, slot.ema,
                        tuple(slot.candidate_steps))  # fmt: skip


def _decide(slot: Slot) -> int:
    i, steps, ema = slot.index, slot.candidate_steps, slot.ema
    if i + 1 < len(steps) and ema >= steps[i] - 1 + slot.up_hysteresis:
        i += 1
    elif i > 0 and ema <= steps[i - 1] + slot.down_hysteresis:
        i -= 1
    if slot.ceiling_coeff > 0:
        ceiling = math.ceil(slot.ceiling_coeff * (ema + 1))
        while i > 0 and steps[i] > ceiling:
            i -= 1
    return i
