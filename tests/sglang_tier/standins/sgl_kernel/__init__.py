"""TEST-ONLY stand-in for sgl_kernel on a CPU (no CPU build of sgl_kernel can be installed here).

Pure-torch versions of the few ops SGLang's CPU path calls for NGRAM speculative decoding,
following SGLang's own kernel contracts (quoted where each is defined). Any other sgl_kernel
name imports (SGLang imports many at module level) but raises NotImplementedError when called,
so an op this tier does not cover can never be silently faked. Proven right by
tests/sglang_tier/test_sglang.py: NGRAM output equals non-speculative greedy.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

from ._ops import *  # noqa: F403


class _Missing:
    def __init__(self, name: str):
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"sgl_kernel.{self.__name__} has no CPU stand-in in this tier")

    def __getattr__(self, attr):
        return _Missing(f"{self.__name__}.{attr}")


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Missing(name)


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Any sgl_kernel.<submodule> we do not define is a module of _Missing callables."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("sgl_kernel.") and fullname not in _DEFINED:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__getattr__ = lambda attr: (
            _Missing(f"{spec.name}.{attr}") if not attr.startswith("__") else None
        )
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


_DEFINED = {"sgl_kernel.speculative", "sgl_kernel._ops"}
sys.meta_path.append(_StubFinder())
