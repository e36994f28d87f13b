"""Test-only stand-in: lets vLLM's CPU build run its V2 model runner here, as a GPU install would.

vLLM's CPU build takes Triton only when `triton.backends.backends` has a "cpu" entry
(vllm/triton_utils/importing.py); the PyPI Triton wheel has none. This registers one whose driver
says it is active, and nothing else: with TRITON_INTERPRET=1 (set by the tests) Triton's own
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
    except Exception as exc:  # the test that needs it fails with vLLM's own message instead
        print(f"triton_cpu stand-in not registered: {exc}")
