"""The stage registry: every span the plugin can emit is a registered stage with a level.

Levels: 0 off, 1 request-level only, 2 adds draft/verify, 3 adds draft_extend and per-step detail.
A stage records only while the current trace level is at or above its own level.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

MIN_LEVEL = 0
MAX_LEVEL = 3


@dataclass(frozen=True)
class StageConfig:
    """A named stage and the lowest trace level at which it is recorded."""

    name: str
    level: int


_registry: dict[str, StageConfig] = {}
_lock = threading.Lock()


def _check_level(level: object, what: str) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or not MIN_LEVEL <= level <= MAX_LEVEL:
        raise ValueError(f"{what}: level {level!r} is not allowed; use an integer 0..3")
    return level


def register_stage(name: str, level: int) -> StageConfig:
    """Add a user stage. A duplicate name or a level outside 0..3 is a ValueError."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"stage name {name!r} is not allowed; use a non-empty string")
    _check_level(level, f"stage {name!r}")
    with _lock:
        if name in _registry:
            raise ValueError(
                f"stage {name!r} is already registered (level {_registry[name].level})"
            )
        stage = StageConfig(name, level)
        _registry[name] = stage
        return stage


def get_stage(stage: StageConfig | str) -> StageConfig:
    """Resolve a stage given by config or by name; an unknown name is a ValueError."""
    if isinstance(stage, StageConfig):
        return stage
    try:
        return _registry[stage]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_registry))
        raise ValueError(f"unknown stage {stage!r}; registered stages: {known}") from None


def registered_stages() -> tuple[StageConfig, ...]:
    return tuple(_registry.values())


class RequestStage:
    """The built-in stages. Span names are the stage names."""

    # Request level (1): the root span of each request and its coarse phases.
    REQUEST = register_stage("spec_request", 1)
    PREFILL = register_stage("prefill", 1)
    DECODE = register_stage("decode", 1)
    # Speculative decoding (2, 3).
    SPEC_DRAFT = register_stage("spec_draft", 2)
    SPEC_VERIFY = register_stage("spec_verify", 2)
    SPEC_DRAFT_EXTEND = register_stage("spec_draft_extend", 3)
    # An adaptive controller's decision to change the draft width (zero length, at the step's
    # verify end): why the width that follows ran.
    SPEC_ADAPT = register_stage("spec_adapt", 2)
