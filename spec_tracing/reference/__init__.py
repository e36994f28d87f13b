"""The torch reference engine: a tiny target model, EAGLE-style / n-gram / multi-layer (MTP-style)
speculative workers, an adaptive draft-width controller and a continuous-batching loop.

It is instrumented only through the plugin's decorators (workers.py) and the requests'
ReqTimeStats (engine.py).
"""

from .build import build_models
from .engine import Engine, Request, greedy_reference

__all__ = ["Engine", "Request", "build_models", "greedy_reference"]
